"""Error classes the scheduler's retry policy tells apart (dags/_common.py names them by
dotted path, so this module must stay free of heavy imports).

Messages name records by order id or pseudonymous id only. A run-level data-quality failure
is ``data_quality.RunGateFailed`` (re-exported here).
"""

from data_quality import RunGateFailed

__all__ = ["BevisError", "MailboxUnavailable", "Refusal", "RunGateFailed"]


class BevisError(Exception):
    """Base of bevis' own errors."""


class Refusal(BevisError):
    """A record or batch refused by the schema, the value sets or a policy: fail at once."""


class MailboxUnavailable(BevisError):
    """The mailbox operator (or FaR) is down or in a service window: retry later."""
