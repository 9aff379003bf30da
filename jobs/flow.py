"""The issuance flow as plain functions: what each DAG task (and the CLI) calls.

Every function takes and returns ids (run id, batch ids) and small dicts of counts, never
data; the data rests in the run folder and the ledger. Each is idempotent, so that Airflow
may retry it and operations may rerun it. Step durations are recorded in the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from jobs.ids import airflow_run_id as airflow_run_id  # public in flow: the DAGs call it there
from jobs.ids import new_run_id, parse_batch_id
from jobs.log import get_logger, mask_identity_numbers
from jobs.settings import Settings, get_settings

log = get_logger(__name__)

# Steps whose quarantined orders count as "refused" (the DCC could not be made or signed),
# as opposed to "quarantined" (the register's data failed the data-quality suite).
REFUSING_STEPS = ("map", "dcc_payload", "sign", "signed_batch")
# The run-level steps a complete run has passed (recorded in Run.step_seconds on success).
RUN_STEPS = ("extract", "validate_nvr_extract", "map", "validate_dcc_payload", "plan")
# The DAG's run-level tasks and the run-level step each stands for (a failure of a task not
# named here, a batch task or finish, is not a run-level one).
RUN_LEVEL_TASKS = {
    "begin": "begin",
    "extract": "extract",
    "validate": "validate_nvr_extract",
    "map": "map",
    "plan": "plan",
}


def _final(exc: BaseException) -> bool:
    """Does this error end the run whatever a retry does (the retry policy fails it at once)?"""
    from jobs.errors import NotRetryable, RunGateFailed
    from jobs.settings import DefaultSecretError

    return isinstance(exc, NotRetryable | RunGateFailed | DefaultSecretError)


@contextmanager
def _timed(
    run_id: str, step: str, settings: Settings | None = None, run_level: bool = True
) -> Iterator[None]:
    """Record the step's duration on the run — only when it succeeds, so that the recorded
    steps also tell how far a run got. A run-level step that fails for good (an extract
    error, a data-quality gate) stops the run: FAILED with its error, at once, whoever
    called it; one that succeeds again after such a stop resumes the run."""
    from jobs.ledger.runs import record_step_time, resume_after

    t0 = time.perf_counter()
    try:
        yield
    except Exception as exc:
        if run_level and _final(exc):
            record_failure(run_id, f"{type(exc).__name__}: {exc}", settings, step=step)
        raise
    record_step_time(run_id, step, time.perf_counter() - t0, settings=settings)
    if run_level:
        resume_after(run_id, step, settings)


def begin(
    run_id: str | None = None,
    parameters: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> str:
    """Migrate the databases and open the run in the ledger (idempotent)."""
    from jobs.db import migrate_all
    from jobs.ledger.runs import start_run

    s = settings or get_settings()
    migrate_all(s)
    run_id = run_id or new_run_id()
    start_run(run_id, parameters=parameters or {}, settings=s)
    log.info("run started", run_id=run_id)
    return run_id


def extract(run_id: str, limit: int | None = None, settings: Settings | None = None) -> dict:
    from jobs.steps.extract import extract as do_extract

    with _timed(run_id, "extract", settings):
        result = do_extract(run_id, settings=settings, limit=limit)
    return {"run_id": run_id, "orders": result.orders, "rows": result.rows}


def validate(
    run_id: str, suite: str, batch_id: str | None = None, settings: Settings | None = None
) -> dict:
    from jobs.steps.validate import validate as do_validate

    with _timed(run_id, f"validate_{suite}", settings, run_level=batch_id is None):
        result = do_validate(run_id, suite, settings=settings, batch_id=batch_id)
    return _small(result)


def map_payloads(run_id: str, settings: Settings | None = None) -> dict:
    from jobs.steps.mapping import map_run

    with _timed(run_id, "map", settings):
        result = map_run(run_id, settings=settings)
    return _small(result)


def plan(run_id: str, settings: Settings | None = None) -> list[str]:
    from jobs.batches import plan as do_plan

    with _timed(run_id, "plan", settings):
        return do_plan(run_id, settings=settings)


def batch_step(batch_id: str, step: str, settings: Settings | None = None) -> str:
    """Run one step (sign, render, deliver) of one batch; returns the batch id."""
    from jobs.batches import run_step

    run_step(batch_id, step, settings=settings)
    if step == "sign":
        run_id = batch_id.rsplit("-b", 1)[0]
        validate(run_id, "signed_batch", batch_id=batch_id, settings=settings)
    return batch_id


def finish(run_id: str, dry_run: bool = False, settings: Settings | None = None) -> dict:
    """Close the run: mark orders fulfilled (or release them on a dry run), decide the run's
    state from what happened, refresh the reporting tables, and return the summary.

    The state is decided once, from the ledger: a run stopped by a run-level step (an
    extract error, a data-quality gate: ``Run.failed_step``) stays FAILED with that error;
    a run that never got as far as its plan (its run-level steps are not all recorded, nor
    any batch) is FAILED; a run with a failed or unfinished batch is FAILED naming them;
    else SUCCEEDED. Calling it again decides the same."""
    from jobs.ledger.models import BatchState, RunState
    from jobs.ledger.runs import finish_run
    from jobs.sources import orders

    s = settings or get_settings()
    summary = run_summary(run_id, s)
    if dry_run:
        orders.release(run_id, settings=s)
    elif summary["issued_order_ids"]:
        orders.fulfil(run_id, summary["issued_order_ids"], settings=s)
    states = summary["batch_states"]
    failed = sorted(b for b, st in states.items() if st == BatchState.FAILED.value)
    unfinished = [
        b
        for b, st in states.items()
        if st not in (BatchState.DELIVERED.value, BatchState.FAILED.value)
    ]
    needed = RUN_STEPS[:-1] if dry_run else RUN_STEPS
    missing = [st for st in needed if st not in summary["step_seconds"]]
    if summary["failed_step"]:
        finish_run(run_id, RunState.FAILED, error=summary["error"], settings=s)
    elif missing and not states:
        error = (
            f"the run stopped before {missing[0]} (run-level steps not done: "
            f"{', '.join(missing)}); see the failed task's log"
        )
        finish_run(run_id, RunState.FAILED, error=error, settings=s)
    elif failed or unfinished:
        errors = _batch_errors(failed, s)
        error = f"batches not delivered: {len(failed)} failed, {len(unfinished)} unfinished" + (
            f" ({errors})" if errors else ""
        )
        finish_run(run_id, RunState.FAILED, error=error, settings=s)
    else:
        finish_run(run_id, RunState.SUCCEEDED, settings=s)
    from jobs.reporting.tables import refresh

    refresh(settings=s)
    summary = run_summary(run_id, s)
    summary.pop("issued_order_ids")
    return summary


def _batch_errors(batch_ids: list[str], s: Settings, shown: int = 3) -> str:
    """The first failed batches with their errors, for the run's error text."""
    from sqlalchemy import select

    from jobs.ledger.models import Batch
    from jobs.ledger.runs import ledger

    if not batch_ids:
        return ""
    with ledger(s).connect() as conn:
        rows = conn.execute(
            select(Batch.id, Batch.failed_step, Batch.error)
            .where(Batch.id.in_(batch_ids[:shown]))
            .order_by(Batch.id)
        ).all()
    more = f"; and {len(batch_ids) - shown} more" if len(batch_ids) > shown else ""
    return "; ".join(f"{b.id} {b.failed_step}: {(b.error or '')[:200]}" for b in rows) + more


