"""Batches: the unit of work after planning, of reruns, and of Airflow's mapped tasks.

``plan`` cuts a run's payloads into batches with stable ids (``<run>-b0000``, ...); the id,
never Airflow's ``map_index``, keys the work, the files and the ledger rows. ``run_step``
drives one step of one batch through the state machine

    PLANNED ─sign─► SIGNED ─render─► RENDERED ─deliver─► DELIVERED
         └────────────┴──────────────────┴──► FAILED (failed_step, error)

and is idempotent: a step the batch has already passed is a no-op; a failed step is run
again from where its files say it stopped. A running step holds a lease on the batch
(``jobs.ledger.leases``): one holder at a time, taken over only when the holder is gone.
The steps themselves are ``jobs.steps``' (sign, render, deliver); the sequence of a whole
run, and reruns, are ``jobs.flow``'s.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import select, update

from jobs import faults
from jobs.errors import (
    BatchBusy,
    InputMissing,
    LeaseLost,
    LedgerMismatch,
    StepOutOfOrder,
    UnknownBatch,
)
from jobs.ids import batch_id_of, parse_batch_id
from jobs.ledger import leases
from jobs.ledger.models import Batch, BatchState
from jobs.ledger.runs import ensure_run, ledger, record_step_time, update_counts
from jobs.log import get_logger, mask_identity_numbers
from jobs.settings import Settings, get_settings
from jobs.steps.sign import read_payloads
from jobs.storage import RunPaths, write_parquet_atomic
from signing.lifetime import die_with_parent_on_fork

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


@cache
def _takes_lease(fn: Callable[..., Any]) -> bool:
    """Does the step function accept ``lease=`` (asked once per function)?"""
    return "lease" in inspect.signature(fn).parameters


def _lock_batch(conn, batch_id: str):
    """Write-lock the batch row (no-op UPDATE; see jobs.ledger.runs._lock_run) and return it."""
    res = conn.execute(update(Batch).where(Batch.id == batch_id).values(state=Batch.state))
    if res.rowcount == 0:
        raise UnknownBatch(f"batch {batch_id} is not in the ledger")
    return conn.execute(select(Batch).where(Batch.id == batch_id)).one()


def _same_holding(b: Any):
    """WHERE clause matching the batch row only while ``b``'s holding is still on it."""
    token = (
        Batch.lease_token.is_(None) if b.lease_token is None else Batch.lease_token == b.lease_token
    )
    return (
        Batch.id == b.id,
        Batch.running_step == b.running_step,
        Batch.running_pid == b.running_pid,
        token,
    )


def reap_interrupted(run_id: str | None = None, settings: Settings | None = None) -> list[str]:
    """Mark batches FAILED whose step was interrupted: the row still names a running step,
    but its process in this pid namespace is gone (SIGKILL, OOM, power) or — anywhere —
    its lease ran out without a heartbeat. Returns their ids."""
    s = settings or get_settings()
    eng = ledger(s)
    q = select(Batch).where(Batch.running_step.is_not(None))
    if run_id:
        q = q.where(Batch.run_id == run_id)
    reaped = []
    with eng.connect() as conn:
        candidates = conn.execute(q).all()
        now = leases.db_now(conn)
    for b in candidates:
        holder = leases.Holder.of(b)
        if holder is None:
            continue
        verdict = holder.verdict(now, s.lease_seconds)
        if verdict == leases.LIVE:
            continue
        if verdict == leases.DEAD:
            why = f"the process (pid {b.running_pid} on {b.running_host}) died during {b.running_step}"
        else:
            expiry = holder.expiry(s.lease_seconds)
            why = (
                f"the lease of pid {b.running_pid} on {b.running_host} expired at "
                f"{expiry.isoformat() if expiry else '?'} (no heartbeat) during {b.running_step}"
            )
        with eng.begin() as conn:
            res = conn.execute(
                update(Batch)
                .where(*_same_holding(b))
                .values(
                    state=BatchState.FAILED,
                    failed_step=b.running_step,
                    error=f"interrupted: {why}",
                    **leases.CLEARED,
                )
            )
        if res.rowcount:
            reaped.append(b.id)
            log.warning("batch interrupted", batch_id=b.id, step=b.running_step, verdict=verdict)
    return reaped


