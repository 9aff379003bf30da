"""Batches: the unit of work after planning, of reruns, and of Airflow's mapped tasks.

``plan`` cuts a run's payloads into batches with stable ids (``<run>-b0000``, ...); the id,
never Airflow's ``map_index``, keys the work, the files and the ledger rows. ``run_step``
drives one step of one batch through the state machine

    PLANNED ─sign─► SIGNED ─render─► RENDERED ─deliver─► DELIVERED
         └────────────┴──────────────────┴──► FAILED (failed_step, error)

and is idempotent: a step the batch has already passed is a no-op; a failed step is run
again from where its files say it stopped. ``sign_batch`` is the sign step: all cores sign
(``signing.hcert.sign_many``), all cores verify every certificate again before it counts,
the signed Parquet appears atomically, and the certificates enter the ledger with
INSERT ... ON CONFLICT DO NOTHING under the database's one-certificate-per-order constraint.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from jobs import faults
from jobs.ids import batch_id_of, new_run_id, parse_batch_id
from jobs.ledger.models import Batch, BatchState, Certificate
from jobs.ledger.runs import ensure_run, ledger, record_step_time, update_counts
from jobs.log import get_logger, mask_identity_numbers
from jobs.settings import Settings, get_settings
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
SQL_CHUNK = 5000  # rows per executemany / IN (...) list


class UnknownBatch(LookupError):
    """The batch id is not in the ledger."""


class StepOutOfOrder(RuntimeError):
    """A step was asked for before the step it depends on."""


class BatchBusy(RuntimeError):
    """Another live process is working on the batch."""


class StepUnavailable(RuntimeError):
    """The step's module is not installed in this deployment."""


class LedgerMismatch(RuntimeError):
    """The ledger and the batch's files disagree in a way a rerun must not paper over."""


# --------------------------------------------------------------------------- ids and sizes


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
            table = _read_payloads(paths.payloads, run_id).cast(PAYLOADS)
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
        raise FileNotFoundError(f"run {run_id} has no payloads.parquet yet: run the map step first")
    table = _read_payloads(paths.payloads, run_id).cast(PAYLOADS)
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


def _read_payloads(path, run_id: str):
    import pyarrow.parquet as pq

    from transforms.schemas import PAYLOADS

    table = pq.read_table(path)
    missing = [n for n in PAYLOADS.names if n not in table.column_names]
    if missing:
        raise ValueError(f"run {run_id}: {path.name} lacks columns {missing}")
    return table.select(PAYLOADS.names)


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


def available_steps() -> list[str]:
    """The steps installed in this deployment (render and deliver come from jobs.steps.render and
    jobs.steps.deliver; sign is always here)."""
    import importlib.util

    out = ["sign"]
    for step, mod in (("render", "jobs.steps.render"), ("deliver", "jobs.steps.deliver")):
        if importlib.util.find_spec(mod) is None:
            break
        out.append(step)
    return out


def _step_function(step: str) -> Callable[..., dict]:
    if step == "sign":
        return sign_batch
    import importlib

    module, name = {
        "render": ("jobs.steps.render", "render_batch"),
        "deliver": ("jobs.steps.deliver", "deliver_batch"),
    }[step]
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        raise StepUnavailable(f"step {step} is not installed ({module} is missing)") from exc


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


def rerun(
    batch_ids: Sequence[str],
    settings: Settings | None = None,
    on_step: Callable[[str, str], None] | None = None,
    validate_signed: bool = True,
    through: str | None = None,
    takeover: bool = False,
) -> list[dict[str, Any]]:
    """Run the missing steps of each batch directly (the CLI's ``batches rerun``), with the
    signed_batch suite after sign as in the DAG (when jobs.steps.validate is installed), up to and
    including ``through`` (default: every installed step). Goes on with the next batch when
    one fails; each result says what happened."""
    s = settings or get_settings()
    eng = ledger(s)
    steps_here = available_steps()
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
    import importlib.util

    from jobs.ledger.models import Run, RunState

    s = settings or get_settings()
    if importlib.util.find_spec("jobs.flow") is None:
        return []
    from jobs.flow import finish

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
    import importlib.util

    if importlib.util.find_spec("jobs.steps.validate") is None:
        return
    from jobs.steps.validate import validate

    run_id, _ = parse_batch_id(batch_id)
    try:
        validate(run_id, "signed_batch", settings=settings, batch_id=batch_id)
    except NotImplementedError:  # the suite is not built in this deployment yet
        log.warning("signed_batch suite not available; skipped", batch_id=batch_id)


