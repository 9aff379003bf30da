"""Worker processes die with their parent (signing/lifetime.py), real processes and SIGKILL:
a worker forked from the main thread (PR_SET_PDEATHSIG), one forked from a thread that has
ended since (it must outlive that thread, and still die with the process), a forkserver
worker (whose parent is the forkserver, which lives as long as its workers), and the
signing pool of ``sign_many`` killed mid-signing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil

PARENT = r"""
import json, multiprocessing as mp, os, sys, threading, time
from concurrent.futures import ProcessPoolExecutor
from signing.lifetime import die_with_parent, die_with_parent_on_fork

die_with_parent_on_fork()
main_pool = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))
main_pid = main_pool.submit(os.getpid).result()
pools = []
def from_thread():
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))
    pools.append((pool, pool.submit(os.getpid).result()))
t = threading.Thread(target=from_thread); t.start(); t.join()  # the forking thread has ended
server_pool = ProcessPoolExecutor(
    1, mp_context=mp.get_context("forkserver"), initializer=die_with_parent,
    initargs=(os.getpid(),),
)
server_pid = server_pool.submit(os.getpid).result()
time.sleep(0.5)
print(json.dumps({"main": main_pid, "thread": pools[0][1], "forkserver_worker": server_pid}),
      flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_die_with_their_parent() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        workers = json.loads(proc.stdout.readline())
        everyone = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert all(_alive(pid) for pid in workers.values()), workers  # the thread's one too
        assert len(everyone) >= 5, everyone  # 3 workers, the forkserver, the resource tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        end = time.monotonic() + 5
        while time.monotonic() < end and any(_alive(pid) for pid in everyone):
            time.sleep(0.05)
        left = [pid for pid in everyone if _alive(pid)]
        assert not left, (
            f"{len(left)} of {len(everyone)} processes alive after kill: "
            + "; ".join(" ".join(psutil.Process(p).cmdline())[:80] for p in left)
            + f" (workers {workers})"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


SIGNER = r"""
import json, sys, threading, time
from signing.hcert import sign_many, validity
from signing.keys import KeySource, file_signer
from pathlib import Path

keys = Path(sys.argv[1])
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()  # → forkserver
signer = file_signer(keys)
iat, exp = validity(signer, int(time.time()), 30)
lines = [json.dumps(p) for p in json.loads(sys.argv[2])] * 40_000
source = KeySource(provider="file", key_dir=keys)
sign_many(lines, iat=iat, exp=exp, keys=source, workers=2)
print("finished", flush=True)
"""


def test_signing_pool_dies_with_its_caller(tmp_path) -> None:
    """sign_many's forkserver workers, the forkserver and the resource tracker: none left
    a few seconds after a SIGKILL of the caller in the middle of signing."""
    from signing.keys import init_dev_keys
    from tests.conftest import REPO

    init_dev_keys(tmp_path / "keys")
    samples = [
        json.loads(x) for x in (REPO / "samples" / "payloads.jsonl").read_text().splitlines()
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNER, str(tmp_path / "keys"), json.dumps(samples[:5])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 120
        tree: list[psutil.Process] = []
        while time.monotonic() < end and proc.poll() is None:
            tree = psutil.Process(proc.pid).children(recursive=True)
            if len(tree) >= 4:  # the forkserver, the resource tracker and two workers
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(tree) >= 4, (proc.poll(), tree)
        time.sleep(0.5)  # signing
        everyone = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        end = time.monotonic() + 5
        while time.monotonic() < end and any(_alive(pid) for pid in everyone):
            time.sleep(0.05)
        left = [pid for pid in everyone if _alive(pid)]
        assert not left, f"{len(left)} of {len(everyone)} processes alive after kill"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
