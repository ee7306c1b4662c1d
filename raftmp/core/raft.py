"""The Raft core: a pure state machine.

Inputs are ``step(src, message, now)``, ``tick(now)``, ``propose(command)``
and ``read_index(ctx)``; the one output is ``ready(now)``, a batch of
everything the caller must do (persist, send, apply, answer reads). The core
never reads a clock, sleeps, does I/O or touches the global ``random``: time
comes in as ``now`` (seconds, any monotonic origin) and randomness from the
injected ``random.Random``. That is what lets the same code run in a worker
process and in the deterministic simulator.

Section numbers refer to the Raft paper (Ongaro & Ousterhout, 2014) and,
where marked "thesis", to Ongaro's dissertation (2014).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional

from .errors import ConfigError, check_positive
from .lease import Lease, lease_duration
from .log import RaftLog
from .messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
    Snapshot,
)
from .progress import Progress, Segment
from .snapshot import SnapshotRules

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"
READ_MODES = ("index", "lease")
INF = float("inf")
# eager_followers: after a retransmission, every follower is eager for this
# many heartbeat intervals, so that one more lost append rarely delays a commit.
LOSS_MEMORY = 10


def majority_of(n: int) -> int:
    """The size of a majority of ``n`` servers (§5.2: a quorum)."""
    return n // 2 + 1


def smoothed(average: float, sample: float) -> float:
    """A smoothed round trip after one more sample (RFC 6298's weights; 0: none yet)."""
    return sample if average == 0 else 0.875 * average + 0.125 * sample


@dataclass
class Config:
    heartbeat_interval: float = 0.05
    # §5.2: each election timeout is drawn uniformly from this range.
    election_timeout: tuple[float, float] = (0.2, 0.4)
    max_batch_entries: int = 256        # per AppendEntries
    max_batch_bytes: int = 1 << 20      # per AppendEntries (approximate)
    # AppendEntries in flight per follower and not known to be delivered, on a
    # clean link; the window grows with the measured loss (progress.py). Wide:
    # in a closed loop a window full of lost segments stalls that follower
    # (measured: 4 -> 32 doubles ops/s at drop 0.5, benchmarks/throughput.py).
    max_inflight: int = 32
    # A follower holds up to this many AppendEntries that arrived past a gap in
    # its log; the leader keeps no more than this many outstanding per follower.
    max_held: int = 64
    # Retransmission timeout bounds; in between it follows the measured round
    # trip (3 x smoothed RTT), so a lost append is resent in a few round trips.
    min_rto: float = 0.002
    max_rto: float = 0.1
    # Log compaction (§7, thesis §5.1): snapshot when the applied log since the
    # last snapshot passes either threshold; keep the last ``snapshot_keep``
    # entries for followers a little behind; send snapshots in chunks.
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 4 << 20
    snapshot_keep: int = 5_000
    snapshot_chunk: int = 64 << 10
    # Thesis §6.3: a client session idle this long (by the leader's clock,
    # written into the log) expires. Far above a client's op timeout, so no
    # request of an expired session can still be retried.
    session_timeout: float = 300.0
    # Reads (thesis §6.4): "index" confirms leadership by a heartbeat round per
    # batch of reads (ReadIndex); "lease" answers them at once while a quorum's
    # recent acknowledgements hold the leader's lease (§6.4.1, core/lease.py),
    # assuming clock rates within clock_drift of real time. Lease is the
    # default: every node of a cluster runs on one host, on one monotonic
    # clock (no drift at all), and under loss it keeps reads off the lossy
    # round trips (measured: 71% vs 41% of the drop-0 ops/s at drop 0.4).
    read_mode: str = "lease"
    clock_drift: float = 0.05
    # Quiet when idle (the CS3700 profile, where every packet is counted; the
    # defaults keep the classic behaviour). ``eager_followers``: new entries go
    # at once only to this many followers, the most up to date first (to all
    # while appends are being lost: LOSS_MEMORY), and a ReadIndex round only
    # to the quorum - 1 of them that it needs; the others catch up on their
    # heartbeat. ``quiet_heartbeats``: a follower gets a heartbeat only when
    # nothing else went to it for a heartbeat interval.
    eager_followers: Optional[int] = None
    quiet_heartbeats: bool = False

    def __post_init__(self) -> None:
        check_positive(self, "heartbeat_interval", "min_rto", "max_rto")
        check_positive(self, "max_batch_entries", "max_batch_bytes", "max_inflight",
                       integer=True)
        timeout = self.election_timeout
        if not (isinstance(timeout, (tuple, list)) and len(timeout) == 2
                and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in timeout)
                and self.heartbeat_interval < timeout[0] <= timeout[1] < INF):
            raise ConfigError(f"Config.election_timeout must be a pair (min, max) with "
                              f"heartbeat_interval < min <= max, not {timeout!r}")
        if self.min_rto > self.max_rto:
            raise ConfigError(f"Config.min_rto ({self.min_rto}) is above max_rto ({self.max_rto})")
        if self.read_mode not in READ_MODES:
            raise ConfigError(f"Config.read_mode must be one of {READ_MODES}, "
                              f"not {self.read_mode!r}")
        if not (isinstance(self.clock_drift, (int, float)) and 0 <= self.clock_drift < 1):
            raise ConfigError(f"Config.clock_drift must be in [0, 1), not {self.clock_drift!r}")