def record_failure(
    run_id: str,
    error: str,
    settings: Settings | None = None,
    *,
    step: str | None = None,
    task: str | None = None,
) -> None:
    """A step or task failed for good: write it on the run in the ledger (no personal data).
    ``step`` names the run-level step (``task``, the DAG's task id, is mapped to one by
    RUN_LEVEL_TASKS): such a failure stops the run for good (jobs.ledger.runs.fail_run). The
    first failure is kept; a run not (yet) in the ledger has nothing to record on."""
    from jobs.errors import UnknownRun
    from jobs.ledger.runs import fail_run

    step = step or RUN_LEVEL_TASKS.get(task or "")
    try:
        fail_run(run_id, mask_identity_numbers(error)[:2000], step=step, settings=settings)
    except UnknownRun:
        log.warning("failure of a run not in the ledger", run_id=run_id, step=step)


def claimed_orders(
    run_id: str, settings: Settings | None = None, shown: int = 20
) -> dict[str, Any] | None:
    """The orders ``run_id`` still holds (CLAIMED, or DUPLICATE of a claimed one) — a failed
    run's hold them until released — with the first ``shown`` order ids and the command that
    gives them back. None when the sources database cannot say (not there, not reachable)."""
    from pathlib import Path

    from sqlalchemy import select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from jobs.db import engine
    from jobs.sources.models import CLAIMED, DUPLICATE, Order
    from jobs.sources.orders import states

    s = settings or get_settings()
    url = make_url(s.resolved_source_url())
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None  # no register here: nothing to ask (and no empty file to leave behind)
    held = (CLAIMED, DUPLICATE)
    try:
        by_state = {k: v for k, v in states(run_id, settings=s).items() if k in held}
        with engine(url.render_as_string(hide_password=False)).connect() as conn:
            ids = list(
                conn.execute(
                    select(Order.order_id)
                    .where(Order.claimed_by_run == run_id, Order.state.in_(held))
                    .order_by(Order.order_id)
                    .limit(shown)
                ).scalars()
            )
    except SQLAlchemyError as exc:
        log.warning("claimed orders unknown", run_id=run_id, error=type(exc).__name__)
        return None
    count = sum(by_state.values())
    return {
        "count": count,
        "by_state": by_state,
        "order_ids": ids,
        "release": f"bevis orders release --run {run_id}" if count else None,
    }


