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
from .progress import Progress, Segment
from .reads import ReadRules
from .reconfig import MembershipRules
from .roles import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE  # noqa: F401 (re-exported)
from .snapshot import SnapshotRules

INF = float("inf")
# eager_followers, fan_out "quorum": after a retransmission, every follower is
# eager for this many heartbeat intervals, so that one more lost append rarely
# delays a commit.
LOSS_MEMORY = 10


def smoothed(average: float, sample: float) -> float:
    """A smoothed round trip after one more sample (RFC 6298's weights; 0: none yet)."""
    return sample if average == 0 else 0.875 * average + 0.125 * sample


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


class Raft(FollowerRules, ElectionRules, ReadRules, SnapshotRules, MembershipRules):
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

    # ------------------------------------------------------------- replication

    def bcast_append(self, now: float, heartbeat: bool,
                     peers: Optional[list[int]] = None) -> None:
        """One AppendEntries to each of ``peers`` (default: every peer), stamped
        with a new round (ReadIndex counts the replies): new entries where the
        window allows, else an empty one. On the heartbeat timer (§5.2) this is
        the heartbeat; an empty one asks for an answer only where the leader
        needs one (``wants_answers``)."""
        self.new_round(now)
        self.read_bcast = False
        last, window, held = self.log.last_index, self.config.max_inflight, self.config.max_held
        ask = not heartbeat or self.wants_answers(now)
        rto = 0.0
        for peer in self.peers if peers is None else peers:
            pr = self.progress[peer]
            if pr.probing and not pr.inflight:
                self.send_append(peer, pr, now)  # a probe, where none is outstanding
            elif not pr.probing and pr.next <= last and pr.can_send(window, held):
                self.send_append(peer, pr, now)
            else:
                # Asked: a follower check-quorum has not heard from in this period
                # (§6.2), and one with appends in flight (its answer says what
                # arrived, and ends a retransmission backoff).
                self.send_ping(peer, pr, now, reply=ask or not pr.active or bool(pr.inflight))
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

    @property
    def needed(self) -> int:
        """How many followers' acknowledgements a commit needs."""
        return self.quorum - self.is_voter

    def fan_out(self, now: float) -> tuple[list[int], list[int]]:
        """The followers new entries go to at once, and the others, which get
        them once a full batch waits, else with their heartbeat
        (``Config.fan_out``, ``eager_followers``)."""
        cfg = self.config
        if now - self.loss_seen < LOSS_MEMORY * cfg.heartbeat_interval \
                or self.transfer_to is not None or self.leaving:
            # Appends are being lost (a commit should not wait for one), a
            # transfer's target must catch up at once (thesis §3.10), or a
            # server being removed must get its removal before it commits
            # (after, it gets nothing more: reconfig.py use_latest_config).
            return self.peers, []
        if cfg.eager_followers is not None:
            return self.eager_peers(cfg.eager_followers), []   # the others: on their heartbeat
        if cfg.fan_out == "all":
            return self.peers, []
        eager = self.eager_peers(self.needed)
        if len(eager) == len(self.peers):
            return eager, []
        return eager, [p for p in self.peers if p not in eager]

    def eager_peers(self, k: Optional[int]) -> list[int]:
        """The ``k`` followers (None: all) that get new entries or a read round
        at once: the most up to date of those that answer, silent ones (an
        append timed out, no answer since: dead, though their match is high)
        last, then probing ones. Only voters are ranked: a learner never counts
        toward the quorum these are picked for (thesis §4.2.1)."""
        if k is None or k >= len(self.peers):
            return self.peers
        ranked = sorted(((p, self.progress[p]) for p in self.voter_peers),
                        key=lambda x: (x[1].silent, x[1].probing, -x[1].match, x[1].srtt))
        return [p for p, _ in ranked[:k]]

    def send_ping(self, peer: int, pr: Progress, now: float, reply: bool = True) -> None:
        """An empty AppendEntries anchored at the follower's known match: it
        always passes the consistency check, so it carries the commit index and
        a round without provoking a spurious rejection. (Below our log's base it is
        anchored at 0, which matches every log: see handle_append.) Without
        ``reply`` the follower answers only if it holds more than that anchor."""
        pr.sent_at = now
        at = pr.match if pr.match >= self.log.base else 0
        self._send(peer, AppendEntries(self.term, self.id, at, self.log.term(at) or 0,
                                       (), self.commit, self.round, reply))

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
        cfg = self.config
        if not (pr.srtt == 0 and cfg.first_rto is not None
                and now - self.elected_at < cfg.heartbeat_interval):
            pr.rto = min(2 * pr.rto, cfg.max_rto)
        # (else: a new leader's first probes to a follower that has not
        # answered yet keep the first_rto pace for one heartbeat interval,
        # as vote requests do (elections.py): at the quorum's edge the first
        # commit needs every survivor's answer, and doubling spent most of
        # the interval waiting for the one that was lost.)
        if not pr.silent:   # a loss (fan_out); a silent follower counts once
            self.loss_seen = now
        pr.silent = True
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
        if not pr.silent:    # (see retransmit)
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

    def handle_append_reply(self, src: int, m: AppendEntriesReply, now: float) -> None:
        if self.role != LEADER or m.round == 0:
            # Round 0 answers an append from an earlier term of ours (see ``step``):
            # it proves nothing about this term, not even for check-quorum (§6.2).
            return
        if m.success and m.index > self.log.last_index:
            return  # matches what this leader never sent: not an honest reply (§5.3)
        if m.round > self.round:
            self.unsent_rounds += 1   # confirms a round never sent: no honest reply does
            return
        pr = self.progress.get(src)
        if pr is None:
            return   # no longer a member
        pr.active = True
        pr.silent = False
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
            pr.rto = self.config.unmeasured_rto()
        else:
            pr.rto = min(cfg.max_rto, max(cfg.min_rto, 3 * pr.srtt))

    def maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index a quorum of the latest
        configuration's voters holds (the leader counts itself only if it is
        one, thesis §4.2.2) — but only by counting replicas of an entry from the
        current term (Figure 8)."""
        progress = self.progress
        matches = [progress[p].match for p in self.voter_peers]
        if self.is_voter:
            matches.append(self.log.last_index)
        matches.sort(reverse=True)
        n = matches[self.quorum - 1]
        if n <= self.commit or self.log.term(n) != self.term:
            return False
        self._commit_to(n)
        return True

    def _commit_to(self, n: int) -> None:
        self.commit = n
        if self.leaving and n >= self.configs.latest_index:
            self.use_latest_config()   # stop replicating to the servers it removed
        if self.reads_waiting_commit:
            if self.config.read_mode == "lease":
                self.lease_reads += self.reads_waiting_commit
            else:
                self.reads += [(ctx, self.round + 1) for ctx in self.reads_waiting_commit]
                self.read_bcast = True
            self.reads_waiting_commit = []

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
