"""The follower's side of AppendEntries (§5.3), mixed into ``raft.Raft``
(which owns the state these methods use).

The consistency check (the entry before the new ones must match the
leader's), the truncation of a conflicting suffix, and commit = min(leader's
commit, last new entry) are Figure 2's rules. Two additions keep a lossy
network cheap without touching safety: an append that arrives past a gap is
held until the gap fills (the network could have delayed it just as well),
and the reply names the first missing index, which the leader reads as a
selective acknowledgement (``progress.py``); a success reply acknowledges
everything proven to match in this term (cumulative), so any later reply
repairs a lost one.
"""

from __future__ import annotations

from typing import Any

from .errors import PeerMisbehaved
from .messages import AppendEntries, AppendEntriesReply
from .roles import FOLLOWER, LEADER


class FollowerRules:
    """The follower half of replication (state lives on ``Raft``)."""

    def follow(self, m: Any, now: float) -> None:
        """``m`` comes from the leader of our term: follow it, and wait a new election timeout."""
        if self.role == LEADER:   # Election Safety (Figure 3): one leader per term
            raise PeerMisbehaved(f"an append from {m.leader}, a second leader of term {m.term}")
        if self.role != FOLLOWER:
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
        if m.reply or m.entries or last_new > m.prev_index:
            # An unasked heartbeat gets no answer, unless the leader's anchor
            # (the match it knows) is behind ours: then an answer of ours was lost.
            self._send(src, AppendEntriesReply(self.term, self.id, True, last_new, 0, 0,
                                               m.round))

    def _append(self, m: AppendEntries) -> int:
        """Append what ``m`` carries (its consistency check passed); the index
        through which the log now provably matches the leader's."""
        log = self.log
        # §5.3: delete a conflicting suffix and append what is new. Entries we
        # already hold with the same term are kept: a duplicated or reordered
        # (shorter) message must never truncate the log.
        for e in m.entries:
            if log.term(e.index) != e.term:
                configs_changed = False
                if e.index <= log.last_index:
                    if e.index <= self.commit:   # Leader Completeness (§5.4): never
                        raise PeerMisbehaved(f"an entry of term {e.term} at committed index "
                                             f"{e.index} (ours: term {log.term(e.index)})")
                    log.truncate(e.index)
                    # Thesis §4.1: a truncated configuration entry is no longer in use.
                    configs_changed = self.configs.truncated(e.index)
                self.unstable_from = min(self.unstable_from, e.index)
                new = m.entries[e.index - m.entries[0].index:]
                log.extend(new)
                if self.configs.appended(new) or configs_changed:
                    self.use_latest_config()   # in use as soon as it is in the log
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
