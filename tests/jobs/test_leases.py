"""Leases of running batch steps (issue 14, item 3): a rerun takes over a step only when the
holder's lease has expired, and a holder that lost its lease stops before its next unit of
work. Real processes (the holder is a child process, killed with SIGKILL or stopped with
SIGSTOP), the real ledger on SQLite and PostgreSQL.

The holder plays a worker on another host: its host name and pid namespace are not this
test's, so this process cannot look its pid up and must go by the lease alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import event, select

from jobs import batches
from jobs.errors import BatchBusy, LeaseLost
from jobs.ledger.models import Batch, BatchState
from jobs.ledger.runs import ledger
from tests.jobs.batches_support import (  # noqa: F401  (fixtures)
    batch_env_fixture,
    dev_keys_fixture,
    ledger_url_fixture,
    make_run,
)

LEASE = 3.0

# A worker "on another host": another host name and pid namespace, then one step of a batch.
HOLDER = """
import json, socket, sys
socket.gethostname = lambda: "worker-elsewhere"
try:
    import jobs.ledger.leases as leases
    leases.node = lambda: "elsewhere:4026531836"
except ImportError:
    pass
from jobs.batches import run_step
try:
    result = run_step(sys.argv[1], sys.argv[2])
except BaseException as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
    raise SystemExit(1)
