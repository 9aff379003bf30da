"""A killed run leaves nothing running (issue 14, item 3).

``bevis issue`` runs as a real process in its own session; it is killed with SIGKILL in
the middle of a batch — mid-sign (a verification worker held by the fault switch
``sign:1:hang``, after the signing pool and its forkserver have run) and mid-deliver (the
delivery processes sending to the simulator over a real socket). Within a few seconds no
process of that run may remain: not the workers, not the forkserver, not the resource
tracker; and the simulator — the operator's side — receives no message after the kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.jobs.batches_support import dev_keys_fixture  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from jobs.cli import app; app()"]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def _session(sid: int) -> list[psutil.Process]:
    """Every live process of session ``sid`` (the killed run started it)."""
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def _describe(procs: list[psutil.Process]) -> str:
    names = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            names.append(f"{p.pid} {' '.join(p.cmdline())[:90]}")
    return "; ".join(names)


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _survivors_after_kill(proc: subprocess.Popen, settle: float = 5.0) -> list[psutil.Process]:
    """SIGKILL the run (its process only, as `kill -9 <pid>` does) and return the processes
    of its tree and session still alive ``settle`` seconds later (zombies count as dead)."""
    tree = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    end = time.monotonic() + settle
    while time.monotonic() < end:
        left = _alive(tree) + [p for p in _session(proc.pid) if p not in tree]
        if not left:
            return []
        time.sleep(0.1)
    return _alive(tree) + [p for p in _session(proc.pid) if p not in tree]


@pytest.fixture
def register(bevis_env: Path, dev_keys: Path, monkeypatch: pytest.MonkeyPatch):
    """A seeded register (no defects), development keys, and a function that seeds it."""
    from jobs.db import migrate_all
    from jobs.devtools.seed import seed
    from jobs.settings import get_settings

    monkeypatch.setenv("BEVIS_KEY_DIR", str(dev_keys))
    monkeypatch.setenv("BEVIS_WORKERS", "2")
    monkeypatch.setenv("BEVIS_DEV_MODE", "1")  # the development pseudonym key is fine here
    migrate_all(get_settings())

    def make(persons: int) -> None:
        seed(persons, seed=3, defect_rate=0.0)

    return make


def _kill_everything(proc: subprocess.Popen) -> None:
    """Test hygiene: whatever the assertions said, leave nothing behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in _session(proc.pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def test_kill_mid_sign_leaves_no_process(register, bevis_env: Path, monkeypatch) -> None:
    """Batch 0 is issued (signing pool, forkserver, verification pool, delivery); batch 1's
    verification hangs in a worker; `kill -9` of the run: nothing may be left."""
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    register(1200)
    with running_simulator(get_settings()) as sim_url:
        env = {**os.environ, "BEVIS_MAILBOX_URL": sim_url, "BEVIS_FAULT": "sign:1:hang"}
        log = open(bevis_env / "issue.log", "wb")  # noqa: SIM115  (closed below)
        proc = subprocess.Popen(
            [*CLI, "issue", "--batch-size", "600"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            runs = bevis_env / "runs"
            _wait_for(
                lambda: any(runs.glob("*/faults/sign-b0001.fired")) or proc.poll() is not None,
                timeout=240,
                what="batch 1 to reach its verification",
            )
            assert proc.poll() is None, (bevis_env / "issue.log").read_text()[-3000:]
            time.sleep(1.0)  # the verification pool is at work; one of its workers hangs
            workers = psutil.Process(proc.pid).children(recursive=True)
            assert len(workers) >= 2, _describe(workers)
            survivors = _survivors_after_kill(proc)
            print(f"drill: {len(survivors)} of {len(workers)} processes alive after kill")
            assert not survivors, (
                f"{len(survivors)} processes alive after kill (of {len(workers)}): "
                f"{_describe(survivors)}"
            )
        finally:
            _kill_everything(proc)
            log.close()


def test_kill_mid_deliver_leaves_no_process_and_sends_nothing(
    register, bevis_env: Path, monkeypatch
) -> None:
    """The delivery processes are sending (slow operator: 300 ms an answer); `kill -9` of
    the run: no process is left, and the operator receives no message after the kill."""
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings

    register(240)
    sim = get_settings(simulator_latency_ms=300)
    with running_simulator(sim) as sim_url, httpx.Client(base_url=sim_url) as client:

        def stored() -> int:
            return int(client.get("/_admin/stats").json()["messages"])

        env = {
            **os.environ,
            "BEVIS_MAILBOX_URL": sim_url,
            "BEVIS_MAILBOX_CONCURRENCY": "2",
            "BEVIS_MAILBOX_LOOKUP_CHUNK": "20",
        }
        log = open(bevis_env / "issue.log", "wb")  # noqa: SIM115  (closed below)
        proc = subprocess.Popen(
            [*CLI, "issue", "--batch-size", "240"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_for(
                lambda: stored() >= 12 or proc.poll() is not None,
                timeout=240,
                what="the delivery to send",
            )
            assert proc.poll() is None, (bevis_env / "issue.log").read_text()[-3000:]
            workers = psutil.Process(proc.pid).children(recursive=True)
            assert len(workers) >= 2, _describe(workers)  # the delivery processes
            survivors = _survivors_after_kill(proc, settle=3.0)
            at_kill = stored()
            time.sleep(1.0)  # requests in flight at the kill are answered by now
            settled = stored()
            time.sleep(3.0)
            later = stored()
            print(
                f"drill: {len(survivors)} of {len(workers)} processes alive after kill; "
                f"messages {at_kill} / {settled} / {later}"
            )
            assert later < 240, "the whole batch was delivered: the kill came too late"
            assert not survivors and later == settled, (
                f"{len(survivors)} processes alive after kill (of {len(workers)}): "
                f"{_describe(survivors)}; messages {at_kill} at the kill, {settled} a second "
                f"later, {later} three seconds after that"
            )
        finally:
            _kill_everything(proc)
            log.close()
