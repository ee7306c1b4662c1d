"""Linearizable reads and the leader's hold on its office: the read half of
the Raft core, mixed into ``raft.Raft`` (which owns the state these methods
use).

Thesis §6.4 (ReadIndex): a leader answers a read at its commit index once
(1) that index is from its own term (its no-op committed) and (2) a quorum
has confirmed it is still leader after the read arrived: a heartbeat round
(``round``) answered by a quorum. Thesis §6.4.1 (lease reads, ``read_mode =
"lease"``): acknowledgements of a round that began at time s promise that
none of those followers votes for another leader before s + the minimum
election timeout (``holds_vote``), so until then, less a clock-drift margin
(``lease.py``), reads need no messages at all; past it they fall back to
ReadIndex. Thesis §6.2 (check-quorum): a leader that has not heard from a
majority for a while steps down, so clients stuck with it move on.
"""

from __future__ import annotations

from typing import Any

from .lease import lease_duration
from .messages import RequestVote
from .roles import LEADER

INF = float("inf")
# Appends carry the round current when they leave, and the lease runs from its
# start: a busy leader starts a round at least this many times per lease, so
# that answers to its appends renew the lease nearly to full length (a round
# per heartbeat alone left it up to a heartbeat interval short).
ROUNDS_PER_LEASE = 8


class ReadRules:
    """The read half of the Raft core (state lives on ``Raft``)."""

    lease_read_count = 0    # reads answered on the lease, and by ReadIndex rounds
    index_reads = 0         # (statistics: counted per instance from the first one)

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

    def new_round(self, now: float) -> None:
        """Start a round (``AppendEntries.round``): an answer to anything sent from
        now on proves the follower accepted this leader after ``now`` (ReadIndex
        counts rounds; the lease runs from a round's start)."""
        self.round += 1
        self.lease.round_started(self.round, now)

    def refresh_round(self, now: float) -> None:
        """Start a round if the current one is old for the lease (ROUNDS_PER_LEASE)."""
        if now - self.lease.last_start >= self.lease.duration / ROUNDS_PER_LEASE:
            self.new_round(now)

    def check_quorum(self, now: float) -> None:
        """Thesis §6.2: a leader that has not heard from a majority steps down,
        so clients stuck with it in a minority move on. The thesis checks every
        election timeout; we allow two (``quorum_deadline``) so that heavy loss
        (50% each way leaves 1 heartbeat in 4 answered) does not depose a
        healthy leader. Safety does not depend on it: a ReadIndex read waits for a
        quorum's round, and a lease is computed from acknowledgements alone."""
        progress = self.progress
        active = self.is_voter + sum(progress[p].active for p in self.voter_peers)
        if active < self.quorum:   # over the latest configuration's voters (thesis §4.1)
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
        progress = self.progress
        rounds = [progress[p].round for p in self.voter_peers]
        if self.is_voter:
            rounds.append(self.round + 1)
        rounds.sort(reverse=True)
        confirmed = rounds[self.quorum - 1]
        done = [(ctx, self.commit) for ctx, need in self.reads if need <= confirmed]
        if done:
            self.index_reads += len(done)
            self.reads = [r for r in self.reads if r[1] > confirmed]
        if not self.reads:
            self.read_deadline = INF  # the next read gets its own round (in ready)
        return done

    def _lease_reads(self, now: float) -> list[tuple[Any, int]]:
        """Thesis §6.4.1: within the lease, reads are answered at the commit index
        with no messages; past it (acknowledgements were lost) they fall back to
        ReadIndex."""
        ctxs, self.lease_reads = self.lease_reads, []
        self.lease_read_at = now
        if now < self.lease_until():
            self.lease_read_count += len(ctxs)
            return [(ctx, self.commit) for ctx in ctxs]
        self.reads += [(ctx, self.round + 1) for ctx in ctxs]
        self.read_bcast = True
        return []

    def wants_answers(self, now: float) -> bool:
        """Whether this heartbeat asks every follower for an answer: while reads
        wait for a round (ReadIndex), or, in lease mode with reads coming in,
        when the lease would run out before the next heartbeat's answers could
        renew it (half an interval left for them to arrive). Otherwise only
        followers that check-quorum has not heard from in this period are asked
        (``bcast_append``): idle, a follower answers one heartbeat per period."""
        if self.reads:
            return True
        cfg = self.config
        return (cfg.read_mode == "lease"
                and now - self.lease_read_at < cfg.election_timeout[1]
                and self.lease_until() < now + 1.5 * cfg.heartbeat_interval)

    def lease_until(self) -> float:
        """When this leader's lease ends, on its clock (-INF if it holds none;
        only in lease mode do nodes keep the promises a lease rests on; none
        once it began handing leadership over, reconfig.py). Counted over the
        latest configuration's voters, the leader among them only if it is one."""
        if self.role != LEADER or self.config.read_mode != "lease" or self.lease_ended:
            return -INF
        progress = self.progress
        return self.lease.until([progress[p].acked_start for p in self.voter_peers],
                                self.quorum - self.is_voter)

    def lease_duration(self) -> float:
        return lease_duration(self.config.election_timeout[0], self.config.clock_drift)

    def holds_vote(self, m: RequestVote, now: float) -> bool:
        """Thesis §4.2.3, the promise every lease rests on (§6.4.1): a server that
        heard from a leader within the minimum election timeout (a leader trusts
        itself: check-quorum deposes it when it loses its majority), or booted
        within it in lease mode (core/lease.py), neither adopts a vote request's
        term nor grants it, pre-vote or not. Timed from ``leader_seen`` alone,
        which a later term does not reset: a term reached by another path first
        (a pre-vote refusal, any reply) must not release the promise. A
        leadership transfer (thesis §3.10, ``RequestVote.transfer``) is the one
        request that passes: the leader itself asked for it."""
        if m.transfer:
            return False
        if self.role == LEADER or now < self.vote_hold_until:
            return True
        return now - self.leader_seen < self.config.election_timeout[0]