print(json.dumps({"result": result}, default=str), flush=True)
"""


def _batch(bid: str):
    with ledger().connect() as conn:
        return conn.execute(select(Batch).where(Batch.id == bid)).one()


def _wait_for(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _holder(bid: str, step: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, bid, step],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def signed_batch(batch_env, ledger_url: str, monkeypatch):
    """One signed batch of ``n`` certificates; returns its id (LEASE-second leases)."""
    monkeypatch.setenv("BEVIS_LEASE_SECONDS", str(LEASE))

    def make(n: int) -> str:
        monkeypatch.setenv("BEVIS_BATCH_SIZE", str(n))
        rid = make_run(n)
        [bid] = batches.plan(rid)
        batches.run_step(bid, "sign")
        return bid

    return make


def test_live_lease_refuses_a_rerun_until_the_holder_dies_and_it_expires(signed_batch) -> None:
    bid = signed_batch(20)
    env = {**os.environ, "BEVIS_FAULT": "render:0:hang"}  # the holder stops inside render
    holder = _holder(bid, "render", env)
    try:
        _wait_for(lambda: _batch(bid).running_step == "render", 60, "the holder to take render")
        # Refused while the holder lives — for longer than one lease: its heartbeat renews.
        refused = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2 * LEASE:
            try:
                batches.run_step(bid, "render")
            except BatchBusy as exc:
                assert "worker-elsewhere" in str(exc)
                refused += 1
            else:
                pytest.fail(f"a rerun ran beside a live holder (after {refused} refusals)")
            assert batches.reap_interrupted() == []
            time.sleep(0.5)
        assert holder.poll() is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        with pytest.raises(BatchBusy):  # another host's pid cannot be checked: the lease rules
            batches.run_step(bid, "render")

        def taken_over() -> bool:
            try:
                batches.run_step(bid, "render")
            except BatchBusy:
                return False
            return True

        _wait_for(taken_over, LEASE + 5, "the lease to expire")
        waited = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    assert LEASE * 0.5 < waited < LEASE + 3, waited
    b = _batch(bid)
    assert b.state is BatchState.RENDERED and b.attempts == 3 and b.running_step is None
    assert b.lease_token is None and b.lease_expires_at is None


def test_holder_that_lost_its_lease_stops_before_its_next_unit(signed_batch) -> None:
    """The holder (with its render workers) is stopped (SIGSTOP: a stalled host); its lease
    runs out and a rerun takes the batch over and finishes it. When the holder runs again
    it stops (LeaseLost) before its next chunk and records nothing over the new result."""
    bid = signed_batch(600)
    holder = _holder(bid, "render", {**os.environ, "BEVIS_WORKERS": "1"})
    pdf_dir = batches.RunPaths.of(batches.parse_batch_id(bid)[0]).pdf_dir(bid)
    try:
        _wait_for(
            lambda: pdf_dir.exists() and len(list(pdf_dir.glob("*.pdf"))) >= 20,
            120,
            "the holder to render",
        )
        os.killpg(holder.pid, signal.SIGSTOP)
        at_stop = len(list(pdf_dir.glob("*.pdf")))

        def taken_over() -> bool:
            try:
                batches.run_step(bid, "render")
            except BatchBusy:
                return False
            return True

        waited = _wait_for(taken_over, LEASE + 30, "the stalled holder's lease to expire")
        mine = _batch(bid)
        assert mine.state is BatchState.RENDERED and mine.attempts == 3  # sign, holder, rerun
        os.killpg(holder.pid, signal.SIGCONT)
        out, err = holder.communicate(timeout=120)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    assert out.strip(), err[-2000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report.get("error") == "LeaseLost", (
        f"the holder went on after the takeover (stopped at {at_stop} PDFs, taken over after "
        f"{waited:.1f} s) and finished: {report}"
    )
    after = _batch(bid)
    assert (after.state, after.attempts, after.error) == (BatchState.RENDERED, 3, None)
    assert after.rendered_at == mine.rendered_at  # the holder wrote nothing over it


def test_deliver_holder_sends_nothing_after_the_takeover(
    batch_env, ledger_url: str, monkeypatch
) -> None:
    """The operator's side: the holder delivers with two processes (the lease crosses into
    them), is stopped mid-batch (SIGSTOP of its process group), a rerun takes the batch over
    once the lease has expired and delivers the rest; when the holder runs again, the
    simulator receives no further request from it (deliveries + duplicates unchanged)."""
    import httpx

    from jobs.devtools.drill import synthetic_batch
    from jobs.ids import new_run_id
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    monkeypatch.setenv("BEVIS_LEASE_SECONDS", str(LEASE))
    if ledger_url.startswith("postgresql"):
        # A stalled holder may be stopped inside a transaction, holding row locks the rerun
        # then waits for: the server must end such sessions within a lease (a deployment
        # requirement, docs/deployment.md). Without it this drill waits for ever.
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        from jobs.db import engine

        name = make_url(ledger_url).database
        with engine(ledger_url).connect() as conn:
            conn.execute(
                text(f"ALTER DATABASE \"{name}\" SET idle_in_transaction_session_timeout = '2s'")
            )
            conn.commit()
    bid = synthetic_batch(new_run_id(), 160)  # rendered, its recipients in the simulator
    with running_simulator(get_settings(simulator_latency_ms=150)) as sim_url:
        monkeypatch.setenv("BEVIS_MAILBOX_URL", sim_url)
        client = httpx.Client(base_url=sim_url)

        def sends() -> int:
            stats = client.get("/_admin/stats").json()
            return int(stats["deliveries"]) + int(stats["duplicates"])

        env = {
            **os.environ,
            "BEVIS_MAILBOX_CONCURRENCY": "2",
            "BEVIS_MAILBOX_LOOKUP_CHUNK": "20",
        }
        holder = _holder(bid, "deliver", env)
        try:
            _wait_for(lambda: sends() >= 10 or holder.poll() is not None, 120, "sends")
            assert holder.poll() is None, holder.communicate()
            os.killpg(holder.pid, signal.SIGSTOP)

            def taken_over() -> bool:
                try:
                    batches.run_step(bid, "deliver")
                except BatchBusy:
                    return False
                return True

            _wait_for(taken_over, LEASE + 60, "the stalled holder's lease to expire")
            assert _batch(bid).state is BatchState.DELIVERED
            before = sends()
            os.killpg(holder.pid, signal.SIGCONT)
            out, err = holder.communicate(timeout=120)
            time.sleep(0.5)
            after = sends()
        finally:
            if holder.poll() is None:
                os.killpg(holder.pid, signal.SIGKILL)
            client.close()
    assert out.strip(), err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]).get("error") == "LeaseLost"
    assert after == before, f"the holder sent {after - before} requests after the takeover"
    b = _batch(bid)
    assert (b.state, b.error, b.running_step) == (BatchState.DELIVERED, None, None)


def test_check_is_a_flag_not_a_query(signed_batch) -> None:
    """check() costs no query: the heartbeat thread keeps the flag; a taken-over lease is
    seen within one heartbeat, in the holder and in a worker it forked."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from jobs.db import engine
    from jobs.ledger import leases
    from jobs.settings import get_settings

    bid = signed_batch(10)
    s = get_settings(lease_seconds=0.6)
    url = s.resolved_ledger_url()
    with ledger(s).begin() as conn:
        taken = leases.new_holding("render", leases.db_now(conn), s.lease_seconds)
        conn.execute(Batch.__table__.update().where(Batch.id == bid).values(**taken))
    lease = leases.Lease(url, bid, "render", taken["lease_token"], s.lease_seconds).start()
    queries: list[str] = []
    listen = lambda *a: queries.append(a[2])  # noqa: E731
    event.listen(engine(url), "before_cursor_execute", listen)
    try:
        t0 = time.perf_counter()
        for _ in range(20_000):
            lease.check()
        per_call = (time.perf_counter() - t0) / 20_000
        assert queries == [] and per_call < 20e-6, (len(queries), per_call)
    finally:
        event.remove(engine(url), "before_cursor_execute", listen)
    time.sleep(1.0)  # heartbeats every 0.2 s keep it
    lease.check()
    assert lease.renewals >= 3

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        assert pool.submit(_check_in_worker, lease).result() == "held"
        with ledger(s).begin() as conn:  # another holder takes over
            conn.execute(
                Batch.__table__.update().where(Batch.id == bid).values(lease_token="x" * 32)
            )
        time.sleep(0.5)
        with pytest.raises(LeaseLost, match="took the batch over"):
            lease.check()
        assert pool.submit(_check_in_worker, lease).result().startswith("LeaseLost")
    lease.stop()