def run_step(
    batch_id: str, step: str, settings: Settings | None = None, *, takeover: bool = True
) -> dict[str, Any]:
    """Run ``step`` (sign|render|deliver) of one batch under a lease: no-op when the batch is
    already past it, StepOutOfOrder when the step before is missing, BatchBusy while another
    holder's lease runs.

    A holder whose process is gone from this pid namespace is taken over at once. A holder
    elsewhere is taken over only once its lease has expired — then with ``takeover`` (the
    default: Airflow runs one try of a task instance at a time); operators' reruns pass
    ``takeover=False`` and are refused until the batch is reaped or forced. While the step
    runs, a heartbeat renews the lease and the step function gets it (``lease=``) to check
    before each unit of work. The batch's state is written only by the lease's holder: a
    holder that lost its lease records nothing and raises LeaseLost. Marks the batch FAILED
    with the step and error (and re-raises) when the step fails."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
    die_with_parent_on_fork()  # the step's worker processes die with this process
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
        now = leases.db_now(conn)
        holder = leases.Holder.of(row)
        if holder is not None:
            verdict = holder.verdict(now, s.lease_seconds)
            if verdict == leases.LIVE or (verdict == leases.EXPIRED and not takeover):
                raise BatchBusy(
                    f"batch {batch_id}: {holder.describe()}"
                    + ("" if verdict == leases.LIVE else " (expired: reap it, or force)")
                )
            log.warning(
                "taking over batch step",
                batch_id=batch_id,
                step=holder.step,
                holder_pid=holder.pid,
                holder_host=holder.host,
                verdict=verdict,
            )
        holding = leases.new_holding(step, now, s.lease_seconds)
        conn.execute(
            update(Batch).where(Batch.id == batch_id).values(attempts=row.attempts + 1, **holding)
        )
        step_seconds = dict(row.step_seconds or {})
    lease = leases.Lease(
        s.resolved_ledger_url(), batch_id, step, holding["lease_token"], s.lease_seconds
    ).start()
    mine = (Batch.id == batch_id, Batch.lease_token == lease.token)
    t0 = time.perf_counter()
    try:
        fault = faults.armed(step, run_id, seq, s)
        fn = _step_function(step)
        kw = {"lease": lease} if _takes_lease(fn) else {}
        if step == "sign":
            result = fn(batch_id, s, _fault=fault, **kw)
        else:
            if fault is not None:
                faults.fire(fault, run_id, in_worker=False, settings=s)
            result = fn(batch_id, settings=s, **kw)
    except BaseException as exc:
        lease.stop()
        error = mask_identity_numbers(f"{type(exc).__name__}: {exc}")[:4000]
        with eng.begin() as conn:
            res = conn.execute(
                update(Batch)
                .where(*mine)
                .values(state=BatchState.FAILED, failed_step=step, error=error, **leases.CLEARED)
            )
        if res.rowcount == 0:  # another holder has the batch: its outcome stands
            log.error(
                "batch step failed after its lease was lost",
                batch_id=batch_id,
                step=step,
                error=error,
            )
            if not isinstance(exc, LeaseLost):
                raise LeaseLost(
                    f"batch {batch_id}: {step} failed ({error[:300]}) after its lease was "
                    "taken over; nothing recorded, the new holder's outcome stands"
                ) from exc
            raise
        log.error("batch step failed", batch_id=batch_id, step=step, error=error)
        raise
    lease.stop()
    seconds = time.perf_counter() - t0
    step_seconds[step] = round(step_seconds.get(step, 0.0) + seconds, 3)
    with eng.begin() as conn:
        res = conn.execute(
            update(Batch)
            .where(*mine)
            .values(
                state=STATE_AFTER[step],
                failed_step=None,
                error=None,
                step_seconds=step_seconds,
                **leases.CLEARED,
                **{TIMESTAMP_AFTER[step]: datetime.now(UTC)},
            )
        )
    if res.rowcount == 0:
        raise LeaseLost(
            f"batch {batch_id}: {step} finished after its lease was taken over; nothing "
            "recorded, the new holder's outcome stands"
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
