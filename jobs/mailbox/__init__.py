"""Digital-mailbox delivery: the adapter interface, its JSON-over-HTTP client and a
simulator of FaR and the mailbox operators (see ``adapter`` for the semantics)."""

from jobs.mailbox.adapter import (
    MAX_MESSAGE_BYTES,
    MAX_RECIPIENTS_PER_LOOKUP,
    MAX_SUBJECT_CHARS,
    AuthenticationFailed,
    CircuitOpenError,
    MailboxAdapter,
    MailboxError,
    MessageInvalid,
    OperatorUnknown,
    PermanentError,
    Reachability,
    Reachable,
    Receipt,
    SecureMessage,
    TransientError,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_RECIPIENTS_PER_LOOKUP",
    "MAX_SUBJECT_CHARS",
    "AuthenticationFailed",
    "CircuitOpenError",
    "MailboxAdapter",
    "MailboxError",
    "MessageInvalid",
    "OperatorUnknown",
    "PermanentError",
    "Reachability",
    "Reachable",
    "Receipt",
    "SecureMessage",
    "TransientError",
]
