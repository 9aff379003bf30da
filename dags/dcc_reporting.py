"""
### dcc_reporting — reporting tables and the analysts' HTML report

Runs whenever an issuance run updates the ledger (the `bevis_issuance_ledger` asset):
refreshes the reporting tables from the ledger (never from task values, so a report after a
partial rerun is right) and writes the self-contained HTML report with Parquet/CSV exports
to `<data_dir>/reports/latest/`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from dags._common import DEFAULT_ARGS, ISSUANCE_LEDGER


@dag(
    dag_id="dcc_reporting",
    description="Refresh reporting tables and the HTML report when the issuance ledger changes",
    schedule=[ISSUANCE_LEDGER],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["bevis", "dcc", "reporting"],
    doc_md=__doc__,
)
def dcc_reporting():
    @task
    def refresh() -> None:
        from jobs.reporting.tables import refresh as do_refresh

        do_refresh()

    @task
    def report() -> str:
        from jobs.reporting.publish import build_report
        from jobs.settings import get_settings

        out = get_settings().resolved_data_dir() / "reports" / "latest"
        return str(build_report(out, refresh_first=False))

    refresh() >> report()


dcc_reporting()
