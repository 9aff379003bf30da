"""Leases of running batch steps: who works on a batch right now, and until when.

One holder at a time works on a step of a batch. ``jobs.batches.run_step`` takes the lease
in the transaction that checks the batch's state, writing on the batch row

    running_step, running_host, running_pid, running_since   who, since when (for people)
    lease_token        this holding (a random token), so that only its holder can end it
    lease_node         the boot and pid namespace in which running_pid means that process
    lease_expires_at   until when, by the database's clock

and a heartbeat thread extends ``lease_expires_at`` every lease/3 seconds. Another process
takes the step over only when the lease has expired — or, fast, when the holder ran in this
very pid namespace and its pid is gone (killed, OOM). A holder on another host is never
presumed dead while its lease runs, so a rerun never runs beside a live worker.

The holder's side is :class:`Lease`: ``check()`` raises :class:`jobs.errors.LeaseLost` once
the heartbeat found the lease taken over (or could not renew it in time), and costs a read
of one byte of shared memory and the clock — no query — so a step calls it before each unit
of work (each send). The flag lives in a shared anonymous mapping: worker processes forked
by the holder (a delivery pool) read the holder's flag through the same object, and a copy
pickled to a forked worker finds it again (see :meth:`Lease.__reduce__`).

Times: ``expires_at`` is written from the database's clock (PostgreSQL's
``clock_timestamp()``; SQLite lives on this host, so this host's clock), so that hosts with
skewed clocks agree on expiry. The holder keeps a deadline of its own on the monotonic clock,
measured from *before* each renewal was sent, so it always believes itself expired no later
than the database does.
"""

from __future__ import annotations

import mmap
import os
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import select, text, update

from jobs.db import engine
from jobs.errors import LeaseLost
from jobs.ledger.models import Batch
from jobs.log import get_logger

log = get_logger(__name__)

LIVE, DEAD, EXPIRED = "live", "dead", "expired"
# The holder believes its lease gone this share of a lease before the database does.
SAFETY = 0.1

# Columns that end a holding (however the step ended).
CLEARED: dict[str, Any] = {
    "running_step": None,
    "running_host": None,
    "running_pid": None,
    "running_since": None,
    "lease_token": None,
    "lease_node": None,
    "lease_expires_at": None,
}


