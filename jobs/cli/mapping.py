"""``bevis map``, ``bevis products`` and ``bevis bench map``: the mapping step."""

from __future__ import annotations

import json

import typer

from jobs.cli import options

# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command("map")
def map_cmd(
    run: str = typer.Option(
        ..., "--run", help="Run id (its validated.parquet is mapped).", callback=options.run_id
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    force: bool = typer.Option(
        False, "--force", help="Map again even when the input has not changed."
    ),
) -> None:
    """Map a run's validated extract to DCC payloads (payloads.parquet); orders that
    cannot be mapped go to quarantine with their reason. A finished map with unchanged
    input is a no-op."""
    from jobs.steps.mapping import MappingInputMissing, map_run

    try:
        result = map_run(run, force=force)
    except (MappingInputMissing, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if json_out:
        typer.echo(json.dumps(result.as_dict()))
    else:
        typer.echo(
            f"run {result.run_id}: {result.payloads} payloads from {result.orders} orders "
            f"({result.rows} rows); {result.quarantined_orders} orders quarantined; "
            f"products table {result.product_table_version}; {result.seconds:.2f} s"
        )


@app.command("products")
def products_cmd(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show the product table (NVR name / NPL-id → EU codes) and whether each entry may
    be issued under the current value sets; exit 1 when the table disagrees with them."""
    from transforms.products import is_issuable, load_products, table_problems

    table = load_products()
    problems = table_problems(table)
    rows = [
        {
            "nvr_name": p.nvr_name,
            "npl_id": p.npl_id,
            "mp": p.mp,
            "ma": p.ma,
            "vp": p.vp,
            "primary_doses": p.primary_doses,
            "issuable": is_issuable(p),
        }
        for p in table.products
    ]
    if json_out:
        typer.echo(json.dumps({"version": table.version, "products": rows, "problems": problems}))
    else:
        from rich.console import Console
        from rich.table import Table

        view = Table(title=f"products {table.version}")
        for col in rows[0]:
            view.add_column(col)
        for r in rows:
            view.add_row(*(str(v) if v is not None else "" for v in r.values()))
        Console().print(view)
        for problem in problems:
            typer.echo(f"problem: {problem}", err=True)
    if problems:
        raise typer.Exit(1)


@bench.command("map")
def bench_map(
    rows: int = typer.Option(1_000_000, "--rows", min=1, help="Extract rows to map."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Map N synthetic extract rows (transforms.sample) through the real map step in a
    throw-away data folder; the last line is JSON with rows/s (wall clock, and per CPU
    second, which the load of a shared machine does not distort)."""
    import math
    import os
    import tempfile
    import time
    from pathlib import Path

    import pyarrow as pa

    from jobs.settings import get_settings
    from jobs.steps.mapping import map_config, map_run
    from jobs.storage import RunPaths, write_parquet_atomic
    from transforms.payloads import map_frame
    from transforms.sample import extract_table
    from transforms.schemas import EXTRACT

    t0 = time.perf_counter()
    table = extract_table(math.ceil(rows / 2.0) + 10, seed=seed).slice(0, rows)
    generated_s = time.perf_counter() - t0
    frame = table.to_pandas()
    with tempfile.TemporaryDirectory(prefix="bevis-bench-map-") as tmp:
        settings = get_settings(data_dir=Path(tmp))
        run_id = "bench-map"
        write_parquet_atomic(
            pa.Table.from_pandas(frame, schema=EXTRACT, preserve_index=False),
            RunPaths.of(run_id, settings).validated,
        )
        t1, c1 = time.perf_counter(), time.process_time()
        mapped = map_frame(frame, map_config(settings))
        frame_s, frame_cpu = time.perf_counter() - t1, time.process_time() - c1
        c2 = time.process_time()
        result = map_run(run_id, settings)
        run_cpu = time.process_time() - c2
        size = os.path.getsize(result.path)
    figures = {
        "rows": rows,
        "orders": result.orders,
        "payloads": result.payloads,
        "quarantined_orders": result.quarantined_orders,
        "generate_s": round(generated_s, 2),
        "map_frame_s": round(frame_s, 2),
        "map_run_s": result.seconds,
        "map_frame_cpu_s": round(frame_cpu, 2),
        "map_run_cpu_s": round(run_cpu, 2),
        "rows_per_s": round(rows / frame_s),
        "rows_per_cpu_s": round(rows / frame_cpu) if frame_cpu else None,
        "rows_per_s_end_to_end": round(rows / result.seconds),
        "payloads_mb": round(size / 1e6, 1),
        "consistent": mapped.payloads.num_rows == result.payloads,
    }
    typer.echo(json.dumps(figures))
