"""The leader's side of replication (§5.3), mixed into ``raft.Raft`` (which
owns the state these methods use): whom new entries go to and when
(``fan_out``, thesis §10.2.1 leaves the order open), heartbeats (§5.2),
pipelined AppendEntries within a window per follower, the replies (fast
backtracking, §5.3), resends of what was lost (``progress.py``: SACK, RACK,
a retransmission timeout as TCP's), and the commit rule (§5.3, §5.4.2).
``follower.py`` is the other side.
"""

from __future__ import annotations

from typing import Optional

from .messages import AppendEntries, AppendEntriesReply
from .progress import Progress, Segment
from .roles import LEADER

# eager_followers, fan_out "quorum": after a retransmission, every follower is
# eager for this many heartbeat intervals, so that one more lost append rarely
# delays a commit.
LOSS_MEMORY = 10


def smoothed(average: float, sample: float) -> float:
    """A smoothed round trip after one more sample (RFC 6298's weights; 0: none yet)."""
    return sample if average == 0 else 0.875 * average + 0.125 * sample


class LeaderRules:
    """The leader half of replication (state lives on ``Raft``)."""

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
