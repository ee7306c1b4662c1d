"""Membership changes and leadership transfer: the Raft core's rules for
them, mixed into ``raft.Raft`` (which owns the state these methods use).
The configurations themselves and their set arithmetic are ``membership``.

Thesis chapter 4: a server uses the latest configuration in its log as soon
as it is there (``use_latest_config``, called whenever the log gains or
loses a configuration entry), so every quorum — commit, votes,
check-quorum, ReadIndex rounds, the lease — is counted over that
configuration's voters, and is counted again when it changes (a smaller
quorum may commit what waited). A leader that is not among the voters of
its own latest configuration keeps leading without counting itself until
that configuration commits, then steps down (thesis §4.2.2), handing over
to an up-to-date voter with ``TimeoutNow``. A server that is not a voter in
its latest configuration never campaigns (learners, removed servers).

Thesis §3.10, leadership transfer (``transfer_leader``): the leader stops
accepting writes, brings the target up to date, and sends it
``TimeoutNow``; the target campaigns at once, without pre-vote, with
``RequestVote.transfer`` set, which voters grant even while they hear from
the leader. The leader's lease ends before (thesis §6.4.1: voters granting
that vote break the promise the lease rests on), and for the rest of its
term: a ``TimeoutNow`` delayed past an abort could still start that
campaign. The transfer is abandoned after an election timeout, or when the
target leaves the configuration.
"""

from __future__ import annotations

from typing import Any, Optional

from .membership import REMOVE, change, majority_of
from .messages import Entry, TimeoutNow
from .progress import Progress
from .roles import FOLLOWER, LEADER

INF = float("inf")
# Refusals that pass: asked again a little later, the change may be accepted.
NOT_COMMITTED = "the previous configuration change is not committed yet"
NO_OWN_COMMIT = "this leader has not committed an entry of its term yet"
TRANSFERRING = "a leadership transfer"
PASSING = (NOT_COMMITTED, NO_OWN_COMMIT, TRANSFERRING, "not the leader")


def passing(why: str) -> bool:
    """Whether a refusal (one naming ``propose_config``'s reason) may pass if
    asked again."""
    return any(reason in why for reason in PASSING)


