"""The leader's view of one follower, and how it recovers lost appends.

Pure bookkeeping (no clock, no I/O): the Raft core passes ``now`` in and
sends whatever these methods say is lost.

Loss recovery follows TCP and QUIC rather than go-back-N:

* A follower keeps AppendEntries that arrive past a gap in its log (it holds
  them until the gap fills, ``Raft.handle_append``) and answers them with a
  rejection naming the first index it lacks: a selective acknowledgement
  (SACK, RFC 2018) of the message it kept, and a report of the hole.
* Loss is detected by time order, as RACK does (RFC 8985 §6.2; QUIC's
  packet threshold, RFC 9002 §6.1): a segment sent *before* one that was
  delivered, and not itself delivered, is lost and is resent at once, alone
  (selective repeat; RFC 6675 §5 resends only the holes). A resend gets a new
  send time, so it is declared lost again only when something sent after it
  arrives: one resend per hole per round trip, however many replies report it.
* The retransmission timeout covers the tail (nothing sent later arrived to
  reveal the loss): it resends the oldest segment, and backs off while the
  follower stays silent (RFC 6298 §5.5); the answer to that resend reveals
  the rest by time order. A follower that dropped what it held (it
  restarted, or its buffer was full) is found out when it reports a hole
  where the leader thought it held data (SACK reneging, RFC 2018 §8): the
  segment counts as lost again.
* The window grows with the measured loss rate (it counts segments not known
  to be delivered): on a lossy link the same number of segments is on its way
  to being delivered as on a clean one. It is capped, and it does not grow
  with RTT, so a slow (congested) follower is not sent more.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Optional

INF = float("inf")
LOSS_GAIN = 1 / 16      # weight of one outcome in the loss-rate estimate
MAX_LOSS = 0.75         # the window stops growing here (4 x the clean window)


class Segment:
    """One AppendEntries with entries ``first..last``, as last sent (in ``round``)."""

    __slots__ = ("first", "last", "sent", "round", "resent", "sacked")

    def __init__(self, first: int, last: int, sent: float, round_: int) -> None:
        self.first, self.last, self.sent, self.round = first, last, sent, round_
        self.resent = False     # Karn: no RTT sample from a segment sent twice
        self.sacked = False     # the follower said it holds it, past a gap

    def __repr__(self) -> str:
        flags = "S" * self.sacked + "R" * self.resent
        return f"Segment({self.first}..{self.last} @{self.sent:.4f}{' ' + flags if flags else ''})"


class Progress:
    """The leader's view of one follower (thesis §3.5; etcd's tracker.Progress).

    Invariant: match < next. While ``probing`` the leader does not know where
    the follower's log diverges and keeps one AppendEntries with entries
    outstanding (heartbeat pings aside); otherwise it pipelines segments,
    ``inflight`` holding the unacknowledged ones in index order. A follower
    that needs what the leader compacted is sent the snapshot instead
    (``snap`` set, ``probing`` true).
    """

    __slots__ = ("match", "next", "probing", "inflight", "srtt", "rto", "round", "active",
                 "loss", "acked_start", "snap", "snap_sent", "snap_acked", "sent_at", "silent")

    def __init__(self, next_index: int, rto: float) -> None:
        self.match = 0
        self.next = next_index
        self.probing = True
        self.inflight: deque[Segment] = deque()
        self.srtt = 0.0       # smoothed round trip of acknowledged appends (0: no sample yet)
        self.rto = rto
        self.round = 0        # highest round the follower has answered (ReadIndex)
        self.acked_start = -INF   # when that round began (the lease, core/lease.py)
        self.active = False   # answered since the last quorum check (thesis §6.2)
        self.loss = 0.0       # estimated fraction of segments lost on the way (and back)
        self.sent_at = -INF   # when the leader last sent it anything (quiet_heartbeats)
        self.silent = False   # no answer since an append to it timed out (it may be dead)
        # Snapshot mode (thesis §5.3, core/snapshot.py): the snapshot being sent,
        # bytes sent and acknowledged; ``inflight`` then holds one Segment per
        # chunk, ``first..last`` its byte offsets.
        self.snap: Optional[Any] = None
        self.snap_sent = self.snap_acked = 0

    def retransmit_at(self) -> float:
        return self.inflight[0].sent + self.rto if self.inflight else INF

    def window(self, base: int) -> int:
        """How many segments may be in flight and not known to be delivered."""
        return math.ceil(base / (1 - min(self.loss, MAX_LOSS)))

    def can_send(self, base: int, held: int) -> bool:
        """Whether a new segment fits the window (and the follower's hold buffer)."""
        inflight = self.inflight
        if len(inflight) >= held:
            return False
        return sum(not s.sacked for s in inflight) < self.window(base)

    def sent(self, first: int, last: int, now: float, round_: int) -> None:
        if self.probing:
            self.inflight.clear()   # one probe outstanding; its reply or its timeout moves on
        self.inflight.append(Segment(first, last, now, round_))

    def acked(self, index: int, round_: int) -> tuple[Optional[float], list[Segment]]:
        """The follower matches through ``index`` (a cumulative acknowledgement, in
        answer to a message of ``round_``). Returns the send time to sample an RTT
        from (None if there is none to trust) and the segments now found lost."""
        inflight = self.inflight
        if not inflight or inflight[0].last > index:
            return None, []
        newest = -INF
        while inflight and inflight[0].last <= index:
            s = inflight.popleft()
            if not s.sacked:
                self._outcome(0.0)
            newest = max(newest, s.sent)
        # The last segment acknowledged times the round trip, unless it was
        # sent twice (Karn), held past a gap (the ack waited for the hole), or
        # the answer is to a later round's message (a heartbeat's, say).
        sample = None if s.resent or s.sacked or s.round != round_ else s.sent
        return sample, self._lost_before(newest, index + 1, INF)

    def hole(self, prev_index: int, missing: int) -> list[Segment]:
        """The follower kept the segment after ``prev_index`` but lacks ``missing``
        onward: mark what it holds, and return the segments now found lost."""
        held = None
        for s in self.inflight:
            if s.first <= missing <= s.last and s.sacked:
                s.sacked = False  # reneged: it lacks what it said it held
            elif s.first == prev_index + 1 and not s.sacked:
                s.sacked = True
                self._outcome(0.0)
            if s.first == prev_index + 1:
                held = s
        if held is None:
            return []
        return self._lost_before(held.sent, missing, prev_index)

    def resend(self, s: Segment, now: float, round_: int) -> None:
        s.sent, s.round, s.resent = now, round_, True

    def timed_out(self) -> None:
        self._outcome(1.0)

    def _lost_before(self, sent: float, lo: int, hi: float) -> list[Segment]:
        """RACK: unacknowledged segments overlapping ``lo..hi`` sent before ``sent``."""
        lost = [s for s in self.inflight
                if not s.sacked and s.sent < sent and s.last >= lo and s.first <= hi]
        for _ in lost:
            self._outcome(1.0)
        return lost

    def _outcome(self, lost: float) -> None:
        self.loss += LOSS_GAIN * (lost - self.loss)
