"""The validate step: run a data-quality suite over a run's file, quarantine the failing
orders with their reasons, stop the run when a run gate fails.

Three suites (data_quality/suites.py):
- ``nvr_extract``  extract.parquet  → validated.parquet (extract minus quarantined orders)
- ``dcc_payload``  payloads.parquet → payloads.parquet rewritten without quarantined orders
- ``signed_batch`` a batch's signed.parquet, against its planned payloads

Policy: a failing row quarantines its whole order (no certificate from a partly bad
history); the quarantine entries name the failing rows. Every call is idempotent.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from data_quality import SUITES, RunGateFailed
from data_quality import reasons as R
from data_quality import suites as S
from jobs.log import get_logger
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths

if TYPE_CHECKING:
    from data_quality.runner import SuiteOutcome

log = get_logger(__name__)

# reasons that are business outcomes, not data defects: they do not count towards the
# quarantine-rate gate (a person who ordered without being vaccinated is no broken feed)
NOT_DEFECTS = frozenset({R.NO_VACCINATION})


@dataclass
class ValidationResult:
    """What a validation did; paths as strings so the result travels as JSON (XCom)."""

    run_id: str
    suite: str
    batch_id: str | None
    rows: int
    orders: int
    quarantined_orders: int
    quarantine_entries: int
    reasons: dict[str, int]
    output: str | None
    data_docs: str
    seconds: float
    gates: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(
    run_id: str, suite: str, settings: Settings | None = None, batch_id: str | None = None
) -> ValidationResult:
    """Run ``suite`` for ``run_id`` (and ``batch_id`` for signed_batch). Raises
    :class:`data_quality.RunGateFailed` when a run-level expectation fails."""
    s = settings or get_settings()
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if suite == "signed_batch":
        if not batch_id:
            raise ValueError("suite signed_batch needs a batch id (--batch)")
        return _validate_signed_batch(batch_id, s)
    if batch_id:
        raise ValueError(f"suite {suite} validates a whole run; it takes no batch id")
    if suite == "nvr_extract":
        return _validate_nvr_extract(run_id, s)
    return _validate_dcc_payload(run_id, s)


# --- shared --------------------------------------------------------------------------------


def _entries(suite: str, outcome: SuiteOutcome, identity=None) -> list[dict[str, Any]]:
    """Quarantine entries from GX's unexpected rows: one per failing row and check. With
    ``identity`` (a pyarrow Table of order_id, event_id, pid in frame order), GX's row
    identity is the ``row`` number and is looked up there."""
    failing = [
        (co, row)
        for co in outcome.failed()
        if co.check.reason_code is not None
        for row in co.unexpected_rows
    ]
    if identity is not None and failing:
        import pyarrow as pa

        rows = pa.array([int(row["row"]) for _, row in failing], type=pa.int64())
        looked_up = identity.take(rows).to_pylist()
        failing = [(co, ids) for (co, _), ids in zip(failing, looked_up, strict=True)]
    out: dict[tuple, dict[str, Any]] = {}
    for co, row in failing:
        key = (co.check.name, row.get("order_id"), row.get("event_id"))
        out.setdefault(
            key,
            {
                "suite": suite,
                "expectation": co.check.name,
                "reason_code": co.check.reason_code,
                "pid": row.get("pid"),
                "order_id": row.get("order_id"),
                "event_id": row.get("event_id"),
                "detail": f"{co.check.expectation}: {co.check.description}",
            },
        )
    # a duplicated event carries the same event id twice: one entry for it
    return list(out.values())


def _reasons(entries: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["reason_code"]] = counts.get(e["reason_code"], 0) + 1
    return dict(sorted(counts.items()))


def _gates(
    paths: RunPaths,
    run_id: str,
    suite: str,
    checks: list[S.Check],
    facts: dict[str, Any],
    validation_name: str | None = None,
) -> dict[str, Any]:
    """Run the run-level gates (a GX suite over one row of run facts); raise on failure."""
    import pandas as pd

    from data_quality.runner import build_docs, run_suite

    frame = pd.DataFrame([facts])
    gate_suite = f"{suite}.gates"
    outcome = run_suite(
        paths.root / "gx",
        paths.data_docs,
        run_id,
        gate_suite,
        checks,
        frame,
        index_columns=list(facts)[:1],
        validation_name=validation_name or gate_suite,
    )
    index = build_docs(paths.root / "gx", paths.data_docs)
    if not outcome.success:
        failures = []
        for co in outcome.failed():
            column = co.check.kwargs["column"]
            lo, hi = co.check.kwargs.get("min_value"), co.check.kwargs.get("max_value")
            failures.append(
                (co.check.name, f"{column} = {_fmt(facts[column])}, expected {lo}..{hi}")
            )
        raise RunGateFailed(suite, failures, data_docs=str(index))
    return facts


class _Clock:
    """Seconds per phase, for the bench and the closing note."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 3)
        self._t = now


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _read_extract_meta(paths: RunPaths, run_id: str) -> dict[str, Any]:
    if not paths.extract_meta.exists():
        raise FileNotFoundError(f"run {run_id} has no extract.json; run the extract first")
    return json.loads(paths.extract_meta.read_text("utf-8"))


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# --- nvr_extract ---------------------------------------------------------------------------


