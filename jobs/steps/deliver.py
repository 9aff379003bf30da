"""deliver[b]: every certificate of a batch to a digital mailbox, or to paper, or deferred.

For each certificate without an outcome: look the recipient up (≤1,000 per call); when
the recipient has a secure mailbox that accepts us, deliver the PDF to its operator with
an idempotency key derived from the UVCI (so a retry, a rerun or a crashed task can never
deliver twice), retrying transient failures with exponential backoff that honours
Retry-After, behind a circuit breaker per operator. Inside a service window
(``settings.service_windows``) delivery is deferred, not failed.

Exactly once, never printed when the operator may have it:

* Paper (:mod:`jobs.steps.paper`, or deferral by ``settings.paper_policy``) is for people
  without a reachable mailbox — the look-up says so, or the operator rejects the message
  (4xx). An outage (5xx, timeouts, an open breaker, a spent retry budget), refused
  credentials or an unknown operator DEFER: the next try (``--retry-deferred``) delivers.
* Every request is written to the ledger before it leaves (:mod:`jobs.steps.attempts`),
  with its idempotency key, and settled after: after a crash every message an operator may
  hold has its row, and the rerun sends again with the same key or asks first.
* A request that may have reached the operator (a timeout, a lost acknowledgement) makes
  the certificate "maybe delivered" until a retry with its key is answered, or until the
  operator's status call says it has no such message *after* its processing window
  (``settings.mailbox_processing_window_s``); until then it is DEFERRED
  ``delivery_unconfirmed``, never paper.
* A look-up answer naming an operator, or an address, that is not configured
  (``settings.mailbox_operators``: exact scheme, host and port) is refused: DEFERRED
  ``operator_unknown``; the message goes to the configured URL, never to the answer's.
* A batch's lease (``lease``, from :func:`jobs.batches.run_step`) is checked before each
  send and before any paper: a worker that lost it stops (``LeaseLost``).

Every certificate ends in exactly one ``Outcome`` (the update only sets an outcome where
there is none). Identity numbers stay in memory: never in logs or rows.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.errors import ConfigurationInvalid, MailboxUnavailable, Refusal
from jobs.ids import idempotency_key, pdf_name, run_of
from jobs.log import get_logger, mask_identity_numbers
from jobs.settings import Settings, get_settings
from jobs.steps.attempts import AttemptLog, Item, pending_items
from jobs.steps.paper import write_print_queue

log = get_logger(__name__)

SUBJECT = "Ditt vaccinationsintyg / Your vaccination certificate"
BODY = (
    "Här är ditt EU:s digitala covidintyg som bifogad PDF.\n\n"
    "Here is your EU Digital COVID Certificate as an attached PDF."
)
ATTACHMENT_NAME = "covidintyg.pdf"

__all__ = ["Courier", "Item", "deliver_batch", "idempotency_key", "outcome_counts"]


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


def _label(value: str | None) -> str | None:
    """An operator name or address from a look-up answer, fit for a row or a log line."""
    return mask_identity_numbers(value)[:64] if value else None


class Courier:
    """The delivery policy of one batch over a :class:`MailboxAdapter`."""

    def __init__(
        self, adapter, writer: AttemptLog, settings: Settings, pdf_dir: Path, lease: Any = None
    ) -> None:
        self.adapter = adapter
        self.writer = writer
        self.s = settings
        self.pdf_dir = pdf_dir
        self.lease = lease
        self.windows = parse_windows(settings.service_windows)
        self.rng = random.Random()
        self.sent = 0

    def check_lease(self) -> None:
        """LeaseLost when this worker no longer holds the batch (before a send or paper)."""
        if self.lease is not None:
            self.lease.check()

    # -- outcomes -------------------------------------------------------------------------
    def fallback(self, item: Item, reason: str) -> None:
        """No reachable mailbox: paper or deferral, by policy; deferral when there is no
        postal address. A certificate that may be at the operator is deferred, never
        printed."""
        if item.maybe_delivered:
            self.defer(item, "delivery_unconfirmed")
            return
        if self.s.paper_policy == "paper" and item.address and all(item.address):
            self.check_lease()
            self.writer.attempt(item, "paper", "QUEUED_PAPER", reason=reason)
            self.writer.final(item, "PAPER", reason)
        else:
            why = reason if self.s.paper_policy == "defer" else f"{reason}; no_postal_address"
            self.writer.attempt(item, "paper", "DEFERRED", reason=why)
            self.writer.final(
                item, "DEFERRED", reason if self.s.paper_policy == "defer" else "no_postal_address"
            )

    def defer(self, item: Item, reason: str, channel: str = "digital", **kw: Any) -> None:
        self.writer.attempt(item, channel, "DEFERRED", reason=reason, **kw)
        self.writer.final(item, "DEFERRED", reason)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        base = min(self.s.mailbox_backoff_max_s, self.s.mailbox_backoff_s * 2 ** (attempt - 1))
        jittered = base * (0.5 + self.rng.random() / 2)
        return max(jittered, retry_after or 0.0)

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
            sends, refused = [], []
            for item in chunk:
                if not item.recipient:
                    self.fallback(item, "no_recipient_id")
                    continue
                r = reach.get(item.recipient)
                if r is None:  # the look-up did not say: nothing is known, so no paper
                    self.defer(item, "not_in_lookup_answer")
                    continue
                if not r.deliverable:
                    self.writer.attempt(
                        item, "digital", "UNREACHABLE", reason=r.reason, operator=_label(r.operator)
                    )
                    self.fallback(item, r.reason)
                    continue
                endpoint = self.adapter.operator_endpoint(r.operator, r.service_address)
                if endpoint is None:
                    refused.append((item, r))
                    self.defer(item, "operator_unknown", operator=_label(r.operator))
                    continue
                sends.append(self.send(item, r.operator, endpoint, sem))
            if refused:
                self._log_refused(refused)
            await _all_or_none(sends)
            await self.writer.flush(force=True)

    def _log_refused(self, refused: list) -> None:
        from jobs.mailbox.endpoints import origin

        origins = {origin(r.service_address or "") for _, r in refused}
        log.warning(
            "operator_unknown",
            batch_id=self.writer.batch_id,
            certificates=len(refused),
            order_ids=[i.order_id for i, _ in refused[:20]],
            operators=sorted({_label(r.operator) or "-" for _, r in refused}),
            origins=sorted(_label(f"{o[0]}://{o[1]}:{o[2]}") or "-" for o in origins if o),
        )

    async def lookup(self, recipients: list[str]) -> dict:
        """Reachability of one chunk, retried; raises MailboxUnavailable when FaR stays
        down (certificates stay pending for the task's retry)."""
        from jobs.mailbox import (
            AuthenticationFailed,
            CircuitOpenError,
            MailboxError,
            TransientError,
        )

        for attempt in range(1, self.s.mailbox_max_attempts + 1):
            try:
                return await self.adapter.lookup(recipients)
            except CircuitOpenError as exc:
                wait = exc.retry_in
            except TransientError as exc:
                wait = self.delay(attempt, exc.retry_after)
            except AuthenticationFailed as exc:
                raise ConfigurationInvalid(
                    f"batch {self.writer.batch_id}: the reachability look-up refused the "
                    f"connection: {exc} (check mailbox_ca_bundle, mailbox_client_cert, "
                    "mailbox_token)"
                ) from exc
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

    async def send(self, item: Item, operator: str, endpoint: str, sem) -> None:
        from jobs.mailbox import (
            AuthenticationFailed,
            CircuitOpenError,
            MessageInvalid,
            OperatorUnknown,
            PermanentError,
            SecureMessage,
            TransientError,
        )

        key = idempotency_key(item.uvci)
        # when the latest request that may have reached the operator left (epoch seconds)
        maybe_at = item.last_sent_at if item.maybe_delivered else None
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
            self.writer.attempt(item, "digital", "REFUSED", reason=f"message_invalid: {exc}")
            await self.reject(item, endpoint, key, "message_invalid", maybe_at)
            return
        w = self.writer
        reason = "retry_budget_spent"
        budget = self.s.mailbox_max_attempts
        deadline = time.monotonic() + budget * max(
            self.s.mailbox_backoff_max_s, self.s.mailbox_breaker_cooldown_s
        )
        async with sem:
            attempts = 0
            while attempts < budget:
                if in_service_window(self.windows):
                    await self.undelivered(item, endpoint, key, "service_window", maybe_at)
                    return
                row: dict[str, Any] = {}  # the write-ahead row, once the request may leave
                before_send = functools.partial(self.write_ahead, item, operator, key, row)
                try:
                    receipt = await self.adapter.deliver(endpoint, message, before_send)
                except CircuitOpenError as exc:
                    # Not attempted: wait for the breaker's trial call, within a deadline.
                    if time.monotonic() + exc.retry_in > deadline:
                        reason = "operator_unavailable"
                        break
                    await asyncio.sleep(exc.retry_in)
                    continue
                except TransientError as exc:
                    attempts += 1
                    if exc.ambiguous:  # it may have arrived: maybe delivered from now on
                        maybe_at = row["at"].timestamp() if row else time.time()
                    if row:
                        w.settle(
                            row, "FAILED" if exc.ambiguous else "REFUSED",
                            http_status=exc.http_status, reason=str(exc),
                        )  # fmt: skip
                    if (exc.retry_after or 0) > self.s.mailbox_backoff_max_s:
                        reason = "retry_after_exceeds_budget"
                        break
                    wait = self.delay(attempts, exc.retry_after)
                except AuthenticationFailed as exc:
                    if row:
                        w.settle(row, "REFUSED", http_status=exc.http_status, reason=str(exc))
                    reason = "operator_auth_failed"
                    break
                except OperatorUnknown:  # not sent (the adapter's own check)
                    reason = "operator_unknown"
                    break
                except PermanentError as exc:
                    if row:
                        w.settle(row, "REFUSED", http_status=exc.http_status, reason=str(exc))
                    rejected = f"rejected_http_{exc.http_status}"
                    await self.reject(item, endpoint, key, rejected, maybe_at)
                    return
                else:
                    w.settle(
                        row, "DELIVERED", receipt=receipt.transaction_id,
                        http_status=receipt.http_status, latency_ms=receipt.latency_ms,
                        reason="duplicate_key" if receipt.duplicate else None,
                    )  # fmt: skip
                    w.final(item, "DIGITAL", "delivered")
                    self.sent += 1
                    await w.flush()
                    return
                if attempts < budget:
                    await asyncio.sleep(wait)
            # Not delivered for a passing reason (outage, budget, credentials): deferred —
            # paper is for people without a reachable mailbox.
            await self.undelivered(item, endpoint, key, reason, maybe_at)

    async def write_ahead(self, item: Item, operator: str, key: str, row: dict) -> None:
        """Right before a request leaves: the lease (a worker that lost the batch stops
        here), then the SENDING row with the key, committed."""
        self.check_lease()
        row.update(self.writer.intent(item, operator, key))
        await self.writer.write_ahead(row)

    async def undelivered(
        self, item: Item, endpoint: str, key: str, reason: str, maybe_at: float | None
    ) -> None:
        """DEFERRED for ``reason``; when a request may have reached the operator, its
        status decides: it has the message → DIGITAL; it says no after its processing
        window → DEFERRED ``reason``; otherwise DEFERRED ``delivery_unconfirmed``."""
        if maybe_at is None:
            self.defer(item, reason)
            return
        known, receipt = await self.ask(endpoint, key)
        if receipt is not None:
            self.confirmed(item, key, receipt)
        elif known and self.window_passed(maybe_at):
            self.defer(item, reason)
        else:
            self.defer(item, "delivery_unconfirmed")

    async def reject(
        self, item: Item, endpoint: str, key: str, reason: str, maybe_at: float | None
    ) -> None:
        """The operator rejected the message (or it cannot be made): the paper fallback —
        but when a request with its key may have reached the operator, only once its
        status says it has none, asked after its processing window."""
        if maybe_at is None and not item.maybe_delivered:
            self.fallback(item, reason)
            return
        left = self.s.mailbox_processing_window_s - (time.time() - (maybe_at or 0.0))
        if left > self.s.mailbox_backoff_max_s:
            self.defer(item, "delivery_unconfirmed")
            return
        if left > 0:
            await asyncio.sleep(left)
        known, receipt = await self.ask(endpoint, key)
        if receipt is not None:
            self.confirmed(item, key, receipt)
        elif not known:
            self.defer(item, "delivery_unconfirmed")
        else:
            item.maybe_delivered = False  # the operator has none, after its window
            self.fallback(item, reason)

    def window_passed(self, sent_at: float) -> bool:
        return time.time() - sent_at >= self.s.mailbox_processing_window_s

    def confirmed(self, item: Item, key: str, receipt) -> None:
        self.writer.attempt(
            item, "digital", "DELIVERED", key=key, receipt=receipt.transaction_id,
            http_status=receipt.http_status, reason="confirmed_by_status",
        )  # fmt: skip
        self.writer.final(item, "DIGITAL", "delivered_confirmed")

    async def ask(self, endpoint: str, key: str) -> tuple[bool, Any]:
        """(the operator could say, its receipt for ``key`` or None): retried like a
        delivery, within a deadline; (False, None) when it cannot say."""
        from jobs.mailbox import CircuitOpenError, MailboxError, TransientError

        deadline = time.monotonic() + self.s.mailbox_max_attempts * max(
            self.s.mailbox_backoff_max_s, self.s.mailbox_breaker_cooldown_s
        )
        for attempt in range(1, self.s.mailbox_max_attempts + 1):
            try:
                return True, await self.adapter.status(endpoint, key)
            except CircuitOpenError as exc:
                wait = exc.retry_in
            except TransientError as exc:
                wait = self.delay(attempt, exc.retry_after)
            except MailboxError:
                return False, None
            if time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        return False, None


async def _all_or_none(coroutines: Sequence) -> None:
    """Run the sends of a chunk; the first error (a lost lease, the ledger down) cancels
    the others — a request in flight keeps its write-ahead row — and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _consent_gate(
    batch_id: str, items: list[Item], settings: Settings
) -> tuple[list[Item], list[str]]:
    """Consent, re-checked in SQL immediately before delivering (plain and
    ``--retry-deferred``): the orders whose consent lapsed are withdrawn — certificate
    WITHDRAWN, order released, personal data and PDF scrubbed (:func:`jobs.steps.scrub.
    withdraw`) — and are neither delivered nor printed. Returns the items left and the
    withdrawn order ids."""
    from jobs.steps.scrub import lapsed_in_batch, withdraw

    if not items:
        return items, []
    gone = lapsed_in_batch(batch_id, [i.order_id for i in items], settings)
    if not gone:
        return items, []
    withdraw(batch_id, gone, settings)  # pending items: none answered yet
    return [i for i in items if i.order_id not in gone], sorted(gone)


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
    lease: Any = None,
) -> dict[str, Any]:
    """Deliver some certificates of a batch in this process: one event loop, one pooled
    client, one attempt log. Returns the rows written and the reasons counted."""
    from jobs.mailbox.http import HttpMailbox

    writer = AttemptLog(settings.resolved_ledger_url(), batch_id, retry_deferred=retry_deferred)
    if forked:
        # The cached engine of the parent (and its pooled connections) must not be used
        # here; a fresh one, unwrapped from the cache, opens its own connections.
        from jobs.db import engine

        writer.engine = engine.__wrapped__(writer.url)
    client = adapter or HttpMailbox.from_settings(settings)
    courier = Courier(client, writer, settings, pdf_dir, lease=lease)

    async def main() -> None:
        try:
            await courier.run(items)
        finally:
            await writer.close()
            if adapter is None:
                await client.aclose()

    try:
        asyncio.run(main())
    finally:
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
    *,
    lease: Any | None = None,
) -> dict[str, Any]:
    """deliver[b]. Idempotent: certificates with an outcome are not sent again (with
    ``retry_deferred``, DEFERRED ones are tried again, with the same idempotency keys).
    Does not change the Batch state. Returns counts per outcome for the whole batch.

    ``lease`` (from :func:`jobs.batches.run_step`): ``check()`` is called before each send
    and before any paper; LeaseLost stops the step there. Batches of several look-up chunks
    are spread over ``settings.resolved_workers()`` processes (an HTTP client's CPU, not the
    network, bounds one event loop); a forked process checks the same lease."""
    from jobs.mailbox import MAX_RECIPIENTS_PER_LOOKUP
    from jobs.mailbox.http import HttpMailbox

    s = settings or get_settings()
    t0 = time.perf_counter()
    items, total = pending_items(batch_id, s, retry_deferred)
    written, reasons = 0, {}
    if items and adapter is None:
        HttpMailbox.configuration(s)  # unsafe settings fail here, before any request
    items, withdrawn = _consent_gate(batch_id, items, s)
    if items:
        pdf_dir = _ensure_pdfs(batch_id, items, s)
        chunk = min(s.mailbox_lookup_chunk, MAX_RECIPIENTS_PER_LOOKUP)
        parts = _parts(items, s.resolved_workers(), chunk)
        if adapter is not None or len(parts) == 1:
            results = [
                _deliver_part(batch_id, items, s, pdf_dir, retry_deferred, adapter, lease=lease)
            ]
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork: starts in milliseconds (spawn re-imports everything: seconds of CPU);
            # the children open their own database engine (forked=True) and leave the
            # inherited one alone (multiprocessing ends them with os._exit).
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(len(parts), mp_context=ctx) as pool:
                futures = [
                    pool.submit(
                        _deliver_part, batch_id, p, s, pdf_dir, retry_deferred, None, True, lease
                    )
                    for p in parts
                ]
                results = [f.result() for f in futures]
        for r in results:
            written += r["written"]
            for k, v in r["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
    if lease is not None:
        lease.check()  # the print queue is paper too
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
        "withdrawn": len(withdrawn),
        "attempts": written,
        "reasons": reasons,
        "print_pages": paper,
        "seconds": seconds,
        "print_seconds": print_seconds,
        "print_cpu_s": print_cpu,
        **counts,
    }
