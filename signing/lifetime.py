"""Worker processes die with the process that started them.

A pool worker that outlives its parent keeps working for nobody: after a ``kill -9`` of
``bevis issue`` its workers went on delivering, and the verification pool, the forkserver
and the resource tracker never exited. On Linux the kernel can send a signal to a process
when its parent dies (``prctl(PR_SET_PDEATHSIG)``); :func:`die_with_parent` asks for
SIGKILL. The forkserver and the resource tracker need nothing of their own: each exits when
the last holder of its pipe is gone, and every holder is the caller or one of the workers.

``PR_SET_PDEATHSIG`` follows the *thread* that forked the child, not the process: a worker
forked from a thread that ends would be killed with it. So a worker forked from any thread
but the main one watches its parent instead (a daemon thread blocked on a pidfd). A
forkserver's worker has the forkserver for its parent — and the forkserver lives as long
as its workers do (each holds its "alive" pipe) — so it also watches the process that
started its pool (``owner``).

Plain standard library (ctypes): signing knows nothing of jobs, so the jobs side reuses
this module for its own pools (:func:`die_with_parent_on_fork`).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.2

# (pid, forked from the main thread) of the process about to fork, recorded just before
# every os.fork(); a forked child reads its copy to know who its parent was.
_forker: tuple[int, bool] | None = None
_hook_installed = False


def _note_forker() -> None:
    global _forker
    _forker = (os.getpid(), threading.current_thread() is threading.main_thread())


os.register_at_fork(before=_note_forker)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(pid: int) -> None:
    """Block until process ``pid`` has ended (a pidfd where the kernel has them, else a
    poll), then SIGKILL this process."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        _kill_self()
    except (AttributeError, OSError):  # no pidfd here: poll
        while _alive(pid):
            time.sleep(WATCH_INTERVAL_S)
        _kill_self()
    else:
        select.select([fd], [], [])  # readable once the process has exited
        _kill_self()


def _watch_in_thread(pid: int) -> None:
    threading.Thread(target=_watch, args=(pid,), name="die-with-owner", daemon=True).start()


def die_with_parent(owner: int | None = None) -> None:
    """Call first thing in a worker process: it gets SIGKILL when its parent dies (and
    dies at once if the parent is already gone). ``owner``: the process that started the
    pool, when that is not the parent — a forkserver's worker, whose parent (the
    forkserver) lives as long as any of its workers does; such a worker watches its owner
    too. No-op for the parent outside Linux."""
    forker = _forker
    parent, from_main = forker if forker is not None else (os.getppid(), True)
    if sys.platform.startswith("linux") and from_main:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    else:
        _watch_in_thread(parent)
    if os.getppid() != parent:  # the parent died between the fork and the prctl
        _kill_self()
    if owner is not None and owner != parent:
        _watch_in_thread(owner)


def die_with_parent_on_fork() -> None:
    """From now on every child this process forks (process pools of any start method
    "fork") dies with it. Idempotent; there is no way back (nor a need for one)."""
    global _hook_installed
    if not _hook_installed:
        os.register_at_fork(after_in_child=die_with_parent)
        _hook_installed = True
