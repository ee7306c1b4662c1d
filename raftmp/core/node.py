"""A replica: the Raft core, the key-value store, and the clients it serves.

Still pure (no clock, no I/O): the worker process and the simulator both
drive a ``Node`` the same way::

    node.step(src, message, now)   # for every message that arrived
    node.tick(now)
    rd = node.ready(now)           # send rd.messages, persist rd.hard_state/rd.entries,
                                   # then send rd.persisted_messages

Above it, code reads a node through its read API (``role``, ``term``,
``commit``, ``applied``, ``log_term``, ``data``...), never through its
``raft`` or ``kv`` fields.

Client requests are answered here: a follower redirects to the leader it
knows; the leader proposes writes to the log and answers them when they are
applied, and serves reads (lease or ReadIndex, ``Config.read_mode``)
without touching the log.

Snapshots: when ``snapshot_due()``, the driver takes ``make_snapshot()``
(the state machine as of the applied index: cheap to call in a forked child,
which is how the worker keeps its loop running), makes it durable, and hands
it back with ``snapshot_saved``; the log then drops its prefix. A snapshot
received from the leader arrives in ``Ready.snapshot`` and is loaded here.

The leader writes its clock into the log (``SessionClock``) every eighth of
the session timeout while there are sessions, so that every replica expires
idle sessions at the same index (thesis §6.3); the clock lists the clients
whose requests the leader saw since its previous one (``seen``: those of
them in the session table), so that a client that only reads, or whose
retries are answered from the session table, keeps its session too.
"""

from __future__ import annotations

import random
from typing import Any, Optional

from .kv import KVStore, Limits, check_command
from .membership import CONF_OPS, Configuration, role_in
from .messages import (
    INVALID,
    OK,
    REDIRECT,
    REFUSED,
    REGISTER,
    RETRY,
    ClientReply,
    ClientRequest,
    Command,
    Entry,
    SessionClock,
    Snapshot,
)
from .raft import INF, LEADER, Config, Raft, Ready

_new = tuple.__new__

# A client waits this long for an answer before it asks another node
# (session.Timing.attempt_timeout). Telling it "retry" later would only be a
# duplicate answer to a request it has already taken elsewhere.
RETRY_WINDOW = 0.25


