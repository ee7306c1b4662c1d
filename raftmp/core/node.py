"""A replica: the Raft core, the key-value store, and the clients it serves.

Still pure (no clock, no I/O): the worker process and the simulator both
drive a ``Node`` the same way::

    node.step(src, message, now)   # for every message that arrived
    node.tick(now)
    rd = node.ready(now)           # persist rd.hard_state/rd.entries, then send rd.messages

Client requests are answered here: a follower redirects to the leader it
knows; the leader proposes writes to the log and answers them when they are
applied, and serves reads by ReadIndex without touching the log.
"""

from __future__ import annotations

import random
from typing import Any, Optional

from .kv import KVStore, Limits, check_command
from .messages import INVALID, OK, REDIRECT, RETRY, ClientReply, ClientRequest, Command, Entry
from .raft import LEADER, Config, Raft, Ready

# A client waits this long for an answer before it asks another node
# (session.Timing.attempt_timeout). Telling it "retry" later would only be a
# duplicate answer to a request it has already taken elsewhere.
RETRY_WINDOW = 0.25


class Node:
    def __init__(self, node_id: int, nodes: list[int], state: tuple, rng: random.Random,
                 now: float, config: Optional[Config] = None,
                 limits: Optional[Limits] = None, keep_writes: bool = False) -> None:
        """``keep_writes``: on losing leadership, keep the writes this node
        accepted and answer each once its outcome is known — ok when it is
        applied here, retry when its log index is applied with another entry —
        and tell every waiting reader to retry. For clients whose retry is a
        new request (CS3700): told to retry early, such a client would take a
        write that the next leader still commits for one that never happened."""
        self.id = node_id
        self.raft = Raft(node_id, nodes, state, rng, now, config)
        self.kv = KVStore(limits)
        # Requests this node accepted as leader of ``serving_term`` and owes an answer.
        self.serving_term: Optional[int] = None
        # (client_id, seq) -> (endpoint, when it asked); read ctx -> (endpoint, command, when)
        self.writes: dict[tuple[int, int], tuple[int, float]] = {}
        self.reads: dict[int, tuple[int, Command, float]] = {}
        self.next_read = 0
        self.replies: list[tuple[int, ClientReply]] = []
        self.keep_writes = keep_writes
        self.proposed: dict[int, tuple[int, int]] = {}   # keep_writes: log index -> write

    # ------------------------------------------------------------------ inputs

    def step(self, src: int, msg: Any, now: float) -> None:
        if type(msg) is ClientRequest:
            self.handle_client(src, msg.command, now)
        else:
            self.raft.step(src, msg, now)

    def tick(self, now: float) -> None:
        self.raft.tick(now)

    def next_deadline(self) -> float:
        return self.raft.next_deadline()

    def handle_client(self, src: int, cmd: Any, now: float) -> None:
        err = check_command(cmd, self.kv.limits)
        if err is not None:
            cid, seq = (getattr(cmd, "client_id", 0), getattr(cmd, "seq", 0))
            self.replies.append((src, ClientReply(cid, seq, INVALID, err)))
            return
        raft = self.raft
        if raft.role != LEADER:
            self._reply(src, cmd, REDIRECT, None)
            return
        self._start_serving(now)
        if cmd.op == "get":
            ctx = self.next_read
            self.next_read += 1
            self.reads[ctx] = (src, cmd, now)
            raft.read_index(ctx)
            return
        key = (cmd.client_id, cmd.seq)
        done, result = self.kv.cached(*key)
        if done:                      # a retry of an applied request: its first answer
            self._reply(src, cmd, OK, result)
        elif key in self.writes:      # a retry of a request still in the log: answer once
            self.writes[key] = (src, now)
        else:
            self.writes[key] = (src, now)
            index = raft.propose(cmd)
            if self.keep_writes and index is not None:
                self.proposed[index] = key

    # ----------------------------------------------------------------- output

    def ready(self, now: float) -> Ready:
        rd = self.raft.ready(now)
        for entry in rd.committed:
            cmd = entry.command
            if self.proposed:
                self._settle(entry)
            if cmd is None:
                continue  # a leader's no-op
            status, result = self.kv.apply(cmd)
            waiting = self.writes.pop((cmd.client_id, cmd.seq), None)
            if waiting is not None and status is not None:
                self._reply(waiting[0], cmd, status, result)
        for ctx, index in rd.reads:
            # Reads are released with the commit index, and everything up to
            # it was applied just above.
            assert index <= self.raft.applied
            src, cmd, _ = self.reads.pop(ctx)
            self._reply(src, cmd, OK, self.kv.get(cmd.key))
        raft = self.raft
        serving = self.serving_term
        if serving is not None and (raft.role != LEADER or raft.term != serving):
            self._stop_serving(now)
        rd.messages.extend(self.replies)
        self.replies = []
        return rd

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
        self.serving_term = None

    def _settle(self, entry: Entry) -> None:
        """keep_writes: a write proposed at ``entry.index`` whose place went to
        another entry can never be applied (§5.3: committed entries never
        change): its client may retry."""
        key = self.proposed.pop(entry.index, None)
        cmd = entry.command
        if key is None or (cmd is not None and (cmd.client_id, cmd.seq) == key):
            return
        waiting = self.writes.pop(key, None)
        if waiting is not None:
            self.replies.append((waiting[0], ClientReply(*key, RETRY, None, self.raft.leader)))

    def _reply(self, src: int, cmd: Command, status: str, result: Any) -> None:
        self.replies.append((src, ClientReply(cmd.client_id, cmd.seq, status, result,
                                              self.raft.leader)))