# --------------------------------------------------------------------------- sign
@dataclass
class _Checked:
    ok: bool
    reason: str


_VERIFY_POOL: dict[str, Any] = {}
_WORKER_TRUST: list = []


def _verify_init(trust_pem: bytes) -> None:
    from cryptography import x509

    _WORKER_TRUST[:] = x509.load_pem_x509_certificates(trust_pem)


def _verify_chunk(
    hc1s: Sequence[str], uvcis: Sequence[str], crash: bool = False
) -> list[tuple[bool, str]]:
    """Verify certificates in a worker: decode, signature and schema must be ok and the
    UVCI inside must be the order's."""
    from signing.verify import verify

    out = []
    half = len(hc1s) // 2
    for i, (hc1, uvci) in enumerate(zip(hc1s, uvcis, strict=True)):
        if crash and i == half:
            faults.crash_worker()
        v = verify(hc1, trust=_WORKER_TRUST)
        bad = [c for c in ("decode", "signature", "schema") if v.checks.get(c) != "ok"]
        if bad:
            out.append((False, f"{', '.join(bad)} failed: {'; '.join(map(str, v.reasons))}"[:400]))
            continue
        ci = _uvci_in(v.payload)
        if ci is not None and ci != uvci:
            out.append((False, "the certificate carries another UVCI than its order"))
            continue
        out.append((True, ""))
    return out


def _uvci_in(payload: Any) -> str | None:
    """The certificate identifier inside a decoded DCC payload (or its hcert wrapper)."""
    if not isinstance(payload, dict):
        return None
    for key in (-260, "-260"):
        if key in payload:
            return _uvci_in(payload[key])
    for key in (1, "1"):
        if key in payload and isinstance(payload[key], dict):
            return _uvci_in(payload[key])
    for group in ("v", "t", "r"):
        entries = payload.get(group)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            return entries[0].get("ci")
    return None


def _verify_pool(workers: int, trust_pem: bytes):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    key = f"{workers}:{hashlib.sha256(trust_pem).hexdigest()}"
    pool = _VERIFY_POOL.get(key)
    if pool is None:
        for old in _VERIFY_POOL.values():
            old.shutdown(wait=False, cancel_futures=True)
        _VERIFY_POOL.clear()
        pool = ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context("fork"),
            initializer=_verify_init,
            initargs=(trust_pem,),
        )
        _VERIFY_POOL[key] = pool
    return pool


@atexit.register
def _shutdown_verify_pools() -> None:
    """Drop the pool while the interpreter is still whole (its manager thread's callback
    otherwise runs during teardown and prints 'Exception ignored')."""
    for pool in _VERIFY_POOL.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _VERIFY_POOL.clear()


def verify_many(
    hc1s: Sequence[str],
    uvcis: Sequence[str],
    trust_pem: bytes,
    workers: int,
    crash_worker: bool = False,
) -> list[_Checked]:
    """Verify every certificate again, on all cores (large chunks). ``crash_worker`` makes
    one worker die mid-way (the fault switch)."""
    n = len(hc1s)
    if workers <= 1 or n < 64:
        _verify_init(trust_pem)
        if crash_worker:
            raise AssertionError("crash_worker needs a pool")  # pragma: no cover
        return [_Checked(*r) for r in _verify_chunk(hc1s, uvcis)]
    pool = _verify_pool(workers, trust_pem)
    per = math.ceil(n / (workers * 2))
    chunks = [(i, min(i + per, n)) for i in range(0, n, per)]
    crash_at = len(chunks) // 2 if crash_worker else -1
    try:
        futures = [
            pool.submit(_verify_chunk, list(hc1s[a:b]), list(uvcis[a:b]), k == crash_at)
            for k, (a, b) in enumerate(chunks)
        ]
        out: list[_Checked] = []
        for f in futures:
            out.extend(_Checked(*r) for r in f.result())
    except BaseException:
        _VERIFY_POOL.clear()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return out


