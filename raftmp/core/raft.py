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
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

from .log import RaftLog
from .messages import AppendEntries, AppendEntriesReply, Entry, RequestVote, RequestVoteReply

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"
INF = float("inf")
# Lease reads: how much faster than the leader's clock another server's may run.
CLOCK_DRIFT_BOUND = 1.1
# eager_followers: after a retransmission, every follower is eager for this
# many heartbeat intervals, so that one more lost append rarely delays a commit.
LOSS_MEMORY = 10


@dataclass
class Config:
    heartbeat_interval: float = 0.05
    # §5.2: each election timeout is drawn uniformly from this range.
    election_timeout: tuple[float, float] = (0.2, 0.4)
    max_batch_entries: int = 256        # per AppendEntries
    max_batch_bytes: int = 1 << 20      # per AppendEntries (approximate)
    max_inflight: int = 4               # unacknowledged AppendEntries per follower
    # Retransmission timeout bounds; in between it follows the measured round
    # trip (3 x smoothed RTT), so a lost append is resent in a few round trips.
    min_rto: float = 0.002
    max_rto: float = 0.1
    # Quiet when idle (the CS3700 profile, where every packet is counted; the
    # defaults keep the classic behaviour). ``eager_followers``: new entries go
    # at once only to this many followers, the most up to date first (to all
    # while appends are being lost: LOSS_MEMORY), and a ReadIndex round only
    # to the quorum - 1 of them that it needs; the others catch up on their
    # heartbeat. ``quiet_heartbeats``: a follower gets a heartbeat only when
    # nothing else went to it for a heartbeat interval.
    eager_followers: Optional[int] = None
    quiet_heartbeats: bool = False
    # Thesis §6.4.1: serve reads on a lease instead of a ReadIndex round each.
    # Safe only while clocks run at about the same rate (CLOCK_DRIFT_BOUND).
    lease_reads: bool = False


@dataclass
class Ready:
    """What one turn produced. The caller handles the fields in this order:

    1. persist ``hard_state`` (if not None) and ``entries`` (which replace
       any stored entries from ``entries[0].index`` on), durably;
    2. only then send ``messages`` — votes and acknowledgements promise what
       was just persisted (Figure 2: "updated on stable storage before
       responding to RPCs");
    3. apply ``committed`` in order; answer each read in ``reads`` as
       ``(ctx, index)`` once the state machine has applied ``index``.
    """

    hard_state: Optional[tuple[int, Optional[int]]]
    entries: list[Entry]
    messages: list[tuple[int, Any]]
    committed: list[Entry]
    reads: list[tuple[Any, int]]


class Progress:
    """The leader's view of one follower (thesis §3.5; etcd's tracker.Progress).

    Invariant: match < next. While ``probing`` the leader does not know where
    the follower's log diverges and keeps one AppendEntries with entries
    outstanding (heartbeat pings aside); otherwise it pipelines up to
    ``max_inflight`` of them. ``inflight`` holds (last index carried, time
    sent) of each unacknowledged one, oldest first: when the oldest is older
    than ``rto``, the leader probes again from ``match + 1`` (go-back-N) —
    nothing may depend on a single packet arriving.
    """

    __slots__ = ("match", "next", "probing", "inflight", "srtt", "rto", "round", "active",
                 "sent_at")

    def __init__(self, next_index: int, rto: float) -> None:
        self.match = 0
        self.next = next_index
        self.probing = True
        self.inflight: deque[tuple[int, float]] = deque()
        self.srtt = 0.0       # smoothed round trip of acknowledged appends (0: no sample yet)
        self.rto = rto
        self.round = 0        # highest round the follower has answered (ReadIndex)
        self.active = False   # answered since the last quorum check (thesis §6.2)
        self.sent_at = -INF   # when the leader last sent it anything

    def retransmit_at(self) -> float:
        return self.inflight[0][1] + self.rto if self.inflight else INF


