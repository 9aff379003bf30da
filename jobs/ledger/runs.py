"""Issuance runs in the ledger: when they started and ended, how they went, how long each
step took.

A run id names a folder and appears in batch ids, so it is made of digits, letters and
dashes only (``20261122T141500-a1b2``: UTC start time plus a random suffix, so two runs
started in the same second never collide). Every function is idempotent.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from jobs.errors import UnknownRun
from jobs.ids import check_run_id, new_run_id
from jobs.ledger.models import Batch, BatchState, Certificate, Run, RunState
from jobs.log import get_logger
from jobs.settings import Settings, get_settings

log = get_logger(__name__)


def ledger(settings: Settings | None = None) -> Engine:
    """The migrated ledger engine of these settings."""
    from jobs.db import engine, migrate

    s = settings or get_settings()
    url = s.resolved_ledger_url()
    if url not in _MIGRATED:  # once per process and database: every step calls this
        migrate("ledger", url)
        _MIGRATED.add(url)
    return engine(url)


_MIGRATED: set[str] = set()


def start_run(
    run_id: str | None = None,
    parameters: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> str:
    """Record a run as RUNNING and return its id. Starting an existing run again (a rerun
    after a failure) sets it back to RUNNING and merges the parameters."""
    run_id = check_run_id(run_id or new_run_id())
    with ledger(settings).begin() as conn:
        row = conn.execute(select(Run.parameters).where(Run.id == run_id)).first()
        if row is None:
            conn.execute(
                Run.__table__.insert(),
                {
                    "id": run_id,
                    "started_at": datetime.now(UTC),
                    "state": RunState.RUNNING,
                    "parameters": dict(parameters or {}),
                    "counts": {},
                    "step_seconds": {},
                },
            )
            log.info("run started", run_id=run_id)
        else:
            merged = {**(row.parameters or {}), **(parameters or {})}
            conn.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(
                    state=RunState.RUNNING,
                    finished_at=None,
                    error=None,
                    failed_step=None,
                    parameters=merged,
                )
            )
            log.info("run resumed", run_id=run_id)
    return run_id


def ensure_run(run_id: str, settings: Settings | None = None) -> None:
    """Create the run row if it is missing (as RUNNING); leave an existing run alone."""
    with ledger(settings).connect() as conn:
        known = conn.execute(select(Run.id).where(Run.id == run_id)).first()
    if known is None:
        from sqlalchemy.exc import IntegrityError

        with contextlib.suppress(IntegrityError):  # created concurrently
            start_run(run_id, settings=settings)


def _lock_run(conn, run_id: str) -> None:
    """Take the write lock on the run row before a read-modify-write of its JSON columns.
    A no-op UPDATE does it on both dialects (row lock on PostgreSQL, the database write lock
    on SQLite, where a read first and a write later could fail with SQLITE_BUSY_SNAPSHOT)."""
    res = conn.execute(update(Run).where(Run.id == run_id).values(state=Run.state))
    if res.rowcount == 0:
        raise UnknownRun(f"run {run_id} is not in the ledger")


def run_counts(conn, run_id: str) -> dict[str, int]:
    """Counts of a run from the ledger itself: batches per state (every state, 0 included,
    so that these figures replace older ones), certificates."""
    counts: dict[str, int] = {f"batches_{s.value.lower()}": 0 for s in BatchState}
    for state, n in conn.execute(
        select(Batch.state, func.count()).where(Batch.run_id == run_id).group_by(Batch.state)
    ):
        counts[f"batches_{BatchState(state).value.lower()}"] = n
    counts["batches"] = sum(v for k, v in counts.items() if k.startswith("batches_"))
    counts["certificates"] = conn.execute(
        select(func.count()).select_from(Certificate).where(Certificate.run_id == run_id)
    ).scalar_one()
    return counts


def _live_counts(conn, run_id: str, old: dict[str, Any] | None) -> dict[str, Any]:
    """The run's counts now: the ledger's own figures replace every earlier one of theirs
    (a batch that failed and was rerun no longer counts as failed); figures that steps
    recorded of themselves (payloads, planned_batches) are kept."""
    live = run_counts(conn, run_id)
    kept = {
        k: v
        for k, v in (old or {}).items()
        if k not in live and not k.startswith("batches_") and k != "certificates"
    }
    return {**kept, **live}


def finish_run(
    run_id: str,
    state: RunState | str,
    error: str | None = None,
    settings: Settings | None = None,
) -> None:
    """Mark a run SUCCEEDED or FAILED and store its counts as the ledger sees them. A run
    stopped by a run-level step (``failed_step``, see :func:`fail_run`) stays FAILED with
    that step's error, whatever is asked here."""
    from jobs.log import mask_identity_numbers

    state = RunState(state)
    with ledger(settings).begin() as conn:
        _lock_run(conn, run_id)
        row = conn.execute(
            select(Run.counts, Run.failed_step, Run.error).where(Run.id == run_id)
        ).one()
        text = mask_identity_numbers(error)[:4000] if error else None
        if row.failed_step is not None:
            if state is not RunState.FAILED:
                log.warning(
                    "run stays FAILED", run_id=run_id, failed_step=row.failed_step, asked=state
                )
            state, text = RunState.FAILED, row.error
        conn.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                state=state,
                finished_at=datetime.now(UTC),
                error=text,
                counts=_live_counts(conn, run_id, row.counts),
            )
        )
    log.info("run finished", run_id=run_id, state=state.value)


