"""``bevis seed``, ``bevis extract``, ``bevis orders ...`` and the sources benchmarks."""

from __future__ import annotations

import typer

from jobs.cli import options


def _fail(exc: BaseException, code: int = 2) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code) from exc


# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command()
def seed(
    persons: int = typer.Option(..., "--persons", min=1, help="People in the register."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same register."),
    defect_rate: float = typer.Option(
        0.01, "--defect-rate", min=0.0, max=0.5, help="Share of orders with a defect."
    ),
    db: str | None = typer.Option(None, "--db", help="Sources database URL (replaced)."),
    force: bool = typer.Option(
        False, "--force", help="Replace a database that 'bevis seed' did not make."
    ),
) -> None:
    """Replace the sources database with a synthetic register (population, NVR events,
    orders) and write <data_dir>/seed-manifest.json with the truth. A database that the
    seeder did not make (one holding other data) is refused unless --force."""
    import json

    from jobs.db import DatabaseUnavailable
    from jobs.devtools.seed import NotSeeded
    from jobs.devtools.seed import seed as run_seed

    try:
        m = run_seed(persons, seed=seed, defect_rate=defect_rate, url=db, force=force)
    except (DatabaseUnavailable, NotSeeded) as exc:
        _fail(exc)
    summary = {k: v for k, v in m.to_dict().items() if k != "defects"}
    typer.echo(json.dumps(summary, ensure_ascii=False))


@app.command()
def extract(
    run: str = typer.Option(..., "--run", help="Run id.", callback=options.run_id),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Claim at most N orders."),
) -> None:
    """Claim the pending consented orders and write the run's extract.parquet."""
    import json

    from jobs.db import DatabaseUnavailable
    from jobs.steps.extract import ExtractError
    from jobs.steps.extract import extract as run_extract

    try:
        r = run_extract(run, limit=limit)
    except (DatabaseUnavailable, ExtractError) as exc:
        _fail(exc)
    typer.echo(json.dumps(r.meta()))


orders = typer.Typer(help="Certificate orders: states and claims.", no_args_is_help=True)
app.add_typer(orders, name="orders")


@orders.command("release")
def orders_release(
    run: str = typer.Option(
        ..., "--run", help="The (failed) run whose claims to give back.", callback=options.run_id
    ),
    order: list[str] | None = typer.Option(None, "--order", help="Only these order ids."),
) -> None:
    """Give the orders a failed run claimed back to PENDING (never fulfilled ones)."""
    from jobs.sources.orders import release

    n = release(run, order or None)
    typer.echo(f"released {n} orders of run {run}")


@orders.command("status")
def orders_status(
    run: str | None = typer.Option(
        None, "--run", help="Only the orders of this run.", callback=options.run_id
    ),
) -> None:
    """Number of orders per state."""
    import json

    from jobs.sources.orders import states

    typer.echo(json.dumps(states(run), sort_keys=True))


@bench.command("seed")
def bench_seed(
    persons: int = typer.Option(100_000, "--persons", min=1),
    db: str | None = typer.Option(None, "--db", help="A scratch database (replaced)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Seed a scratch register; last line: JSON with persons/s, rows/s and peak RSS."""
    import json

    from jobs.devtools.seed import bench_seed as run

    typer.echo(json.dumps(run(persons, db=db, seed=seed)))


@bench.command("extract")
def bench_extract(
    persons: int = typer.Option(100_000, "--persons", min=1),
    db: str | None = typer.Option(None, "--db", help="A scratch database (replaced)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Seed a scratch register, then extract it in a fresh process; last line: JSON with
    rows/s and the extract's peak RSS."""
    import json

    from jobs.devtools.bench_extract import bench_extract as run

    typer.echo(json.dumps(run(persons, db=db, seed=seed)))
