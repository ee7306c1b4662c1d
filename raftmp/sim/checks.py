"""What the simulator checks, at every turn and at the end of a run.

Figure 3's properties (election safety, log matching, leader completeness,
state machine safety), and what this project adds to them, each naming the
rule whose breach it sees: a leader commits only an entry of its own term
(§5.4.2); a vote leaves only once it is on disk, and an acknowledgement only
for an index the follower's disk holds and its leader's log has there
(Figure 2); no reply leaves before the save it promises; a read returns a
value the key held between its arrival and its answer (thesis §6.4); a
leader counts only ReadIndex rounds it sent in its term; no leader is
elected while another holds a read lease (thesis §6.4.1); a snapshot equals
the state the committed entries give at its index; the log's base never
passes the snapshot, the applied index or the commit index; the latest
committed entry is on a majority of disks at every crash. At the end: the
live nodes converge, on the whole state (data, sessions, session clock); no
acknowledged write is lost; the history is linearizable.

The reference state machine and the majority are the simulator's own
(``model.py``), not the core's. ``Checks`` is mixed into ``run.Simulation``,
which owns the bookkeeping these methods read. A failed check raises
``Violation``.
"""

from __future__ import annotations

import operator
import pickle
from typing import Any

from ..checker import check_outcomes
from ..core.membership import Configuration
from ..core.messages import (
    OK,
    AppendEntriesReply,
    ClientReply,
    Command,
    InstallSnapshotReply,
    RequestVoteReply,
    Snapshot,
)
from ..core.node import Node
from ..core.raft import LEADER
from ..core.session import DONE
from ..logformat import decode_log, replay
from .model import Model, majority

REPLIES = (AppendEntriesReply, RequestVoteReply, InstallSnapshotReply, ClientReply)
CONVERGE_WITHIN = 30.0    # virtual seconds after the workload for the live nodes to agree


class Violation(Exception):
    """A safety property failed (the message says which, and where)."""


def _state(blob: bytes) -> tuple:
    """A state machine snapshot, comparable by content (dict order aside)."""
    data, sessions, clock = pickle.loads(blob)
    return data, sessions, clock