class MembershipRules:
    """Configuration changes and transfers (state lives on ``Raft``)."""

    def use_latest_config(self) -> None:
        """The latest configuration in the log changed (appended, truncated,
        installed with a snapshot): use it from now on (thesis §4.1)."""
        conf = self.config_in_use()
        self.voters = frozenset(conf.voters)
        self.is_voter = self.id in self.voters
        self.peers = sorted(conf.members - {self.id})
        self.voter_peers = [p for p in self.peers if p in self.voters]
        self.quorum = majority_of(len(self.voters))
        if self.role != LEADER:
            return
        # A leader keeps replicating to the servers a change removed until it
        # commits, so that they hold it and stop campaigning (they might
        # otherwise never learn; thesis §4.2.3 is the backstop).
        members = conf.members | self.configs.at(self.commit)[1].members
        self.peers = sorted(members - {self.id})
        self.leaving = len(members) > len(conf.members)
        progress = self.progress
        for p in [p for p in progress if p not in members]:
            del progress[p]
        for p in self.peers:
            if p not in progress:   # a new member: probe it from our end of log (§5.3)
                # (rto: until a round trip is measured, Raft._reset_rto)
                progress[p] = Progress(self.log.last_index + 1, self.config.unmeasured_rto())
        if self.transfer_to is not None and self.transfer_to not in self.voters:
            self.abort_transfer_state()   # its target left the configuration: abandon it
        self.maybe_commit()   # a smaller quorum may commit what waited

    def config_in_use(self) -> Any:
        """Thesis §4.1: the latest configuration in the log, committed or not."""
        return self.configs.latest

    def may_campaign(self) -> bool:
        """Only a voter of its latest configuration campaigns: never a learner
        (thesis §4.2.1) nor a server that holds its own removal (§4.2.2)."""
        return self.is_voter

    def own_term_committed(self) -> bool:
        """Whether this leader has committed an entry of its term (its no-op)."""
        return self.log.term(self.commit) == self.term

    def has_quorum(self, ids: Any) -> bool:
        """Whether ``ids`` hold a majority of the latest configuration's voters."""
        return len(self.voters.intersection(ids)) >= self.quorum

    # -- changes (thesis §4.1) --------------------------------------------------

    def propose_config(self, op: str, server: int,
                       request: Any = None) -> tuple[Optional[int], Optional[str]]:
        """Append the configuration ``op`` on ``server`` makes of the latest one:
        (its index, None), or (None, why it is refused)."""
        if self.role != LEADER:
            return None, "not the leader"
        if self.transfer_to is not None and (op, server) != (REMOVE, self.transfer_to):
            # (removing its target abandons the transfer: use_latest_config)
            return None, f"{TRANSFERRING} to {self.transfer_to} is under way"
        # One change at a time, and the 2015 rule (Ongaro, raft-dev, "bug in
        # single-server membership changes"): only once the previous
        # configuration is committed and this leader has committed an entry of
        # its own term (its no-op), so no configuration appended by an earlier
        # leader can still be overwritten after this one was counted over it.
        if self.configs.latest_index > self.commit:
            return None, NOT_COMMITTED
        if not self.own_term_committed():
            return None, NO_OWN_COMMIT
        new, why = change(self.configs.latest, op, server, request)
        if new is None:
            return None, why
        index = self.log.last_index + 1
        self.log.append(Entry(self.term, index, new))
        self.configs.history.append((index, new))
        self.use_latest_config()
        return index, None

    def maybe_step_down_removed(self, now: float) -> None:
        """Thesis §4.2.2: a leader outside its configuration's voters steps down
        once that configuration is committed; an up-to-date voter is told to
        campaign at once (thesis §3.10) rather than wait for its timer."""
        if self.is_voter or self.role != LEADER or self.commit < self.configs.latest_index:
            return
        last = self.log.last_index
        heir = next((p for p in self.voter_peers if self.progress[p].match == last), None)
        if heir is not None:
            self._send(heir, TimeoutNow(self.term, self.id))
        self.become_follower(self.term, None, now)

    # -- leadership transfer (thesis §3.10) -------------------------------------

    def transfer_leader(self, target: int, now: float) -> Optional[str]:
        """Start handing leadership to ``target``; None, or why not."""
        if self.role != LEADER:
            return "not the leader"
        if target == self.id:
            return f"server {target} leads already"
        if target not in self.voters:
            return f"server {target} is not a voter"
        if self.transfer_to is not None:
            return f"{TRANSFERRING} to {self.transfer_to} is under way"
        self.transfer_to = target
        self.transfer_deadline = now + self.config.election_timeout[1]
        self.timeout_sent_at = -INF
        # Thesis §6.4.1: the lease ends before TimeoutNow can leave (see the module).
        self.lease_ended = True
        return None

    def transfer_turn(self, now: float) -> None:
        """Once the target holds the whole log, tell it to campaign (again each
        heartbeat interval: TimeoutNow may be lost); give up after an election
        timeout (writes resume)."""
        if now >= self.transfer_deadline:
            self.abort_transfer_state()
            return
        target = self.transfer_to
        if (self.progress[target].match == self.log.last_index
                and now - self.timeout_sent_at >= self.config.heartbeat_interval):
            self._send(target, TimeoutNow(self.term, self.id))
            self.timeout_sent_at = now

    def handle_timeout_now(self, src: int, m: TimeoutNow, now: float) -> None:
        # (``step`` made us a follower of m.term if it was newer.) Only a voter
        # of the leader's term campaigns; a stale TimeoutNow was dropped there.
        if self.role != FOLLOWER or not self.may_campaign() or m.term != self.term:
            return
        self.transfer_campaign = True
        self.become_candidate(now)

    def abort_transfer_state(self) -> None:
        self.transfer_to = None
        self.transfer_deadline = INF
