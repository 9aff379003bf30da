"""The issuance flow in one process, without Airflow: the same functions the DAG's tasks
call, in the same order. Operations can issue when the scheduler is down, and the
benchmark can tell Airflow's overhead from the work."""

from __future__ import annotations

from jobs.settings import Settings, get_settings


def issue_run(
    run_id: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    settings: Settings | None = None,
    progress: bool = True,
) -> dict:
    """Run (or finish) one issuance run; returns its summary."""
    from jobs import flow

    s = settings or get_settings()
    if batch_size:
        s = s.model_copy(update={"batch_size": batch_size})
    run_id = flow.begin(run_id, {"limit": limit, "batch_size": s.batch_size, "via": "cli"}, s)
    error: Exception | None = None
    try:
        flow.extract(run_id, limit=limit, settings=s)
        flow.validate(run_id, "nvr_extract", settings=s)
        flow.map_payloads(run_id, settings=s)
        flow.validate(run_id, "dcc_payload", settings=s)
        batch_ids = flow.plan(run_id, settings=s)
        _run_batches(batch_ids, s, progress)
    except Exception as exc:  # recorded on the run; the summary says what happened
        error = exc
        flow.record_failure(run_id, f"{type(exc).__name__}: {exc}", s)
    summary = flow.finish(run_id, settings=s)
    if error is not None:
        summary["state"] = "FAILED"
        summary["error"] = f"{type(error).__name__}: {error}"
    return summary


def _run_batches(batch_ids: list[str], s: Settings, progress: bool) -> None:
    from rich.progress import Progress

    from jobs import flow

    steps = ("sign", "render", "deliver")
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("batches", total=len(batch_ids) * len(steps))
        failures = []
        for batch_id in batch_ids:
            try:
                for step in steps:
                    flow.batch_step(batch_id, step, settings=s)
                    bar.advance(task)
            except Exception as exc:  # the batch is FAILED in the ledger; go on with others
                failures.append(f"{batch_id}: {type(exc).__name__}: {exc}")
        if failures:
            raise RuntimeError(f"{len(failures)} batch(es) failed: " + "; ".join(failures[:5]))
