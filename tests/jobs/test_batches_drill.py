"""Crash drills (the acceptance of the batch machinery): a fault-switched crash and a
SIGKILL of the worker mid-batch; `bevis batches rerun --failed` completes the run with
exactly one certificate per order, a consistent ledger, and certificates that verify."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from jobs import batches, faults, flow
from jobs.cli import app
from jobs.ledger.models import Batch, BatchState
from jobs.ledger.runs import ledger
from tests.jobs.batches_support import (  # noqa: F401  (fixtures)
    assert_run_consistent,
    batch_env_fixture,
    dev_keys_fixture,
    ledger_url_fixture,
    make_run,
)

CLI = [sys.executable, "-c", "from jobs.cli import app; app()"]


def _cli(args: list[str]):
    """Invoke the CLI in-process; afterwards put structlog back (the CLI points it at the
    runner's stderr, which is closed when the invocation ends)."""
    import structlog

    try:
        return CliRunner().invoke(app, args)
    finally:
        structlog.reset_defaults()


def _sign_all(ids: list[str]) -> dict[str, str]:
    """What the DAG does: every batch's sign task, failures do not stop the others."""
    errors = {}
    for bid in ids:
        try:
            batches.run_step(bid, "sign")
        except Exception as exc:
            errors[bid] = f"{type(exc).__name__}: {exc}"
    return errors


def _batch(bid: str):
    with ledger().connect() as conn:
        return conn.execute(select(Batch).where(Batch.id == bid)).one()


def test_fault_switch_parsing() -> None:
    assert faults.parse(None) is None
    assert faults.parse("sign:1") == faults.Fault("sign", 1, "crash")
    assert faults.parse("deliver:12:kill") == faults.Fault("deliver", 12, "kill")
    for bad in ("sign", "sign:x", "mint:1", "sign:1:boom"):
        with pytest.raises(ValueError, match="BEVIS_FAULT"):
            faults.parse(bad)


def test_crash_drill_fault_switch(batch_env, ledger_url: str, monkeypatch) -> None:
    """BEVIS_FAULT=sign:1 kills a verification worker process of batch 1 mid-batch; that
    batch alone fails; rerun --failed completes it; the fault fires once."""
    monkeypatch.setenv("BEVIS_FAULT", "sign:1")
    rid = make_run(300)
    ids = batches.plan(rid)
    errors = _sign_all(ids)
    assert list(errors) == [ids[1]] and "BrokenProcessPool" in errors[ids[1]]
    b1 = _batch(ids[1])
    assert b1.state is BatchState.FAILED and b1.failed_step == "sign" and b1.attempts == 1
    assert "BrokenProcessPool" in b1.error and b1.running_step is None
    assert faults.marker(rid, "sign", 1).exists()
    assert not batches.RunPaths.of(rid).signed(ids[1]).exists()  # nothing half-written
    assert [_batch(b).state for b in (ids[0], ids[2])] == [BatchState.SIGNED] * 2

    listed = _cli(["batches", "list", "--state", "failed", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [b["batch_id"] for b in json.loads(listed.stdout)] == [ids[1]]

    result = _cli(["batches", "rerun", "--failed", "--run", rid, "--through", "sign", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)
    assert entry == {"batch_id": ids[1], "ok": True, "steps": ["sign"], "state": "SIGNED"}
    assert _batch(ids[1]).attempts == 2
    assert_run_consistent(rid, 300)
    again = _cli(["batches", "rerun", ids[0], ids[1], "--through", "sign", "--json"])
    assert again.exit_code == 0 and [r["steps"] for r in json.loads(again.stdout)] == [[], []]


def test_fault_in_process_raises_and_fires_once_across_processes(batch_env, monkeypatch) -> None:
    """With one worker the switch raises FaultInjected; the marker in the run folder keeps
    it from firing again in a new process."""
    monkeypatch.setenv("BEVIS_WORKERS", "1")
    monkeypatch.setenv("BEVIS_FAULT", "sign:0")
    rid = make_run(50)
    [bid] = batches.plan(rid)
    first = subprocess.run([*CLI, "batches", "step", bid, "sign"], capture_output=True, text=True)
    assert first.returncode == 1 and "FaultInjected" in first.stderr
    assert _batch(bid).state is BatchState.FAILED
    second = subprocess.run([*CLI, "batches", "step", bid, "sign"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["certificates"] == 50
    assert_run_consistent(rid, 50)


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_crash_drill_sigkill_mid_batch(batch_env, ledger_url: str, monkeypatch) -> None:
    """The sign step runs in its own process (as in an Airflow worker); it is killed with
    SIGKILL mid-batch. The batch is reported interrupted (failed); rerun --failed finishes
    it without a second certificate for any order."""
    monkeypatch.setenv("BEVIS_BATCH_SIZE", "1500")
    rid = make_run(1600)
    ids = batches.plan(rid)
    proc = subprocess.Popen(
        [*CLI, "batches", "step", ids[0], "sign"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _batch(ids[0]).running_step == "sign", what="sign to start")
        time.sleep(0.8)  # into the batch: signing / verifying
        assert proc.poll() is None, "the step finished before the kill: make the batch bigger"
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool processes
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stuck = _batch(ids[0])
    assert stuck.state is BatchState.PLANNED and stuck.running_step == "sign"

    listed = _cli(["batches", "list", "--run", rid, "--state", "failed", "--json"])
    [failed] = json.loads(listed.stdout)
    assert failed["batch_id"] == ids[0] and failed["error"].startswith("interrupted")

    result = _cli(["batches", "rerun", "--failed", "--through", "sign", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["batch_id"] for r in json.loads(result.stdout)] == [ids[0]]
    batches.run_step(ids[1], "sign")
    assert_run_consistent(rid, 1600)


def test_fault_kill_mode_leaves_an_interrupted_batch(batch_env, monkeypatch) -> None:
    """BEVIS_FAULT=sign:0:kill: the task process SIGKILLs itself mid-batch (no chance to
    record the failure); the batch is then found interrupted and rerun."""
    monkeypatch.setenv("BEVIS_FAULT", "sign:0:kill")
    rid = make_run(120)
    ids = batches.plan(rid)
    proc = subprocess.run([*CLI, "batches", "step", ids[0], "sign"], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert batches.reap_interrupted(rid) == [ids[0]]
    assert batches.reap_interrupted(rid) == []
    results = flow.rerun(ids, through="sign")
    assert [r["ok"] for r in results] == [True, True]
    assert_run_consistent(rid, 120)


def test_live_holder_blocks_a_second_runner(batch_env) -> None:
    """A batch held by a live process is not run twice concurrently."""
    rid = make_run(10)
    [bid] = batches.plan(rid)
    with ledger().begin() as conn:
        conn.execute(
            Batch.__table__.update()
            .where(Batch.id == bid)
            .values(
                running_step="sign",
                running_host=socket.gethostname(),
                running_pid=os.getpid(),
                running_since=batches.datetime.now(batches.UTC),
            )
        )
    with pytest.raises(batches.BatchBusy, match="is running in pid"):
        batches.run_step(bid, "sign")
    assert batches.reap_interrupted(rid) == []  # we are alive


def test_holder_on_another_host(batch_env) -> None:
    """A holder on another host cannot be checked: while its lease runs nobody takes it
    over, Airflow's retry (takeover, the default) included; once it has expired, operators'
    reruns still refuse it (unless forced) and Airflow's retry takes it over."""
    from datetime import timedelta

    rid = make_run(10)
    [bid] = batches.plan(rid)
    since = batches.datetime.now(batches.UTC)
    with ledger().begin() as conn:
        conn.execute(
            Batch.__table__.update()
            .where(Batch.id == bid)
            .values(
                running_step="sign",
                running_host="worker-elsewhere",
                running_pid=4242,
                running_since=since,
                lease_token="t" * 32,
                lease_node="elsewhere:1",
                lease_expires_at=since + timedelta(seconds=30),
            )
        )
    assert batches.reap_interrupted(rid) == []
    with pytest.raises(batches.BatchBusy, match="worker-elsewhere"):
        batches.run_step(bid, "sign")
    with pytest.raises(batches.BatchBusy, match="worker-elsewhere"):
        batches.run_step(bid, "sign", takeover=False)
    with ledger().begin() as conn:  # the holder's heartbeat stopped a lease ago
        conn.execute(
            Batch.__table__.update()
            .where(Batch.id == bid)
            .values(lease_expires_at=since - timedelta(seconds=1))
        )
    [entry] = flow.rerun([bid], through="sign")
    assert entry["ok"] is False and "BatchBusy" in entry["error"] and "expired" in entry["error"]
    assert batches.run_step(bid, "sign")["certificates"] == 10
    assert _batch(bid).running_step is None