def fail_run(
    run_id: str, error: str, step: str | None = None, settings: Settings | None = None
) -> bool:
    """Record a failure on the run: FAILED, with the error (masked). With ``step``, a
    run-level step (extract, a data-quality gate, ...) stopped the run: it stays FAILED
    (``failed_step``) until that step succeeds again (:func:`resume_after`) or the run is
    started again. The first failure is kept: a later report of it (the scheduler's
    callback after the step recorded its own) changes nothing, and a batch's failure never
    replaces a run-level one. Returns whether this failure was recorded."""
    from jobs.log import mask_identity_numbers

    with ledger(settings).begin() as conn:
        _lock_run(conn, run_id)
        row = conn.execute(
            select(Run.state, Run.error, Run.failed_step, Run.counts).where(Run.id == run_id)
        ).one()
        if row.failed_step is not None:
            return False
        if step is None and row.state is RunState.FAILED and row.error:
            return False
        conn.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                state=RunState.FAILED,
                finished_at=datetime.now(UTC),
                error=mask_identity_numbers(error)[:4000],
                failed_step=step,
                counts=_live_counts(conn, run_id, row.counts),
            )
        )
    log.warning("run failed", run_id=run_id, failed_step=step)
    return True


def resume_after(run_id: str, step: str, settings: Settings | None = None) -> bool:
    """``step`` succeeded: if it is the run-level step that had stopped the run (the
    scheduler ran it again after a fix), the run is RUNNING again. Returns whether."""
    with ledger(settings).begin() as conn:
        res = conn.execute(
            update(Run)
            .where(Run.id == run_id, Run.failed_step == step)
            .values(state=RunState.RUNNING, finished_at=None, error=None, failed_step=None)
        )
    if res.rowcount:
        log.info("run resumed", run_id=run_id, step=step)
    return bool(res.rowcount)


def record_step_time(
    run_id: str, step: str, seconds: float, settings: Settings | None = None
) -> None:
    """Add ``seconds`` to the run's time for ``step`` (per-batch steps add up)."""
    with ledger(settings).begin() as conn:
        _lock_run(conn, run_id)
        times = dict(
            conn.execute(select(Run.step_seconds).where(Run.id == run_id)).scalar_one() or {}
        )
        times[step] = round(float(times.get(step, 0.0)) + float(seconds), 3)
        conn.execute(update(Run).where(Run.id == run_id).values(step_seconds=times))


def update_counts(run_id: str, counts: dict[str, int], settings: Settings | None = None) -> None:
    """Merge ``counts`` into the run's counts (for steps that know their own figures)."""
    with ledger(settings).begin() as conn:
        _lock_run(conn, run_id)
        old = dict(conn.execute(select(Run.counts).where(Run.id == run_id)).scalar_one() or {})
        old.update(counts)
        conn.execute(update(Run).where(Run.id == run_id).values(counts=old))
