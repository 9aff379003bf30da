"""Delivery acceptance over a real socket: the simulator served by uvicorn, the ledger in
SQLite and in PostgreSQL. An outage in the middle of a batch loses no certificate, delivers
none twice, and leaves each in exactly one final state."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

FAST = {
    "mailbox_backoff_s": 0.01,
    "mailbox_backoff_max_s": 0.5,
    "mailbox_max_attempts": 4,
    "mailbox_breaker_threshold": 5,
    "mailbox_breaker_cooldown_s": 0.05,
    "simulator_retry_after_s": 0.02,
    "workers": 1,
}


def _ledger(batch_id: str, url: str):
    from sqlalchemy import select

    from jobs.db import engine
    from jobs.ledger.models import Certificate, Delivery

    with engine(url).connect() as conn:
        certs = conn.execute(
            select(Certificate.uvci, Certificate.outcome, Certificate.outcome_reason).where(
                Certificate.batch_id == batch_id
            )
        ).all()
        deliveries = conn.execute(
            select(
                Delivery.uvci, Delivery.status, Delivery.receipt, Delivery.attempt, Delivery.reason
            )
            .where(Delivery.batch_id == batch_id)
            .order_by(Delivery.id)
        ).all()
    return certs, deliveries


def _messages(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select idempotency_key, transaction_id from messages"))


def _check_invariants(batch_id: str, n: int, url: str, db: Path) -> dict[str, int]:
    from jobs.steps.deliver import idempotency_key

    certs, deliveries = _ledger(batch_id, url)
    messages = _messages(db)
    assert len(certs) == n  # none lost
    outcomes = {}
    for uvci, outcome, reason in certs:
        assert outcome is not None, uvci  # each in a final state
        assert reason
        outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
        key = idempotency_key(uvci)
        delivered = [d for d in deliveries if d.uvci == uvci and d.status.value == "DELIVERED"]
        if outcome.value == "DIGITAL":
            assert key in messages, uvci
            assert {d.receipt for d in delivered} == {messages[key]}
        elif reason == "delivery_unconfirmed":
            # a request may have reached the operator and its status call could not say:
            # deferred, never printed; the retry with the same key is answered "duplicate"
            assert outcome.value == "DEFERRED" and not delivered, uvci
        else:  # paper or deferred: the operator never got it (not delivered twice)
            assert key not in messages, uvci
            assert not delivered
    # attempts are numbered 1..k per certificate, without gaps
    per_cert: dict[str, list[int]] = {}
    for d in deliveries:
        per_cert.setdefault(d.uvci, []).append(d.attempt)
    assert all(a == list(range(1, len(a) + 1)) for a in per_cert.values())
    digital_keys = {idempotency_key(u) for u, o, _ in certs if o.value == "DIGITAL"}
    unconfirmed = {idempotency_key(u) for u, _, r in certs if r == "delivery_unconfirmed"}
    assert digital_keys <= set(messages) <= digital_keys | unconfirmed
    return outcomes


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_outage_mid_batch_nothing_lost_nothing_twice(bevis_env: Path, request, ledger: str) -> None:
    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    overrides = dict(FAST)
    if ledger == "postgres":
        overrides["ledger_url"] = request.getfixturevalue("pg_url")
    sim_settings = get_settings(
        simulator_outage_after=15,
        simulator_outage_requests=60,
        simulator_ack_loss_rate=0.1,
        **overrides,
    )
    n = 120
    batch_id = synthetic_batch("acc1", n, sim_settings, without_address=2)
    url = sim_settings.resolved_ledger_url()
    with running_simulator(sim_settings) as sim_url:
        s = get_settings(mailbox_url=sim_url, **overrides)
        first = deliver_batch(batch_id, s)
        outcomes = _check_invariants(batch_id, n, url, bevis_env / "mailbox-sim.db")
        assert first["pending"] == 0
        assert outcomes.get("DIGITAL", 0) > 40
        assert first["attempts"] > n  # the outage cost retries, all in the ledger
        _, deliveries = _ledger(batch_id, url)
        # a 503 was refused before processing: settled REFUSED (not at the operator)
        assert any(d.status.value == "REFUSED" and "503" in (d.reason or "") for d in deliveries)
        assert any(d.reason in ("duplicate_key", "confirmed_by_status") for d in deliveries)

        # A rerun is a no-op: no new message, no new attempt, same outcomes.
        again = deliver_batch(batch_id, s)
        assert again["attempted"] == 0 and again["attempts"] == 0
        assert _check_invariants(batch_id, n, url, bevis_env / "mailbox-sim.db") == outcomes

        # Retrying the deferred ones after the outage: an unconfirmed delivery that did
        # reach the operator is answered "duplicate" — DIGITAL, still one message.
        certs, _ = _ledger(batch_id, url)
        unconfirmed = [u for u, _, r in certs if r == "delivery_unconfirmed"]
        before = _messages(bevis_env / "mailbox-sim.db")
        deliver_batch(batch_id, s, retry_deferred=True)
        after = _messages(bevis_env / "mailbox-sim.db")
        assert {k: after[k] for k in before} == before  # nothing sent twice
        certs, _ = _ledger(batch_id, url)
        outcome_of = {u: o.value for u, o, _ in certs}
        assert all(outcome_of[u] == "DIGITAL" for u in unconfirmed)
        _check_invariants(batch_id, n, url, bevis_env / "mailbox-sim.db")


def test_lost_ack_without_status_is_deferred_then_confirmed_once(bevis_env: Path) -> None:
    """Every first acknowledgement is lost (the operator stored the message) and the status
    call is down: never paper, DEFERRED 'delivery_unconfirmed'. Not printed either when a
    later look-up says the mailbox is gone. The retry of the deferred ones, with the same
    keys, is answered "duplicate": DIGITAL, and still one message each."""
    import httpx

    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    overrides = {**FAST, "mailbox_max_attempts": 1}
    s0 = get_settings(simulator_ack_loss_rate=1.0, simulator_secure_share=1.0, **overrides)
    n = 8
    batch_id = synthetic_batch("acc6", n, s0)
    db = bevis_env / "mailbox-sim.db"
    with running_simulator(s0) as sim_url:
        s = get_settings(mailbox_url=sim_url, **overrides)
        httpx.post(f"{sim_url}/_admin/outage", json={"requests": 10_000, "scope": "status"})
        first = deliver_batch(batch_id, s)
        assert first["DEFERRED"] == n and first["PAPER"] == 0
        assert first["reasons"] == {"delivery_unconfirmed": n}
        stored = _messages(db)
        assert len(stored) == n  # the operator has every message, we could not know it
        _check_invariants(batch_id, n, s.resolved_ledger_url(), db)

    # A retry while the look-up says the recipients have no mailbox (closed since): the
    # operator may still hold the messages and cannot be asked without a service address
    # — deferred again, not printed.
    with running_simulator(get_settings(simulator_secure_share=0.0, **overrides)) as sim_url:
        s = get_settings(mailbox_url=sim_url, **overrides)
        guarded = deliver_batch(batch_id, s, retry_deferred=True)
        assert guarded["PAPER"] == 0 and guarded["DEFERRED"] == n
        assert guarded["reasons"] == {"delivery_unconfirmed": n}
        assert _messages(db) == stored

    with running_simulator(s0) as sim_url:
        s = get_settings(mailbox_url=sim_url, **overrides)
        again = deliver_batch(batch_id, s, retry_deferred=True)
        assert again["DIGITAL"] == n
        assert _messages(db) == stored  # the same transactions: nothing delivered twice
        _, deliveries = _ledger(batch_id, s.resolved_ledger_url())
        assert sum(d.reason == "duplicate_key" for d in deliveries) == n
        _check_invariants(batch_id, n, s.resolved_ledger_url(), db)


def test_long_outage_defers_then_rerun_delivers_once(bevis_env: Path) -> None:
    import httpx

    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    s0 = get_settings(paper_policy="defer", **FAST)
    n = 40
    batch_id = synthetic_batch("acc2", n, s0)
    db = bevis_env / "mailbox-sim.db"
    with running_simulator(s0) as sim_url:
        s = get_settings(mailbox_url=sim_url, paper_policy="defer", **FAST)
        # FaR answers, then every operator is down for longer than the retry budget
        httpx.post(f"{sim_url}/_admin/outage", json={"requests": 10_000, "scope": "operators"})
        first = deliver_batch(batch_id, s)
        assert first["DIGITAL"] == 0 and first["PAPER"] == 0 and first["DEFERRED"] == n
        httpx.post(f"{sim_url}/_admin/outage", json={"requests": 0})
        second = deliver_batch(batch_id, s)
        assert second["attempted"] == 0  # deferred is final for a plain rerun
        third = deliver_batch(batch_id, s, retry_deferred=True)
        assert third["DIGITAL"] > 20 and third["pending"] == 0
        _check_invariants(batch_id, n, s.resolved_ledger_url(), db)


def test_service_window_defers_without_sending(bevis_env: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    now = datetime.now(UTC)
    window = f"{(now - timedelta(hours=1)).isoformat()}/{(now + timedelta(hours=1)).isoformat()}"
    s0 = get_settings(**FAST)
    batch_id = synthetic_batch("acc3", 10, s0)
    with running_simulator(s0) as sim_url:
        s = get_settings(mailbox_url=sim_url, service_windows=[window], **FAST)
        result = deliver_batch(batch_id, s)
    assert result["DEFERRED"] == 10 and result["reasons"] == {"service_window": 10}
    assert _messages(bevis_env / "mailbox-sim.db") == {}


def test_paper_queue_manifest_and_print_pdf(bevis_env: Path) -> None:
    import csv

    import pypdfium2 as pdfium

    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch
    from jobs.steps.render import pdf_name
    from jobs.storage import RunPaths
    from signing.qr import decode_qr

    s0 = get_settings(simulator_secure_share=0.0, **FAST)
    n = 6
    batch_id = synthetic_batch("acc4", n, s0, without_address=1)
    with running_simulator(s0) as sim_url:
        result = deliver_batch(batch_id, get_settings(mailbox_url=sim_url, **FAST))
    assert (result["PAPER"], result["DEFERRED"], result["print_pages"]) == (n - 1, 1, n - 1)
    folder = RunPaths.of("acc4").print_dir(batch_id)
    with open(folder / "manifest.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n - 1 and all(r["street"] and r["postcode"] for r in rows)
    assert [r["postcode"] for r in rows] == sorted(r["postcode"] for r in rows)
    assert all(r["document"] == pdf_name(r["uvci"]) for r in rows)
    for f in ("manifest.csv", "print.pdf"):
        assert stat.S_IMODE((folder / f).stat().st_mode) == 0o600
    doc = pdfium.PdfDocument(folder / "print.pdf")
    assert len(doc) == n - 1
    page = doc[0]
    text = page.get_textpage().get_text_range()
    assert rows[0]["street"] in text and rows[0]["uvci"] in text
    import pyarrow.parquet as pq

    signed = {
        r["uvci"]: r["hc1"] for r in pq.read_table(RunPaths.of("acc4").signed(batch_id)).to_pylist()
    }
    assert decode_qr(page.render(scale=2).to_pil().convert("L")) == [signed[rows[0]["uvci"]]]


def test_far_down_leaves_batch_pending_for_the_retry(bevis_env: Path) -> None:
    import httpx

    from jobs.devtools.drill import synthetic_batch
    from jobs.errors import MailboxUnavailable
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch, outcome_counts

    s0 = get_settings(**FAST)
    batch_id = synthetic_batch("acc5", 12, s0)
    with running_simulator(s0) as sim_url:
        s = get_settings(mailbox_url=sim_url, **FAST)
        httpx.post(f"{sim_url}/_admin/outage", json={"requests": 10_000, "scope": "far"})
        with pytest.raises(MailboxUnavailable, match="acc5-b0001"):
            deliver_batch(batch_id, s)
        assert outcome_counts(batch_id, s) == {
            "DIGITAL": 0,
            "PAPER": 0,
            "DEFERRED": 0,
            "pending": 12,
        }
        httpx.post(f"{sim_url}/_admin/outage", json={"requests": 0})
        done = deliver_batch(batch_id, s)
        assert done["pending"] == 0 and done["DIGITAL"] + done["PAPER"] == 12
        _check_invariants(batch_id, 12, s.resolved_ledger_url(), bevis_env / "mailbox-sim.db")


@pytest.mark.slow
@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_outage_with_two_delivery_processes(bevis_env: Path, request, ledger: str) -> None:
    """Look-up chunks spread over two processes (spawned), an outage and lost acks in
    the middle: the same invariants hold."""
    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    overrides = {**FAST, "workers": 2, "mailbox_lookup_chunk": 30}
    if ledger == "postgres":
        overrides["ledger_url"] = request.getfixturevalue("pg_url")
    s0 = get_settings(
        simulator_outage_after=10,
        simulator_outage_requests=30,
        simulator_outage_scope="operators",  # FaR down: the MailboxUnavailable test
        simulator_ack_loss_rate=0.1,
        **overrides,
    )
    n = 90
    batch_id = synthetic_batch("acc6", n, s0)
    with running_simulator(s0) as sim_url:
        s = get_settings(mailbox_url=sim_url, **overrides)
        result = deliver_batch(batch_id, s)
        assert result["pending"] == 0 and result["attempts"] > n
        outcomes = _check_invariants(
            batch_id, n, s.resolved_ledger_url(), bevis_env / "mailbox-sim.db"
        )
        assert sum(outcomes.values()) == n and outcomes.get("DIGITAL", 0) > 30