def run_summary(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Counts of a run, from the ledger and the run's extract metadata (never from XCom).
    Every order claimed ends in one of: issued, quarantined, refused, withdrawn."""
    import json

    from sqlalchemy import func, select

    from jobs.db import engine
    from jobs.ledger.models import Batch, Certificate, Outcome, QuarantineEntry, Run
    from jobs.ledger.outcomes import WITHDRAWN_REASON
    from jobs.storage import RunPaths

    s = settings or get_settings()
    paths = RunPaths.of(run_id, s)
    meta = json.loads(paths.extract_meta.read_text()) if paths.extract_meta.exists() else {}
    with engine(s.resolved_ledger_url()).connect() as conn:
        run = conn.execute(select(Run).where(Run.id == run_id)).first()
        q_rows = conn.execute(
            select(
                QuarantineEntry.step, QuarantineEntry.reason_code, QuarantineEntry.order_id
            ).where(QuarantineEntry.run_id == run_id)
        ).all()
        cert_outcomes = conn.execute(
            select(Certificate.order_id, Certificate.outcome).where(Certificate.run_id == run_id)
        ).all()
        outcomes = dict(
            conn.execute(
                select(Certificate.outcome, func.count())
                .where(Certificate.run_id == run_id)
                .group_by(Certificate.outcome)
            ).all()
        )
        deferred_reasons = dict(
            conn.execute(
                select(Certificate.outcome_reason, func.count())
                .where(Certificate.run_id == run_id, Certificate.outcome == "DEFERRED")
                .group_by(Certificate.outcome_reason)
            ).all()
        )
        batch_states = dict(
            conn.execute(select(Batch.id, Batch.state).where(Batch.run_id == run_id)).all()
        )

    # WITHDRAWN: consent lapsed after the extract — not signed (quarantined by sign with
    # reason consent_withdrawn), or signed and never delivered (outcome WITHDRAWN). Counted
    # apart: neither issued, nor refused, nor quarantined.
    issued_ids = [o for o, oc in cert_outcomes if oc != Outcome.WITHDRAWN]
    issued = set(issued_ids)
    withdrawn = {o for o, oc in cert_outcomes if oc == Outcome.WITHDRAWN}
    withdrawn |= {o for _, reason, o in q_rows if reason == WITHDRAWN_REASON} - issued
    quarantined: dict[str, set[str]] = {}
    refused: dict[str, set[str]] = {}
    for step, reason, order_id in q_rows:
        if order_id in issued or order_id in withdrawn:
            continue
        target = refused if step in REFUSING_STEPS else quarantined
        target.setdefault(reason, set()).add(order_id)
    q_orders = set().union(*quarantined.values()) if quarantined else set()
    r_orders = (set().union(*refused.values()) if refused else set()) - q_orders
    started = run.started_at if run else None
    finished = run.finished_at if run else None
    duration = (finished - started).total_seconds() if started and finished else None
    outcome = {str(getattr(k, "value", k)): v for k, v in outcomes.items()}
    return {
        "run_id": run_id,
        "state": str(getattr(run.state, "value", run.state)) if run else None,
        "error": run.error if run else None,
        "failed_step": run.failed_step if run else None,
        "orders": meta.get("orders_claimed", meta.get("orders")),
        "extracted": meta.get("orders"),
        "extracted_rows": meta.get("rows"),
        "quarantined": len(q_orders),
        "quarantined_by_reason": {k: len(v) for k, v in sorted(quarantined.items())},
        "refused": len(r_orders),
        "refused_by_reason": {k: len(v) for k, v in sorted(refused.items())},
        "issued": len(issued),
        "withdrawn": len(withdrawn),
        "withdrawn_after_signing": outcome.get("WITHDRAWN", 0),
        "delivered_digitally": outcome.get("DIGITAL", 0),
        "queued_for_paper": outcome.get("PAPER", 0),
        "deferred": outcome.get("DEFERRED", 0),
        "deferred_by_reason": {str(k): v for k, v in deferred_reasons.items()},
        "undelivered": outcome.get("None", 0),
        "duration_s": duration,
        "certificates_per_s": (len(issued) / duration) if duration else None,
        "step_seconds": dict(run.step_seconds or {}) if run else {},
        "batch_states": {k: str(getattr(v, "value", v)) for k, v in batch_states.items()},
        "issued_order_ids": issued_ids,
    }


def _small(result: Any) -> dict:
    """A result object as a small JSON-able dict (for XCom and logs)."""
    if isinstance(result, dict):
        return result
    if hasattr(result, "__dataclass_fields__"):
        import dataclasses

        out = {}
        for f in dataclasses.fields(result):
            v = getattr(result, f.name)
            out[f.name] = str(v) if not isinstance(v, int | float | str | bool | type(None)) else v
        return out
    return {"result": str(result)}


STEPS: dict[str, Callable[..., Any]] = {
    "begin": begin,
    "extract": extract,
    "validate": validate,
    "map": map_payloads,
    "plan": plan,
    "batch_step": batch_step,
    "finish": finish,
}


# --------------------------------------------------------------------------- reruns
def rerun(
    batch_ids: Sequence[str],
    settings: Settings | None = None,
    on_step: Callable[[str, str], None] | None = None,
    validate_signed: bool = True,
    through: str | None = None,
    takeover: bool = False,
) -> list[dict[str, Any]]:
    """Run the missing steps of each batch directly (the CLI's ``batches rerun``), with the
    signed_batch suite after sign as in the DAG, up to and including ``through``
    (default: every step). Goes on with the next batch when
    one fails; each result says what happened."""
    from sqlalchemy import select

    from jobs.batches import STEP_RANK, STEPS, missing_steps, run_step
    from jobs.ledger.models import Batch
    from jobs.ledger.runs import ledger

    s = settings or get_settings()
    eng = ledger(s)
    steps_here = list(STEPS)
    if through is not None:
        if through not in STEPS:
            raise ValueError(f"unknown step {through!r}; expected one of {', '.join(STEPS)}")
        steps_here = [st for st in steps_here if STEP_RANK[st] <= STEP_RANK[through]]
    results = []
    for bid in batch_ids:
        with eng.connect() as conn:
            row = conn.execute(
                select(Batch.state, Batch.failed_step).where(Batch.id == bid)
            ).first()
        if row is None:
            results.append(
                {"batch_id": bid, "ok": False, "error": f"batch {bid} is not in the ledger"}
            )
            continue
        todo = [st for st in missing_steps(row.state, row.failed_step) if st in steps_here]
        done: list[str] = []
        entry: dict[str, Any] = {"batch_id": bid, "ok": True, "steps": done}
        for st in todo:
            if on_step:
                on_step(bid, st)
            try:
                run_step(bid, st, s, takeover=takeover)
            except Exception as exc:
                entry.update(
                    ok=False,
                    failed_step=st,
                    error=mask_identity_numbers(f"{type(exc).__name__}: {exc}"),
                )
                break
            done.append(st)
            if st == "sign" and validate_signed:
                try:
                    _validate_signed(bid, s)
                except Exception as exc:
                    entry.update(
                        ok=False,
                        failed_step="signed_batch",
                        error=mask_identity_numbers(f"{type(exc).__name__}: {exc}"),
                    )
                    break
        with eng.connect() as conn:
            entry["state"] = (
                conn.execute(select(Batch.state).where(Batch.id == bid)).scalar_one().value
            )
        results.append(entry)
    return results


def close_finished_runs(run_ids: Iterable[str], settings: Settings | None = None) -> list[str]:
    """After reruns: close runs that had already ended (not RUNNING — the DAG's finish task
    has run) and whose batches are now all DELIVERED, through ``jobs.flow.finish`` (orders
    fulfilled, run state from the ledger, reporting refreshed). Returns the closed runs."""
    from sqlalchemy import select

    from jobs.ledger.models import Batch, BatchState, Run, RunState
    from jobs.ledger.runs import ledger

    s = settings or get_settings()
    closed = []
    for run_id in sorted(set(run_ids)):
        with ledger(s).connect() as conn:
            state = conn.execute(select(Run.state).where(Run.id == run_id)).scalar_one_or_none()
            states = set(conn.execute(select(Batch.state).where(Batch.run_id == run_id)).scalars())
        if state in (None, RunState.RUNNING) or states != {BatchState.DELIVERED}:
            continue
        finish(run_id, settings=s)
        closed.append(run_id)
    return closed


def _validate_signed(batch_id: str, settings: Settings) -> None:
    """The signed_batch data-quality suite, as the DAG runs it after sign."""
    from jobs.steps.validate import validate as do_validate

    run_id, _ = parse_batch_id(batch_id)
    do_validate(run_id, "signed_batch", settings=settings, batch_id=batch_id)


# --------------------------------------------------------------------------- bevis issue
def issue_run(
    run_id: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    settings: Settings | None = None,
    progress: bool = True,
) -> dict:
    """Run (or finish) one issuance run; returns its summary."""
    s = settings or get_settings()
    if batch_size:
        s = s.model_copy(update={"batch_size": batch_size})
    run_id = begin(run_id, {"limit": limit, "batch_size": s.batch_size, "via": "cli"}, s)
    step: str | None = "extract"  # the run-level step under way (None: the batches)
    try:
        extract(run_id, limit=limit, settings=s)
        step = "validate_nvr_extract"
        validate(run_id, "nvr_extract", settings=s)
        step = "map"
        map_payloads(run_id, settings=s)
        step = "validate_dcc_payload"
        validate(run_id, "dcc_payload", settings=s)
        step = "plan"
        batch_ids = plan(run_id, settings=s)
        step = None
        _run_batches(batch_ids, s, progress)
    except Exception as exc:  # recorded on the run; finish decides the state from the ledger
        record_failure(run_id, f"{type(exc).__name__}: {exc}", s, step=step)
    return finish(run_id, settings=s)


def _run_batches(batch_ids: list[str], s: Settings, progress: bool) -> None:
    from rich.progress import Progress

    steps = ("sign", "render", "deliver")
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("batches", total=len(batch_ids) * len(steps))
        failures = []
        for batch_id in batch_ids:
            try:
                for step in steps:
                    batch_step(batch_id, step, settings=s)
                    bar.advance(task)
            except Exception as exc:  # the batch is FAILED in the ledger; go on with others
                failures.append(f"{batch_id}: {type(exc).__name__}: {exc}")
        if failures:
            raise RuntimeError(f"{len(failures)} batch(es) failed: " + "; ".join(failures[:5]))