def _check_in_worker(lease) -> str:
    try:
        lease.check()
    except LeaseLost as exc:
        return f"LeaseLost: {exc}"
    return "held"


def test_reaper_uses_the_lease(signed_batch) -> None:
    """reap_interrupted: a holder in this pid namespace whose pid is gone is reaped at once;
    a holder elsewhere only when its lease has run out."""
    from datetime import timedelta

    from jobs.ledger import leases

    bid = signed_batch(10)
    with ledger().begin() as conn:
        now = leases.db_now(conn)
        conn.execute(
            Batch.__table__.update()
            .where(Batch.id == bid)
            .values(
                **leases.new_holding("render", now, LEASE),
            )
        )
    assert batches.reap_interrupted() == []  # held by this live test process
    with ledger().begin() as conn:
        conn.execute(
            Batch.__table__.update()
            .where(Batch.id == bid)
            .values(running_host="elsewhere", lease_node="elsewhere:1", running_pid=1)
        )
    assert batches.reap_interrupted() == []  # another host, lease running
    with ledger().begin() as conn:
        conn.execute(
            Batch.__table__.update()
            .where(Batch.id == bid)
            .values(lease_expires_at=now - timedelta(seconds=1))
        )
    assert batches.reap_interrupted() == [bid]
    b = _batch(bid)
    assert b.state is BatchState.FAILED and b.failed_step == "render"
    assert b.error.startswith("interrupted: the lease of pid 1 on elsewhere expired")
    assert b.lease_token is None
    assert batches.run_step(bid, "render")["rendered"] == 10
