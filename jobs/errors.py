"""Error classes the scheduler's retry policy tells apart (dags/_common.py names them by
dotted path, so this module must stay free of heavy imports).

Messages name records by order id or pseudonymous id only.
"""


class BevisError(Exception):
    """Base of bevis' own errors."""


class RunGateFailed(BevisError):
    """A run-level data-quality expectation failed: the run stops; retrying cannot help."""

    def __init__(self, suite: str, expectation: str, message: str) -> None:
        self.suite, self.expectation = suite, expectation
        super().__init__(f"{suite}.{expectation}: {message}")


class Refusal(BevisError):
    """A record or batch refused by the schema, the value sets or a policy: fail at once."""


class MailboxUnavailable(BevisError):
    """The mailbox operator (or FaR) is down or in a service window: retry later."""