@cache
def node() -> str:
    """This process's boot and pid namespace: two processes with the same node can see each
    other's pids (same host, same container). Falls back to the host name."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip().replace("-", "")[:16]
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"host:{socket.gethostname()}"[:64]
    return f"{boot}:{pidns}"


def aware(t: datetime | None) -> datetime | None:
    """A UTC-aware datetime (SQLite hands back naive ones)."""
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def db_now(conn) -> datetime:
    """The database's clock (PostgreSQL), or this host's (SQLite, a file on this host)."""
    if conn.dialect.name == "postgresql":
        return aware(conn.execute(text("SELECT clock_timestamp()")).scalar_one())  # type: ignore[return-value]
    return datetime.now(UTC)


# --------------------------------------------------------------------------- the holder seen from outside
@dataclass(frozen=True)
class Holder:
    """Who holds a batch step, as the batch row says."""

    step: str
    host: str | None
    pid: int | None
    node: str | None
    token: str | None
    since: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> Holder | None:
        if not row.running_step:
            return None
        return cls(
            step=row.running_step,
            host=row.running_host,
            pid=row.running_pid,
            node=getattr(row, "lease_node", None),
            token=getattr(row, "lease_token", None),
            since=aware(row.running_since),
            expires_at=aware(getattr(row, "lease_expires_at", None)),
        )

    def expiry(self, lease_seconds: float) -> datetime | None:
        """When the lease runs out; a row written before leases counts as leased from
        running_since for one lease."""
        if self.expires_at is not None:
            return self.expires_at
        if self.since is not None:
            return self.since + timedelta(seconds=lease_seconds)
        return None

    def alive(self) -> bool | None:
        """Is the holder's process alive? None when this process cannot tell (another host or
        container)."""
        return holder_alive(self.host, self.pid, self.since, self.node)

    def verdict(self, now: datetime, lease_seconds: float) -> str:
        """DEAD (its process is gone: take over at once), EXPIRED (no heartbeat for a whole
        lease: take over), or LIVE (leave it alone)."""
        if self.alive() is False:
            return DEAD
        expiry = self.expiry(lease_seconds)
        if expiry is None or now >= expiry:
            return EXPIRED
        return LIVE

    def describe(self) -> str:
        until = f", lease until {self.expires_at.isoformat()}" if self.expires_at else ""
        return f"{self.step} is running in pid {self.pid} on {self.host} since {self.since}{until}"


def holder_alive(
    host: str | None, pid: int | None, since: datetime | None, lease_node: str | None = None
) -> bool | None:
    """Is the process recorded as working on a batch still alive? None when its pid cannot be
    checked here: another host, or another container on this host (another pid namespace).
    A reused pid (a process younger than the holding) counts as dead."""
    if not pid:
        return False
    here = lease_node == node() if lease_node else host == socket.gethostname()
    if not here:
        return None
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
    since = aware(since)
    return since is None or started <= since.timestamp() + 1.0  # else a reused pid


def new_holding(step: str, now: datetime, lease_seconds: float) -> dict[str, Any]:
    """The columns that make this process the holder of ``step`` from ``now``."""
    return {
        "running_step": step,
        "running_host": socket.gethostname(),
        "running_pid": os.getpid(),
        "running_since": now,
        "lease_token": secrets.token_hex(16),
        "lease_node": node(),
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
    }


def renew(engine, batch_id: str, token: str, lease_seconds: float) -> bool:
    """Extend the lease by a whole lease from now, if ``token`` still holds it."""
    with engine.begin() as conn:
        now = db_now(conn)
        res = conn.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.lease_token == token)
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
    return res.rowcount == 1


def holds(engine, batch_id: str, token: str) -> bool:
    """Does ``token`` still hold the batch, with a lease that has not run out?"""
    with engine.connect() as conn:
        found = conn.execute(
            select(Batch.lease_token, Batch.lease_expires_at).where(Batch.id == batch_id)
        ).first()
        now = db_now(conn)
    if found is None or found.lease_token != token:
        return False
    expires = aware(found.lease_expires_at)
    return expires is None or now < expires


# --------------------------------------------------------------------------- the holder's side
_HELD, _LOST, _ENDED = 0, 1, 2
_LAYOUT = struct.Struct("=Bxxxxxxxd")  # state byte, padding, deadline (CLOCK_MONOTONIC)
_REGISTRY: dict[str, Lease] = {}  # token → lease of this process (inherited by fork)


class Lease:
    """This process's holding of one batch step, renewed by a heartbeat thread.

    ``check()`` is what a step calls before each unit of work; :class:`LeaseLost` means:
    stop, another holder has (or may have) the batch now, and whatever it decides stands.
    """

    def __init__(self, url: str, batch_id: str, step: str, token: str, lease_seconds: float):
        self.url = url
        self.batch_id = batch_id
        self.step = step
        self.token = token
        self.seconds = float(lease_seconds)
        self.reason = ""
        self._shared = mmap.mmap(-1, _LAYOUT.size)  # MAP_SHARED | MAP_ANONYMOUS
        self._write(_HELD, time.monotonic() + self._usable())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0

    # -- the shared flag
    def _usable(self) -> float:
        return self.seconds * (1 - SAFETY)

    def _write(self, state: int, deadline: float) -> None:
        packed = _LAYOUT.pack(state, deadline)
        self._shared[1:] = packed[1:]  # the deadline first, then the state byte
        self._shared[:1] = packed[:1]

    def _read(self) -> tuple[int, float]:
        return _LAYOUT.unpack(self._shared[: _LAYOUT.size])

    def check(self) -> None:
        """Raise LeaseLost unless this process (or the holder that forked it) still holds
        the lease. No query: the heartbeat keeps the flag."""
        state, deadline = self._read()
        if state == _HELD and time.monotonic() < deadline:
            return
        if state == _ENDED:
            why = "the step has ended"
        elif state == _LOST:
            why = self.reason or "taken over by another holder"
        else:
            why = f"not renewed for {self.seconds:g} s (no heartbeat reached the ledger)"
        raise LeaseLost(f"batch {self.batch_id}: lease of {self.step} lost: {why}")

    @property
    def lost(self) -> bool:
        try:
            self.check()
        except LeaseLost:
            return True
        return False

    # -- the heartbeat
    def start(self) -> Lease:
        _REGISTRY[self.token] = self
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{self.batch_id}-{self.step}", daemon=True
        )
        self._thread.start()
        return self

    def _beat(self) -> None:
        interval = self.seconds / 3
        wait = interval
        while not self._stop.wait(wait):
            sent = time.monotonic()
            try:
                ok = renew(engine(self.url), self.batch_id, self.token, self.seconds)
            except Exception as exc:  # the ledger is unreachable: try again soon
                log.warning(
                    "lease not renewed",
                    batch_id=self.batch_id,
                    step=self.step,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                wait = min(interval, 1.0)
                continue
            if not ok:
                self.reason = "another holder took the batch over (or it was reaped)"
                self._write(_LOST, 0.0)
                log.error("lease lost", batch_id=self.batch_id, step=self.step)
                return
            self.renewals += 1
            self._write(_HELD, sent + self._usable())
            wait = interval

    def stop(self) -> None:
        """End the heartbeat (the step is over); ``check()`` raises from now on."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        state, _ = self._read()
        if state == _HELD:
            self._write(_ENDED, 0.0)
        _REGISTRY.pop(self.token, None)

    # -- crossing into worker processes
    def __reduce__(self):
        """Pickled into a pool worker (ProcessPoolExecutor pickles call arguments even under
        fork): the worker finds the lease it inherited by its token, with the holder's
        shared flag; a worker that did not fork from the holder gets a detached lease that
        asks the ledger (at most every lease/3 seconds)."""
        return (_find, (self.token, self.batch_id, self.step, self.seconds, self.url))

    def __repr__(self) -> str:
        return f"Lease({self.batch_id}, {self.step}, held={not self.lost})"


def _find(token: str, batch_id: str, step: str, seconds: float, url: str) -> Any:
    found = _REGISTRY.get(token)
    if found is not None:
        return found
    return DetachedLease(url, batch_id, step, token, seconds)


class DetachedLease:
    """A lease seen from a process that did not fork from its holder: ``check()`` asks the
    ledger whether the token still holds the batch, at most every lease/3 seconds."""

    def __init__(self, url: str, batch_id: str, step: str, token: str, seconds: float):
        self.url, self.batch_id, self.step, self.token = url, batch_id, step, token
        self.seconds = seconds
        self._checked_at = -1e18

    def check(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.seconds / 3:
            return
        if not holds(engine(self.url), self.batch_id, self.token):
            raise LeaseLost(
                f"batch {self.batch_id}: lease of {self.step} lost: another holder has it, "
                "or it ran out"
            )
        self._checked_at = now
