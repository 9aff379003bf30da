"""``bevis validate`` and ``bevis bench validate``: the data-quality suites from the CLI."""

from __future__ import annotations

import typer

from jobs.cli import options

# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command("validate")
def validate_cmd(
    run: str = typer.Option(..., "--run", help="Run id.", callback=options.run_id),
    suite: str = typer.Option(..., "--suite", help="nvr_extract | dcc_payload | signed_batch"),
    batch: str | None = typer.Option(
        None, "--batch", help="Batch id (signed_batch).", callback=options.batch_id
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run a data-quality suite over a run's file; quarantine failing orders; exit 3
    when a run gate stops the run. Prints where the Data Docs are."""
    import json

    from data_quality import RunGateFailed
    from jobs.steps.validate import validate

    try:
        result = validate(run, suite, batch_id=batch)
    except RunGateFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if json_out:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(
        f"{suite}: {result.rows} rows, {result.orders} orders, "
        f"{result.quarantined_orders} orders quarantined {result.reasons}"
    )
    if result.output:
        typer.echo(f"output: {result.output}")
    typer.echo(f"Data Docs: {result.data_docs}")


@bench.command("validate")
def bench_validate(
    rows: int = typer.Option(1_000_000, "--rows", help="Extract rows (about 2.5 per order)."),
    defect_rate: float = typer.Option(0.01, "--defect-rate"),
    seed: int = typer.Option(0, "--seed"),
    suite: str = typer.Option("nvr_extract", "--suite", help="nvr_extract | dcc_payload"),
) -> None:
    """Validate a synthetic extract of about ROWS rows with nvr_extract (or ROWS
    synthetic payloads with dcc_payload); the last line is JSON: rows/s, seconds per
    phase, peak RSS."""
    from jobs.devtools.bench_dq import bench_dcc_payload, bench_nvr_extract

    if suite == "dcc_payload":
        typer.echo(bench_dcc_payload(rows, seed=seed))
    elif suite == "nvr_extract":
        typer.echo(bench_nvr_extract(rows, defect_rate=defect_rate, seed=seed))
    else:
        typer.echo("error: bench validate supports nvr_extract and dcc_payload", err=True)
        raise typer.Exit(2)
