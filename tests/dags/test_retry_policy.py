"""The DAG's retry policy is written against the error taxonomy: every domain error of bevis
either fails at once or retries for a stated reason — none falls through to the default
(three pointless retries, as LedgerMismatch and MappingInputMissing used to get)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import jobs
from dags._common import RETRY_POLICY
from jobs.errors import BevisError, NotRetryable, Retryable


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_all_subclasses(sub)}
    return out


def _domain_errors() -> list[type[BaseException]]:
    for info in pkgutil.walk_packages(jobs.__path__, "jobs."):
        if ".migrations." in info.name:
            continue
        importlib.import_module(info.name)
    return sorted(_all_subclasses(BevisError), key=lambda c: f"{c.__module__}.{c.__name__}")


def _instance(cls: type[BaseException]) -> BaseException:
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    args = ["x" if p.name != "retry_in" else 1.0 for p in params]
    return cls(*args)


def test_every_domain_error_is_in_one_branch() -> None:
    errors = _domain_errors()
    assert len(errors) >= 10
    neither = [
        c.__name__
        for c in errors
        if not issubclass(c, NotRetryable | Retryable)
        and c.__name__ not in ("NotRetryable", "Retryable", "MailboxError")
    ]
    assert not neither, f"domain errors outside NotRetryable/Retryable: {neither}"


@pytest.mark.parametrize("cls", _domain_errors(), ids=lambda c: c.__name__)
def test_the_policy_decides_every_domain_error(cls: type[BaseException]) -> None:
    if cls.__name__ == "MailboxError":  # the adapter's abstract base: never raised itself
        return
    decision = RETRY_POLICY.evaluate(_instance(cls), try_number=1, max_tries=4)
    expected = "fail" if issubclass(cls, NotRetryable) else "retry"
    assert decision.action.value == expected, (cls.__name__, decision)
    assert decision.reason and "Matched rule" not in decision.reason


def test_gate_failures_fail_at_once() -> None:
    from data_quality import RunGateFailed

    gate = RunGateFailed("nvr_extract", [("expect_table_row_count_to_be_between", "0 rows")])
    from jobs.settings import DefaultSecretError

    for exc in (gate, DefaultSecretError("BEVIS_PSEUDONYM_KEY is a published secret")):
        assert RETRY_POLICY.evaluate(exc, try_number=1, max_tries=4).action.value == "fail"
