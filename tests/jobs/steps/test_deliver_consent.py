"""Drill (issue 14, item 1, the deliver side): consent is re-checked immediately before
delivering, also when DEFERRED certificates are retried. A batch issued from the register
while every operator is down is DEFERRED; some persons withdraw consent; the retry after
the outage delivers the others and none of theirs: WITHDRAWN, never at the operator, never
printed. Real sources and ledger databases, the simulator as its own process over HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.jobs.mailbox.support import FAST, operator_messages
from tests.jobs.test_consent_e2e import (  # the register, keys and simulator of that drill
    RUN,
    _withdraw_in_the_register,
    issued_with_a_fault,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.slow
BATCH = f"{RUN}-b0001"


def _certs(s, batch_id: str) -> list:
    from sqlalchemy import select

    from jobs.db import engine
    from jobs.ledger.models import Certificate

    with engine(s.resolved_ledger_url()).connect() as conn:
        return conn.execute(
            select(Certificate.order_id, Certificate.uvci, Certificate.outcome).where(
                Certificate.batch_id == batch_id
            )
        ).all()


def test_retry_of_deferred_withdraws_lapsed_consent_first(
    issued_with_a_fault,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobs.ids import idempotency_key
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    issue, _, sim = issued_with_a_fault
    # the outage is met fast: short backoff and breaker cooldown (the policy is unchanged)
    for key, value in FAST.items():
        monkeypatch.setenv(f"BEVIS_{key.upper()}", str(value))
    s = get_settings()
    httpx.post(f"{sim.url}/_admin/outage", json={"requests": 10**6, "scope": "operators"})
    issue(None)
    deferred = [c for c in _certs(s, BATCH) if c.outcome is not None and c.outcome.value == "DEFERRED"]  # fmt: skip
    assert len(deferred) > 40, "the outage should defer those with a mailbox"
    assert operator_messages(sim.url) == {}
    victims = [c.order_id for c in deferred[::2]]
    _withdraw_in_the_register(s, victims)

    httpx.post(f"{sim.url}/_admin/outage", json={"requests": 0})
    result = deliver_batch(BATCH, s, retry_deferred=True)
    messages = operator_messages(sim.url)
    after = {c.order_id: c for c in _certs(s, BATCH)}
    sent = [o for o in victims if idempotency_key(after[o].uvci) in messages]
    assert not sent, f"{len(sent)} of {len(victims)} withdrawn were delivered"
    assert {after[o].outcome.value for o in victims} == {"WITHDRAWN"}
    assert result["withdrawn"] == len(victims)
    others = [c.order_id for c in deferred if c.order_id not in set(victims)]
    assert {after[o].outcome.value for o in others} == {"DIGITAL"}
    assert len(messages) == len(others)
