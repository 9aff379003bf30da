"""Batches: the unit of work after planning, of reruns, and of Airflow's mapped tasks.

``plan`` cuts a run's payloads into batches with stable ids (``<run>-b0000``, ...); the id,
never Airflow's ``map_index``, keys the work, the files and the ledger rows. ``run_step``
drives one step of one batch through the state machine

    PLANNED ─sign─► SIGNED ─render─► RENDERED ─deliver─► DELIVERED
         └────────────┴──────────────────┴──► FAILED (failed_step, error)

and is idempotent: a step the batch has already passed is a no-op; a failed step is run
again from where its files say it stopped. The steps themselves are ``jobs.steps``'
(sign, render, deliver); the sequence of a whole run, and reruns, are ``jobs.flow``'s.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from jobs import faults
from jobs.errors import BatchBusy, InputMissing, LedgerMismatch, StepOutOfOrder, UnknownBatch
from jobs.ids import batch_id_of, parse_batch_id
from jobs.ledger.models import Batch, BatchState
from jobs.ledger.runs import ensure_run, ledger, record_step_time, update_counts
from jobs.log import get_logger, mask_identity_numbers
from jobs.settings import Settings, get_settings
from jobs.steps.sign import read_payloads
from jobs.storage import RunPaths, write_parquet_atomic

log = get_logger(__name__)

STEPS = ("sign", "render", "deliver")
STEP_RANK = {"sign": 1, "render": 2, "deliver": 3}
STATE_RANK = {
    BatchState.PLANNED: 0,
    BatchState.SIGNED: 1,
    BatchState.RENDERED: 2,
    BatchState.DELIVERED: 3,
}
STATE_AFTER = {
    "sign": BatchState.SIGNED,
    "render": BatchState.RENDERED,
    "deliver": BatchState.DELIVERED,
}
TIMESTAMP_AFTER = {"sign": "signed_at", "render": "rendered_at", "deliver": "delivered_at"}


# --------------------------------------------------------------------------- sizes
def batch_size_for(rows: int, settings: Settings) -> int:
    """settings.batch_size, grown so that no run needs more than settings.max_batches
    batches (Airflow refuses to map more than max_map_length items)."""
    return max(settings.batch_size, math.ceil(rows / settings.max_batches), 1)


# --------------------------------------------------------------------------- plan
def plan(run_id: str, settings: Settings | None = None) -> list[str]:
    """Cut the run's payloads.parquet into batches; write each slice to its batch folder
    and record the batches as PLANNED. Idempotent: a second call returns the same ids
    (and restores a missing slice file from the recorded sizes)."""
    from transforms.schemas import PAYLOADS

    s = settings or get_settings()
    paths = RunPaths.of(run_id, s)
    eng = ledger(s)
    with eng.connect() as conn:
        existing = conn.execute(
            select(Batch.id, Batch.seq, Batch.size)
            .where(Batch.run_id == run_id)
            .order_by(Batch.seq)
        ).all()
    if existing:
        missing = [b for b in existing if not paths.batch_payloads(b.id).exists()]
        if missing:
            table = read_payloads(paths.payloads, run_id).cast(PAYLOADS)
            offsets, at = {}, 0
            for b in existing:
                offsets[b.id] = at
                at += b.size
            if at != table.num_rows:
                raise LedgerMismatch(
                    f"run {run_id}: payloads.parquet has {table.num_rows} rows but the planned "
                    f"batches hold {at}; the payloads changed after planning"
                )
            for b in missing:
                write_parquet_atomic(table.slice(offsets[b.id], b.size), paths.batch_payloads(b.id))
            log.warning("restored batch files", run_id=run_id, batches=len(missing))
        return [b.id for b in existing]

    if not paths.payloads.exists():
        raise InputMissing(f"run {run_id} has no payloads.parquet yet: run the map step first")
    table = read_payloads(paths.payloads, run_id).cast(PAYLOADS)
    size = batch_size_for(table.num_rows, s)
    count = math.ceil(table.num_rows / size)
    ensure_run(run_id, s)  # the run row must exist (foreign key)
    rows = []
    for seq in range(count):
        part = table.slice(seq * size, size)
        bid = batch_id_of(run_id, seq)
        write_parquet_atomic(part, paths.batch_payloads(bid))
        rows.append(
            {
                "id": bid,
                "run_id": run_id,
                "seq": seq,
                "size": part.num_rows,
                "state": BatchState.PLANNED,
                "attempts": 0,
                "step_seconds": {},
                "planned_at": datetime.now(UTC),
            }
        )
    from sqlalchemy.exc import IntegrityError

    try:
        with eng.begin() as conn:
            if rows:
                conn.execute(Batch.__table__.insert(), rows)
    except IntegrityError:  # planned concurrently by another process: take its answer
        return plan(run_id, s)
    update_counts(run_id, {"payloads": table.num_rows, "planned_batches": count}, s)
    log.info("planned", run_id=run_id, payloads=table.num_rows, batches=count, batch_size=size)
    return [r["id"] for r in rows]


# --------------------------------------------------------------------------- state machine
def progress(state: BatchState | str, failed_step: str | None) -> int:
    """How many steps the batch has completed (a failed step counts as not done)."""
    state = BatchState(state)
    if state is BatchState.FAILED:
        return STEP_RANK.get(failed_step or "sign", 1) - 1
    return STATE_RANK[state]


def missing_steps(state: BatchState | str, failed_step: str | None) -> list[str]:
    """The steps a batch still needs, in order."""
    done = progress(state, failed_step)
    return [st for st in STEPS if STEP_RANK[st] > done]


def _step_function(step: str) -> Callable[..., dict]:
    if step == "sign":
        from jobs.steps.sign import sign_batch

        return sign_batch
    if step == "render":
        from jobs.steps.render import render_batch

        return render_batch
    from jobs.steps.deliver import deliver_batch

    return deliver_batch


def holder_alive(host: str | None, pid: int | None, since: datetime | None) -> bool | None:
    """Is the process recorded as working on a batch still alive? None when it ran on
    another host (this process cannot tell). A reused pid (a younger process) counts as dead."""
    if not pid or host != socket.gethostname():
        return None if pid else False
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    if since is not None:
        since_ts = (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()
        if started > since_ts + 1.0:
            return False
    return True


def _lock_batch(conn, batch_id: str):
    """Write-lock the batch row (no-op UPDATE; see jobs.ledger.runs._lock_run) and return it."""
    res = conn.execute(update(Batch).where(Batch.id == batch_id).values(state=Batch.state))
    if res.rowcount == 0:
        raise UnknownBatch(f"batch {batch_id} is not in the ledger")
    return conn.execute(select(Batch).where(Batch.id == batch_id)).one()


def reap_interrupted(run_id: str | None = None, settings: Settings | None = None) -> list[str]:
    """Mark batches FAILED whose step was interrupted: the row still names a running step
    but the process on this host is gone (SIGKILL, OOM, power). Returns their ids."""
    eng = ledger(settings)
    q = select(
        Batch.id, Batch.running_step, Batch.running_host, Batch.running_pid, Batch.running_since
    ).where(Batch.running_step.is_not(None))
    if run_id:
        q = q.where(Batch.run_id == run_id)
    reaped = []
    with eng.connect() as conn:
        candidates = conn.execute(q).all()
    for b in candidates:
        if holder_alive(b.running_host, b.running_pid, b.running_since) is not False:
            continue
        with eng.begin() as conn:
            res = conn.execute(
                update(Batch)
                .where(
                    Batch.id == b.id,
                    Batch.running_pid == b.running_pid,
                    Batch.running_step == b.running_step,
                )
                .values(
                    state=BatchState.FAILED,
                    failed_step=b.running_step,
                    error=(
                        f"interrupted: the process (pid {b.running_pid} on "
                        f"{b.running_host}) died during {b.running_step}"
                    ),
                    running_step=None,
                    running_host=None,
                    running_pid=None,
                    running_since=None,
                )
            )
        if res.rowcount:
            reaped.append(b.id)
            log.warning("batch interrupted", batch_id=b.id, step=b.running_step)
    return reaped


def run_step(
    batch_id: str, step: str, settings: Settings | None = None, *, takeover: bool = True
) -> dict[str, Any]:
    """Run ``step`` (sign|render|deliver) of one batch: no-op when the batch is already past
    it, StepOutOfOrder when the step before is missing, BatchBusy when a live process on this
    host holds it. A holder on another host cannot be checked: with ``takeover`` (the
    default, right for Airflow, which runs one try of a task instance at a time) it is
    presumed dead — the retry of a killed worker's task must not wait; operators' reruns
    pass ``takeover=False``. Marks the batch FAILED with the step and error (and re-raises)
    when the step fails."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
    s = settings or get_settings()
    run_id, seq = parse_batch_id(batch_id)
    eng = ledger(s)
    with eng.begin() as conn:
        row = _lock_batch(conn, batch_id)
        done, need = progress(row.state, row.failed_step), STEP_RANK[step]
        if done >= need:
            return {"batch_id": batch_id, "step": step, "state": str(row.state), "skipped": True}
        if done < need - 1:
            raise StepOutOfOrder(
                f"batch {batch_id} is {row.state.value}: {STEPS[done]} must run before {step}"
            )
        alive = (
            holder_alive(row.running_host, row.running_pid, row.running_since)
            if row.running_step
            else False
        )
        if alive or (alive is None and not takeover):
            raise BatchBusy(
                f"batch {batch_id}: {row.running_step} is running in pid {row.running_pid} "
                f"on {row.running_host} since {row.running_since}"
            )
        conn.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                attempts=row.attempts + 1,
                running_step=step,
                running_host=socket.gethostname(),
                running_pid=os.getpid(),
                running_since=datetime.now(UTC),
            )
        )
        step_seconds = dict(row.step_seconds or {})
    t0 = time.perf_counter()
    try:
        fault = faults.armed(step, run_id, seq, s)
        fn = _step_function(step)
        if step == "sign":
            result = fn(batch_id, s, _fault=fault)
        else:
            if fault is not None:
                faults.fire(fault, run_id, in_worker=False, settings=s)
            result = fn(batch_id, settings=s)
    except BaseException as exc:
        error = mask_identity_numbers(f"{type(exc).__name__}: {exc}")[:4000]
        with eng.begin() as conn:
            conn.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(
                    state=BatchState.FAILED,
                    failed_step=step,
                    error=error,
                    running_step=None,
                    running_host=None,
                    running_pid=None,
                    running_since=None,
                )
            )
        log.error("batch step failed", batch_id=batch_id, step=step, error=error)
        raise
    seconds = time.perf_counter() - t0
    step_seconds[step] = round(step_seconds.get(step, 0.0) + seconds, 3)
    with eng.begin() as conn:
        conn.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                state=STATE_AFTER[step],
                failed_step=None,
                error=None,
                step_seconds=step_seconds,
                running_step=None,
                running_host=None,
                running_pid=None,
                running_since=None,
                **{TIMESTAMP_AFTER[step]: datetime.now(UTC)},
            )
        )
    record_step_time(run_id, step, seconds, s)
    log.info("batch step done", batch_id=batch_id, step=step, seconds=round(seconds, 3))
    return {
        "batch_id": batch_id,
        "step": step,
        "state": STATE_AFTER[step].value,
        "seconds": round(seconds, 3),
        **(result or {}),
    }


# --------------------------------------------------------------------------- sign


# --------------------------------------------------------------------------- drills, benches
