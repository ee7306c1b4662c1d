"""How an event loop waits for its next packet: poll briefly, then block.

Every put crosses eight process boundaries (client, router, leader, router,
followers, router, leader, router, client), and waking a process that
sleeps in ``poll`` costs far more than the message itself: on a virtual
machine the wake-up of an idle CPU is an inter-processor interrupt through
the hypervisor. Measured on a 2-core VM, a one-byte ping-pong between two
processes took 61 us a round trip when both blocked, 4.8 us when the waiting
one polled instead (and less CPU per round trip: 4.7 us against 23 us).

So a loop that expects more traffic soon polls without blocking for a short
while first, giving its CPU away between polls (``sched_yield``: a spinning
process must not keep the leader, say, off a CPU it is ready to run on), and
blocks only when nothing came. How long it polls adapts as the guest
kernel's haltpoll does (Documentation/virt/guest-halt-polling.rst): the
window doubles when a blocking wait ended early with a packet (one that a
longer spin would have caught), and halves when one ended only after the cap
(no window would have caught that packet). An idle cluster (a heartbeat
every 100 ms by default) so spins little; a cluster at light load spins for
about one round of replication; a busy one finds a packet at once.

``RAFTMP_SPIN_US`` (environment, microseconds, 0 to 10,000; default 1,000; 0
turns polling off) caps the window: it is read when this module is first
imported, so a cluster's processes (forked) share the launcher's setting. A
spinning process counts as busy (``top`` shows it), and ``sched_yield`` hands
its CPU only to processes that are ready to run on it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Optional, TypeVar

T = TypeVar("T")

SPIN_LIMIT_US = 10_000    # RAFTMP_SPIN_US above this is refused: spinning is not waiting


def spin_cap(text: Optional[str]) -> float:
    """The window's cap in seconds from ``RAFTMP_SPIN_US`` (None: the default);
    ValueError naming the variable if it is not a number of microseconds
    from 0 to ``SPIN_LIMIT_US``."""
    if text is None:
        return 1000e-6
    try:
        us = float(text)
    except ValueError:
        us = float("nan")
    if not 0 <= us <= SPIN_LIMIT_US:   # (also nan)
        raise ValueError(f"RAFTMP_SPIN_US={text!r}: give microseconds from 0 to "
                         f"{SPIN_LIMIT_US} (0 turns polling off)")
    return us * 1e-6


# The window's cap. A bad RAFTMP_SPIN_US leaves the default here and its error
# in SPIN_ERROR, for the command line and ``Cluster`` to report (not a
# traceback at import).
SPIN_ERROR: Optional[str] = None
try:
    SPIN_MAX = spin_cap(os.environ.get("RAFTMP_SPIN_US"))
except ValueError as exc:
    SPIN_MAX, SPIN_ERROR = spin_cap(None), str(exc)
SPIN_START = 50e-6        # the first window after a quick wake-up (then doubles)
SPIN_MIN = 10e-6          # a window halved below this is no window


class Spinner:
    """One event loop's adaptive poll-before-block window."""

    def __init__(self, cap: float = SPIN_MAX,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.cap = cap
        self.clock = clock
        self.window = 0.0   # how long the next wait polls before it blocks

    def wait(self, check: Callable[[], list[T]], block: Callable[[float], list[T]],
             timeout: float) -> list[T]:
        """What ``check()`` (never blocks) or ``block(timeout)`` found ready."""
        if timeout <= 0 or not self.cap:
            return block(max(0.0, timeout))
        clock = self.clock
        started = clock()
        if self.window:
            end = started + min(self.window, timeout)
            while True:
                ready = check()
                if ready:
                    return ready
                if clock() >= end:
                    break
                os.sched_yield()
            timeout -= clock() - started
            started = clock()
        ready = block(max(0.0, timeout))
        if clock() - started < self.cap:   # a longer spin would have caught it
            if ready:
                self.window = min(self.cap, max(SPIN_START, 2 * self.window))
        elif self.window:                  # no spin within the cap would have
            self.window = 0.0 if self.window / 2 < SPIN_MIN else self.window / 2
        return ready
