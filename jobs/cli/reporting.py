"""``bevis report`` and ``bevis bench report``: issuance statistics for analysts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option
        ) from exc


# Commands of this area at the top level of `bevis`, and its `bevis bench ...` commands;
# jobs/cli/__init__.py merges both into the one app.
app = typer.Typer()
bench = typer.Typer()


@app.command()
def report(
    out: Path = typer.Option(..., "--out", help="Folder for report.html and data/*.csv|parquet."),
    date_from: str | None = typer.Option(None, "--from", help="First day (YYYY-MM-DD, UTC)."),
    date_to: str | None = typer.Option(None, "--to", help="Last day (YYYY-MM-DD, UTC)."),
    no_refresh: bool = typer.Option(
        False, "--no-refresh", help="Use the reporting tables as they are (no recompute)."
    ),
) -> None:
    """Recompute the reporting tables from the ledger and write the HTML report with
    Parquet and CSV exports; counts below the small-count threshold are withheld."""
    from jobs.db import DatabaseUnavailable, current_engine
    from jobs.errors import DatabaseMissing
    from jobs.reporting.publish import build_report
    from jobs.settings import get_settings

    start, end = _day(date_from, "--from"), _day(date_to, "--to")
    s = get_settings()
    try:  # a report reads the ledger: it never creates nor migrates a database
        current_engine("ledger", s.resolved_ledger_url(), "BEVIS_LEDGER_URL")
        current_engine("reporting", s.resolved_reporting_url(), "BEVIS_REPORTING_URL")
        path = build_report(out, start, end, settings=s, refresh_first=not no_refresh)
    except (DatabaseMissing, DatabaseUnavailable, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"report: {path}")
    typer.echo(f"exports: {path.parent / 'data'}")


@bench.command("report")
def bench_report(
    certificates: int = typer.Option(10_000, "--certificates", "-n", min=1),
    days: int = typer.Option(30, "--days", min=1, help="Days the certificates spread over."),
    seed: int = typer.Option(0, "--seed"),
    ledger_url: str | None = typer.Option(
        None, "--ledger-url", help="Ledger to fill (default: a fresh SQLite file)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Keep the report here."),
) -> None:
    """Fill a fresh ledger with N synthetic certificates, refresh the reporting tables
    and build the report; prints timings, the last line is JSON."""
    import json
    import tempfile
    import time

    from jobs.devtools.synthetic_ledger import synthetic_ledger
    from jobs.reporting.publish import build_report, publish
    from jobs.reporting.tables import refresh
    from jobs.settings import get_settings

    with tempfile.TemporaryDirectory(prefix="bevis-bench-report-") as tmp:
        s = get_settings(data_dir=Path(tmp), ledger_url=ledger_url, reporting_url=ledger_url)
        url = s.resolved_ledger_url()
        t0 = time.perf_counter()
        counts = synthetic_ledger(certificates, url, seed=seed, days=days)
        t1 = time.perf_counter()
        refreshed = refresh(s)
        t2 = time.perf_counter()
        pub = publish(settings=s)
        t3 = time.perf_counter()
        html = build_report(out or Path(tmp) / "report", settings=s, refresh_first=False)
        t4 = time.perf_counter()
        withheld = sum(int((f["suppressed"] != "").sum()) for f in pub.tables.values() if len(f))
        cells = sum(len(f) for f in pub.tables.values())
        result = {
            "bench": "report",
            "certificates": certificates,
            "ledger_rows": counts,
            "reporting_rows": refreshed.rows,
            "populate_s": round(t1 - t0, 3),
            "refresh_s": round(t2 - t1, 3),
            "publish_s": round(t3 - t2, 3),
            "build_s": round(t4 - t3, 3),
            "published_cells": cells,
            "withheld_cells": withheld,
            "html_bytes": html.stat().st_size,
            "certificates_per_s_refresh": round(certificates / (t2 - t1), 1),
        }
        typer.echo(
            f"populate {result['populate_s']} s, refresh {result['refresh_s']} s, "
            f"publish {result['publish_s']} s, build {result['build_s']} s"
        )
        typer.echo(json.dumps(result))
