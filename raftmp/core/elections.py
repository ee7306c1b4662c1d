"""Elections (§5.2, thesis §9.6 pre-vote, §3.10 transfer campaigns): the
candidate's half of the Raft core, mixed into ``raft.Raft`` (which owns the
state these methods use). Votes are counted over the latest configuration's
voters (``has_quorum``, reconfig.py); who may refuse to vote at all (the
§4.2.3 hold) is ``Raft.step``'s, with ``reads.holds_vote``."""

from __future__ import annotations

from .messages import RequestVote, RequestVoteReply
from .roles import CANDIDATE, PRE_CANDIDATE


class ElectionRules:
    """Campaigns and votes (state lives on ``Raft``)."""

    def become_pre_candidate(self, now: float) -> None:
        """On election timeout, first ask whether a real election could be won
        (thesis §9.6), without touching our term."""
        self.role = PRE_CANDIDATE
        self.leader = None
        self.transfer_campaign = False
        self._leave_leadership()
        self._campaign(now)

    def become_candidate(self, now: float) -> None:
        """§5.2: start a new term and vote for ourselves (after a pre-vote, or
        at once when the leader hands over, thesis §3.10)."""
        assert self.is_voter and (self.role == PRE_CANDIDATE or self.transfer_campaign)
        self.role = CANDIDATE
        self.leader = None
        self.term += 1
        self.vote = self.id
        self.hard_dirty = True
        self._campaign(now)

    def _campaign(self, now: float) -> None:
        self.votes = {self.id}
        self.answered = set()
        self.campaign_at = now
        self.election_deadline = now + self._election_timeout()
        if self.has_quorum(self.votes):
            self._won(now)
        else:
            self.bcast_vote(now)

    def _won(self, now: float) -> None:
        if self.role == PRE_CANDIDATE:
            self.become_candidate(now)
        else:
            self.become_leader(now)

    def bcast_vote(self, now: float) -> None:
        """Ask every peer that has not answered yet for its vote. Re-asking keeps
        a lossy network from wasting a whole term: every first_rto for the
        first heartbeat interval, then every heartbeat interval (a candidate
        cut off from a majority stays cheap)."""
        pre = self.role == PRE_CANDIDATE
        msg = RequestVote(self.term + pre, self.id, self.log.last_index, self.log.last_term, pre,
                          self.transfer_campaign)
        for peer in self.voter_peers:   # learners do not vote (thesis §4.2.1)
            if peer not in self.answered:
                self._send(peer, msg)
        cfg = self.config
        fast = now - self.campaign_at < cfg.heartbeat_interval
        self.resend_deadline = now + (cfg.unmeasured_rto() if fast else cfg.heartbeat_interval)

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
            if self.has_quorum(self.votes):   # counted over our latest configuration
                self._won(now)