def _issued_for(conn, order_ids: Sequence[str]) -> dict[str, Any]:
    """order_id → (uvci, batch_id, hc1_sha256) of the certificates the ledger holds."""
    out: dict[str, Any] = {}
    for i in range(0, len(order_ids), SQL_CHUNK):
        chunk = list(order_ids[i : i + SQL_CHUNK])
        for r in conn.execute(
            select(
                Certificate.order_id, Certificate.uvci, Certificate.batch_id, Certificate.hc1_sha256
            ).where(Certificate.order_id.in_(chunk))
        ):
            out[r.order_id] = r
    return out


def _insert_ignore(conn, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING (any unique key: uvci or order_id), both dialects."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover
        raise RuntimeError(f"unsupported ledger dialect {conn.dialect.name}")
    for i in range(0, len(rows), SQL_CHUNK):
        conn.execute(insert(Certificate).on_conflict_do_nothing(), rows[i : i + SQL_CHUNK])


@contextlib.contextmanager
def _run_lock(run_id: str, name: str, settings: Settings):
    """An exclusive lock file in the run folder (parallel batches of one run on one host)."""
    path = RunPaths.of(run_id, settings).root / f".{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _quarantine(run_id: str, entries: list[dict[str, Any]], settings: Settings) -> None:
    """Add entries to the run's sign-step quarantine (the file holds every batch's)."""
    if not entries:
        return
    from jobs.ledger import quarantine

    with _run_lock(run_id, "quarantine-sign", settings):
        import pyarrow.parquet as pq

        path = RunPaths.of(run_id, settings).quarantine("sign")
        old = pq.read_table(path).to_pylist() if path.exists() else []
        quarantine.record(run_id, "sign", old + entries, settings)


def sign_batch(
    batch_id: str, settings: Settings | None = None, *, _fault: faults.Fault | None = None
) -> dict[str, Any]:
    """Sign one batch and record its certificates. Does not change the batch state
    (run_step does). Safe to call again at any point after a crash:

    * signed.parquet present → it was written only after verification, atomically: the
      certificates are inserted again (the ones already there are ignored), nothing is
      signed twice;
    * absent → orders that already hold a certificate elsewhere are quarantined
      (``already_issued``), the rest are signed, verified, written, recorded.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from transforms.schemas import SIGNED

    s = settings or get_settings()
    run_id, _seq = parse_batch_id(batch_id)
    paths = RunPaths.of(run_id, s)
    src, out = paths.batch_payloads(batch_id), paths.signed(batch_id)
    if not src.exists():
        raise FileNotFoundError(f"batch {batch_id} has no payloads file: plan the run again")
    payloads = _read_payloads(src, run_id)
    eng = ledger(s)
    quarantined: list[dict[str, Any]] = []
    resumed = out.exists()
    timings: dict[str, float] = {}

    if resumed:
        signed = pq.read_table(out).select(SIGNED.names).cast(SIGNED)
    else:
        from signing.hcert import sign_many, validity
        from signing.keys import load_signer

        orders = payloads["order_id"].to_pylist()
        with eng.connect() as conn:
            issued = _issued_for(conn, orders)
        mine = [o for o, r in issued.items() if r.batch_id == batch_id]
        if mine:
            raise LedgerMismatch(
                f"batch {batch_id}: the ledger holds certificates of this batch (orders "
                f"{', '.join(sorted(mine)[:5])}...) but its signed.parquet is gone; restore the "
                "file from backup instead of signing again"
            )
        if issued:
            quarantined += [
                _q(payloads, o, "already_issued", f"order already has certificate {issued[o].uvci}")
                for o in issued
            ]
            payloads = payloads.filter(
                pc.invert(pc.is_in(payloads["order_id"], pa.array(list(issued), pa.string())))
            )
        signer = load_signer(s)
        iat, exp = validity(signer, int(time.time()), s.validity_days)
        workers = s.resolved_workers()
        t0 = time.perf_counter()
        hc1s = sign_many(
            payloads["payload_json"].to_pylist(), iat=iat, exp=exp, settings=s, workers=workers
        )
        timings["sign_s"] = time.perf_counter() - t0
        if len(hc1s) != payloads.num_rows:
            raise RuntimeError(
                f"batch {batch_id}: sign_many returned {len(hc1s)} certificates "
                f"for {payloads.num_rows} payloads"
            )
        # The fault switch fires here, mid-batch: signed but nothing written or recorded.
        crash = _fault is not None and _fault.mode == "crash" and workers > 1 and len(hc1s) >= 64
        if crash:
            faults.remember(_fault, run_id, settings=s)  # a pool worker dies in verify_many
        elif _fault is not None:
            faults.fire(_fault, run_id, in_worker=False, settings=s)
        from cryptography.hazmat.primitives.serialization import Encoding

        t0 = time.perf_counter()
        checked = verify_many(
            hc1s,
            payloads["uvci"].to_pylist(),
            signer.dsc.public_bytes(Encoding.PEM),
            workers,
            crash_worker=crash,
        )
        timings["verify_s"] = time.perf_counter() - t0
        ok = pa.array([c.ok for c in checked], pa.bool_())
        orders_left = payloads["order_id"].to_pylist()
        quarantined += [
            _q(payloads, orders_left[i], "signature_invalid", c.reason)
            for i, c in enumerate(checked)
            if not c.ok
        ]
        kid = base64.b64encode(signer.kid).decode("ascii")
        n = payloads.num_rows
        signed = pa.table(
            {
                "order_id": payloads["order_id"],
                "uvci": payloads["uvci"],
                "kid": pa.array([kid] * n, pa.string()),
                "iat": pa.array([iat] * n, pa.int64()),
                "exp": pa.array([exp] * n, pa.int64()),
                "hc1": pa.array(hc1s, pa.string()),
            },
            schema=SIGNED,
        ).filter(ok)
        write_parquet_atomic(signed, out)

    t0 = time.perf_counter()
    rows = _certificate_rows(signed, payloads, run_id, batch_id)
    with eng.begin() as conn:
        _insert_ignore(conn, rows)
    with eng.connect() as conn:
        held = _issued_for(conn, [r["order_id"] for r in rows])
    foreign, broken = [], []
    for r in rows:
        h = held.get(r["order_id"])
        if h is None or (h.uvci == r["uvci"] and h.hc1_sha256 == r["hc1_sha256"]):
            if h is None:
                broken.append(r["order_id"])
            continue
        (broken if h.batch_id == batch_id else foreign).append(r["order_id"])
    if broken:
        raise LedgerMismatch(
            f"batch {batch_id}: orders {', '.join(broken[:5])} do not match the ledger after "
            "insert (a certificate with the same UVCI exists for another order, or the ledger "
            "row differs from signed.parquet)"
        )
    if foreign:  # lost a race with another batch for the same order: that one counts
        quarantined += [
            _q(payloads, o, "already_issued", f"order already has certificate {held[o].uvci}")
            for o in foreign
        ]
        signed = signed.filter(
            pc.invert(pc.is_in(signed["order_id"], pa.array(foreign, pa.string())))
        )
        write_parquet_atomic(signed, out)
    timings["ledger_s"] = time.perf_counter() - t0
    _quarantine(run_id, quarantined, s)
    return {
        "certificates": signed.num_rows,
        "quarantined": len(quarantined),
        "resumed": resumed,
        **{k: round(v, 3) for k, v in timings.items()},
    }


def _q(payloads, order_id: str, reason: str, detail: str) -> dict[str, Any]:
    pid = _pid_of(payloads, order_id)
    return {
        "reason_code": reason,
        "order_id": order_id,
        "pid": pid,
        "event_id": None,
        "suite": None,
        "expectation": None,
        "detail": detail,
    }


def _pid_of(payloads, order_id: str) -> str | None:
    import pyarrow.compute as pc

    hit = payloads.filter(pc.equal(payloads["order_id"], order_id))
    return hit["pid"][0].as_py() if hit.num_rows else None


def _certificate_rows(signed, payloads, run_id: str, batch_id: str) -> list[dict[str, Any]]:
    """Ledger rows for the signed certificates, with the reporting dimensions."""
    dims = {
        r["order_id"]: r
        for r in payloads.select(
            ["order_id", "pid", "cert_type", "county", "age_band", "product", "dn", "sd"]
        ).to_pylist()
    }
    now = datetime.now(UTC)
    rows = []
    for r in signed.to_pylist():
        d = dims.get(r["order_id"])
        if d is None:
            raise LedgerMismatch(
                f"batch {batch_id}: signed order {r['order_id']} is not in the batch payloads"
            )
        rows.append(
            {
                "uvci": r["uvci"],
                "order_id": r["order_id"],
                "pid": d["pid"],
                "run_id": run_id,
                "batch_id": batch_id,
                "cert_type": d["cert_type"] or "v",
                "kid": r["kid"],
                "iat": r["iat"],
                "exp": r["exp"],
                "hc1_sha256": hashlib.sha256(r["hc1"].encode("ascii")).hexdigest(),
                "county": d["county"],
                "age_band": d["age_band"],
                "product": d["product"],
                "dn": d["dn"],
                "sd": d["sd"],
                "issued_at": now,
            }
        )
    return rows


def batches_of(
    run_id: str | None = None, states: Iterable[str] | None = None, settings: Settings | None = None
) -> list[Any]:
    """Batch rows (optionally of one run, in some states), oldest run first."""
    q = select(Batch).order_by(Batch.run_id, Batch.seq)
    if run_id:
        q = q.where(Batch.run_id == run_id)
    if states:
        q = q.where(Batch.state.in_([BatchState(x.upper()) for x in states]))
    with ledger(settings).connect() as conn:
        return list(conn.execute(q).all())


# --------------------------------------------------------------------------- drills, benches
def synthetic_payloads(n: int, seed: int = 0, prefix: str = "SYN") -> Any:
    """``n`` schema-valid DCC payload rows (transforms.schemas.PAYLOADS) of invented people,
    for benchmarks and drills of the batch machinery without the upstream steps. Order ids
    and UVCIs carry ``prefix`` and ``seed`` so that separate calls never collide."""
    import json
    import random

    import pyarrow as pa

    from transforms.schemas import PAYLOADS

    rnd = random.Random(seed)
    products = [
        ("EU/1/20/1528", "ORG-100030215"),
        ("EU/1/20/1507", "ORG-100031184"),
        ("EU/1/20/1525", "ORG-100001417"),
    ]
    given = ["ANNA", "ERIK", "MARIA", "KARL", "SARA", "JOHAN", "LINNEA", "OSKAR"]
    family = ["ANDERSSON", "JOHANSSON", "KARLSSON", "NILSSON", "ERIKSSON", "LARSSON"]
    cols: dict[str, list] = {name: [] for name in PAYLOADS.names}
    for i in range(n):
        order_id = f"{prefix}{seed:03d}-{i:08d}"
        uvci = f"URN:UVCI:01:SE:EHM/{prefix}{seed:03d}{i:010d}"
        mp, ma = products[i % len(products)]
        year = 1930 + rnd.randrange(75)
        dob = f"{year}-{1 + rnd.randrange(12):02d}-{1 + rnd.randrange(28):02d}"
        gn, fn = rnd.choice(given), rnd.choice(family)
        dn = 1 + rnd.randrange(3)
        vdate = f"2021-{1 + rnd.randrange(12):02d}-{1 + rnd.randrange(28):02d}"
        payload = {
            "ver": "1.3.3",
            "nam": {"fn": fn.title(), "fnt": fn, "gn": gn.title(), "gnt": gn},
            "dob": dob,
            "v": [
                {
                    "tg": "840539006",
                    "vp": "1119349007",
                    "mp": mp,
                    "ma": ma,
                    "dn": dn,
                    "sd": max(dn, 2),
                    "dt": vdate,
                    "co": "SE",
                    "is": "Swedish eHealth Agency",
                    "ci": uvci,
                }
            ],
        }
        age = 2026 - year
        cols["order_id"].append(order_id)
        cols["pid"].append(hashlib.sha256(order_id.encode()).hexdigest()[:32])
        cols["uvci"].append(uvci)
        cols["cert_type"].append("v")
        cols["payload_json"].append(json.dumps(payload, separators=(",", ":")))
        cols["person_id"].append(None)
        cols["protected_identity"].append(False)
        cols["address_street"].append(None)
        cols["address_postcode"].append(None)
        cols["address_city"].append(None)
        cols["county"].append(f"{1 + i % 25:02d}")
        cols["age_band"].append(
            f"{min(age // 10 * 10, 80)}+" if age >= 80 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"
        )
        cols["product"].append(mp)
        cols["dn"].append(dn)
        cols["sd"].append(max(dn, 2))
        cols["vaccination_date"].append(datetime.strptime(vdate, "%Y-%m-%d").date())
    return pa.table(cols, schema=PAYLOADS)


def bench(n: int, settings: Settings | None = None) -> dict[str, Any]:
    """Sign ``n`` synthetic certificates through the machinery (plan, run_step sign of every
    batch in turn, each on all cores) and return the figures. Development keys are made
    in the key folder when there are none (file provider)."""
    import secrets

    from jobs.ledger.runs import finish_run, start_run

    s = settings or get_settings()
    if s.key_provider == "file" and not (s.resolved_key_dir() / "dsc.pem").exists():
        from signing.keys import init_dev_keys

        init_dev_keys(s.resolved_key_dir(), country=s.issuer_country)
    run_id = start_run(new_run_id(), parameters={"bench": "batches", "n": n}, settings=s)
    t0 = time.perf_counter()
    table = synthetic_payloads(n, seed=0, prefix=f"BN{secrets.token_hex(3).upper()}")
    write_parquet_atomic(table, RunPaths.of(run_id, s).payloads)
    prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = plan(run_id, s)
    plan_s = time.perf_counter() - t0
    parts: dict[str, float] = {"sign_s": 0.0, "verify_s": 0.0, "ledger_s": 0.0}
    certs = 0
    t0 = time.perf_counter()
    for bid in ids:
        r = run_step(bid, "sign", s)
        certs += r["certificates"]
        for k in parts:
            parts[k] += r.get(k, 0.0)
    step_s = time.perf_counter() - t0
    finish_run(run_id, "SUCCEEDED", settings=s)
    total = plan_s + step_s
    return {
        "bench": "batches",
        "run_id": run_id,
        "n": n,
        "certificates": certs,
        "batches": len(ids),
        "batch_size": batch_size_for(n, s),
        "workers": s.resolved_workers(),
        "prepare_s": round(prepare_s, 2),
        "plan_s": round(plan_s, 2),
        "sign_step_s": round(step_s, 2),
        "total_s": round(total, 2),
        "per_s": round(certs / total, 1) if total else None,
        "raw_sign_s": round(parts["sign_s"], 2),
        "verify_s": round(parts["verify_s"], 2),
        "ledger_s": round(parts["ledger_s"], 2),
        "raw_sign_per_s": round(certs / parts["sign_s"], 1) if parts["sign_s"] else None,
        "loadavg": os.getloadavg(),
        "ledger": "postgresql" if s.resolved_ledger_url().startswith("postgres") else "sqlite",
    }
