"""Process hygiene for the processes the launcher and the workers fork: a
child must never outlive the process that started it (no orphans, even when
the parent is killed with SIGKILL)."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable
from typing import Optional, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Linux: get ``sig`` (SIGKILL) when the parent dies, however it dies (even SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):  # not Linux: pipe EOF still ends the child
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def exit_on_signals() -> None:
    """SIGTERM and SIGINT end a standalone node (``raftmp serve``, the course
    replica) through SystemExit, so its ``finally`` blocks close and clean up."""
    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)


def poll(found: Callable[[], T], timeout: float, interval: float) -> Optional[T]:
    """Call ``found`` every ``interval`` s until it gives something other than
    None (returned), or ``timeout`` s have passed (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(interval)
