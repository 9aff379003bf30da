"""``bevis doctor``: what is wrong on this machine, in plain words."""

from __future__ import annotations

import typer

# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command()
def doctor(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check Python, packages, databases, keys and Airflow home; exit 1 when something
    needed is missing."""
    import json

    from rich.console import Console
    from rich.table import Table

    from jobs.cli.checks import run_checks

    checks = run_checks()
    if json_out:
        typer.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table(title="bevis doctor")
        for col in ("check", "status", "detail"):
            table.add_column(col)
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
        Console().print(table)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


db = typer.Typer(help="The databases: sources, ledger, reporting.", no_args_is_help=True)
app.add_typer(db, name="db")


@db.command("migrate")
def db_migrate() -> None:
    """Create or upgrade every bevis schema (Alembic; idempotent)."""
    from jobs.db import DatabaseUnavailable, migrate_all

    try:
        migrate_all()
    except DatabaseUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo("databases migrated: sources, ledger, reporting")