class Node:
    def __init__(self, node_id: int, nodes: list[int], state: tuple, rng: random.Random,
                 now: float, config: Optional[Config] = None,
                 limits: Optional[Limits] = None, snapshot: Optional[Snapshot] = None,
                 keep_writes: bool = False) -> None:
        """``keep_writes``: on losing leadership, keep the writes this node
        accepted, and tell every waiting reader to retry. A write is answered
        ok by whichever node applies it as leader — this one, or the next
        leader if this one is deposed or dead (it answers writes it did not
        take: the transport knows the client from the command) — and retry
        by this node when its log index is applied with another entry. For
        clients whose retry is a new request (CS3700): told to retry early,
        such a client would take a write that the next leader still commits
        for one that never happened; and unanswered, a committed write (a
        leader killed before answering) was later judged a wrong read."""
        self.id = node_id
        self.raft = Raft(node_id, nodes, state, rng, now, config, snapshot)
        self.kv = KVStore(limits)
        if snapshot is not None:
            self.kv.restore(snapshot.data)
        self.clock_at = INF   # when this leader next writes its clock into the log
        # Requests this node accepted as leader of ``serving_term`` and owes an answer.
        self.serving_term: Optional[int] = None
        # (client_id, seq) -> (endpoint, when it asked); read ctx -> (endpoint, command, when)
        self.writes: dict[tuple[int, int], tuple[int, float]] = {}
        self.reads: dict[int, tuple[int, Command, float]] = {}
        self.read_ctx: dict[tuple[int, int], int] = {}   # (client_id, seq) -> its read's ctx
        self.next_read = 0
        # (client_id, session) heard from as leader, for the next SessionClock
        self.seen: set[tuple[int, int]] = set()
        self.replies: list[tuple[int, ClientReply]] = []
        self.keep_writes = keep_writes
        self.proposed: dict[int, Command] = {}   # keep_writes: log index -> write

    # ------------------------------------------------------------- read API

    @property
    def ids(self) -> frozenset[int]:
        """Every member of its latest configuration, and this node."""
        return frozenset((self.id, *self.raft.peers))

    @property
    def configuration(self) -> tuple[int, Configuration]:
        """(its index, the latest configuration in this node's log) (thesis §4.1)."""
        configs = self.raft.configs
        return configs.latest_index, configs.latest

    @property
    def configurations(self) -> list[tuple[int, Configuration]]:
        """(index, configuration) of every configuration in this node's log, the
        one at or below its base first (thesis §4.1)."""
        return list(self.raft.configs.history)

    @property
    def committed_configuration(self) -> tuple[int, Configuration]:
        """(its index, the latest configuration at or below the commit index)."""
        return self.raft.configs.at(self.raft.commit)

    @property
    def membership(self) -> str:
        """This node in its latest configuration: voter, learner or non-member."""
        return role_in(self.raft.configs.latest, self.id)

    @property
    def role(self) -> str:
        return self.raft.role

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def vote(self) -> Optional[int]:
        return self.raft.vote

    @property
    def leader(self) -> Optional[int]:
        """The leader this node knows of, or None."""
        return self.raft.leader

    @property
    def leader_seen(self) -> float:
        """When (on this node's clock) it last heard from a leader, of any term
        (a later term reached since does not reset it: thesis §4.2.3)."""
        return self.raft.leader_seen

    @property
    def commit(self) -> int:
        return self.raft.commit

    @property
    def applied(self) -> int:
        return self.raft.applied

    @property
    def last_index(self) -> int:
        return self.raft.log.last_index

    def log_term(self, index: int) -> int:
        """The term of the entry at ``index`` (0 for index 0)."""
        return self.raft.log.term(index)

    def read_rounds(self) -> tuple[int, dict[int, int]]:
        """A leader's ReadIndex bookkeeping (thesis §6.4): the last round it sent
        and, per peer, the highest round that peer confirmed."""
        raft = self.raft
        return raft.round, {p: pr.round for p, pr in raft.progress.items()}

    @property
    def unsent_rounds(self) -> int:
        """Replies dropped for confirming a round this node never sent (as leader,
        since it booted): nonzero means a dishonest or corrupted peer."""
        return self.raft.unsent_rounds

    @property
    def snapshot_index(self) -> int:
        """The last index covered by this node's newest snapshot (0: none)."""
        snap = self.raft.snapshot
        return snap.index if snap is not None else 0

    @property
    def installs(self) -> int:
        """How many snapshots this node received from a leader (thesis §5.3)."""
        return self.raft.installs

    @property
    def reads_served(self) -> tuple[int, int]:
        """Reads this node answered as leader: (on its lease, by ReadIndex), thesis §6.4."""
        return self.raft.lease_read_count, self.raft.index_reads

    @property
    def pending_writes(self) -> int:
        """Writes this leader accepted and has not answered yet."""
        return len(self.writes)

    @property
    def log_base(self) -> int:
        """The last index compacted into the snapshot (entries after it are held)."""
        return self.raft.log.base

    @property
    def log_entries(self) -> int:
        """Entries held in memory (the log after its compacted base)."""
        return len(self.raft.log.entries)

    @property
    def sessions(self) -> int:
        """Client sessions in the state machine's table (thesis §6.3)."""
        return len(self.kv.sessions)

    def lease_until(self) -> float:
        """Until when (on this node's clock) its read lease holds, thesis §6.4.1
        (-inf if it holds none: not a leader, or read_mode "index")."""
        return self.raft.lease_until()

    def data(self) -> dict[str, str]:
        """A copy of the key-value map this node has applied."""
        return dict(self.kv.data)

    # ------------------------------------------------------------------ inputs

    def transfer_leader(self, target: int, now: float) -> Optional[str]:
        """Hand leadership to voter ``target`` (thesis §3.10): None once started
        (``leader`` names it when done), or why not."""
        return self.raft.transfer_leader(target, now)

    def step(self, src: int, msg: Any, now: float) -> None:
        if type(msg) is ClientRequest:
            self.handle_client(src, msg.command, now)
        else:
            self.raft.step(src, msg, now)

    def tick(self, now: float) -> None:
        self.raft.tick(now)
        if now >= self.clock_at:
            self._write_clock(now)

    def next_deadline(self) -> float:
        return min(self.raft.next_deadline(), self.clock_at)

    # -------------------------------------------------------------- snapshots

    def snapshot_due(self) -> bool:
        return self.raft.wants_snapshot()

    def make_snapshot(self) -> Snapshot:
        """The state machine as of the applied index."""
        return self.raft.snapshot_of(self.kv.snapshot_data())

    def snapshot_saved(self, snap: Snapshot) -> Optional[tuple[int, int]]:
        """``snap`` is durable: compact the log. The new log base for storage, or None."""
        return self.raft.snapshot_saved(snap)

    def handle_client(self, src: int, cmd: Any, now: float) -> None:
        register = getattr(cmd, "op", None) == REGISTER   # (no key or value to limit)
        err = check_command(cmd, None if register else self.kv.limits)
        if err is not None:
            cid, seq = (getattr(cmd, "client_id", 0), getattr(cmd, "seq", 0))
            self.replies.append((src, ClientReply(cid, seq, INVALID, err)))
            return
        raft = self.raft
        if raft.role != LEADER:
            self.replies.append((src, ClientReply(cmd.client_id, cmd.seq, REDIRECT, None,
                                                  self.fresh_leader(now))))
            return
        if self.serving_term != raft.term:
            self._start_serving(now)
        self.seen.add((cmd.client_id, cmd.session))
        if raft.transfer_to is not None and cmd.op != "get":
            # Handing leadership over (thesis §3.10): no new entries; the client
            # is told to retry (at the next leader, found by its search).
            self.replies.append((src, ClientReply(cmd.client_id, cmd.seq, RETRY, None, None)))
            return
        if cmd.op == "get":
            key = (cmd.client_id, cmd.seq)
            ctx = self.read_ctx.get(key)
            if ctx is not None:       # a retry of a read still waiting: answer it once
                self.reads[ctx] = (src, cmd, now)
                return
            ctx = self.read_ctx[key] = self.next_read
            self.next_read += 1
            self.reads[ctx] = (src, cmd, now)
            raft.read_index(ctx)
            return
        key = (cmd.client_id, cmd.seq)
        done, result = (False, None) if register else self.kv.cached(cmd.client_id, cmd.seq,
                                                                     cmd.session)
        if done:                      # a retry of an applied request: its first answer
            self._reply(src, cmd, OK, result)
        elif key in self.writes:      # a retry of a request still in the log: answer once
            self.writes[key] = (src, now)
        elif cmd.op in CONF_OPS:
            self._change_config(src, cmd, now)
        else:
            self.writes[key] = (src, now)
            index = raft.propose(cmd)
            if self.keep_writes and index is not None:
                self.proposed[index] = cmd

    # ----------------------------------------------------------------- output

    def ready(self, now: float) -> Ready:
        rd = self.raft.ready(now)
        raft = self.raft
        serving = self.serving_term
        if serving is not None and (raft.role != LEADER or raft.term != serving):
            # Before applying: a deposed leader must not answer, from its own
            # bookkeeping, a write whose client has retried it at the new leader
            # (the answer would be the client's second: a CS3700 duplicate).
            self._stop_serving(now)
        if rd.snapshot is not None:
            self.kv.restore(rd.snapshot.data)
            if self.proposed:
                self._settle_snapshot(rd.snapshot.index)
        apply, writes = self.kv.apply, self.writes
        answer_all = self.keep_writes and raft.role == LEADER   # (see below)
        for entry in rd.committed:
            cmd = entry.command
            if self.proposed:
                self._settle(entry)
            if cmd.__class__ is Configuration:
                cmd = cmd.request   # in use since appended; its session answers now
            if cmd is None:
                continue  # a leader's no-op, the cluster's first configuration
            status, result = apply(cmd, entry.index)
            if cmd.__class__ is SessionClock or not (writes or answer_all):
                continue  # (a follower's usual case: nobody here waits for it)
            waiting = writes.pop((cmd.client_id, cmd.seq), None)
            if status is None:
                continue
            if not self.keep_writes:
                if waiting is not None:
                    self._reply(waiting[0], cmd, status, result)
            elif raft.role == LEADER:
                # keep_writes: the leader that applies a write answers it, even one
                # an earlier leader took and may have died with (the client's
                # endpoint is its id; the transport finds the rest in the seq).
                self._reply(waiting[0] if waiting else cmd.client_id, cmd, status, result)
        for ctx, index in rd.reads:
            # Reads are released with the commit index, and everything up to
            # it was applied just above.
            assert index <= self.raft.applied
            src, cmd, _ = self.reads.pop(ctx)
            del self.read_ctx[(cmd.client_id, cmd.seq)]
            self._reply(src, cmd, OK, self.kv.get(cmd.key))
        if raft.role != LEADER:
            self.clock_at = INF
        elif self.clock_at == INF:
            self.clock_at = now + raft.config.session_timeout / 8
        rd.persisted_messages.extend(self.replies)
        self.replies = []
        return rd

    def _change_config(self, src: int, cmd: Command, now: float) -> None:
        """A configuration change (membership.py): appended, or refused with why."""
        key = (cmd.client_id, cmd.seq)
        if self.raft.configs.find(*key) is None:   # (else an earlier leader appended it)
            index, why = self.raft.propose_config(cmd.op, int(cmd.key), cmd)
            if index is None:
                self._reply(src, cmd, REFUSED, why)
                return
        self.writes[key] = (src, now)

    # ---------------------------------------------------------------- helpers

    def _start_serving(self, now: float) -> None:
        if self.serving_term != self.raft.term:
            self._stop_serving(now)
            self.serving_term = self.raft.term

    def _stop_serving(self, now: float) -> None:
        """Leadership ended: whatever is still pending may or may not commit
        under the next leader. Tell the clients still waiting to retry
        (exactly-once makes a retry safe) instead of letting them time out."""
        leader = self.raft.leader
        if not self.keep_writes:
            for (cid, seq), (src, asked) in self.writes.items():
                if now - asked < RETRY_WINDOW:
                    self.replies.append((src, ClientReply(cid, seq, RETRY, None, leader)))
            self.writes = {}
        for src, cmd, asked in self.reads.values():
            if self.keep_writes or now - asked < RETRY_WINDOW:
                self._reply(src, cmd, RETRY, None)
        self.reads = {}
        self.read_ctx = {}
        self.seen = set()      # a later term's first clock must not date them
        self.serving_term = None

    def _write_clock(self, now: float) -> None:
        """Thesis §6.3: the leader's time, in the log, drives session expiry."""
        raft = self.raft
        self.clock_at = now + raft.config.session_timeout / 8
        seen, self.seen = tuple(sorted(self.seen & self.kv.sessions.keys())), set()
        if raft.role == LEADER and self.kv.sessions:
            raft.propose(SessionClock(now, raft.config.session_timeout, seen))

    def _settle_snapshot(self, index: int) -> None:
        """keep_writes: the writes proposed at or below ``index`` were decided by the
        snapshot just installed: one that was applied was answered by the leader
        that applied it; tell the client of any other to retry (its place went
        to another entry)."""
        for at in [i for i in self.proposed if i <= index]:
            cmd = self.proposed.pop(at)
            waiting = self.writes.pop((cmd.client_id, cmd.seq), None)
            if waiting is not None and not self.kv.cached(cmd.client_id, cmd.seq, cmd.session)[0]:
                self.replies.append((waiting[0], ClientReply(cmd.client_id, cmd.seq, RETRY, None,
                                                             self.raft.leader)))

    def _settle(self, entry: Entry) -> None:
        """keep_writes: a write proposed at ``entry.index`` whose place went to
        another entry can never be applied (§5.3: committed entries never
        change): its client may retry."""
        mine = self.proposed.pop(entry.index, None)
        cmd = entry.command
        if mine is None or (type(cmd) is Command and (cmd.client_id, cmd.seq) ==
                            (mine.client_id, mine.seq)):
            return   # (the place may also have gone to a no-op or a SessionClock)
        key = (mine.client_id, mine.seq)
        waiting = self.writes.pop(key, None)
        if waiting is not None:
            self.replies.append((waiting[0], ClientReply(*key, RETRY, None, self.raft.leader)))

    def fresh_leader(self, now: float) -> Optional[int]:
        """The leader to name to a client: this node if it leads, else the leader
        it heard from within two heartbeat intervals. A leader that went silent
        is not named (it may be dead: until this node's election timeout fires,
        a client sent to it would only wait out another attempt timeout)."""
        raft = self.raft
        if raft.role == LEADER:
            return self.id
        if raft.leader is not None and now - raft.leader_seen < 2 * raft.config.heartbeat_interval:
            return raft.leader
        return None

    def _reply(self, src: int, cmd: Command, status: str, result: Any) -> None:
        # (tuple.__new__: a NamedTuple's own __new__ is Python code, one answer per write)
        self.replies.append((src, _new(ClientReply, (cmd.client_id, cmd.seq, status, result,
                                                     self.raft.leader))))
