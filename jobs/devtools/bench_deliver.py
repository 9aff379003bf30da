"""``bevis bench deliver``: messages per second from deliver_batch to the mailbox simulator.

The batch is the drill's synthetic one (:func:`jobs.devtools.drill.synthetic_batch`) in a
temporary data folder; the simulator runs as its own process unless a URL is given.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from jobs.devtools.drill import synthetic_batch
from jobs.mailbox.simulator import free_port
from jobs.settings import get_settings
from jobs.steps.deliver import deliver_batch
from jobs.steps.render import render_batch


def bench_deliver(
    n: int = 5000, url: str | None = None, concurrency: int | None = None
) -> dict[str, Any]:
    """Messages per second from deliver_batch to the simulator (started as its own
    process on a free port unless ``url`` is given), on a synthetic batch in a temporary
    data folder. PDFs are rendered before the clock starts."""
    with tempfile.TemporaryDirectory(prefix="bevis-bench-deliver-") as tmp:
        overrides: dict[str, Any] = {"data_dir": Path(tmp)}
        if concurrency:
            overrides["mailbox_concurrency"] = concurrency
        proc = None
        if url is None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "BEVIS_DATA_DIR": tmp}
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from jobs.cli import app; app()",
                    "simulator",
                    "mailbox",
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/_admin/stats", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or (proc and proc.poll() is not None):
                        raise RuntimeError("mailbox simulator did not start") from None
                    time.sleep(0.1)
            s = get_settings(mailbox_url=url, **overrides)
            batch_id = synthetic_batch("bench", n, s)
            render_batch(batch_id, s)
            load_before = os.getloadavg()
            sim0, me0 = _cpu_of(proc.pid) if proc else 0.0, _cpu_self()
            t0 = time.perf_counter()
            result = deliver_batch(batch_id, s)
            seconds = time.perf_counter() - t0
            sim_cpu = (_cpu_of(proc.pid) - sim0) if proc else None
            client_cpu = _cpu_self() - me0 - result["print_cpu_s"]
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    return {
        "n": n,
        "delivery_processes": min(s.resolved_workers(), -(-n // s.mailbox_lookup_chunk)),
        "concurrency": s.mailbox_concurrency,
        "seconds": round(seconds, 3),
        "digital": result["DIGITAL"],
        "paper": result["PAPER"],
        "deferred": result["DEFERRED"],
        "print_seconds": round(result["print_seconds"], 3),
        # digital phase only (the print file for the paper share is written afterwards)
        "messages_per_s": round(result["DIGITAL"] / (seconds - result["print_seconds"]), 1),
        "certificates_per_s": round(n / seconds, 1),
        # load-independent: messages per CPU-second of the client (without the print file)
        # and of the simulator
        "client_cpu_s": round(client_cpu, 2),
        "simulator_cpu_s": round(sim_cpu, 2) if sim_cpu is not None else None,
        "messages_per_client_cpu_s": round(result["DIGITAL"] / client_cpu, 1),
        "messages_per_simulator_cpu_s": round(result["DIGITAL"] / sim_cpu, 1) if sim_cpu else None,
        "ledger_rows": result["attempts"],
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def _cpu_self() -> float:
    """CPU seconds of this process and of its finished children (delivery processes)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
