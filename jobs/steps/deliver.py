"""deliver[b]: every certificate of a batch to a digital mailbox, or to paper, or deferred.

For each certificate without an outcome: look the recipient up (≤1,000 per call); when
the recipient has a secure mailbox that accepts us, deliver the PDF to its operator with
an idempotency key derived from the UVCI (so a retry, a rerun or a crashed task can never
deliver twice), retrying transient failures with exponential backoff that honours
Retry-After, behind a circuit breaker per operator. Otherwise, or when the retry budget
is spent, the certificate goes to the paper print queue (:mod:`jobs.steps.paper`) or is
deferred to a later run (``settings.paper_policy``). Inside a service window
(``settings.service_windows``) delivery is deferred, not failed.

Invariants: every attempt is a ``Delivery`` row; every certificate ends in exactly one
``Outcome`` (the update only sets an outcome where there is none); a certificate whose
delivery may have reached the operator is never sent to paper before the operator's
status call says it did not (otherwise it is deferred with reason
``delivery_unconfirmed``). Identity numbers stay in memory: never in logs or rows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.errors import MailboxUnavailable, Refusal
from jobs.ids import idempotency_key, pdf_name, run_of
from jobs.log import get_logger, mask_identity_numbers
from jobs.settings import Settings, get_settings
from jobs.steps.paper import write_print_queue

log = get_logger(__name__)

SUBJECT = "Ditt vaccinationsintyg / Your vaccination certificate"
BODY = (
    "Här är ditt EU:s digitala covidintyg som bifogad PDF.\n\n"
    "Here is your EU Digital COVID Certificate as an attached PDF."
)
ATTACHMENT_NAME = "covidintyg.pdf"


def parse_windows(specs: Sequence[str]) -> list[tuple[datetime, datetime]]:
    """ISO intervals 'start/end' (naive times are UTC)."""
    out = []
    for spec in specs:
        start, sep, end = spec.partition("/")
        if not sep:
            raise ValueError(f"service window {spec!r} is not 'start/end'")
        a, b = datetime.fromisoformat(start), datetime.fromisoformat(end)
        a = a if a.tzinfo else a.replace(tzinfo=UTC)
        b = b if b.tzinfo else b.replace(tzinfo=UTC)
        if b <= a:
            raise ValueError(f"service window {spec!r} ends before it starts")
        out.append((a, b))
    return out


def in_service_window(
    windows: Sequence[tuple[datetime, datetime]], now: datetime | None = None
) -> bool:
    now = now or datetime.now(UTC)
    return any(a <= now < b for a, b in windows)


@dataclass
class Item:
    """One certificate to deliver (identity data only in memory)."""

    uvci: str
    order_id: str
    recipient: str | None
    address: tuple[str, str, str] | None  # street, postcode, city
    attempts: int  # attempts already in the ledger
    # an earlier request with this certificate's key may have reached the operator (a
    # failed attempt of an earlier run or try): no paper until the operator says it has none
    maybe_delivered: bool = False


@dataclass
class LedgerWriter:
    """Buffers Delivery rows and outcomes; writes them in bulk (one transaction each
    flush) so the ledger keeps up with hundreds of messages per second."""

    url: str
    batch_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    retry_deferred: bool = False
    engine: Any = None  # a private engine (forked delivery process); None: the shared one

    def attempt(self, item: Item, channel: str, status: str, **kw: Any) -> None:
        item.attempts += 1
        self.rows.append(
            {
                "uvci": item.uvci,
                "batch_id": self.batch_id,
                "attempt": item.attempts,
                "channel": channel,
                "status": status,
                "operator": kw.get("operator"),
                "idempotency_key": kw.get("key"),
                "receipt": kw.get("receipt"),
                "http_status": kw.get("http_status"),
                # an operator's error text could echo a recipient: mask identity numbers
                "reason": mask_identity_numbers(str(kw["reason"]))[:200]
                if kw.get("reason")
                else None,
                "latency_ms": kw.get("latency_ms"),
                "at": datetime.now(UTC),
            }
        )

    def final(self, item: Item, outcome: str, reason: str) -> None:
        self.finals.append({"b_uvci": item.uvci, "b_outcome": outcome, "b_reason": reason[:64]})
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def flush(self) -> None:
        from sqlalchemy import bindparam, insert, or_

        from jobs.db import engine
        from jobs.ledger.models import Certificate, Delivery, Outcome

        rows, finals = self.rows, self.finals
        self.rows, self.finals = [], []
        if not rows and not finals:
            return
        table = Certificate.__table__
        open_outcome = table.c.outcome.is_(None)
        if self.retry_deferred:
            open_outcome = or_(open_outcome, table.c.outcome == Outcome.DEFERRED.value)
        with (self.engine or engine(self.url)).begin() as conn:
            if rows:
                conn.execute(insert(Delivery.__table__), rows)
            if finals:
                conn.execute(
                    table.update()
                    .where(table.c.uvci == bindparam("b_uvci"), open_outcome)
                    .values(outcome=bindparam("b_outcome"), outcome_reason=bindparam("b_reason")),
                    finals,
                )
        self.written += len(rows)


class Courier:
    """The delivery policy of one batch over a :class:`MailboxAdapter`."""

    def __init__(self, adapter, writer: LedgerWriter, settings: Settings, pdf_dir: Path) -> None:
        self.adapter = adapter
        self.writer = writer
        self.s = settings
        self.pdf_dir = pdf_dir
        self.windows = parse_windows(settings.service_windows)
        self.rng = random.Random()
        self._flush_lock = asyncio.Lock()
        self.sent = 0

    # -- outcomes -------------------------------------------------------------------------
    def fallback(self, item: Item, reason: str) -> None:
        """Paper or deferral, by policy; deferral when there is no postal address. A
        certificate that may already be at the operator is deferred, never printed."""
        if item.maybe_delivered:
            self.defer(item, "delivery_unconfirmed")
            return
        if self.s.paper_policy == "paper" and item.address and all(item.address):
            self.writer.attempt(item, "paper", "QUEUED_PAPER", reason=reason)
            self.writer.final(item, "PAPER", reason)
        else:
            why = reason if self.s.paper_policy == "defer" else f"{reason}; no_postal_address"
            self.writer.attempt(item, "paper", "DEFERRED", reason=why)
            self.writer.final(
                item, "DEFERRED", reason if self.s.paper_policy == "defer" else "no_postal_address"
            )

    def defer(self, item: Item, reason: str, channel: str = "digital") -> None:
        self.writer.attempt(item, channel, "DEFERRED", reason=reason)
        self.writer.final(item, "DEFERRED", reason)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        base = min(self.s.mailbox_backoff_max_s, self.s.mailbox_backoff_s * 2 ** (attempt - 1))
        jittered = base * (0.5 + self.rng.random() / 2)
        return max(jittered, retry_after or 0.0)

    async def maybe_flush(self, force: bool = False) -> None:
        if not force and len(self.writer.rows) < 500:
            return
        async with self._flush_lock:
            await asyncio.to_thread(self.writer.flush)

    # -- the flow -------------------------------------------------------------------------
    async def run(self, items: Sequence[Item]) -> None:
        from jobs.mailbox import MAX_RECIPIENTS_PER_LOOKUP

        sem = asyncio.Semaphore(self.s.mailbox_concurrency)
        size = min(self.s.mailbox_lookup_chunk, MAX_RECIPIENTS_PER_LOOKUP)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            if in_service_window(self.windows):
                for item in items[start:]:
                    self.defer(item, "service_window")
                break
            reach = await self.lookup([i.recipient for i in chunk if i.recipient])
            sends = []
            for item in chunk:
                if not item.recipient:
                    self.fallback(item, "no_recipient_id")
                    continue
                r = reach.get(item.recipient)
                if r is None or not r.deliverable:
                    reason = r.reason if r is not None else "not_in_lookup_answer"
                    self.writer.attempt(
                        item, "digital", "UNREACHABLE", reason=reason, operator=r and r.operator
                    )
                    self.fallback(item, reason)
                    continue
                sends.append(self.send(item, r, sem))
            await asyncio.gather(*sends)
            await self.maybe_flush(force=True)

    async def lookup(self, recipients: list[str]) -> dict:
        """Reachability of one chunk, retried; raises MailboxUnavailable when FaR stays
        down (certificates stay pending for the task's retry)."""
        from jobs.mailbox import CircuitOpenError, MailboxError, TransientError

        for attempt in range(1, self.s.mailbox_max_attempts + 1):
            try:
                return await self.adapter.lookup(recipients)
            except CircuitOpenError as exc:
                wait = exc.retry_in
            except TransientError as exc:
                wait = self.delay(attempt, exc.retry_after)
            except MailboxError as exc:
                raise Refusal(
                    f"batch {self.writer.batch_id}: the reachability look-up was refused: {exc}"
                ) from exc
            if attempt < self.s.mailbox_max_attempts:
                await asyncio.sleep(min(wait, self.s.mailbox_backoff_max_s))
        # Without the look-up nothing is known about the recipients: leave them pending and
        # let the scheduler retry the task later (idempotent), rather than print them all.
        raise MailboxUnavailable(
            f"batch {self.writer.batch_id}: the reachability look-up (FaR) is unavailable"
        )

    async def send(self, item: Item, reach, sem: asyncio.Semaphore) -> None:
        from jobs.mailbox import (
            CircuitOpenError,
            MessageInvalid,
            PermanentError,
            SecureMessage,
            TransientError,
        )

        key = idempotency_key(item.uvci)
        op = reach.operator
        try:
            message = SecureMessage(
                recipient=item.recipient or "",
                subject=SUBJECT,
                body=BODY,
                attachment=(self.pdf_dir / pdf_name(item.uvci)).read_bytes(),
                filename=ATTACHMENT_NAME,
                idempotency_key=key,
            )
        except (MessageInvalid, OSError) as exc:
            self.writer.attempt(item, "digital", "FAILED", reason=f"message_invalid: {exc}")
            await self.settle(item, reach, key, "message_invalid", ask=item.maybe_delivered)
            return
        reached_operator = item.maybe_delivered
        reason = "retry_budget_spent"
        budget = self.s.mailbox_max_attempts
        deadline = time.monotonic() + budget * max(
            self.s.mailbox_backoff_max_s, self.s.mailbox_breaker_cooldown_s
        )
        async with sem:
            attempts = 0
            while attempts < budget:
                if in_service_window(self.windows):
                    self.defer(item, "service_window")
                    return
                try:
                    receipt = await self.adapter.deliver(reach.service_address, message)
                except CircuitOpenError as exc:
                    # Not attempted: wait for the breaker's trial call, within a deadline.
                    if time.monotonic() + exc.retry_in > deadline:
                        reason = "operator_unavailable"
                        break
                    await asyncio.sleep(exc.retry_in)
                    continue
                except TransientError as exc:
                    attempts += 1
                    reached_operator = True
                    self.writer.attempt(
                        item, "digital", "FAILED", operator=op, key=key,
                        http_status=exc.http_status, reason=str(exc),
                    )  # fmt: skip
                    if (exc.retry_after or 0) > self.s.mailbox_backoff_max_s:
                        reason = "retry_after_exceeds_budget"
                        break
                    wait = self.delay(attempts, exc.retry_after)
                except PermanentError as exc:
                    self.writer.attempt(
                        item, "digital", "FAILED", operator=op, key=key,
                        http_status=exc.http_status, reason=str(exc),
                    )  # fmt: skip
                    await self.settle(
                        item, reach, key, f"rejected_http_{exc.http_status}",
                        ask=reached_operator,
                    )  # fmt: skip
                    return
                else:
                    self.writer.attempt(
                        item, "digital", "DELIVERED", operator=op, key=key,
                        receipt=receipt.transaction_id, http_status=receipt.http_status,
                        latency_ms=receipt.latency_ms,
                        reason="duplicate_key" if receipt.duplicate else None,
                    )  # fmt: skip
                    self.writer.final(item, "DIGITAL", "delivered")
                    self.sent += 1
                    await self.maybe_flush()
                    return
                if attempts < budget:
                    await asyncio.sleep(wait)
            # The budget is spent. If a request may have reached the operator, ask it first:
            # paper after a lost acknowledgement would be a second copy.
            await self.settle(item, reach, key, reason, ask=reached_operator)

    async def settle(self, item: Item, reach, key: str, reason: str, ask: bool) -> None:
        """The fallback of a certificate that was not delivered now; when a request with its
        key may have reached the operator (``ask``), only after the operator's status call
        says it has no such message (it has: DIGITAL; it cannot say: DEFERRED)."""
        from jobs.mailbox import MailboxError

        if ask:
            try:
                receipt = await self.confirm(reach.service_address, key)
            except MailboxError:
                self.defer(item, "delivery_unconfirmed")
                return
            if receipt is not None:
                self.writer.attempt(
                    item, "digital", "DELIVERED", operator=reach.operator, key=key,
                    receipt=receipt.transaction_id, http_status=receipt.http_status,
                    reason="confirmed_by_status",
                )  # fmt: skip
                self.writer.final(item, "DIGITAL", "delivered_confirmed")
                return
            item.maybe_delivered = False  # the operator has none: the fallback may print
        self.fallback(item, reason)

    async def confirm(self, service_address: str, key: str):
        """The operator's receipt for ``key`` or None; retried like a delivery. Raises
        MailboxError when the operator cannot say."""
        from jobs.mailbox import CircuitOpenError, MailboxError, TransientError

        deadline = time.monotonic() + self.s.mailbox_max_attempts * max(
            self.s.mailbox_backoff_max_s, self.s.mailbox_breaker_cooldown_s
        )
        for attempt in range(1, self.s.mailbox_max_attempts + 1):
            try:
                return await self.adapter.status(service_address, key)
            except CircuitOpenError as exc:
                wait = exc.retry_in
            except TransientError as exc:
                wait = self.delay(attempt, exc.retry_after)
            if time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        raise MailboxError(f"no status from {service_address}")


def _pending_items(
    batch_id: str, settings: Settings, retry_deferred: bool
) -> tuple[list[Item], int]:
    """Certificates of the batch still without an outcome, with recipient and address from
    the batch's payloads; and the number of certificates in the batch."""
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
        sent_before = set(
            conn.scalars(
                select(Delivery.uvci)
                .where(
                    Delivery.batch_id == batch_id,
                    Delivery.channel == "digital",
                    Delivery.status == DeliveryStatus.FAILED,
                    Delivery.idempotency_key.is_not(None),
                )
                .distinct()
            )
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
        items.append(
            Item(
                uvci, order_id, recipient, address, attempts.get(uvci, 0) or 0,
                maybe_delivered=uvci in sent_before,
            )
        )  # fmt: skip
    return items, total


def _ensure_pdfs(batch_id: str, items: Sequence[Item], settings: Settings) -> Path:
    """Render the PDFs that are missing (render is idempotent; a rerun of deliver after a
    lost folder must not fail)."""
    from jobs.steps.render import batch_items, render_items
    from jobs.storage import RunPaths

    pdf_dir = RunPaths.of(run_of(batch_id), settings).pdf_dir(batch_id)
    missing = {i.uvci for i in items if not (pdf_dir / pdf_name(i.uvci)).exists()}
    if missing:
        todo = [r for r in batch_items(batch_id, settings) if r.uvci in missing]
        render_items(todo, pdf_dir, settings)
    return pdf_dir


def outcome_counts(batch_id: str, settings: Settings | None = None) -> dict[str, int]:
    """Certificates of a batch per outcome (``pending`` = none yet)."""
    from sqlalchemy import func, select

    from jobs.db import engine
    from jobs.ledger.models import Certificate

    s = settings or get_settings()
    with engine(s.resolved_ledger_url()).connect() as conn:
        rows = conn.execute(
            select(Certificate.outcome, func.count())
            .where(Certificate.batch_id == batch_id)
            .group_by(Certificate.outcome)
        ).all()
    counts = {"DIGITAL": 0, "PAPER": 0, "DEFERRED": 0, "pending": 0}
    for outcome, n in rows:
        counts[str(outcome.value if outcome is not None else "pending")] = n
    return counts


def _deliver_part(
    batch_id: str,
    items: Sequence[Item],
    settings: Settings,
    pdf_dir: Path,
    retry_deferred: bool,
    adapter=None,
    forked: bool = False,
) -> dict[str, Any]:
    """Deliver some certificates of a batch in this process: one event loop, one pooled
    client, one ledger writer. Returns the rows written and the reasons counted."""
    from jobs.mailbox.http import HttpMailbox

    writer = LedgerWriter(settings.resolved_ledger_url(), batch_id, retry_deferred=retry_deferred)
    if forked:
        # The cached engine of the parent (and its pooled connections) must not be used
        # here; a fresh one, unwrapped from the cache, opens its own connections.
        from jobs.db import engine

        writer.engine = engine.__wrapped__(writer.url)
    client = adapter or HttpMailbox.from_settings(settings)
    courier = Courier(client, writer, settings, pdf_dir)

    async def main() -> None:
        try:
            await courier.run(items)
        finally:
            await courier.maybe_flush(force=True)
            if adapter is None:
                await client.aclose()

    asyncio.run(main())
    if writer.engine is not None:
        writer.engine.dispose()
    return {"written": writer.written, "reasons": writer.reasons}


def _parts(items: Sequence[Item], n: int, chunk: int) -> list[list[Item]]:
    """Whole look-up chunks dealt round-robin to ``n`` processes."""
    parts: list[list[Item]] = [[] for _ in range(n)]
    for k, start in enumerate(range(0, len(items), chunk)):
        parts[k % n].extend(items[start : start + chunk])
    return [p for p in parts if p]


def deliver_batch(
    batch_id: str,
    settings: Settings | None = None,
    adapter=None,
    retry_deferred: bool = False,
) -> dict[str, Any]:
    """deliver[b]. Idempotent: certificates with an outcome are not sent again (with
    ``retry_deferred``, DEFERRED ones are tried again, with the same idempotency keys).
    Does not change the Batch state. Returns counts per outcome for the whole batch.

    Batches of several look-up chunks are spread over ``settings.resolved_workers()``
    processes (an HTTP client's CPU, not the network, bounds one event loop)."""
    from jobs.mailbox import MAX_RECIPIENTS_PER_LOOKUP

    s = settings or get_settings()
    t0 = time.perf_counter()
    items, total = _pending_items(batch_id, s, retry_deferred)
    written, reasons = 0, {}
    if items:
        pdf_dir = _ensure_pdfs(batch_id, items, s)
        chunk = min(s.mailbox_lookup_chunk, MAX_RECIPIENTS_PER_LOOKUP)
        parts = _parts(items, s.resolved_workers(), chunk)
        if adapter is not None or len(parts) == 1:
            results = [_deliver_part(batch_id, items, s, pdf_dir, retry_deferred, adapter)]
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork: starts in milliseconds (spawn re-imports everything: seconds of CPU);
            # the children open their own database engine (forked=True) and leave the
            # inherited one alone (multiprocessing ends them with os._exit).
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(len(parts), mp_context=ctx) as pool:
                futures = [
                    pool.submit(_deliver_part, batch_id, p, s, pdf_dir, retry_deferred, None, True)
                    for p in parts
                ]
                results = [f.result() for f in futures]
        for r in results:
            written += r["written"]
            for k, v in r["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
    t_print, cpu_print = time.perf_counter(), time.process_time()
    paper = write_print_queue(batch_id, s)
    print_seconds = time.perf_counter() - t_print
    print_cpu = time.process_time() - cpu_print
    counts = outcome_counts(batch_id, s)
    seconds = time.perf_counter() - t0
    log.info(
        "deliver_batch",
        batch_id=batch_id,
        certificates=total,
        attempted=len(items),
        attempts_written=written,
        seconds=round(seconds, 3),
        **counts,
    )
    return {
        "batch_id": batch_id,
        "certificates": total,
        "attempted": len(items),
        "attempts": written,
        "reasons": reasons,
        "print_pages": paper,
        "seconds": seconds,
        "print_seconds": print_seconds,
        "print_cpu_s": print_cpu,
        **counts,
    }
