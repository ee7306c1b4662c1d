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

from .config import READ_MODES, Config  # noqa: F401 (re-exported)
from .elections import ElectionRules
from .follower import FollowerRules
from .leader import LOSS_MEMORY, LeaderRules, smoothed  # noqa: F401 (re-exported)
from .lease import Lease
from .log import RaftLog
from .membership import ConfigHistory, Configuration
from .messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
    Snapshot,
    TimeoutNow,
)
from .progress import Progress
from .reads import ReadRules
from .reconfig import MembershipRules
from .roles import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE  # noqa: F401 (re-exported)
from .snapshot import SnapshotRules

INF = float("inf")

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


class Raft(LeaderRules, FollowerRules, ElectionRules, ReadRules, SnapshotRules,
           MembershipRules):
    def __init__(self, node_id: int, nodes: list[int], state: tuple, rng: random.Random,
                 now: float, config: Optional[Config] = None,
                 snapshot: Optional[Snapshot] = None) -> None:
        """``nodes``: the cluster's first configuration, all voters (a server
        joining a running cluster passes none: it learns its configuration from
        the leader's log or snapshot); ``state`` is storage's ``(term, vote,
        entries)``, the entries following ``snapshot`` if any."""
        self.id = node_id
        self.config = config or Config()
        self.rng = rng
        # Persistent state (Figure 2).
        self.term, self.vote, entries = state
        # Invariant: log.base <= snapshot.index <= applied (log.base == 0 without one).
        self.snapshot = snapshot
        done = (snapshot.index, snapshot.term) if snapshot is not None else (0, 0)
        self.log = RaftLog(entries, *done)
        # The configurations in the log (thesis §4.1); the latest is in use.
        if snapshot is not None and snapshot.config is not None:
            self.configs = ConfigHistory(snapshot.config, snapshot.config_index)
        else:
            self.configs = ConfigHistory(Configuration(tuple(sorted(nodes))))
        self.configs.appended(self.log.entries)
        # Volatile state. Invariant: applied <= commit <= log.last_index.
        self.commit = done[0]
        self.applied = done[0]
        self.size_check_at = 0      # wants_snapshot measures bytes from here on
        self.incoming: Optional[tuple[int, int, bytearray]] = None   # partial snapshot
        self.installed: Optional[Snapshot] = None    # received this turn, for Ready
        self.installs = 0                            # snapshots received (a statistic)
        self.role = FOLLOWER
        self.leader: Optional[int] = None
        self.leader_seen = -INF       # when we last heard from a leader, any term (holds_vote)
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
        self.campaign_at = -INF   # when this (pre-)candidacy began
        self.elected_at = -INF    # when this node last became leader
        # Leader state.
        self.progress: dict[int, Progress] = {}
        self.round = 0
        self.unsent_rounds = 0    # replies naming a round we never sent: dropped (a statistic)
        self.reads: list[tuple[Any, int]] = []          # (ctx, round needed)
        self.reads_waiting_commit: list[Any] = []       # before the leader's no-op commits
        self.read_bcast = False
        self.read_deadline = INF
        self.lease = Lease(self.lease_duration())
        self.lease_reads: list[Any] = []    # read_mode "lease": to answer this turn
        self.lease_read_at = -INF           # when the last of them was answered
        # A node that just booted does not know whom it last heard: in lease mode
        # it grants no vote for an election timeout, as if it had heard a leader.
        lease = self.config.read_mode == "lease"
        self.vote_hold_until = now + self.config.election_timeout[0] if lease else -INF
        self.loss_seen = -INF     # the last retransmission (fan_out, eager_followers)
        # Timers (absolute times on the caller's clock).
        self.election_deadline = now + self._election_timeout()
        self.heartbeat_deadline = INF
        self.resend_deadline = INF
        self.quorum_deadline = INF
        # Leadership transfer (thesis §3.10, reconfig.py).
        self.transfer_to: Optional[int] = None
        self.transfer_deadline = INF
        self.timeout_sent_at = -INF
        self.transfer_campaign = False   # this campaign was asked for by TimeoutNow
        self.leaving = False             # a leader still replicating to removed servers
        self.lease_ended = False         # this leader gave up its lease for this term
        self.use_latest_config()         # voters, peers, quorum

    # ------------------------------------------------------------------ inputs

    def step(self, src: int, m: Any, now: float) -> None:
        """Handle one message from peer ``src``."""
        t = type(m)
        if t is RequestVote and m.term >= self.term and self.holds_vote(m, now):
            return   # thesis §4.2.3: no term, no vote, however we came to its term
        if m.term > self.term:
            if (t is RequestVote and m.pre) or (t is RequestVoteReply and m.pre and m.granted):
                pass  # pre-votes use a future term but change nobody's term (thesis §9.6)
            else:
                # §5.1: a newer term makes us a follower of that term (leader
                # unknown unless the message comes from it).
                leads = t is AppendEntries or t is InstallSnapshot or t is TimeoutNow
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
            if self.transfer_to is not None:
                self.transfer_turn(now)
            if now >= self.heartbeat_deadline:
                self.bcast_append(now, heartbeat=True, peers=self._heartbeat_due(now))
            elif self.reads and now >= self.read_deadline:
                self.bcast_append(now, heartbeat=False)  # the round's answers were lost: ask again
        elif now >= self.election_deadline:
            if self.may_campaign():
                self.become_pre_candidate(now)
            else:   # learners and removed servers never campaign (thesis §4.2.1, §4.2.2)
                self.election_deadline = now + self._election_timeout()
        elif self.role != FOLLOWER and now >= self.resend_deadline:
            self.bcast_vote(now)

    def next_deadline(self) -> float:
        """The earliest time at which ``tick`` has something to do."""
        if self.role == LEADER:
            t = min(self.heartbeat_deadline, self.quorum_deadline, self.transfer_deadline)
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
        """Append ``command`` to the leader's log; its index, or None if not
        leader or handing leadership over (thesis §3.10)."""
        if self.role != LEADER or self.transfer_to is not None:
            return None
        index = self.log.add(self.term, command)
        if self.quorum == 1:
            # A single voter commits at once. (With more, the leader's own
            # longer log cannot be a quorum's count: the replies commit.)
            self.maybe_commit()
        return index

    def ready(self, now: float) -> Ready:
        """Flush the turn: send pending appends, then hand out everything to do."""
        reads = []
        if self.role == LEADER:
            cfg = self.config
            if self.lease_reads:
                reads = self._lease_reads(now)
            if self.read_bcast:
                quiet = cfg.eager_followers is not None
                self.bcast_append(now, heartbeat=False,
                                  peers=self.eager_peers(self.needed if quiet else None))
            else:
                self.refresh_round(now)   # the appends below carry it
            progress = self.progress
            eager, later = self.fan_out(now)
            for peer in eager:
                pr = progress[peer]
                if not pr.probing:
                    self.maybe_send_append(peer, pr, now)
            batch = self.log.last_index + 1 - cfg.max_batch_entries
            for peer in later:    # Config.fan_out "quorum": else with their heartbeat
                pr = progress[peer]
                if not pr.probing and pr.next <= batch:
                    self.maybe_send_append(peer, pr, now)
            if self.transfer_to is not None:
                self.transfer_turn(now)
            self.maybe_step_down_removed(now)
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
        self.transfer_campaign = False
        self._leave_leadership()

    def become_leader(self, now: float) -> None:
        assert self.role == CANDIDATE and self.has_quorum(self.votes)
        self.role = LEADER
        self.elected_at = now
        self.transfer_campaign = False
        self.lease_ended = False
        self.leader = self.id
        last = self.log.last_index
        self.progress = {}
        self.use_latest_config()   # a Progress per member, probing from last + 1
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
        self.abort_transfer_state()
        if self.leaving:
            self.leaving = False
            self.use_latest_config()   # peers: the latest members again

    # ----------------------------------------------------------------- helpers

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
    TimeoutNow: Raft.handle_timeout_now,
}