@dataclass
class Ready:
    """What one turn produced. The caller handles the fields in this order:

    1. send ``messages``: they may leave before the save (thesis §10.2.1: a
       leader's AppendEntries may go out while it writes the same entries to
       its own log; it counts itself toward a commit only in a later turn);
    2. persist ``hard_state`` (if not None) and ``entries`` (which replace
       any stored entries from ``entries[0].index`` on), durably;
    3. only then send ``persisted_messages`` — votes and acknowledgements
       promise what was just persisted (Figure 2: "updated on stable storage
       before responding to RPCs");
    4. apply ``committed`` in order; answer each read in ``reads`` as
       ``(ctx, index)`` once the state machine has applied ``index``.

    ``snapshot`` (rare) is one received from the leader: persist it before
    ``entries`` (the log now starts after it) and load it into the state
    machine before applying ``committed``.

    (raft-rs splits its Ready the same way: ``messages`` and ``persisted_messages``.)
    """

    hard_state: Optional[tuple[int, Optional[int]]]
    entries: list[Entry]
    messages: list[tuple[int, Any]]
    persisted_messages: list[tuple[int, Any]]
    committed: list[Entry]
    reads: list[tuple[Any, int]]
    snapshot: Optional[Snapshot] = None


class Raft(SnapshotRules):
    def __init__(self, node_id: int, nodes: list[int], state: tuple, rng: random.Random,
                 now: float, config: Optional[Config] = None,
                 snapshot: Optional[Snapshot] = None) -> None:
        """``nodes`` lists every member, this one included; ``state`` is storage's
        ``(term, vote, entries)``, the entries following ``snapshot`` if any."""
        assert node_id in nodes
        self.id = node_id
        self.peers = [n for n in nodes if n != node_id]
        self.quorum = majority_of(len(nodes))
        self.config = config or Config()
        self.rng = rng
        # Persistent state (Figure 2).
        self.term, self.vote, entries = state
        # Invariant: log.base <= snapshot.index <= applied (log.base == 0 without one).
        self.snapshot = snapshot
        done = (snapshot.index, snapshot.term) if snapshot is not None else (0, 0)
        self.log = RaftLog(entries, *done)
        # Volatile state. Invariant: applied <= commit <= log.last_index.
        self.commit = done[0]
        self.applied = done[0]
        self.size_check_at = 0      # wants_snapshot measures bytes from here on
        self.incoming: Optional[tuple[int, int, bytearray]] = None   # partial snapshot
        self.installed: Optional[Snapshot] = None    # received this turn, for Ready
        self.installs = 0                            # snapshots received (a statistic)
        self.role = FOLLOWER
        self.leader: Optional[int] = None
        self.leader_seen = -INF       # when we last heard from the leader
        # Output of the current turn: appends (may leave before the save), the rest.
        self.appends: list[tuple[int, Any]] = []
        self.held: dict[int, AppendEntries] = {}   # prev_index -> append past a gap
        # (term, index): our log matches that term's leader's through index. The
        # leader never truncates its log, so within a term this only grows.
        self.matched = (0, 0)
        self.msgs: list[tuple[int, Any]] = []
        self.hard_dirty = False
        self.unstable_from = self.log.last_index + 1  # entries from here on are not persisted
        # Candidate state.
        self.votes: set[int] = set()
        self.answered: set[int] = set()
        # Leader state.
        self.progress: dict[int, Progress] = {}
        self.round = 0
        self.reads: list[tuple[Any, int]] = []          # (ctx, round needed)
        self.reads_waiting_commit: list[Any] = []       # before the leader's no-op commits
        self.read_bcast = False
        self.read_deadline = INF
        self.lease = Lease(self.lease_duration())
        self.lease_reads: list[Any] = []    # read_mode "lease": to answer this turn
        # A node that just booted does not know whom it last heard: in lease mode
        # it grants no vote for an election timeout, as if it had heard a leader.
        lease = self.config.read_mode == "lease"
        self.vote_hold_until = now + self.config.election_timeout[0] if lease else -INF
        self.loss_seen = -INF     # the last retransmission (eager_followers)
        # Timers (absolute times on the caller's clock).
        self.election_deadline = now + self._election_timeout()
        self.heartbeat_deadline = INF
        self.resend_deadline = INF
        self.quorum_deadline = INF

    # ------------------------------------------------------------------ inputs

    def step(self, src: int, m: Any, now: float) -> None:
        """Handle one message from peer ``src``."""
        t = type(m)
        if m.term > self.term:
            if t is RequestVote and self._in_lease(now):
                # Thesis §4.2.3: while a leader is known to be alive, ignore vote
                # requests, so a server that was cut off cannot depose it.
                return
            if (t is RequestVote and m.pre) or (t is RequestVoteReply and m.pre and m.granted):
                pass  # pre-votes use a future term but change nobody's term (thesis §9.6)
            else:
                # §5.1: a newer term makes us a follower of that term (leader
                # unknown unless the message comes from it).
                leads = t is AppendEntries or t is InstallSnapshot
                self.become_follower(m.term, m.leader if leads else None, now)
        if m.term < self.term:
            # §5.1: reject stale requests, telling the sender the current term. The
            # reply echoes no round (0): the sender may lead our term by the time it
            # arrives, with a round counter restarted, and must not take this as a
            # confirmation of its leadership (ReadIndex, thesis §6.4).
            if t is AppendEntries:
                self._send(src, AppendEntriesReply(self.term, self.id, False, m.prev_index, 0, 0,
                                                   0))
            elif t is RequestVote:
                self._send(src, RequestVoteReply(self.term, self.id, False, m.pre))
            elif t is InstallSnapshot:   # index 0: about no transfer of this term
                self._send(src, InstallSnapshotReply(self.term, self.id, 0, 0, False))
            return
        handler = _HANDLERS.get(t)
        if handler is None:
            raise TypeError(f"not a Raft message: {m!r}")
        handler(self, src, m, now)

    def tick(self, now: float) -> None:
        """Fire every timer whose deadline has passed (timers are local events, §5.2)."""
        if self.role == LEADER:
            if now >= self.quorum_deadline:
                self.check_quorum(now)
            if self.role != LEADER:
                return
            for peer, pr in self.progress.items():
                if now >= pr.retransmit_at():
                    self.retransmit(peer, pr, now)
            if now >= self.heartbeat_deadline:
                self.bcast_append(now, heartbeat=True, peers=self._heartbeat_due(now))
            elif self.reads and now >= self.read_deadline:
                self.bcast_append(now, heartbeat=False)  # the round's answers were lost: ask again
        elif now >= self.election_deadline:
            self.become_pre_candidate(now)
        elif self.role != FOLLOWER and now >= self.resend_deadline:
            self.bcast_vote(now)

    def next_deadline(self) -> float:
        """The earliest time at which ``tick`` has something to do."""
        if self.role == LEADER:
            t = min(self.heartbeat_deadline, self.quorum_deadline)
            if self.reads:
                t = min(t, self.read_deadline)
            for pr in self.progress.values():
                if pr.inflight:
                    t = min(t, pr.retransmit_at())
            return t
        if self.role == FOLLOWER:
            return self.election_deadline
        return min(self.election_deadline, self.resend_deadline)

    def propose(self, command: Any) -> Optional[int]:
        """Append ``command`` to the leader's log; its index, or None if not leader."""
        if self.role != LEADER:
            return None
        index = self.log.last_index + 1
        self.log.append(Entry(self.term, index, command))
        self.maybe_commit()  # a single-node cluster commits at once
        return index

    def read_index(self, ctx: Any) -> bool:
        """Start a linearizable read (thesis §6.4, ReadIndex): ``ctx`` comes back in
        ``Ready.reads`` with the index to wait for, once a quorum has confirmed
        this leader after the read began. False if this node is not leader."""
        if self.role != LEADER:
            return False
        if self.log.term(self.commit) != self.term:
            # Thesis §6.4 step 1: until its no-op commits, a new leader does not know
            # the commit index of the previous term.
            self.reads_waiting_commit.append(ctx)
        elif self.config.read_mode == "lease":
            self.lease_reads.append(ctx)
        else:
            self.reads.append((ctx, self.round + 1))
            self.read_bcast = True
        return True

    def ready(self, now: float) -> Ready:
        """Flush the turn: send pending appends, then hand out everything to do."""
        reads = []
        if self.role == LEADER:
            cfg = self.config
            if self.lease_reads:
                reads = self._lease_reads(now)
            if self.read_bcast:
                self.bcast_append(now, heartbeat=False, peers=self.eager_peers(self.quorum - 1))
            eager = cfg.eager_followers
            if now - self.loss_seen < LOSS_MEMORY * cfg.heartbeat_interval:
                eager = None  # appends are being lost: a commit should not wait for one
            for peer in self.eager_peers(eager):
                pr = self.progress[peer]
                if not pr.probing:
                    self.maybe_send_append(peer, pr, now)
        reads += self._released_reads()
        hard = (self.term, self.vote) if self.hard_dirty else None
        entries = self.log.slice(self.unstable_from, self.log.last_index + 1)
        committed = self.log.slice(self.applied + 1, self.commit + 1)
        early, msgs = self.appends, self.msgs
        if hard is not None:
            # A new term or vote is not durable yet: an append would speak for it.
            early, msgs = [], early + msgs
        self.hard_dirty = False
        self.unstable_from = self.log.last_index + 1
        self.applied = self.commit
        self.appends, self.msgs = [], []
        snap, self.installed = self.installed, None
        return Ready(hard, entries, early, msgs, committed, reads, snap)

    # ------------------------------------------------------------- transitions

    def become_follower(self, term: int, leader: Optional[int], now: float) -> None:
        assert term >= self.term
        if term > self.term:
            self.term, self.vote = term, None
            self.hard_dirty = True
            self.held.clear()
        if self.role != FOLLOWER:
            self.election_deadline = now + self._election_timeout()
        self.role = FOLLOWER
        self.leader = leader
        self._leave_leadership()

    def become_pre_candidate(self, now: float) -> None:
        """On election timeout, first ask whether a real election could be won
        (thesis §9.6), without touching our term."""
        self.role = PRE_CANDIDATE
        self.leader = None
        self._leave_leadership()
        self._campaign(now)

    def become_candidate(self, now: float) -> None:
        """§5.2: start a new term and vote for ourselves."""
        assert self.role == PRE_CANDIDATE
        self.role = CANDIDATE
        self.term += 1
        self.vote = self.id
        self.hard_dirty = True
        self._campaign(now)

    def _campaign(self, now: float) -> None:
        self.votes = {self.id}
        self.answered = set()
        self.election_deadline = now + self._election_timeout()
        if len(self.votes) >= self.quorum:
            self._won(now)
        else:
            self.bcast_vote(now)

    def _won(self, now: float) -> None:
        if self.role == PRE_CANDIDATE:
            self.become_candidate(now)
        else:
            self.become_leader(now)

    def become_leader(self, now: float) -> None:
        assert self.role == CANDIDATE and len(self.votes) >= self.quorum
        self.role = LEADER
        self.leader = self.id
        last = self.log.last_index
        rto = self.config.heartbeat_interval  # until a round trip is measured (_reset_rto)
        self.progress = {p: Progress(last + 1, rto) for p in self.peers}
        self.round = 0
        self.lease = Lease(self.lease_duration())
        # §8 / thesis §6.4: a no-op from the new term lets the leader commit,
        # and so learn the commit index, without waiting for a client.
        self.log.append(Entry(self.term, last + 1, None))
        self.maybe_commit()
        self.quorum_deadline = now + 2 * self.config.election_timeout[1]
        self.bcast_append(now, heartbeat=True)

    def _leave_leadership(self) -> None:
        self.progress = {}
        self.reads = []
        self.reads_waiting_commit = []
        self.lease_reads = []
        self.read_bcast = False
        self.heartbeat_deadline = self.quorum_deadline = self.resend_deadline = INF
        self.read_deadline = INF

    # --------------------------------------------------------------- elections

    def bcast_vote(self, now: float) -> None:
        """Ask every peer that has not answered yet for its vote. Re-asking each
        heartbeat interval keeps a lossy network from wasting a whole term."""
        pre = self.role == PRE_CANDIDATE
        msg = RequestVote(self.term + pre, self.id, self.log.last_index, self.log.last_term, pre)
        for peer in self.peers:
            if peer not in self.answered:
                self._send(peer, msg)
        self.resend_deadline = now + self.config.heartbeat_interval

    def handle_request_vote(self, src: int, m: RequestVote, now: float) -> None:
        # Figure 2 RequestVote: one vote per term, and §5.4.1: only for a
        # candidate whose log is at least as up to date as ours. A pre-vote
        # is granted on the same terms for a future term, and binds nothing.
        up_to_date = self.log.is_up_to_date(m.last_index, m.last_term)
        if m.pre:
            grant = m.term > self.term and up_to_date
        else:
            grant = self.vote in (None, m.candidate) and up_to_date
            if grant and self.vote is None:
                self.vote = m.candidate
                self.hard_dirty = True
            if grant:
                self.election_deadline = now + self._election_timeout()
        self._send(src, RequestVoteReply(m.term if grant else self.term, self.id, grant, m.pre))

    def handle_vote_reply(self, src: int, m: RequestVoteReply, now: float) -> None:
        pre = self.role == PRE_CANDIDATE
        if self.role not in (PRE_CANDIDATE, CANDIDATE) or m.pre != pre:
            return
        self.answered.add(src)  # granted or not: stop asking this voter
        if m.granted and m.term == self.term + pre:
            self.votes.add(src)
            if len(self.votes) >= self.quorum:
                self._won(now)

    # ------------------------------------------------------------- replication

    def bcast_append(self, now: float, heartbeat: bool,
                     peers: Optional[list[int]] = None) -> None:
        """One AppendEntries to each of ``peers`` (default: every peer), stamped
        with a new round (ReadIndex counts the replies): new entries where the
        window allows, else an empty one. On the heartbeat timer (§5.2) this is
        the heartbeat."""
        self.round += 1
        self.lease.round_started(self.round, now)
        self.read_bcast = False
        last, window, held = self.log.last_index, self.config.max_inflight, self.config.max_held
        rto = 0.0
        for peer in self.peers if peers is None else peers:
            pr = self.progress[peer]
            if pr.probing and not pr.inflight:
                self.send_append(peer, pr, now)  # a probe, where none is outstanding
            elif not pr.probing and pr.next <= last and pr.can_send(window, held):
                self.send_append(peer, pr, now)
            else:
                self.send_ping(peer, pr, now)
            rto = max(rto, pr.rto)
        if self.reads:
            self.read_deadline = now + rto
        if heartbeat:
            interval = self.config.heartbeat_interval
            if self.config.quiet_heartbeats:
                self.heartbeat_deadline = min((pr.sent_at for pr in self.progress.values()),
                                              default=now) + interval
            else:
                self.heartbeat_deadline = now + interval

    def _heartbeat_due(self, now: float) -> Optional[list[int]]:
        """The peers a heartbeat goes to: all, or (quiet) those that got nothing
        for a heartbeat interval."""
        if not self.config.quiet_heartbeats:
            return None
        interval = self.config.heartbeat_interval
        return [p for p, pr in self.progress.items() if now >= pr.sent_at + interval]

    def eager_peers(self, k: Optional[int]) -> list[int]:
        """The followers that get entries (k = eager_followers) or a read round
        (k = quorum - 1) at once: all of them unless ``eager_followers`` is set,
        else the ``k`` most up to date (probing ones last: they may be dead)."""
        if self.config.eager_followers is None or k is None or k >= len(self.peers):
            return self.peers
        ranked = sorted(self.progress.items(),
                        key=lambda x: (x[1].probing, -x[1].match, x[1].srtt))
        return [p for p, _ in ranked[:k]]

    def send_ping(self, peer: int, pr: Progress, now: float) -> None:
        """An empty AppendEntries anchored at the follower's known match: it
        always passes the consistency check, so it carries the commit index and
        a round without provoking a spurious rejection. (Below our log's base it is
        anchored at 0, which matches every log: see handle_append.)"""
        pr.sent_at = now
        at = pr.match if pr.match >= self.log.base else 0
        self._send(peer, AppendEntries(self.term, self.id, at, self.log.term(at) or 0,
                                       (), self.commit, self.round))

    def retransmit(self, peer: int, pr: Progress, now: float) -> None:
        """The oldest unacknowledged append timed out (nothing sent after it
        arrived to show it lost): resend it alone, and back off until the
        follower answers (RFC 6298 §5.5). Its acknowledgement then shows, by
        time order, what else was lost (RACK), and a spurious timeout (a slow
        turn, not a loss) costs one segment, not a window. A probe is resent as
        it is; if the follower was thought to hold the oldest segment, it has
        dropped what it held (it restarted), and the leader probes from
        ``match + 1``."""
        pr.timed_out()
        pr.rto = min(2 * pr.rto, self.config.max_rto)
        self.loss_seen = now
        if pr.snap is not None:
            self.go_back_snapshot(pr)
        elif not pr.probing and not pr.inflight[0].sacked:
            self.resend(peer, pr, pr.inflight[0], now)
            return
        elif not pr.probing:
            pr.probing = True
            pr.next = pr.match + 1
        self.send_append(peer, pr, now)

    def resend(self, peer: int, pr: Progress, s: Segment, now: float) -> None:
        """Selective repeat: the one segment found lost, as it was first sent
        (if it was compacted away since, the follower gets the snapshot, §7)."""
        prev = s.first - 1
        if prev < self.log.base:
            pr.probing = True
            pr.next = pr.match + 1
            self.send_append(peer, pr, now)
            return
        self._send(peer, AppendEntries(self.term, self.id, prev, self.log.term(prev),
                                       tuple(self.log.slice(s.first, s.last + 1)), self.commit,
                                       self.round))
        pr.resend(s, now, self.round)
        pr.sent_at = now
        self.loss_seen = now

    def maybe_send_append(self, peer: int, pr: Progress, now: float) -> None:
        """Pipeline new entries to a follower in replicate mode, within the window."""
        cfg = self.config
        while (pr.next <= self.log.last_index and pr.can_send(cfg.max_inflight, cfg.max_held)
               and not pr.probing):   # (send_append may switch to sending a snapshot)
            self.send_append(peer, pr, now)

    def send_append(self, peer: int, pr: Progress, now: float) -> None:
        prev = pr.next - 1
        if prev < self.log.base or pr.snap is not None:
            self.send_snapshot(peer, pr, now)   # what it needs next was compacted (§7)
            return
        cfg = self.config
        entries = self.log.batch(pr.next, cfg.max_batch_entries, cfg.max_batch_bytes)
        pr.sent_at = now
        self._send(peer, AppendEntries(self.term, self.id, prev, self.log.term(prev),
                                       entries, self.commit, self.round))
        if pr.probing:
            pr.sent(pr.next, prev + len(entries), now, self.round)
        elif entries:
            pr.next = entries[-1].index + 1
            pr.sent(entries[0].index, entries[-1].index, now, self.round)

    def follow(self, m: Any, now: float) -> None:
        """``m`` comes from the leader of our term: follow it, and wait a new election timeout."""
        if self.role != FOLLOWER:
            assert self.role != LEADER, "two leaders in one term"
            self.become_follower(m.term, m.leader, now)  # §5.2: a leader of our term won
        self.leader = m.leader
        self.leader_seen = now
        self.election_deadline = now + self._election_timeout()

    def handle_append(self, src: int, m: AppendEntries, now: float) -> None:
        self.follow(m, now)
        log = self.log
        if m.prev_index < log.base:
            # Our log up to its base is committed, so it matches any current
            # leader's (§5.4 Leader Completeness): skip what the snapshot covers.
            skip = log.base - m.prev_index
            m = m._replace(prev_index=log.base, prev_term=log.base_term, entries=m.entries[skip:])
        if log.term(m.prev_index) != m.prev_term:
            # §5.3 consistency check failed. Hint where our log diverges so the
            # leader can skip the whole conflicting term in one round trip.
            if m.prev_index > log.last_index:
                # A gap (an earlier append was lost): keep this one until the gap
                # fills, and say what is missing (progress.py: a SACK).
                cterm, cindex = 0, log.last_index + 1
                self._hold(m)
            else:
                cterm = log.term(m.prev_index)
                cindex = log.first_index_of_term(cterm)
            self._send(src, AppendEntriesReply(self.term, self.id, False, m.prev_index,
                                               cterm, cindex, m.round))
            return
        last_new = self._drain_held(self._append(m))
        # Acknowledge everything proven to match in this term, not only what this
        # message proved: a lost acknowledgement is then repaired by any later
        # one, heartbeats included (cumulative acks).
        term, proven = self.matched
        if term == self.term and proven > last_new:
            last_new = proven
        self.matched = (self.term, last_new)
        self._send(src, AppendEntriesReply(self.term, self.id, True, last_new, 0, 0, m.round))

    def _append(self, m: AppendEntries) -> int:
        """Append what ``m`` carries (its consistency check passed); the index
        through which the log now provably matches the leader's."""
        log = self.log
        # §5.3: delete a conflicting suffix and append what is new. Entries we
        # already hold with the same term are kept: a duplicated or reordered
        # (shorter) message must never truncate the log.
        for e in m.entries:
            if log.term(e.index) != e.term:
                if e.index <= log.last_index:
                    assert e.index > self.commit, "truncating a committed entry"
                    log.truncate(e.index)
                self.unstable_from = min(self.unstable_from, e.index)
                for new in m.entries[e.index - m.entries[0].index:]:
                    log.append(new)
                break
        last_new = m.prev_index + len(m.entries)
        # Figure 2: commit = min(leaderCommit, index of last new entry) — only
        # what this message proved to match.
        if m.commit > self.commit:
            self.commit = max(self.commit, min(m.commit, last_new))
        return last_new

    def _hold(self, m: AppendEntries) -> None:
        """Keep an append that arrived past a gap (bounded; the longest per slot).
        Holding it is no more than the network delaying it."""
        held = self.held
        if not m.entries:
            return
        old = held.get(m.prev_index)
        if (old is None and len(held) < self.config.max_held) or \
                (old is not None and len(m.entries) > len(old.entries)):
            held[m.prev_index] = m

    def _drain_held(self, last_new: int) -> int:
        """Append the held messages the log now reaches (each passes the §5.3
        consistency check as if it had just arrived); the highest index proven
        to match. Messages of an older term are dropped."""
        held, log = self.held, self.log
        while held:
            prev = min(held)
            if prev > log.last_index:
                break
            m = held.pop(prev)
            if m.term == self.term and log.term(prev) == m.prev_term:
                last_new = max(last_new, self._append(m))
        return last_new

    def handle_append_reply(self, src: int, m: AppendEntriesReply, now: float) -> None:
        if self.role != LEADER or m.round == 0:
            # Round 0 answers an append from an earlier term of ours (see ``step``):
            # it proves nothing about this term, not even for check-quorum (§6.2).
            return
        if m.success and m.index > self.log.last_index:
            return  # matches what this leader never sent: not an honest reply (§5.3)
        pr = self.progress[src]
        pr.active = True
        self._reset_rto(pr)  # it answers: whatever it lost, no backoff
        if m.round > pr.round:
            pr.round = m.round
            pr.acked_start = self.lease.start_of(m.round)
        if m.success:
            if not pr.probing:
                # Karn: no samples while probing, where the reply may answer an
                # earlier copy of what was resent.
                sent, lost = pr.acked(m.index, m.round)
                if sent is not None:
                    self._sample_rtt(pr, now - sent)
                self._resend_all(src, pr, lost, now)
            if pr.probing and m.index >= pr.next - 1:
                # The probe landed: the follower matches through m.index.
                pr.snap = None   # (it caught up otherwise, if it was getting a snapshot)
                pr.probing = False
                pr.next = m.index + 1
                pr.inflight.clear()
            if m.index > pr.match:
                pr.match = m.index
                if pr.next <= m.index:
                    pr.next = m.index + 1
                self.maybe_commit()
            return
        # Rejected: ignore stale replies (the follower already matched further,
        # or a probe that is no longer outstanding).
        if m.index <= pr.match or (pr.probing and m.index != pr.next - 1):
            return
        if not pr.probing and m.conflict_term == 0:
            # A gap: the follower kept this append and lacks conflict_index on.
            # Resend only what was lost (progress.py), and stay pipelined.
            self._resend_all(src, pr, pr.hole(m.index, m.conflict_index), now)
            return
        # Fast backtracking: jump past the follower's whole conflicting term.
        nxt = m.conflict_index
        if m.conflict_term:
            last = self.log.last_index_of_term(m.conflict_term, m.index)
            if last:
                nxt = last + 1
        pr.next = max(pr.match + 1, min(nxt, m.index))
        pr.probing = True
        self.send_append(src, pr, now)

    def _resend_all(self, peer: int, pr: Progress, lost: list[Segment], now: float) -> None:
        for s in lost:
            self.resend(peer, pr, s, now)

    def _sample_rtt(self, pr: Progress, rtt: float) -> None:
        pr.srtt = smoothed(pr.srtt, rtt)
        self._reset_rto(pr)

    def _reset_rto(self, pr: Progress) -> None:
        cfg = self.config
        if pr.srtt == 0:  # no round trip measured yet
            pr.rto = cfg.heartbeat_interval
        else:
            pr.rto = min(cfg.max_rto, max(cfg.min_rto, 3 * pr.srtt))

    def maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index a quorum holds — but only by
        counting replicas of an entry from the current term (Figure 8)."""
        matches = sorted([pr.match for pr in self.progress.values()] + [self.log.last_index],
                         reverse=True)
        n = matches[self.quorum - 1]
        if n <= self.commit or self.log.term(n) != self.term:
            return False
        self._commit_to(n)
        return True

    def _commit_to(self, n: int) -> None:
        self.commit = n
        if self.reads_waiting_commit:
            if self.config.read_mode == "lease":
                self.lease_reads += self.reads_waiting_commit
            else:
                self.reads += [(ctx, self.round + 1) for ctx in self.reads_waiting_commit]
                self.read_bcast = True
            self.reads_waiting_commit = []

    def check_quorum(self, now: float) -> None:
        """Thesis §6.2: a leader that has not heard from a majority steps down,
        so clients stuck with it in a minority move on. The thesis checks every
        election timeout; we allow two (``quorum_deadline``) so that heavy loss
        (50% each way leaves 1 heartbeat in 4 answered) does not depose a
        healthy leader. Safety does not depend on it: reads use ReadIndex."""
        active = 1 + sum(pr.active for pr in self.progress.values())
        if active < self.quorum:
            self.become_follower(self.term, None, now)
            return
        for pr in self.progress.values():
            pr.active = False
        self.quorum_deadline = now + 2 * self.config.election_timeout[1]

    def _released_reads(self) -> list[tuple[Any, int]]:
        """ReadIndex (thesis §6.4): reads whose round a quorum has answered, with
        the commit index to wait for."""
        if not self.reads:
            return []
        rounds = sorted([pr.round for pr in self.progress.values()] + [self.round + 1],
                        reverse=True)
        confirmed = rounds[self.quorum - 1]
        done = [(ctx, self.commit) for ctx, need in self.reads if need <= confirmed]
        if done:
            self.reads = [r for r in self.reads if r[1] > confirmed]
        if not self.reads:
            self.read_deadline = INF  # the next read gets its own round (in ready)
        return done

    def _lease_reads(self, now: float) -> list[tuple[Any, int]]:
        """Thesis §6.4.1: within the lease, reads are answered at the commit index
        with no messages; past it (acknowledgements were lost) they fall back to
        ReadIndex."""
        ctxs, self.lease_reads = self.lease_reads, []
        if now < self.lease_until():
            return [(ctx, self.commit) for ctx in ctxs]
        self.reads += [(ctx, self.round + 1) for ctx in ctxs]
        self.read_bcast = True
        return []

    def lease_until(self) -> float:
        """When this leader's lease ends, on its clock (-INF if it holds none;
        only in lease mode do nodes keep the promises a lease rests on)."""
        if self.role != LEADER or self.config.read_mode != "lease":
            return -INF
        return self.lease.until((pr.acked_start for pr in self.progress.values()), self.quorum)

    def lease_duration(self) -> float:
        return lease_duration(self.config.election_timeout[0], self.config.clock_drift)

    # ----------------------------------------------------------------- helpers

    def _in_lease(self, now: float) -> bool:
        """Whether we heard from a live leader within the minimum election timeout
        (a leader trusts itself: check-quorum deposes it when it loses its majority),
        or booted within it in lease mode (core/lease.py)."""
        if self.role == LEADER or now < self.vote_hold_until:
            return True
        return self.leader is not None and now - self.leader_seen < self.config.election_timeout[0]

    def _send(self, dst: int, m: Any) -> None:
        (self.appends if type(m) is AppendEntries else self.msgs).append((dst, m))

    def _election_timeout(self) -> float:
        lo, hi = self.config.election_timeout
        return self.rng.uniform(lo, hi)


_HANDLERS = {
    RequestVote: Raft.handle_request_vote,
    RequestVoteReply: Raft.handle_vote_reply,
    AppendEntries: Raft.handle_append,
    AppendEntriesReply: Raft.handle_append_reply,
    InstallSnapshot: Raft.handle_install_snapshot,
    InstallSnapshotReply: Raft.handle_snapshot_reply,
}
