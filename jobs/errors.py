"""bevis' one error taxonomy. The scheduler's retry policy (dags/_common.py) is written
against these classes, by dotted path, so this module stays free of heavy imports.

    BevisError
    ├── NotRetryable          the same input gives the same failure: fail at once
    │   ├── Refusal           refused by the schema, the value sets or a policy
    │   │   └── InvalidInstant  a timestamp that is not a UTC instant (naive, epoch, garbage)
    │   ├── LedgerMismatch    the ledger and a batch's files disagree
    │   ├── InputMissing      a step's input file is not there (an earlier step must run)
    │   ├── UnknownRun / UnknownBatch / UnknownCertificate
    │   ├── StepOutOfOrder
    │   ├── RunFailed         the run ended FAILED (its error says why): the finish task fails
    │   ├── KeysUnusable      signing keys missing, or unusable for the validity
    │   ├── DatabaseMissing   a read found no database (or an older schema): nothing created
    │   ├── ConfigurationInvalid  unsafe or inconsistent settings (plain http to a host)
    │   └── GatewayRefused    the EU gateway refused a request (its problem report says why)
    └── Retryable             a passing condition: retry later
        ├── MailboxUnavailable  the operator (or FaR) is down or in a service window
        ├── DatabaseUnavailable a database cannot be reached
        ├── GatewayUnavailable  the EU gateway cannot be reached or answers 5xx
        ├── BatchBusy           another live process works on the batch
        └── LeaseLost           this worker no longer holds the batch's lease

A run-level data-quality failure is ``data_quality.RunGateFailed`` (data_quality cannot
import jobs; the policy names it beside NotRetryable); a published development secret
outside development mode is ``jobs.settings.DefaultSecretError`` (the floor's modules are
independent), also never worth a retry. Messages name records by order id
or pseudonymous id and the field, never the value.
"""

from data_quality import RunGateFailed

__all__ = [
    "BatchBusy",
    "BevisError",
    "ConfigurationInvalid",
    "DatabaseMissing",
    "DatabaseUnavailable",
    "GatewayRefused",
    "GatewayUnavailable",
    "InputMissing",
    "InvalidInstant",
    "KeysUnusable",
    "LeaseLost",
    "LedgerMismatch",
    "MailboxUnavailable",
    "NotRetryable",
    "Refusal",
    "Retryable",
    "RunFailed",
    "RunGateFailed",
    "StepOutOfOrder",
    "UnknownBatch",
    "UnknownCertificate",
    "UnknownRun",
]


class BevisError(Exception):
    """Base of bevis' own errors."""


class NotRetryable(BevisError):
    """Retrying cannot change the outcome: the scheduler fails the task at once."""


class Retryable(BevisError):
    """A passing condition: the scheduler retries with backoff."""


class Refusal(NotRetryable):
    """A record or batch refused by the schema, the value sets or a policy."""


class LedgerMismatch(NotRetryable):
    """The ledger and the batch's files disagree in a way a rerun must not paper over."""


class InvalidInstant(Refusal, ValueError):
    """A timestamp that is not a UTC instant (naive, an epoch number, unparseable text)."""


class InputMissing(NotRetryable, FileNotFoundError):
    """A step's input is not there: the step before it must run first."""


class UnknownRun(NotRetryable, LookupError):
    """The run id is not in the ledger."""


class UnknownBatch(NotRetryable, LookupError):
    """The batch id is not in the ledger."""


class UnknownCertificate(NotRetryable, LookupError):
    """The UVCI is not in the ledger."""


class GatewayRefused(NotRetryable):
    """The EU gateway refused a request (4xx): its problem report (code, problem) says why."""


class StepOutOfOrder(NotRetryable):
    """A step was asked for before the step it depends on."""


class RunFailed(NotRetryable):
    """The run ended FAILED (the message carries its error): the DAG run must fail too."""


class ConfigurationInvalid(NotRetryable):
    """The settings are unsafe or inconsistent (e.g. plain http:// to a non-loopback host)."""


class DatabaseMissing(NotRetryable):
    """A database a read needs is not there, or not at this bevis' schema (never created or
    migrated by a read: the message names the URL, password masked, and what to do)."""


class KeysUnusable(NotRetryable):
    """The signing keys are missing or cannot sign for the requested validity."""


class MailboxUnavailable(Retryable):
    """The mailbox operator (or FaR) is down or in a service window: retry later."""


class DatabaseUnavailable(Retryable):
    """A database cannot be reached (the message names the URL, password masked)."""


class GatewayUnavailable(Retryable):
    """The EU gateway cannot be reached, or answers 5xx: retry later."""


class BatchBusy(Retryable):
    """Another live process is working on the batch."""


class LeaseLost(Retryable):
    """This worker no longer holds the batch's lease: stop before the next send."""
