"""The fault switch for drills and tests: ``BEVIS_FAULT=<step>:<batch sequence>[:mode]``.

``BEVIS_FAULT=sign:1`` makes the sign step of batch 1 (``...-b0001``) crash hard, once, so
that operations can practise the rerun:

* where the step fans out to worker processes (sign verifies its certificates in a process
  pool), one worker process dies with ``os._exit`` in the middle of the batch — the pool
  breaks exactly as it does when the kernel kills a worker (OOM); the task sees
  ``BrokenProcessPool`` and the batch is marked FAILED;
* where the step runs in-process (render, deliver, or sign with one worker),
  :class:`FaultInjected` is raised in the middle of the step and the batch is marked FAILED;
* with the suffix ``:kill`` (``sign:1:kill``) the task process itself receives SIGKILL — the
  drill for a worker that dies without a chance to record anything: the batch is left
  holding ``running_step`` and is reported as *interrupted* (failed) once that process is
  seen to be gone;
* with the suffix ``:hang`` (``sign:1:hang``) the step stops mid-batch and waits for ever —
  a verification worker process where the step fans out, else the task process itself —
  holding its batch's lease: the drill for killing a run at a known point with its worker
  processes alive, and for a holder that never finishes.

"Once" survives restarts: before crashing, the switch writes a marker file
``runs/<run>/faults/<step>-b<seq>.fired``; while it exists the switch stays quiet. Delete
the marker to arm the fault again.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths, write_text_atomic

STEPS = ("sign", "render", "deliver")
MODES = ("crash", "kill", "hang")
EXIT_CODE = 86  # exit status of a worker process crashed by the switch


class FaultInjected(RuntimeError):
    """Raised by the fault switch when the step runs in-process."""


@dataclass(frozen=True)
class Fault:
    step: str
    seq: int
    mode: str = "crash"


def parse(spec: str | None) -> Fault | None:
    """``"sign:1"`` → Fault("sign", 1); ``None``/empty → None; anything else → ValueError."""
    if not spec:
        return None
    parts = spec.strip().split(":")
    if len(parts) not in (2, 3) or parts[0] not in STEPS or not parts[1].isdigit():
        raise ValueError(
            f"BEVIS_FAULT={spec!r} is not '<step>:<batch sequence>[:kill|:hang]' "
            f"with step one of {', '.join(STEPS)}"
        )
    mode = parts[2] if len(parts) == 3 else "crash"
    if mode not in MODES:
        raise ValueError(f"BEVIS_FAULT={spec!r}: mode must be one of {', '.join(MODES)}")
    return Fault(parts[0], int(parts[1]), mode)


def marker(run_id: str, step: str, seq: int, settings: Settings | None = None) -> Path:
    return RunPaths.of(run_id, settings).root / "faults" / f"{step}-b{seq:04d}.fired"


def armed(step: str, run_id: str, seq: int, settings: Settings | None = None) -> Fault | None:
    """The fault that should fire now for this step of this batch, or None. Does not fire."""
    s = settings or get_settings()
    fault = parse(s.fault)
    if fault is None or fault.step != step or fault.seq != seq:
        return None
    if marker(run_id, step, seq, s).exists():
        return None
    return fault


def remember(fault: Fault, run_id: str, settings: Settings | None = None) -> None:
    """Write the marker that keeps the fault from firing again (before crashing)."""
    write_text_atomic(
        f"{fault.step}:{fault.seq}:{fault.mode} pid={os.getpid()}\n",
        marker(run_id, fault.step, fault.seq, settings),
    )


def fire(fault: Fault, run_id: str, *, in_worker: bool, settings: Settings | None = None) -> None:
    """Remember the firing (so it happens once), then crash: ``os._exit`` in a worker process,
    SIGKILL of this process for mode ``kill``, wait for ever for mode ``hang``, else raise
    :class:`FaultInjected`."""
    remember(fault, run_id, settings)
    if fault.mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.mode == "hang":
        hang()
    if in_worker:
        os._exit(EXIT_CODE)
    raise FaultInjected(f"BEVIS_FAULT: injected crash in {fault.step} of batch {fault.seq}")


def crash_worker() -> None:
    """Run inside a pool worker: die as a killed process would (no cleanup, no exception)."""
    os._exit(EXIT_CODE)


def hang() -> None:
    """Stop here for good (until the process is killed): mode ``hang``."""
    while True:
        time.sleep(3600)