def _validate_nvr_extract(run_id: str, s: Settings) -> ValidationResult:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from data_quality import nvr, products
    from data_quality.runner import docs_index, run_suite
    from jobs.ledger import quarantine

    t0 = time.perf_counter()
    clock = _Clock()
    suite = "nvr_extract"
    paths = RunPaths.of(run_id, s)
    if not paths.extract.exists():
        raise FileNotFoundError(f"run {run_id} has no extract.parquet; run the extract first")
    meta = _read_extract_meta(paths, run_id)
    extracted_at = _ts(meta.get("extracted_at"))
    snapshot_at = _ts(meta.get("nvr_snapshot_at"))
    run_date = (extracted_at or datetime.now(UTC)).date()

    # only the columns the checks need (no addresses): the full rows are streamed at the end
    table = pq.read_table(paths.extract, columns=list(nvr.EXTRACT_COLUMNS))
    clock.lap("read")
    facts = nvr.nvr_facts(
        table,
        run_date=run_date,
        campaign_start=date.fromisoformat(s.campaign_start),
        extracted_at=extracted_at,
    )
    clock.lap("facts")
    checks = S.nvr_extract_checks(products.known_products(), nvr.MAX_DOSE, nvr.MAX_NAME_LENGTH)
    outcome = run_suite(
        paths.root / "gx", paths.data_docs, run_id, suite, checks, facts.frame, nvr.INDEX_COLUMNS
    )
    clock.lap("gx_rows")
    entries = _entries(suite, outcome, facts.identity)
    quarantine.record(run_id, suite, entries, settings=s)
    clock.lap("quarantine")

    orders = len(pc.unique(table.column("order_id")))
    bad_orders = {e["order_id"] for e in entries}
    defect_orders = {e["order_id"] for e in entries if e["reason_code"] not in NOT_DEFECTS}
    age_hours = (
        (extracted_at - snapshot_at).total_seconds() / 3600
        if (extracted_at and snapshot_at)
        else float("inf")
    )
    gate_checks = [
        S.volume_gate(int(meta.get("orders_claimed", orders))),
        S.quarantine_rate_gate(s.quarantine_threshold),
        S.freshness_gate(s.nvr_max_age_hours),
    ]
    gate_facts = {
        "orders_in_file": orders,
        "quarantine_rate": (len(defect_orders) / orders) if orders else 0.0,
        "nvr_snapshot_age_hours": age_hours if age_hours != float("inf") else 1e9,
    }
    try:
        _gates(paths, run_id, suite, gate_checks, gate_facts)
    except RunGateFailed:
        paths.validated.unlink(missing_ok=True)  # the run stops: map must not proceed
        log.error("run gate failed", run_id=run_id, suite=suite, **gate_facts)
        raise
    clock.lap("gx_gates")

    rows = table.num_rows
    del table, facts
    _write_without(paths.extract, paths.validated, bad_orders)
    clock.lap("write")
    result = ValidationResult(
        run_id=run_id,
        suite=suite,
        batch_id=None,
        rows=rows,
        orders=orders,
        quarantined_orders=len(bad_orders),
        quarantine_entries=len(entries),
        reasons=_reasons(entries),
        output=str(paths.validated),
        data_docs=str(docs_index(paths.data_docs)),
        seconds=round(time.perf_counter() - t0, 3),
        gates=gate_facts,
        phases=clock.laps,
    )
    log.info(
        "validated",
        run_id=run_id,
        suite=suite,
        rows=result.rows,
        quarantined_orders=result.quarantined_orders,
        reasons=result.reasons,
        seconds=result.seconds,
    )
    return result


