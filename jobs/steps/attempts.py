"""The delivery step's record in the ledger: every attempt a ``Delivery`` row, written AHEAD.

A request to an operator is recorded before it leaves: a row with status ``SENDING``, the
attempt number and the idempotency key, committed (:meth:`AttemptLog.write_ahead`); when the
answer comes the row is *settled* (``DELIVERED``, ``FAILED`` when the request may have
arrived, ``REFUSED`` when it certainly was not processed) and the certificate's outcome set.
So after a crash at any instant, every message an operator may hold has a row with its key,
and the rerun treats it as "maybe delivered": it sends again with the same key (the operator
answers "duplicate") or asks the operator's status before any paper, never prints blindly.

Cost: write-ahead rows are group-committed — all sends waiting at one moment share one
transaction (a few milliseconds), in a worker thread; settles, outcomes and rows that need
no write-ahead (paper, unreachable, deferred) are buffered and ride along with the next
commit or a flush of 500 rows.

Identity numbers never reach a row: an operator's error text passes
:func:`jobs.log.mask_identity_numbers`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobs.ids import run_of
from jobs.log import mask_identity_numbers
from jobs.settings import Settings

FLUSH_ROWS = 500
# How long the group commit waits for more write-ahead rows before it writes (seconds).
LINGER_S = 0.002


@dataclass
class Item:
    """One certificate to deliver (identity data only in memory)."""

    uvci: str
    order_id: str
    recipient: str | None
    address: tuple[str, str, str] | None  # street, postcode, city
    attempts: int  # attempts already in the ledger
    # An earlier request with this certificate's key may have reached the operator (a row
    # still SENDING, or FAILED ambiguously, of an earlier run or try): no paper until the
    # operator's status says it has none, after its processing window.
    maybe_delivered: bool = False
    last_sent_at: float | None = None  # epoch seconds the latest such request left


def _reason(value: Any) -> str | None:
    # an operator's error text could echo a recipient: mask identity numbers
    return mask_identity_numbers(str(value))[:200] if value else None


@dataclass
class AttemptLog:
    """Delivery rows and outcomes of one batch in one process. ``engine``: a private
    engine (a forked delivery process); None: the shared one of ``url``."""

    url: str
    batch_id: str
    retry_deferred: bool = False
    engine: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    settles: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    _intents: list[tuple[dict[str, Any], asyncio.Future]] = field(default_factory=list)
    _committer: asyncio.Task | None = None
    _lock: asyncio.Lock | None = None

    # -- rows ---------------------------------------------------------------------------
    def _row(self, item: Item, channel: str, status: str, **kw: Any) -> dict[str, Any]:
        item.attempts += 1
        return {
            "uvci": item.uvci,
            "batch_id": self.batch_id,
            "attempt": item.attempts,
            "channel": channel,
            "status": status,
            "operator": kw.get("operator"),
            "idempotency_key": kw.get("key"),
            "receipt": kw.get("receipt"),
            "http_status": kw.get("http_status"),
            "reason": _reason(kw.get("reason")),
            "latency_ms": kw.get("latency_ms"),
            "at": datetime.now(UTC),
        }

    def attempt(self, item: Item, channel: str, status: str, **kw: Any) -> None:
        """A row that needs no write-ahead (nothing leaves: paper, unreachable, deferred,
        a status answer); buffered."""
        self.rows.append(self._row(item, channel, status, **kw))

    def intent(self, item: Item, operator: str | None, key: str) -> dict[str, Any]:
        """The SENDING row of a request about to leave (commit it: :meth:`write_ahead`)."""
        return self._row(item, "digital", "SENDING", operator=operator, key=key)

    def settle(self, row: dict[str, Any], status: str, **kw: Any) -> None:
        """The answer to a written-ahead request (buffered)."""
        self.settles.append(
            {
                "b_uvci": row["uvci"],
                "b_attempt": row["attempt"],
                "b_status": status,
                "b_receipt": kw.get("receipt"),
                "b_http_status": kw.get("http_status"),
                "b_reason": _reason(kw.get("reason")),
                "b_latency_ms": kw.get("latency_ms"),
            }
        )

    def final(self, item: Item, outcome: str, reason: str) -> None:
        self.finals.append({"b_uvci": item.uvci, "b_outcome": outcome, "b_reason": reason[:64]})
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    @property
    def buffered(self) -> int:
        return len(self.rows) + len(self.settles) + len(self.finals)

    # -- writing ------------------------------------------------------------------------
    def write(
        self,
        rows: list[dict[str, Any]],
        settles: list[dict[str, Any]],
        finals: list[dict[str, Any]],
    ) -> None:
        """One transaction (any thread): new rows, settles, then outcomes (an outcome only
        where there is none, or DEFERRED with ``retry_deferred``)."""
        from sqlalchemy import bindparam, insert, or_

        from jobs.db import engine
        from jobs.ledger.models import Certificate, Delivery, Outcome

        if not rows and not settles and not finals:
            return
        certs, deliveries = Certificate.__table__, Delivery.__table__
        open_outcome = certs.c.outcome.is_(None)
        if self.retry_deferred:
            open_outcome = or_(open_outcome, certs.c.outcome == Outcome.DEFERRED.value)
        with (self.engine or engine(self.url)).begin() as conn:
            if rows:
                conn.execute(insert(deliveries), rows)
            if settles:
                conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.uvci == bindparam("b_uvci"),
                        deliveries.c.attempt == bindparam("b_attempt"),
                    )
                    .values(
                        status=bindparam("b_status"),
                        receipt=bindparam("b_receipt"),
                        http_status=bindparam("b_http_status"),
                        reason=bindparam("b_reason"),
                        latency_ms=bindparam("b_latency_ms"),
                    ),
                    settles,
                )
            if finals:
                conn.execute(
                    certs.update()
                    .where(certs.c.uvci == bindparam("b_uvci"), open_outcome)
                    .values(outcome=bindparam("b_outcome"), outcome_reason=bindparam("b_reason")),
                    finals,
                )

    async def _write(self, intents: list[dict[str, Any]] | None = None) -> None:
        """The buffers (taken on the event loop's thread, so no row appended meanwhile is
        lost) and ``intents`` in one transaction in a worker thread; on failure the
        buffers are put back for the next try and the error raised."""
        rows, settles, finals = self.rows, self.settles, self.finals
        self.rows, self.settles, self.finals = [], [], []
        try:
            async with self._db_lock():
                await asyncio.to_thread(self.write, [*(intents or ()), *rows], settles, finals)
        except BaseException:
            self.rows[:0], self.settles[:0], self.finals[:0] = rows, settles, finals
            raise
        self.written += len(rows) + len(intents or ())

    def _db_lock(self) -> asyncio.Lock:
        if self._lock is None:  # created inside the running event loop
            self._lock = asyncio.Lock()
        return self._lock

    async def write_ahead(self, row: dict[str, Any]) -> None:
        """Return once ``row`` is committed. Rows of sends waiting at the same moment share
        one transaction (group commit); buffered rows ride along."""
        future = asyncio.get_running_loop().create_future()
        self._intents.append((row, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit())
        await future

    async def _commit(self) -> None:
        while self._intents:
            await asyncio.sleep(LINGER_S)  # let the sends ready at this moment join in
            waiting, self._intents = self._intents, []
            try:
                await self._write([row for row, _ in waiting])
            except BaseException as exc:
                for _, f in waiting:
                    if not f.done():
                        f.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, f in waiting:
                if not f.done():
                    f.set_result(None)

    async def flush(self, force: bool = False) -> None:
        """Write the buffers (always with ``force``; else from :data:`FLUSH_ROWS` on)."""
        if force or self.buffered >= FLUSH_ROWS:
            await self._write()

    async def close(self) -> None:
        """Wait for the group commit, then write what is buffered."""
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        await self.flush(force=True)


def pending_items(
    batch_id: str, settings: Settings, retry_deferred: bool
) -> tuple[list[Item], int]:
    """Certificates of the batch still without an outcome (or DEFERRED, with
    ``retry_deferred``), with recipient and address from the batch's payloads and what the
    ledger knows of earlier requests; and the number of certificates in the batch."""
    import pyarrow.parquet as pq
    from sqlalchemy import func, or_, select

    from jobs.db import engine
    from jobs.ledger.models import Certificate, Delivery, DeliveryStatus, Outcome
    from jobs.storage import RunPaths

    url = settings.resolved_ledger_url()
    open_ = Certificate.outcome.is_(None)
    if retry_deferred:
        open_ = or_(open_, Certificate.outcome == Outcome.DEFERRED)
    with engine(url).connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(Certificate).where(Certificate.batch_id == batch_id)
        ).scalar_one()
        certs = conn.execute(
            select(Certificate.uvci, Certificate.order_id)
            .where(Certificate.batch_id == batch_id, open_)
            .order_by(Certificate.uvci)
        ).all()
        attempts = dict(
            conn.execute(
                select(Delivery.uvci, func.max(Delivery.attempt))
                .where(Delivery.batch_id == batch_id)
                .group_by(Delivery.uvci)
            ).all()
        )
        # requests that may have reached the operator: still SENDING (a crash or a lost
        # settle) or FAILED (may have arrived), with their key
        sent_before = dict(
            conn.execute(
                select(Delivery.uvci, func.max(Delivery.at))
                .where(
                    Delivery.batch_id == batch_id,
                    Delivery.channel == "digital",
                    Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.SENDING]),
                    Delivery.idempotency_key.is_not(None),
                )
                .group_by(Delivery.uvci)
            ).all()
        )
    if not certs:
        return [], total
    path = RunPaths.of(run_of(batch_id), settings).batch_payloads(batch_id)
    cols = ["uvci", "person_id", "address_street", "address_postcode", "address_city"]
    table = pq.read_table(path, columns=cols).to_pydict()
    by_uvci = {
        u: (p, (st, pc, city) if st or pc or city else None)
        for u, p, st, pc, city in zip(*(table[c] for c in cols), strict=True)
    }
    items = []
    for uvci, order_id in certs:
        recipient, address = by_uvci.get(uvci, (None, None))
        sent_at = sent_before.get(uvci)
        if sent_at is not None and sent_at.tzinfo is None:  # SQLite gives naive UTC
            sent_at = sent_at.replace(tzinfo=UTC)
        items.append(
            Item(
                uvci, order_id, recipient, address, attempts.get(uvci, 0) or 0,
                maybe_delivered=uvci in sent_before,
                last_sent_at=sent_at.timestamp() if sent_at is not None else None,
            )
        )  # fmt: skip
    return items, total
