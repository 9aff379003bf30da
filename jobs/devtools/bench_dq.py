"""Benchmark of the nvr_extract validation on a synthetic extract (``bevis bench validate``)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare(data_dir: str, run_id: str, orders: int, seed: int, defect_rate: float) -> None:
    from data_quality.synthetic import synthetic_extract, to_table
    from jobs.settings import get_settings
    from jobs.storage import RunPaths, write_parquet_atomic

    synth = synthetic_extract(orders, seed=seed, defect_rate=defect_rate)
    paths = RunPaths.of(run_id, get_settings(data_dir=Path(data_dir)))
    write_parquet_atomic(to_table(synth.frame), paths.extract)
    paths.extract_meta.write_text(
        json.dumps(
            {
                "orders_claimed": synth.orders,
                "extracted_at": synth.extracted_at.isoformat(),
                "nvr_snapshot_at": synth.snapshot_at.isoformat(),
            }
        )
    )


def bench_nvr_extract(rows: int, defect_rate: float = 0.01, seed: int = 0) -> str:
    """Generate ~``rows`` extract rows in a throw-away data folder, validate them, and
    return one JSON line with the figures (phases timed separately: the GX import, the
    vectorised facts, the GX run, the whole validate call)."""
    t = time.perf_counter()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations  # noqa: F401  (timed on its own: a one-off per process)

    import_s = time.perf_counter() - t

    import pyarrow.parquet as pq

    from jobs.settings import get_settings
    from jobs.steps.validate import validate
    from jobs.storage import RunPaths

    orders = max(1, round(rows / 2.5))
    with tempfile.TemporaryDirectory(prefix="bevis-bench-") as tmp:
        settings = get_settings(data_dir=Path(tmp))
        run_id = "bench-validate"
        # the synthetic extract is made in a child process, so that the peak RSS below is
        # the validation's own
        t = time.perf_counter()
        proc = mp.get_context("spawn").Process(
            target=_prepare, args=(tmp, run_id, orders, seed, defect_rate)
        )
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"preparing the synthetic extract failed ({proc.exitcode})")
        gen_s = time.perf_counter() - t
        n = pq.ParquetFile(RunPaths.of(run_id, settings).extract).metadata.num_rows
        rss_before = _peak_rss_mb()
        t = time.perf_counter()
        result = validate(run_id, "nvr_extract", settings=settings)
        validate_s = time.perf_counter() - t
    return json.dumps(
        {
            "bench": "validate",
            "suite": "nvr_extract",
            "rows": n,
            "orders": result.orders,
            "quarantined_orders": result.quarantined_orders,
            "seconds": round(validate_s, 2),
            "rows_per_s": round(n / validate_s),
            "phases_s": result.phases,
            "gx_import_s": round(import_s, 2),
            "generate_s": round(gen_s, 2),
            "peak_rss_mb_before_validate": round(rss_before),
            "peak_rss_mb": round(_peak_rss_mb()),
            "load": os.getloadavg()[0],
            "cpus": len(os.sched_getaffinity(0)),
        }
    )


def _prepare_payloads(data_dir: str, run_id: str, rows: int, seed: int) -> None:
    import pyarrow as pa

    from data_quality.uvci import check_character
    from jobs.devtools.synthetic import synthetic_payloads
    from jobs.settings import get_settings
    from jobs.storage import RunPaths, write_parquet_atomic

    table = synthetic_payloads(rows, seed=seed, prefix="BENCH")
    # the batch machinery's synthetic UVCIs carry no check character: add it
    bare = table.column("uvci").to_pylist()
    full = [f"{u}#{check_character(u)}" for u in bare]
    texts = [
        t.replace(f'"{u}"', f'"{f}"')
        for t, u, f in zip(table.column("payload_json").to_pylist(), bare, full, strict=True)
    ]
    table = table.set_column(table.schema.get_field_index("uvci"), "uvci", pa.array(full))
    table = table.set_column(
        table.schema.get_field_index("payload_json"), "payload_json", pa.array(texts)
    )
    write_parquet_atomic(table, RunPaths.of(run_id, get_settings(data_dir=Path(data_dir))).payloads)


def bench_dcc_payload(rows: int, seed: int = 0) -> str:
    """Validate ``rows`` synthetic payloads (jobs.devtools.synthetic.synthetic_payloads: few distinct
    names, so the leaf memo hits more often than on a real register) with dcc_payload."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations  # noqa: F401

    from jobs.settings import get_settings
    from jobs.steps.validate import validate

    with tempfile.TemporaryDirectory(prefix="bevis-bench-") as tmp:
        settings = get_settings(data_dir=Path(tmp))
        run_id = "bench-payload"
        t = time.perf_counter()
        proc = mp.get_context("spawn").Process(
            target=_prepare_payloads, args=(tmp, run_id, rows, seed)
        )
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"preparing the synthetic payloads failed ({proc.exitcode})")
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        result = validate(run_id, "dcc_payload", settings=settings)
        validate_s = time.perf_counter() - t
    return json.dumps(
        {
            "bench": "validate",
            "suite": "dcc_payload",
            "rows": rows,
            "quarantined_orders": result.quarantined_orders,
            "seconds": round(validate_s, 2),
            "rows_per_s": round(rows / validate_s),
            "phases_s": result.phases,
            "generate_s": round(gen_s, 2),
            "peak_rss_mb": round(_peak_rss_mb()),
            "load": os.getloadavg()[0],
            "cpus": len(os.sched_getaffinity(0)),
        }
    )
