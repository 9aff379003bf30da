"""The one interface of a digital-mailbox service, whatever the wire protocol.

Semantics follow Mina meddelanden: a reachability look-up in FaR (``isReachable``, at most
1,000 recipients per call) answers, per recipient, Secure / Anonymous / Not, whether the
mailbox is still pending, whether the recipient accepts this sender, and the service
address of the recipient's mailbox operator; then ``deliverSecure`` to that operator with
one message (at most 2 MB including attachments, subject at most 255 characters, the PDF
attached with its checksum). The JSON-over-HTTP client (``jobs.mailbox.http``) implements
it; a SOAP client with signed XML can implement the same Protocol without touching the flow.

An adapter makes ONE attempt per call and classifies failures: ``TransientError`` (5xx,
timeouts, connection errors; may carry Retry-After), ``PermanentError`` (the request
itself is wrong), ``AuthenticationFailed`` (credentials or TLS verification),
``OperatorUnknown`` (not a configured endpoint: not sent), ``CircuitOpenError`` (not
attempted: the operator is known to be down).
Retries, backoff and fallbacks are the delivery step's business, so that every attempt
is recorded in the ledger.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from jobs.errors import BevisError, NotRetryable, Retryable

MAX_RECIPIENTS_PER_LOOKUP = 1000
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
MAX_SUBJECT_CHARS = 255


class Reachable(enum.StrEnum):
    SECURE = "Secure"  # a secure digital mailbox
    ANONYMOUS = "Anonymous"  # a mailbox without verified identity: no secure delivery
    NOT = "Not"  # no digital mailbox


@dataclass(frozen=True)
class Reachability:
    recipient: str
    status: Reachable
    pending: bool = False
    sender_accepted: bool = True
    operator: str | None = None
    service_address: str | None = None

    @property
    def deliverable(self) -> bool:
        return (
            self.status is Reachable.SECURE
            and not self.pending
            and self.sender_accepted
            and bool(self.service_address)
        )

    @property
    def reason(self) -> str:
        """Why a recipient cannot get a secure message (a ledger reason code)."""
        if self.status is Reachable.NOT:
            return "no_mailbox"
        if self.status is Reachable.ANONYMOUS:
            return "anonymous_mailbox"
        if self.pending:
            return "mailbox_pending"
        if not self.sender_accepted:
            return "sender_not_accepted"
        if not self.service_address:
            return "no_service_address"
        return "deliverable"


class MessageInvalid(NotRetryable, ValueError):
    """A message breaks the protocol's limits (checked before sending)."""


@dataclass(frozen=True)
class SecureMessage:
    recipient: str
    subject: str
    body: str
    attachment: bytes
    filename: str
    idempotency_key: str
    content_type: str = "application/pdf"
    checksum: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checksum", hashlib.sha256(self.attachment).hexdigest())
        if len(self.subject) > MAX_SUBJECT_CHARS:
            raise MessageInvalid(f"subject has {len(self.subject)} > {MAX_SUBJECT_CHARS} chars")
        if self.size > MAX_MESSAGE_BYTES:
            raise MessageInvalid(f"message is {self.size} bytes > {MAX_MESSAGE_BYTES}")

    @property
    def size(self) -> int:
        """Message size as the protocol counts it: attachment, body and subject."""
        return len(self.attachment) + len(self.body.encode()) + len(self.subject.encode())


@dataclass(frozen=True)
class Receipt:
    transaction_id: str
    duplicate: bool = False  # the operator had it already (same idempotency key)
    http_status: int | None = None
    latency_ms: float | None = None


class MailboxError(BevisError):
    """A failed call; ``http_status`` when the service answered."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class TransientError(MailboxError, Retryable):
    """Worth retrying: 5xx, 429, timeouts, connection errors. ``ambiguous`` when the
    request may have reached the operator (so a later status check decides)."""

    def __init__(
        self,
        message: str,
        http_status: int | None = None,
        retry_after: float | None = None,
        ambiguous: bool = True,
    ) -> None:
        super().__init__(message, http_status)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class PermanentError(MailboxError, NotRetryable):
    """The operator refused this message; retrying the same request cannot help."""


class AuthenticationFailed(MailboxError, NotRetryable):
    """The service refused our credentials (401/403, our client certificate) or its own
    certificate failed verification: a settings problem, and the request was not
    processed. Retrying with the same settings cannot help."""


class OperatorUnknown(MailboxError, NotRetryable):
    """Not sent: the address is not under a configured operator endpoint."""


class CircuitOpenError(MailboxError, Retryable):
    """Not attempted: the circuit breaker of this service is open."""

    def __init__(self, service: str, retry_in: float) -> None:
        super().__init__(f"circuit open for {service}", None)
        self.retry_in = retry_in


@runtime_checkable
class MailboxAdapter(Protocol):
    """What the delivery step needs from a mailbox service (one attempt per call)."""

    async def lookup(self, recipients: Sequence[str]) -> dict[str, Reachability]:
        """Reachability of ≤ 1,000 recipients."""
        ...

    def operator_endpoint(self, operator: str | None, service_address: str | None) -> str | None:
        """The configured base URL of the operator a look-up answer names, when the answer's
        address has exactly its scheme, host and port; None: refused (not configured)."""
        ...

    async def deliver(
        self,
        service_address: str,
        message: SecureMessage,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Receipt:
        """Deliver one message to the operator at ``service_address`` (a configured
        endpoint). ``before_send`` is awaited once the request may go out and right before
        it leaves (the caller's write-ahead record); if it raises, nothing is sent."""
        ...

    async def status(self, service_address: str, idempotency_key: str) -> Receipt | None:
        """The receipt of an earlier delivery with this key, or None when the operator
        never got it (decides ambiguous failures without delivering twice)."""
        ...

    async def aclose(self) -> None: ...
