"""
### dcc_issuance — issue EU Digital COVID Certificates for consented orders

`begin → extract → validate (nvr_extract) → map (+ dcc_payload suite) → plan →
batch[sign → render → deliver] (mapped per batch) → finish (ledger, reporting tables)`

* **Params**: `batch_size` (certificates per batch), `limit` (at most this many orders; for
  drills), `dry_run` (extract, validate and map, then release the orders: nothing is signed).
* **Reruns**: clear the failed `batch.*` task instances (UI, or `bevis batches rerun
  --via-airflow`), or run `bevis batches rerun --failed` outside Airflow. A rerun of a finished
  step is a no-op; nothing is issued or delivered twice (see docs/runbook.md).
* Tasks pass run ids and batch ids only; data rests in the run folder and the ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task, task_group
from airflow.timetables.trigger import CronTriggerTimetable

from dags._common import (
    DEFAULT_ARGS,
    ISSUANCE_LEDGER,
    MAILBOX_POOL,
    RETRY_POLICY,
    SIGNING_POOL,
    record_failure,
)


@dag(
    dag_id="dcc_issuance",
    description="Issue EU DCCs for consented orders: extract → validate → map → sign → render → deliver",
    schedule=CronTriggerTimetable("0 7-17 * * 1-5", timezone="Europe/Stockholm"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    default_args={
        **DEFAULT_ARGS,
        "on_failure_callback": record_failure,
        "retry_policy": RETRY_POLICY,
    },
    tags=["bevis", "dcc", "issuance"],
    doc_md=__doc__,
    params={
        "batch_size": Param(
            5000,
            type="integer",
            minimum=1,
            maximum=100_000,
            description="Certificates per batch (at most 1024 batches per run).",
        ),
        "limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Take at most this many orders (drills, canaries).",
        ),
        "dry_run": Param(
            False, type="boolean", description="Extract, validate and map, then release the orders."
        ),
    },
)
def dcc_issuance():
    @task
    def begin() -> str:
        from jobs import flow

        ctx = get_current_context()
        return flow.begin(flow.airflow_run_id(ctx["dag_run"].run_id), dict(ctx["params"]))

    @task
    def extract(bevis_run: str) -> str:
        from jobs import flow

        flow.extract(bevis_run, limit=get_current_context()["params"]["limit"])
        return bevis_run

    @task
    def validate(bevis_run: str) -> str:
        from jobs import flow

        flow.validate(bevis_run, "nvr_extract")
        return bevis_run

    @task(task_id="map")
    def map_payloads(bevis_run: str) -> str:
        from jobs import flow

        flow.map_payloads(bevis_run)
        flow.validate(bevis_run, "dcc_payload")
        return bevis_run

    @task
    def plan(bevis_run: str) -> list[str]:
        from jobs import flow
        from jobs.settings import get_settings

        params = get_current_context()["params"]
        if params["dry_run"]:
            return []
        return flow.plan(bevis_run, settings=get_settings(batch_size=params["batch_size"]))

    @task_group(group_id="batch")
    def batch(batch_id: str):
        @task(pool=SIGNING_POOL, max_active_tis_per_dagrun=1, map_index_template="{{ batch_id }}")
        def sign(batch_id: str) -> str:
            from jobs import flow

            get_current_context()["batch_id"] = batch_id
            return flow.batch_step(batch_id, "sign")

        @task(max_active_tis_per_dagrun=2, map_index_template="{{ batch_id }}")
        def render(batch_id: str) -> str:
            from jobs import flow

            get_current_context()["batch_id"] = batch_id
            return flow.batch_step(batch_id, "render")

        @task(pool=MAILBOX_POOL, max_active_tis_per_dagrun=4, map_index_template="{{ batch_id }}")
        def deliver(batch_id: str) -> str:
            from jobs import flow

            get_current_context()["batch_id"] = batch_id
            return flow.batch_step(batch_id, "deliver")

        deliver(render(sign(batch_id)))

    @task(trigger_rule="all_done", outlets=[ISSUANCE_LEDGER], retries=1)
    def finish(bevis_run: str) -> dict:
        """Runs whatever happened upstream (all_done) and decides the run's state; a FAILED
        run fails this task, and with it the DAG run."""
        from jobs import flow
        from jobs.errors import RunFailed

        summary = flow.finish(bevis_run, dry_run=get_current_context()["params"]["dry_run"])
        if summary["state"] == "FAILED":
            raise RunFailed(f"run {bevis_run} FAILED: {summary['error']} (docs/runbook.md)")
        return {k: v for k, v in summary.items() if k != "batch_states"}

    run = begin()
    mapped = map_payloads(validate(extract(run)))
    batches = batch.expand(batch_id=plan(mapped))
    batches >> finish(run)


dcc_issuance()