class Raft:
    def __init__(self, node_id: int, nodes: list[int], state: tuple, rng: random.Random,
                 now: float, config: Optional[Config] = None) -> None:
        """``nodes`` lists every member, this one included; ``state`` is storage's
        ``(term, vote, entries)``."""
        assert node_id in nodes
        self.id = node_id
        self.peers = [n for n in nodes if n != node_id]
        self.quorum = len(nodes) // 2 + 1
        self.config = config or Config()
        self.rng = rng
        # Persistent state (Figure 2).
        self.term, self.vote, entries = state
        self.log = RaftLog(entries)
        # Volatile state. Invariant: applied <= commit <= log.last_index.
        self.commit = 0
        self.applied = 0
        self.role = FOLLOWER
        self.leader: Optional[int] = None
        self.leader_seen = -INF       # when we last heard from the leader
        # Output of the current turn.
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
        self.round_times: deque[tuple[int, float]] = deque()  # (round, when it began): leases
        self.loss_seen = -INF                                 # the last retransmission
        # Lease reads: a restarted server has forgotten whom it heard from, so
        # it grants no vote for a minimum election timeout (as if it had just
        # heard from a leader), or it could help elect one inside a lease.
        self.boot_lease = now + self.config.election_timeout[0] if self.config.lease_reads \
            else -INF
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
                self.become_follower(m.term, m.leader if t is AppendEntries else None, now)
        if m.term < self.term:
            # §5.1: reject stale requests, telling the sender the current term.
            if t is AppendEntries:
                self._send(src, AppendEntriesReply(self.term, self.id, False, m.prev_index, 0, 0,
                                                   m.round))
            elif t is RequestVote:
                self._send(src, RequestVoteReply(self.term, self.id, False, m.pre))
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
        else:
            self.reads.append((ctx, self.round + 1))
            self.read_bcast = True
        return True

    def ready(self, now: float) -> Ready:
        """Flush the turn: send pending appends, then hand out everything to do."""
        if self.role == LEADER:
            cfg = self.config
            if self.read_bcast and not self._leased(now):
                self.bcast_append(now, heartbeat=False, peers=self.eager_peers(self.quorum - 1))
            eager = cfg.eager_followers
            if now - self.loss_seen < LOSS_MEMORY * cfg.heartbeat_interval:
                eager = None  # appends are being lost: a commit should not wait for one
            for peer in self.eager_peers(eager):
                pr = self.progress[peer]
                if not pr.probing:
                    self.maybe_send_append(peer, pr, now)
        reads = self._released_reads(now)
        hard = (self.term, self.vote) if self.hard_dirty else None
        entries = self.log.slice(self.unstable_from, self.log.last_index + 1)
        committed = self.log.slice(self.applied + 1, self.commit + 1)
        self.hard_dirty = False
        self.unstable_from = self.log.last_index + 1
        self.applied = self.commit
        msgs, self.msgs = self.msgs, []
        return Ready(hard, entries, msgs, committed, reads)

    # ------------------------------------------------------------- transitions

    def become_follower(self, term: int, leader: Optional[int], now: float) -> None:
        assert term >= self.term
        if term > self.term:
            self.term, self.vote = term, None
            self.hard_dirty = True
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
        rto = self.config.heartbeat_interval  # until a round trip is measured
        self.progress = {p: Progress(last + 1, rto) for p in self.peers}
        self.round = 0
        self.round_times.clear()
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
        self.read_bcast = False
        if self.config.lease_reads:
            self.round_times.append((self.round, now))
        last, window = self.log.last_index, self.config.max_inflight
        rto = 0.0
        for peer in self.peers if peers is None else peers:
            pr = self.progress[peer]
            if pr.probing and not pr.inflight:
                self.send_append(peer, pr, now)  # a probe, where none is outstanding
            elif not pr.probing and pr.next <= last and len(pr.inflight) < window:
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
        a round without provoking a spurious rejection."""
        pr.sent_at = now
        self._send(peer, AppendEntries(self.term, self.id, pr.match, self.log.term(pr.match),
                                       (), self.commit, self.round))

    def retransmit(self, peer: int, pr: Progress, now: float) -> None:
        """The oldest unacknowledged append timed out: back off, and probe from
        ``match + 1`` (go-back-N) with one message until the follower answers —
        a dead follower costs one probe per RTO, not a window of them."""
        pr.rto = min(2 * pr.rto, self.config.max_rto)
        self.loss_seen = now
        if not pr.probing:
            pr.probing = True
            pr.next = pr.match + 1
        self.send_append(peer, pr, now)

    def maybe_send_append(self, peer: int, pr: Progress, now: float) -> None:
        """Pipeline new entries to a follower in replicate mode, within the window."""
        while pr.next <= self.log.last_index and len(pr.inflight) < self.config.max_inflight:
            self.send_append(peer, pr, now)

    def send_append(self, peer: int, pr: Progress, now: float) -> None:
        prev = pr.next - 1
        cfg = self.config
        entries = self.log.batch(pr.next, cfg.max_batch_entries, cfg.max_batch_bytes)
        pr.sent_at = now
        self._send(peer, AppendEntries(self.term, self.id, prev, self.log.term(prev),
                                       entries, self.commit, self.round))
        if pr.probing:
            pr.inflight.clear()  # one probe outstanding; its reply or its timeout moves on
            pr.inflight.append((prev + len(entries), now))
        elif entries:
            pr.next = entries[-1].index + 1
            pr.inflight.append((entries[-1].index, now))

    def handle_append(self, src: int, m: AppendEntries, now: float) -> None:
        if self.role != FOLLOWER:
            assert self.role != LEADER, "two leaders in one term"
            self.become_follower(m.term, m.leader, now)  # §5.2: a leader of our term won
        self.leader = m.leader
        self.leader_seen = now
        self.election_deadline = now + self._election_timeout()
        log = self.log
        if log.term(m.prev_index) != m.prev_term:
            # §5.3 consistency check failed. Hint where our log diverges so the
            # leader can skip the whole conflicting term in one round trip.
            if m.prev_index > log.last_index:
                cterm, cindex = 0, log.last_index + 1
            else:
                cterm = log.term(m.prev_index)
                cindex = log.first_index_of_term(cterm)
            self._send(src, AppendEntriesReply(self.term, self.id, False, m.prev_index,
                                               cterm, cindex, m.round))
            return
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
        self._send(src, AppendEntriesReply(self.term, self.id, True, last_new, 0, 0, m.round))

    def handle_append_reply(self, src: int, m: AppendEntriesReply, now: float) -> None:
        if self.role != LEADER:
            return
        pr = self.progress[src]
        pr.active = True
        if m.round > pr.round:
            pr.round = m.round
        if m.success:
            if pr.inflight and pr.inflight[0][0] <= m.index and not pr.probing:
                # Karn: no samples while probing, where the reply may answer an
                # earlier copy of what was resent.
                self._sample_rtt(pr, now - pr.inflight[0][1])
                while pr.inflight and pr.inflight[0][0] <= m.index:
                    pr.inflight.popleft()
            if pr.probing and m.index >= pr.next - 1:
                # The probe landed: the follower matches through m.index.
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
        # Fast backtracking: jump past the follower's whole conflicting term.
        nxt = m.conflict_index
        if m.conflict_term:
            last = self.log.last_index_of_term(m.conflict_term, m.index)
            if last:
                nxt = last + 1
        pr.next = max(pr.match + 1, min(nxt, m.index))
        pr.probing = True
        self.send_append(src, pr, now)

    def _sample_rtt(self, pr: Progress, rtt: float) -> None:
        pr.srtt = rtt if pr.srtt == 0 else 0.875 * pr.srtt + 0.125 * rtt
        cfg = self.config
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
            for ctx in self.reads_waiting_commit:
                self.reads.append((ctx, self.round + 1))
            self.reads_waiting_commit = []
            self.read_bcast = True

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

    def _released_reads(self, now: float) -> list[tuple[Any, int]]:
        """ReadIndex (thesis §6.4): reads whose round a quorum has answered, with
        the commit index to wait for; under a lease, every read at once."""
        if not self.reads:
            return []
        if self._leased(now):
            done = [(ctx, self.commit) for ctx, _ in self.reads]
            self.reads = []
        else:
            rounds = sorted([pr.round for pr in self.progress.values()] + [self.round + 1],
                            reverse=True)
            confirmed = rounds[self.quorum - 1]
            done = [(ctx, self.commit) for ctx, need in self.reads if need <= confirmed]
            if done:
                self.reads = [r for r in self.reads if r[1] > confirmed]
        if not self.reads:
            self.read_deadline = INF  # the next read gets its own round (in ready)
        return done

    def _leased(self, now: float) -> bool:
        """Thesis §6.4.1: once a quorum has answered a round that began at time
        s, none of them votes for another leader before s + the minimum
        election timeout (``_in_lease``), so until then (less the clock drift
        bound) no other leader can have committed anything: reads may be
        served at our commit index — once it is from our term (§6.4 step 1)."""
        if not self.config.lease_reads or self.log.term(self.commit) != self.term:
            return False
        if not self.peers:
            return True
        confirmed = sorted((pr.round for pr in self.progress.values()),
                           reverse=True)[self.quorum - 2]
        times = self.round_times
        while len(times) > 1 and times[1][0] <= confirmed:
            times.popleft()   # confirmed rounds only grow: older ones never matter again
        if not times or times[0][0] != confirmed:
            return False
        return now < times[0][1] + self.config.election_timeout[0] / CLOCK_DRIFT_BOUND

    # ----------------------------------------------------------------- helpers

    def _in_lease(self, now: float) -> bool:
        """Whether we heard from a live leader within the minimum election timeout
        (a leader trusts itself: check-quorum deposes it when it loses its
        majority; with lease reads, a server just booted counts as having heard)."""
        if self.role == LEADER or now < self.boot_lease:
            return True
        return self.leader is not None and now - self.leader_seen < self.config.election_timeout[0]

    def _send(self, dst: int, m: Any) -> None:
        self.msgs.append((dst, m))

    def _election_timeout(self) -> float:
        lo, hi = self.config.election_timeout
        return self.rng.uniform(lo, hi)


_HANDLERS = {
    RequestVote: Raft.handle_request_vote,
    RequestVoteReply: Raft.handle_vote_reply,
    AppendEntries: Raft.handle_append,
    AppendEntriesReply: Raft.handle_append_reply,
}
