"""The leader's lease for reads (thesis §6.4.1): pure arithmetic on the leader's clock.

A node that hears from a leader ignores vote requests (pre-votes too, of its
own term too, whatever term it has moved to since) for the minimum election
timeout E (thesis §4.2.3, ``Raft.holds_vote``), and a node that has just
booted, not knowing whom it last heard, does the same for E after boot. So
once a quorum has acknowledged a message that left at or after time t (the
start of its round), no other leader can be elected before t + E on those
followers' clocks, and the leader may answer reads from its own state until
then, without a round of messages per read.

The assumption, stated: every node's clock runs at a rate within
``clock_drift`` (a fraction) of real time. No bound on clock *offsets* is
needed, only durations are compared. The leader measures on its own clock,
so it shortens the lease to E x (1 - drift) / (1 + drift): even if its clock
runs slow and the follower's fast, the lease ends before the follower's
protection does. In one machine's processes (CLOCK_MONOTONIC, one clock
source) the drift is 0 and the default margin of 5% is spare.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

INF = float("inf")
ROUNDS_KEPT = 256   # start times of the latest rounds; older acknowledgements earn nothing


def lease_duration(election_timeout_min: float, clock_drift: float) -> float:
    return election_timeout_min * (1 - clock_drift) / (1 + clock_drift)


class Lease:
    """Start times of a leader's rounds (``Raft.round``), to date acknowledgements."""

    __slots__ = ("duration", "starts", "last")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.starts: deque[float] = deque(maxlen=ROUNDS_KEPT)
        self.last = 0       # the round whose start is starts[-1]

    def round_started(self, round_: int, now: float) -> None:
        assert round_ == self.last + 1
        self.starts.append(now)
        self.last = round_

    @property
    def last_start(self) -> float:
        """When the latest round began (-INF before the first)."""
        return self.starts[-1] if self.starts else -INF

    def start_of(self, round_: int) -> float:
        """When ``round_`` began (-INF if forgotten or never started)."""
        back = self.last - round_
        if round_ < 1 or back < 0 or back >= len(self.starts):
            return -INF
        return self.starts[-1 - back]

    def until(self, acked_starts: Iterable[float], need: int) -> float:
        """When the lease ends: the ``need``-th latest round start that followers
        acknowledged (a quorum, less the leader if it counts itself: it
        acknowledges its own rounds at once), plus the duration."""
        starts = sorted(acked_starts, reverse=True)
        if need == 0:
            return INF
        if len(starts) < need:
            return -INF
        return starts[need - 1] + self.duration
