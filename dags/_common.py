"""What the bevis DAGs share. Imports nothing heavy: DAG files must parse fast."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, ExceptionRetryPolicy, RetryAction, RetryRule

# Updated by every issuance run; dcc_reporting is scheduled on it.
ISSUANCE_LEDGER = Asset(name="bevis_issuance_ledger", uri="bevis://ledger/issuance")

SIGNING_POOL = "bevis_signing"  # one batch signs at a time per slot: it uses every core
MAILBOX_POOL = "bevis_mailbox"  # bounds the load on the mailbox operators

DEFAULT_ARGS = {
    "owner": "bevis-data-engineering",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=15),
}

# Written against bevis' one error taxonomy (jobs/errors.py): every domain error either
# fails at once (NotRetryable, a data-quality gate) or retries for a reason (Retryable,
# network errors). First match wins. Only light modules are named: the rules import them
# when the DAG file is parsed.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="data_quality.RunGateFailed",
            action=RetryAction.FAIL,
            reason="a data-quality gate stopped the run; retrying cannot change the data",
        ),
        RetryRule(
            exception="jobs.errors.Refusal",
            action=RetryAction.FAIL,
            reason="refused by the schema or the value sets; fix the data, then rerun",
        ),
        RetryRule(
            exception="jobs.errors.NotRetryable",
            action=RetryAction.FAIL,
            reason="the same input gives the same failure; see the error, fix, then rerun",
        ),
        RetryRule(
            exception="jobs.settings.DefaultSecretError",
            action=RetryAction.FAIL,
            reason="a published development secret outside development mode; set a real one",
        ),
        RetryRule(
            exception="jobs.errors.MailboxUnavailable",
            action=RetryAction.RETRY,
            retry_delay=timedelta(minutes=2),
            reason="mailbox operator unavailable",
        ),
        RetryRule(
            exception="jobs.errors.Retryable",
            action=RetryAction.RETRY,
            retry_delay=timedelta(minutes=1),
            reason="a passing condition (database, a busy batch, a lost lease)",
        ),
        RetryRule(
            exception="httpx.TransportError",
            action=RetryAction.RETRY,
            retry_delay=timedelta(minutes=1),
            reason="network error towards the mailbox",
        ),
    ],
)


def record_failure(context) -> None:
    """on_failure_callback: a task failed for good; write it on the run in the ledger."""
    from jobs import flow

    dag_run = context.get("dag_run")
    if dag_run is None:
        return
    exc = context.get("exception")
    ti = context.get("ti") or context.get("task_instance")
    where = getattr(ti, "task_id", "?")
    flow.record_failure(
        flow.airflow_run_id(dag_run.run_id),
        f"{where}: {type(exc).__name__ if exc else 'failed'}: {exc}",
        task=where,
    )
