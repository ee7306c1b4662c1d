"""What the simulator checks, at every turn and at the end of a run.

Figure 3's properties (election safety, log matching, leader completeness,
state machine safety), and what this project adds to them: reads are
linearizable at the moment they are answered (a floor of what was committed
when the get arrived), a leader counts only ReadIndex rounds it sent in its
term, no leader is elected while another holds a read lease, a snapshot equals
the state the committed entries give at its index, the log's base never
passes the snapshot, the applied index or the commit index, the latest
committed entry is on a majority of disks at every crash, no reply leaves
before the save it promises (Figure 2), and at the end: equal state machines,
no acknowledged write lost, and a linearizable history.

``Checks`` is mixed into ``sim.Simulation``, which owns the bookkeeping these
methods read (``applied_at``, ``entry_at``, ``leader_of``, ``read_floor``,
``reference``...). A failed check raises ``Violation``.
"""

from __future__ import annotations

import pickle
from typing import Any

from .checker import check_outcomes
from .core.membership import Configuration
from .core.messages import (
    OK,
    AppendEntriesReply,
    ClientReply,
    InstallSnapshotReply,
    Command,
    RequestVoteReply,
    Snapshot,
)
from .core.node import Node
from .core.raft import LEADER, majority_of
from .core.session import DONE

REPLIES = (AppendEntriesReply, RequestVoteReply, InstallSnapshotReply, ClientReply)


class Violation(Exception):
    """A safety property failed (the message says which, and where)."""


def _state(blob: bytes) -> tuple:
    """A state machine snapshot, comparable by content (dict order aside)."""
    data, sessions, clock = pickle.loads(blob)
    return data, sessions, clock


