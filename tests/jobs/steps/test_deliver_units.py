"""Pieces of the delivery policy: circuit breaker, Retry-After, service windows, message
limits, idempotency keys, and the HTTP client's classification of failures (against a
real local server)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_half_opens_and_closes() -> None:
    from jobs.mailbox import CircuitOpenError
    from jobs.mailbox.breaker import CircuitBreaker

    clock = FakeClock()
    b = CircuitBreaker("op", threshold=3, cooldown=10, clock=clock)
    for _ in range(3):
        b.before_call()
        b.failure()
    assert b.state == "open"
    with pytest.raises(CircuitOpenError) as exc:
        b.before_call()
    assert exc.value.retry_in == pytest.approx(10)
    clock.t = 10
    assert b.state == "half-open"
    b.before_call()  # the one trial call
    with pytest.raises(CircuitOpenError):
        b.before_call()  # no second trial while the first is out
    b.failure()  # trial failed: open again for a full cooldown
    assert b.state == "open"
    clock.t = 20
    b.before_call()
    b.success()
    assert b.state == "closed"
    b.before_call()
    assert b.opened == 1


def test_retry_after_parsing() -> None:
    from email.utils import format_datetime

    from jobs.mailbox.http import parse_retry_after

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after(later) <= 30


def test_service_windows() -> None:
    from jobs.steps.deliver import in_service_window, parse_windows

    windows = parse_windows(["2022-02-08T06:00:00+01:00/2022-02-08T08:00:00+01:00"])
    assert in_service_window(windows, datetime(2022, 2, 8, 5, 30, tzinfo=UTC))
    assert not in_service_window(windows, datetime(2022, 2, 8, 7, 0, tzinfo=UTC))
    with pytest.raises(ValueError, match="start/end"):
        parse_windows(["2022-02-08T06:00"])
    with pytest.raises(ValueError, match="ends before"):
        parse_windows(["2022-02-08T08:00/2022-02-08T06:00"])


def test_message_limits_and_checksum() -> None:
    import hashlib

    from jobs.mailbox import MessageInvalid, SecureMessage

    m = SecureMessage("r", "s", "b", b"%PDF", "a.pdf", "k")
    assert m.checksum == hashlib.sha256(b"%PDF").hexdigest()
    with pytest.raises(MessageInvalid, match="subject"):
        SecureMessage("r", "x" * 256, "b", b"%PDF", "a.pdf", "k")
    with pytest.raises(MessageInvalid, match="bytes"):
        SecureMessage("r", "s", "b", b"0" * (2 * 1024 * 1024), "a.pdf", "k")


def test_idempotency_key_is_stable_and_not_personal() -> None:
    from jobs.steps.deliver import idempotency_key

    a = idempotency_key("URN:UVCI:01:SE:EHM/ABC")
    assert a == idempotency_key("URN:UVCI:01:SE:EHM/ABC")
    assert a != idempotency_key("URN:UVCI:01:SE:EHM/ABD")
    assert len(a) <= 96 and "ABC" not in a


def test_http_client_classifies_failures(bevis_env: Path) -> None:
    """Against the simulator over a socket: 503 → transient with Retry-After; 422 →
    permanent; connection refused → transient, not ambiguous; the breaker opens."""
    from jobs.mailbox import CircuitOpenError, PermanentError, SecureMessage, TransientError
    from jobs.mailbox.http import HttpMailbox
    from jobs.mailbox.simulator import free_port, running_simulator
    from jobs.settings import get_settings

    s = get_settings(simulator_retry_after_s=2)
    with running_simulator(s) as url:

        async def scenario() -> None:
            client = HttpMailbox(url, sender="x", breaker_threshold=2, breaker_cooldown_s=60)
            try:
                people = [f"19700101{i:04d}" for i in range(50)]
                reach = await client.lookup(people)
                r = next(v for v in reach.values() if v.deliverable)
                msg = SecureMessage(r.recipient, "s", "b", b"%PDF", "a.pdf", "key-1")
                receipt = await client.deliver(r.service_address, msg)
                again = await client.deliver(r.service_address, msg)
                assert again.transaction_id == receipt.transaction_id and again.duplicate
                assert (await client.status(r.service_address, "key-1")).transaction_id == (
                    receipt.transaction_id
                )
                assert await client.status(r.service_address, "nope") is None
                wrong = SecureMessage("000000000000", "s", "b", b"%PDF", "a.pdf", "key-2")
                with pytest.raises(PermanentError) as perm:
                    await client.deliver(r.service_address, wrong)
                assert perm.value.http_status == 422
                import httpx

                httpx.post(f"{url}/_admin/outage", json={"requests": 5})
                for _ in range(2):
                    with pytest.raises(TransientError) as tr:
                        await client.deliver(r.service_address, msg)
                    assert tr.value.http_status == 503 and tr.value.retry_after == 2
                with pytest.raises(CircuitOpenError):
                    await client.deliver(r.service_address, msg)
            finally:
                await client.aclose()

            dead = HttpMailbox(f"http://127.0.0.1:{free_port()}", sender="x")
            try:
                with pytest.raises(TransientError) as down:
                    await dead.lookup(["1"])
                assert down.value.ambiguous is False
            finally:
                await dead.aclose()

        asyncio.run(scenario())


def test_breaker_gives_back_an_abandoned_trial() -> None:
    """A half-open trial that ends without a verdict (cancelled) must not keep the breaker
    refusing every later call."""
    from jobs.mailbox import CircuitOpenError
    from jobs.mailbox.breaker import CircuitBreaker

    clock = FakeClock()
    b = CircuitBreaker("op", threshold=1, cooldown=1.0, clock=clock)
    b.failure()
    clock.t += 1.5
    b.before_call()  # the trial goes out
    with pytest.raises(CircuitOpenError):
        b.before_call()  # one trial at a time
    b.abandon()
    b.before_call()  # the next call may try
