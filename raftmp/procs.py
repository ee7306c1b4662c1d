"""Process hygiene for the processes the launcher and the workers fork: a
child must never outlive the process that started it (no orphans, even when
the parent is killed with SIGKILL)."""

from __future__ import annotations

import ctypes
import os
import signal

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