class Checks:
    """The simulator's invariants (state lives on ``Simulation``)."""

    def _check_early(self, i: int, messages: list[tuple[int, Any]]) -> None:
        """Figure 2: a server answers an RPC only after what the answer promises is
        on stable storage. So in a turn that persists something, the messages that
        leave before the save (thesis §10.2.1) are a leader's appends, never a
        reply (a vote, an acknowledgement, an answer to a client)."""
        for dst, m in messages:
            if type(m) in REPLIES:
                raise Violation(f"reply before the save: node {i} sent {type(m).__name__} to "
                                f"{dst} before persisting the turn it answers")

    def _check_durable(self, i: int) -> None:
        """Figure 3's guarantee rests on this (§5.4): an entry is committed only once
        a majority stores it durably, so the latest committed entry is on a
        majority of disks whatever crashes. A node that acknowledged before its
        save, or a save that was not durable, shows up here at the crash."""
        if not self.applied_at:
            return
        index = max(self.applied_at)
        term = self.applied_at[index][0]
        # A server whose disk was lost (churn) never votes again: it counts as holding it.
        holders = {j for j in self.ids if self.storage[j].holds(index, term)} | self.wiped
        # Counted over the voters of a configuration in use (thesis §4.1): the one
        # the leader counted over may be one appended after the entry.
        if not any(len(holders & v) >= majority_of(len(v)) for v in self._voter_sets()):
            raise Violation(f"durability: committed entry {index} (term {term}) is on the disks "
                            f"of nodes {sorted(holders)} only, after node {i} crashed")

    def _check_configs(self, i: int, node: Node, entries: list) -> None:
        """Thesis §4.1 and the 2015 rule: a configuration entry is appended only
        once the one before it in the log is committed (so no two in a log
        differ by more than one voter unless the first is committed), and
        differs from it by at most one voter."""
        if not any(type(e.command) is Configuration for e in entries):
            return
        history = node.configurations
        for (a, old), (b, new) in zip(history, history[1:]):
            if (b, new) not in self.config_seen:
                self.config_seen.add((b, new))
                if len(set(old.voters) ^ set(new.voters)) > 1 or a > self.committed:
                    raise Violation(f"configurations: node {i} holds {new.describe()} at {b} "
                                    f"after {old.describe()} at {a} (committed: "
                                    f"{self.committed})")
                if node.log_term(b) > self.committed_term:
                    raise Violation(f"the 2015 rule: node {i} holds {new.describe()} at {b} "
                                    f"(term {node.log_term(b)}), appended before its leader "
                                    f"committed an entry of its term")

    def _check_entries(self, i: int, node: Node, entries: list) -> None:
        """Log matching (§5.3): an (index, term) pair names one command and one
        predecessor term everywhere, so equal pairs mean equal prefixes."""
        for e in entries:
            here = (e.command, node.log_term(e.index - 1))
            seen = self.entry_at.setdefault((e.index, e.term), here)
            if seen != here:
                raise Violation(f"log matching: node {i} has {e} after term "
                                f"{node.log_term(e.index - 1)}, another node {seen}")

    def _check_applied(self, i: int, committed: list) -> None:
        """State machine safety (§5.4.3): one command per index, on every node."""
        if committed:
            self.committed = max(self.committed, committed[-1].index)
            self.committed_term = max(self.committed_term, committed[-1].term)
        for e in committed:
            seen = self.applied_at.setdefault(e.index, (e.term, e.command))
            if seen != (e.term, e.command):
                raise Violation(f"state machine safety: node {i} applied {e} at {e.index}, "
                                f"another node applied {seen}")

    def _check_reads(self, i: int, node: Node, messages: list[tuple[int, Any]]) -> None:
        """Read safety (thesis §6.4): a get answered OK reflects at least every entry
        committed anywhere before it reached the node. Stronger than the history
        check, which needs a later write to that very key to see a stale read."""
        for _, m in messages:
            if type(m) is ClientReply:
                floor = self.read_floor.pop((i, m.client_id, m.seq), None)
                if floor is not None and m.status == OK and node.applied < floor:
                    raise Violation(f"stale read: node {i} (term {node.term}) answered get "
                                    f"{(m.client_id, m.seq)} at applied index {node.applied}, "
                                    f"but {floor} was committed before the get arrived")

    def _check_leader(self, i: int, node: Node) -> None:
        """Election safety (§5.2), leader completeness (§5.4), and ReadIndex's premise
        (thesis §6.4): a leader counts as confirmed only rounds it sent in its term."""
        sent, answered = node.read_rounds()
        if node.unsent_rounds:    # (dropped by the leader, but no honest node sends one)
            raise Violation(f"read confirmation: leader {i} of term {node.term} got an answer "
                            f"naming a round it never sent (up to {sent}): from an older term?")
        for peer, got in answered.items():
            if got > sent:
                raise Violation(f"read confirmation: leader {i} of term {node.term} counts round "
                                f"{got} from node {peer}, but has sent rounds up to "
                                f"{sent} (an answer to an older term?)")
        leader = self.leader_of.get(node.term)
        if leader is not None and leader != i:
            raise Violation(f"election safety: nodes {leader} and {i} both lead term {node.term}")
        if leader is None:  # a new leader: it must hold everything committed so far
            self.leader_of[node.term] = i
            self.result.elections += 1
            if node.membership != "voter":   # thesis §4.2.1-2: only voters campaign
                raise Violation(f"membership: node {i} leads term {node.term} as a "
                                f"{node.membership} of {node.configuration[1].describe()}")
            old = self.leader_of.get(node.term - 1)
            if self.transfers_from.pop(old, None) == node.term - 1:
                self.result.transfers += 1
            for j, other in self.nodes.items():
                # Thesis §6.4.1: no leader is elected while an older one's lease holds.
                if j != i and other.lease_until() > self._local(j):
                    raise Violation(f"lease: node {i} leads term {node.term} while node {j} "
                                    f"(term {other.term}) holds a lease for "
                                    f"{other.lease_until() - self._local(j):.4f} s more")
            for index, (term, _) in self.applied_at.items():
                if index > node.log_base and node.log_term(index) != term:
                    raise Violation(f"leader completeness: leader {i} of term {node.term} "
                                    f"lacks committed entry {index} (term {term})")

    def _check_compaction(self, i: int, node: Node) -> None:
        """A log is compacted only under a snapshot, of applied entries only:
        base <= snapshot index <= applied <= commit."""
        snap = node.snapshot_index
        if not node.log_base <= snap <= node.applied <= node.commit:
            raise Violation(f"compaction: node {i} has log base {node.log_base}, snapshot "
                            f"{snap}, applied {node.applied}, commit {node.commit}")

    def _check_snapshot(self, i: int, snap: Snapshot) -> None:
        """A snapshot is the state after applying the committed entries up to its
        index, in order: the data and the session table alike."""
        ref = self.reference
        while max(self.reference_at) < snap.index:
            index = max(self.reference_at) + 1
            if index not in self.applied_at:
                raise Violation(f"node {i} has a snapshot at {snap.index}, but entry {index} "
                                "was never applied")
            term, cmd = self.applied_at[index]
            if type(cmd) is Configuration:
                cmd = cmd.request   # its session records the change (node.py)
            if cmd is not None:
                ref.apply(cmd)
            self.reference_at[index] = _state(ref.snapshot_data())
        if self.applied_at.get(snap.index, (0,))[0] != snap.term and snap.index:
            raise Violation(f"node {i} snapshot at {snap.index} has term {snap.term}")
        if _state(snap.data) != self.reference_at[snap.index]:
            raise Violation(f"node {i} snapshot at {snap.index} differs from the state "
                            "the committed entries give there")

    def _final_checks(self) -> None:
        # Let the live nodes converge on the leader's commit index.
        deadline = self.now + 10.0
        while self.now < deadline:
            leaders = [n for n in self.nodes.values() if n.role == LEADER]
            applied = {self.nodes[i].applied for i in self._members()}
            if leaders and applied == {leaders[0].commit} and not self.net:
                break
            self._step_time()
        live = self._members()   # a removed server may stay behind
        states = {i: self.nodes[i].data() for i in live}
        first = states[live[0]]
        for i in live:
            if states[i] != first:
                raise Violation(f"state machines differ at the end: node {live[0]} {first} "
                                f"vs node {i} {states[i]}")
        acked = {(o.command.client_id, o.command.seq) for o in self.result.history
                 if o.outcome == DONE and o.command.op != "get"}
        upto = min(self.nodes[i].applied for i in live)
        present = {(cmd.client_id, cmd.seq) for index, (_, cmd) in self.applied_at.items()
                   if type(cmd) is Command and index <= upto}
        lost = acked - present
        if lost:
            raise Violation(f"acknowledged writes missing from live nodes: {sorted(lost)[:5]}")
        if self.cfg.check_history:
            verdict = check_outcomes(self.result.history)
            if not verdict.ok:  # undecided is no pass either; the message says which it is
                raise Violation(f"history {verdict.verdict}: {verdict.explanation}")
