"""``bevis demo``, ``bevis issue`` and ``bevis bench e2e``: the whole flow."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from jobs.cli import options


def print_summary(summary: dict) -> None:
    """The summary table for people."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bevis run {summary['run_id']}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("orders", summary["orders"]),
        ("extracted", summary["extracted"]),
        ("quarantined", summary["quarantined"]),
        *[(f"  · {k}", v) for k, v in summary["quarantined_by_reason"].items()],
        ("refused", summary["refused"]),
        *[(f"  · {k}", v) for k, v in summary["refused_by_reason"].items()],
        ("issued", summary["issued"]),
        ("delivered digitally", summary["delivered_digitally"]),
        ("queued for paper", summary["queued_for_paper"]),
        ("deferred", summary["deferred"]),
        ("duration (s)", f"{summary['duration_s']:.1f}" if summary.get("duration_s") else "-"),
        (
            "certificates per second",
            f"{summary['certificates_per_s']:.1f}" if summary.get("certificates_per_s") else "-",
        ),
    ]
    for what, value in rows:
        table.add_row(what, str(value))
    console = Console()
    console.print(table)
    for name, path in (summary.get("paths") or {}).items():
        console.print(f"{name:>12}: {path}")
    for check, ok in (summary.get("checks") or {}).items():
        console.print(f"{'ok' if ok else 'FAILED':>12}: {check}")


# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command()
def demo(
    persons: int = typer.Option(3000, "--persons", min=10, help="Persons in the seeded register."),
    out: Path = typer.Option(Path("demo-out"), "--out", help="Output folder (replaced)."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Certificates per batch."),
    seed: int = typer.Option(2021, "--seed", help="Seed of the synthetic register."),
) -> None:
    """Run the whole issuance flow end to end through real Airflow on this machine:
    private Airflow home (SQLite), development keys, a seeded register, the mailbox
    simulator, the dcc_issuance DAG; then verify and summarise."""
    from jobs.devtools.demo import DemoFailed, run_demo

    options.development_mode()
    try:
        summary = run_demo(persons, out, seed=seed, batch_size=batch_size)
    except DemoFailed as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    print_summary(summary)


@app.command()
def issue(
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many orders."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    run: str | None = typer.Option(
        None, "--run", help="Run id (default: a new one).", callback=options.run_id
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the issuance flow in this process, without Airflow (the same functions the
    DAG's tasks call) — for operations when the scheduler is down."""
    from jobs.flow import issue_run

    options.require_real_secrets()  # before a run is started or an order claimed
    summary = issue_run(run_id=run, limit=limit, batch_size=batch_size)
    if json_out:
        typer.echo(json.dumps(summary, default=str))
    else:
        print_summary(summary)
    if summary["state"] != "SUCCEEDED":
        raise typer.Exit(1)


@bench.command("e2e")
def bench_e2e(
    orders: int = typer.Option(10_000, "--orders", min=10, help="Orders to issue."),
    out: Path = typer.Option(Path("bench-out"), "--out"),
    batch_size: int = typer.Option(5000, "--batch-size", min=1),
    airflow: bool = typer.Option(
        True, "--airflow/--no-airflow", help="Through real Airflow (dag.test) or in-process."
    ),
) -> None:
    """The whole flow for N orders on this machine; JSON with the time per step on its
    last line."""
    from jobs.devtools.bench_e2e import bench_e2e as run_bench

    result = run_bench(orders, out, batch_size=batch_size, airflow=airflow)
    typer.echo(json.dumps(result, default=str))