def _write_without(source, target, orders: set[str]) -> None:
    """Copy a Parquet file without the rows of ``orders``, row group by row group (memory
    stays at one row group), atomically."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from jobs.storage import atomic_path

    drop = _array(sorted(orders))
    src = pq.ParquetFile(source)
    with (
        atomic_path(target, 0o640) as tmp,
        pq.ParquetWriter(tmp, src.schema_arrow, compression="zstd") as writer,
    ):
        for i in range(src.num_row_groups):
            group = src.read_row_group(i)
            writer.write_table(
                group.filter(pc.invert(pc.is_in(group.column("order_id"), value_set=drop)))
            )
        if src.num_row_groups == 0:
            writer.write_table(src.schema_arrow.empty_table())


def _array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, type=pa.string())


# --- dcc_payload ---------------------------------------------------------------------------


def _validate_dcc_payload(run_id: str, s: Settings) -> ValidationResult:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from data_quality.payload import payload_facts
    from data_quality.runner import docs_index, run_suite
    from data_quality.uvci import checks_ok
    from jobs.ledger import quarantine
    from jobs.storage import write_parquet_atomic

    t0 = time.perf_counter()
    clock = _Clock()
    suite = "dcc_payload"
    paths = RunPaths.of(run_id, s)
    if not paths.payloads.exists():
        raise FileNotFoundError(f"run {run_id} has no payloads.parquet; run the map step first")
    table = pq.read_table(paths.payloads)
    clock.lap("read")
    n = table.num_rows
    uvci = pc.fill_null(table.column("uvci").combine_chunks(), "")
    facts = payload_facts(table.column("payload_json").to_pylist())
    clock.lap("schema")
    in_payload = facts["payload_ci"].to_numpy(dtype=object, na_value=None) == np.asarray(
        uvci.to_pylist(), dtype=object
    )
    uvci_list = uvci.to_pylist()
    from jobs.ledger.queries import orders_of_uvcis

    held = orders_of_uvcis(sorted(set(uvci_list) - {""}), s)
    orders = table.column("order_id").to_pylist()
    not_in_ledger = np.array(
        [held.get(u) in (None, o) for u, o in zip(uvci_list, orders, strict=True)], dtype=bool
    )
    frame = pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "schema_ok": facts["schema_ok"].to_numpy(dtype=bool),
            "value_sets_ok": facts["value_sets_ok"].array,
            "transliterated_names_ok": facts["transliterated_names_ok"].to_numpy(dtype=bool),
            "uvci": pd.array(uvci_list, dtype="string"),
            "uvci_check_ok": checks_ok(uvci) & in_payload,
            "uvci_not_in_ledger": not_in_ledger,
        }
    )
    clock.lap("facts")
    country, issuer = re.escape(s.issuer_country), re.escape(s.uvci_issuer)
    pattern = rf"^URN:UVCI:01:{country}:{issuer}/[A-Z0-9]+(?:/[A-Z0-9]+)*#[A-Z0-9/:]$"
    outcome = run_suite(
        paths.root / "gx",
        paths.data_docs,
        run_id,
        suite,
        S.dcc_payload_checks(pattern),
        frame,
        ("row",),
    )
    clock.lap("gx_rows")
    identity = pa.table(
        {
            "order_id": table.column("order_id"),
            "pid": table.column("pid"),
            "event_id": pa.nulls(n, pa.string()),
        }
    )
    new_entries = _entries(suite, outcome, identity)
    # payloads.parquet is rewritten without the quarantined orders, so a rerun sees only
    # the good ones: keep the entries of earlier runs of this step
    previous = _previous_entries(paths, suite)
    entries = list({_key(e): e for e in previous + new_entries}.values())
    quarantine.record(run_id, suite, entries, settings=s)
    clock.lap("quarantine")

    bad = {e["order_id"] for e in new_entries}
    all_orders = set(orders) | {e["order_id"] for e in previous}
    quarantined = {e["order_id"] for e in entries}
    gate_facts = {
        "orders_in_file": len(all_orders),
        "quarantine_rate": len(quarantined) / len(all_orders) if all_orders else 0.0,
    }
    _gates(
        paths,
        run_id,
        suite,
        [S.quarantine_rate_gate(s.quarantine_threshold)],
        {"quarantine_rate": gate_facts["quarantine_rate"]},
    )
    clock.lap("gx_gates")
    if bad:
        keep = pc.invert(pc.is_in(table.column("order_id"), value_set=_array(sorted(bad))))
        write_parquet_atomic(table.filter(keep), paths.payloads)
    clock.lap("write")
    return _result(
        run_id,
        suite,
        None,
        n,
        len(all_orders),
        quarantined,
        entries,
        paths.payloads,
        docs_index(paths.data_docs),
        t0,
        gate_facts,
        clock,
    )


def _key(e: dict[str, Any]) -> tuple:
    return (e.get("expectation"), e.get("order_id"), e.get("event_id"))


def _previous_entries(paths: RunPaths, step: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from jobs.ledger.quarantine import COLUMNS

    path = paths.quarantine(step)
    if not path.exists():
        return []
    return [{c: r.get(c) for c in COLUMNS} for r in pq.read_table(path).to_pylist()]


def _result(
    run_id: str,
    suite: str,
    batch_id: str | None,
    rows: int,
    orders: int,
    quarantined: set[str],
    entries: list[dict[str, Any]],
    output,
    docs,
    t0: float,
    gates: dict[str, Any],
    clock: _Clock,
) -> ValidationResult:
    result = ValidationResult(
        run_id=run_id,
        suite=suite,
        batch_id=batch_id,
        rows=rows,
        orders=orders,
        quarantined_orders=len(quarantined),
        quarantine_entries=len(entries),
        reasons=_reasons(entries),
        output=str(output) if output else None,
        data_docs=str(docs),
        seconds=round(time.perf_counter() - t0, 3),
        gates=gates,
        phases=clock.laps,
    )
    log.info(
        "validated",
        run_id=run_id,
        suite=suite,
        batch_id=batch_id,
        rows=rows,
        quarantined_orders=result.quarantined_orders,
        reasons=result.reasons,
        seconds=result.seconds,
    )
    return result


def _validate_signed_batch(batch_id: str, s: Settings) -> ValidationResult:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from cryptography.hazmat.primitives.serialization import Encoding

    from data_quality.runner import docs_index, run_suite
    from jobs.ids import parse_batch_id
    from jobs.ledger import quarantine
    from jobs.steps.sign import active_signer, verify_many

    t0 = time.perf_counter()
    clock = _Clock()
    suite = "signed_batch"
    run_id, seq = parse_batch_id(batch_id)
    paths = RunPaths.of(run_id, s)
    for needed in (paths.batch_payloads(batch_id), paths.signed(batch_id)):
        if not needed.exists():
            raise FileNotFoundError(f"batch {batch_id} has no {needed.name}; plan and sign first")
    planned = pq.read_table(paths.batch_payloads(batch_id), columns=["order_id", "pid", "uvci"])
    signed = pq.read_table(paths.signed(batch_id), columns=["order_id", "uvci", "hc1"])
    plan = dict(zip(planned["order_id"].to_pylist(), planned["uvci"].to_pylist(), strict=True))
    pids = dict(zip(planned["order_id"].to_pylist(), planned["pid"].to_pylist(), strict=True))
    orders = signed["order_id"].to_pylist()
    uvcis = signed["uvci"].to_pylist()
    clock.lap("read")

    trust_pem = active_signer(s).dsc.public_bytes(Encoding.PEM)
    expected = [plan.get(o) or u for o, u in zip(orders, uvcis, strict=True)]
    checked = verify_many(signed["hc1"].to_pylist(), expected, trust_pem, s.resolved_workers())
    clock.lap("verify")
    other_uvci = np.array(
        [c.reason.startswith("the certificate carries") for c in checked], dtype=bool
    )  # dtype: a batch whose orders all withdrew consent signs nothing
    verifies = np.array([c.ok for c in checked], dtype=bool) | other_uvci
    matches = (
        np.array([plan.get(o) == u for o, u in zip(orders, uvcis, strict=True)], dtype=bool)
        & ~other_uvci
    )
    frame = pd.DataFrame(
        {
            "row": np.arange(len(orders), dtype=np.int64),
            "verifies": verifies,
            "matches_plan": matches,
        }
    )
    outcome = run_suite(
        paths.root / "gx",
        paths.data_docs,
        run_id,
        suite,
        S.signed_batch_checks(),
        frame,
        ("row",),
        validation_name=f"{suite}-b{seq:04d}",
    )
    clock.lap("gx_rows")
    identity = pa.table(
        {
            "order_id": pa.array(orders, pa.string()),
            "pid": pa.array([pids.get(o) for o in orders], pa.string()),
            "event_id": pa.nulls(len(orders), pa.string()),
        }
    )
    entries = _entries(suite, outcome, identity)
    quarantine.record(run_id, f"signed-b{seq:04d}", entries, settings=s)
    clock.lap("quarantine")

    # orders the sign step held back (already issued, failed its own verification)
    sign_q = paths.quarantine("sign")
    held = (
        set(pq.read_table(sign_q, columns=["order_id"])["order_id"].to_pylist()) & set(plan)
        if sign_q.exists()
        else set()
    )
    signed_set = set(orders)
    gate_facts = {
        "signed_matching_plan": len((signed_set & set(plan)) | held),
        "unplanned_certificates": len(signed_set - set(plan)),
        "failed_certificates": int((~verifies | ~matches).sum()),
    }
    _gates(
        paths,
        run_id,
        suite,
        [S.batch_count_gate(len(plan)), S.no_unplanned_gate(), S.all_verified_gate()],
        gate_facts,
        validation_name=f"{suite}.gates-b{seq:04d}",
    )
    clock.lap("gx_gates")
    return _result(
        run_id,
        suite,
        batch_id,
        len(orders),
        len(plan),
        {e["order_id"] for e in entries},
        entries,
        None,
        docs_index(paths.data_docs),
        t0,
        gate_facts,
        clock,
    )