class Checks:
    """The simulator's invariants (state lives on ``Simulation``)."""

    def _init_checks(self) -> None:
        self.leader_of: dict[int, int] = {}                       # term -> leader
        # (index, term) -> (command, term of the entry before)
        self.entry_at: dict[tuple[int, int], tuple[Any, int]] = {}
        self.applied_at: dict[int, tuple[int, Any]] = {}           # index -> (term, cmd)
        self.committed = 0                                          # highest index applied
        # (node, client_id, seq) of a get -> (what was committed when it arrived, key)
        self.read_floor: dict[tuple[int, int, int], tuple[int, str]] = {}
        self.model = Model()
        self.model_at: dict[int, tuple] = {0: self.model.state()}  # index -> whole state
        self.led: dict[int, tuple[int, int]] = {}     # leader -> (term, commit) at its last turn
        # node -> its disk's log as decoded so far (see _on_disk)
        self.disk_views: dict[int, list] = {}
        self.config_seen: set[tuple[int, Any]] = set()   # configuration entries checked
        self.committed_term = 0                             # highest term of a committed entry
        self.due_again: dict[int, tuple[float, int]] = {}   # node -> (its clock, turns)

    def _on_disk(self, i: int, index: int, term: int) -> bool:
        """Whether node i's disk holds entry (index, term), or a snapshot past it:
        the disk's log, replayed by ``logformat`` as recovery would, then a
        record at a time as its last segment grows (``DiskImage.holds``
        replays it whole)."""
        disk = self.storage[i]
        if disk.snapshot is not None and disk.snapshot.index >= index:
            return True
        segments = disk.segments
        if not segments:
            return index <= 0
        # view: [the segments, bytes of the last one replayed, the base index,
        #        the terms from the base entry on]
        last, view = segments[-1], self.disk_views.get(i)
        if (view is None or len(view[0]) != len(segments) or view[1] > len(last)
                or not all(map(operator.is_, view[0], segments))):
            log = replay(segments)
            keep = len(last) if log.torn is None else log.torn[0]
            view = self.disk_views[i] = [list(segments), keep, log.base.index,
                                         [log.base.term] + [e.term for e in log.entries]]
        if view[1] < len(last):
            records, _ = decode_log(bytes(last[view[1]:]))
            terms = view[3]
            for entries, size in records:
                view[1] += size
                at = entries[0].index - view[2]
                if at >= 0:
                    del terms[at:]
                    terms += [e.term for e in entries]
                else:              # it replaces the base entry too
                    terms[:] = [e.term for e in entries[-at:]]
        at = index - view[2]
        return at <= 0 or (at < len(view[3]) and view[3][at] == term)

    def _advance_model(self, upto: int) -> int:
        """Apply committed entries to the reference up to ``upto`` (as far as known)."""
        model = self.model
        while model.index < upto and model.index + 1 in self.applied_at:
            model.apply(model.index + 1, self.applied_at[model.index + 1][1])
            self.model_at[model.index] = model.state()
            if model.twice:   # exactly-once (thesis §6.3): a seq names one execution
                raise Violation(f"a write executed twice: {model.twice[0]}")
        return model.index

    def _check_early(self, i: int, messages: list[tuple[int, Any]]) -> None:
        """Figure 2: a server answers an RPC only after what the answer promises is
        on stable storage. So in a turn that persists something, the messages that
        leave before the save (thesis §10.2.1) are a leader's appends, never a
        reply (a vote, an acknowledgement, an answer to a client)."""
        for dst, m in messages:
            if type(m) in REPLIES:
                raise Violation(f"reply before the save: node {i} sent {type(m).__name__} to "
                                f"{dst} before persisting the turn it answers")

    def _check_promises(self, i: int, node: Node, messages: list[tuple[int, Any]]) -> None:
        """After the save, what a reply promises is on disk (Figure 2): a granted
        vote is the disk's vote for that term, and an acknowledged index is held
        by the disk — with the entry the leader of that term has there (§5.3)."""
        disk = self.storage[i]
        for dst, m in messages:
            t = type(m)
            if t is RequestVoteReply and m.granted and not m.pre:
                if disk.hard != (m.term, dst):
                    raise Violation(f"vote not durable: node {i} granted its vote in term "
                                    f"{m.term} to {dst}, its disk holds {disk.hard}")
            elif t is AppendEntriesReply and m.success and m.index:
                term = node.log_term(m.index)
                if term is None:
                    continue      # compacted: under a snapshot of committed entries
                if term < 0 or not self._on_disk(i, m.index, term):
                    raise Violation(f"acknowledged what the disk lacks: node {i} acknowledges "
                                    f"index {m.index} to the leader of term {m.term}; its log "
                                    f"ends at {node.last_index}, its disk does not hold "
                                    f"({m.index}, {term})")
                leader = self.nodes.get(self.leader_of.get(m.term, -1))
                if leader is not None and leader.term == m.term and leader.role == LEADER:
                    theirs = leader.log_term(m.index)
                    if theirs is not None and theirs != term:
                        raise Violation(f"acknowledged a mismatch: node {i} acknowledges index "
                                        f"{m.index} (term {term} there) to the leader of term "
                                        f"{m.term}, whose log has term {theirs} there")

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
        if not any(len(holders & v) >= majority(len(v)) for v in self._voter_sets(False)):
            raise Violation(f"durability: committed entry {index} (term {term}) is on the disks "
                            f"of nodes {sorted(holders)} only, after node {i} crashed")

    def _check_configs(self, i: int, node: Node, entries: list) -> None:
        """Thesis §4.1 and the 2015 rule: a configuration entry is appended only
        once the one before it in the log is committed (so no two in a log
        differ by more than one voter unless the first is committed), one voter
        apart from it, and once its leader has committed an entry of its term."""
        if not any(type(e.command) is Configuration for e in entries):
            return
        history = node.configurations
        for (a, old), (b, new) in zip(history, history[1:]):
            if (b, new) in self.config_seen:
                continue
            self.config_seen.add((b, new))
            if len(set(old.voters) ^ set(new.voters)) > 1 or a > self.committed:
                raise Violation(f"configurations: node {i} holds {new.describe()} at {b} "
                                f"after {old.describe()} at {a} (committed: {self.committed})")
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
        """Read safety (thesis §6.4): a get answered OK returns a value its key had
        at some index between what was committed anywhere when the get reached
        the node and what is committed now (by the reference, not the node's
        state). Stronger than the history check, which needs a later write to
        that very key to see a stale read."""
        for _, m in messages:
            if type(m) is not ClientReply:
                continue
            asked = self.read_floor.pop((i, m.client_id, m.seq), None)
            if asked is None or m.status != OK:
                continue
            floor, key = asked
            top = self._advance_model(self.committed)
            if top < floor:
                continue   # (the reference misses an entry no node applied one by one)
            values = self.model.values_between(key, floor, top)
            if m.result not in values:
                raise Violation(f"stale read: node {i} (term {node.term}, applied "
                                f"{node.applied}) answered get {key!r} "
                                f"{(m.client_id, m.seq)} with {m.result!r}; between index "
                                f"{floor} (committed when it arrived) and {top} the key "
                                f"held {values}")

    def _check_leader(self, i: int, node: Node) -> None:
        """Election safety (§5.2), leader completeness (§5.4), the commit rule
        (§5.4.2: a leader commits by counting replicas only an entry of its own
        term), and ReadIndex's premise (thesis §6.4): a leader counts as
        confirmed only rounds it sent in its term."""
        if node.role != LEADER:
            self.led.pop(i, None)
            return
        before = self.led.get(i)
        self.led[i] = (node.term, node.commit)
        if before is not None and before[0] == node.term and node.commit > before[1] \
                and node.log_term(node.commit) != node.term:
            raise Violation(f"commit rule (§5.4.2): leader {i} of term {node.term} advanced "
                            f"its commit index to {node.commit}, an entry of term "
                            f"{node.log_term(node.commit)}")
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
            self._leader_elected(i)
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
        """A snapshot is the whole state after applying the committed entries up to
        its index, in order: the data, the session table and the session clock."""
        if self._advance_model(snap.index) < snap.index:
            raise Violation(f"node {i} has a snapshot at {snap.index}, but entry "
                            f"{self.model.index + 1} was never applied")
        if self.applied_at.get(snap.index, (0,))[0] != snap.term and snap.index:
            raise Violation(f"node {i} snapshot at {snap.index} has term {snap.term}")
        if _state(snap.data) != self.model_at[snap.index]:
            raise Violation(f"node {i} snapshot at {snap.index} differs from the state "
                            "the committed entries give there")

    def _converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.role == LEADER]
        applied = {self.nodes[i].applied for i in self._members()}   # (not removed servers)
        return bool(leaders) and applied == {max(n.commit for n in leaders)}

    def _final_checks(self) -> None:
        """The live nodes converge on one leader's commit index, with one whole
        state, the reference's there; no acknowledged write is lost; the
        history is linearizable."""
        deadline = self.now + CONVERGE_WITHIN
        while self.now < deadline and not self._converged():
            self._step_time()
        live = self._members()   # a removed server may stay behind
        if live and not self._converged():
            raise Violation("no convergence: " + ", ".join(
                f"node {i} {n.role} term {n.term} applied {n.applied}/{n.commit}"
                for i, n in self.nodes.items()) + f" {CONVERGE_WITHIN} s after the workload")
        for i in live:
            node = self.nodes[i]
            if self._advance_model(node.applied) < node.applied:
                raise Violation(f"node {i} applied {node.applied}, but entry "
                                f"{self.model.index + 1} was never applied one by one")
            state = _state(node.make_snapshot().data)
            if state != self.model_at[node.applied]:
                raise Violation(f"state machines differ at the end: node {i} has {state}, "
                                f"the committed entries give {self.model_at[node.applied]}")
        acked = {(o.command.client_id, o.command.seq) for o in self.result.history
                 if o.outcome == DONE and o.command.op != "get"}
        upto = min((self.nodes[i].applied for i in live), default=0)
        present = {(cmd.client_id, cmd.seq) for index, (_, cmd) in self.applied_at.items()
                   if type(cmd) is Command and index <= upto}
        lost = acked - present
        if lost:
            raise Violation(f"acknowledged writes missing from live nodes: {sorted(lost)[:5]}")
        if self.cfg.check_history:
            verdict = check_outcomes(self.result.history)
            if not verdict.ok:  # undecided is no pass either; the message says which it is
                raise Violation(f"history {verdict.verdict}: {verdict.explanation}")
