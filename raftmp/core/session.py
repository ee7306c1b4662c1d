"""The client's side of the protocol, pure: whom to ask, when to retry, when to give up.

``raftmp.Client`` drives it over a real link and the simulator over a virtual
one. Many operations may be in flight at once; each carries ``(client_id,
seq)`` and is retried with the same seq (never a new one), so the session
table applies it exactly once wherever the retries land.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from .errors import (
    InvalidRequest,
    RaftmpError,
    SessionExpired,
    Timeout,
    Unavailable,
    check_positive,
)
from .messages import EXPIRED, INVALID, OK, REDIRECT, ClientReply, ClientRequest, Command
from .raft import smoothed

INF = float("inf")


class Kind(str, Enum):
    """How an operation ended; its value is the ``outcome`` field of a history line."""

    DONE = "ok"            # completed with a result
    UNKNOWN = "unknown"    # gave up after it may have been applied
    FAILED = "fail"        # certainly not applied: invalid, or a read nobody answered

    __str__ = str.__str__  # prints as its value


DONE, UNKNOWN, FAILED = Kind.DONE, Kind.UNKNOWN, Kind.FAILED


@dataclass
class Timing:
    # No answer from a node within this (or 3 x the smoothed answer time, if
    # longer: a deep queue is not a dead leader): ask the next one.
    attempt_timeout: float = 0.25
    backoff: float = 0.02           # pause before retrying when no leader is known
    op_timeout: float = 5.0         # give up on an operation after this long

    def __post_init__(self) -> None:
        check_positive(self, "attempt_timeout", "backoff", "op_timeout")


@dataclass
class Pending:
    command: Command
    invoke: float
    target: int
    deadline: float                 # of the current attempt, or of the backoff
    sent: bool = False              # False while backing off
    sent_at: float = 0.0            # when the current attempt left


@dataclass
class Outcome:
    command: Command
    outcome: Kind
    result: Any         # the result (DONE), or why it did not complete
    invoke: float
    complete: float
    # What a blocking call raises for it: None (DONE), Timeout (UNKNOWN),
    # InvalidRequest or Unavailable (FAILED).
    error: Optional[type[RaftmpError]] = None

    def record(self) -> dict:
        """This operation as one history line (the format ``raftmp.checker`` reads)."""
        c = self.command
        return {"client": c.client_id, "op": c.op, "key": c.key, "value": c.value,
                "expected": c.expected, "invoke": self.invoke,
                "complete": None if self.outcome == UNKNOWN else self.complete,
                "outcome": self.outcome, "result": self.result if self.outcome == DONE else None}


class ClientSession:
    def __init__(self, client_id: int, nodes: list[int], rng: random.Random,
                 timing: Optional[Timing] = None) -> None:
        self.client_id = client_id
        self.nodes = list(nodes)
        self.rng = rng
        self.timing = timing or Timing()
        self.leader: Optional[int] = None  # hint
        self.next_seq = 1
        self.pending: dict[int, Pending] = {}
        self.outbox: list[tuple[int, ClientRequest]] = []
        self.finished: list[Outcome] = []
        self.duplicates = 0
        self.srtt = 0.0   # smoothed time from sending an attempt to its result
        self.heard: dict[int, float] = {}   # node -> when it last answered anything
        self.timers: list[tuple[float, int]] = []   # (time, seq), stale ones skipped (a heap)
        # Whether a write of ours was applied (so the cluster holds our session):
        # until then ``acked`` stays 1, which lets the state machine open the
        # session at our first write, and tell an expired one apart after it.
        self.has_session = False

    def submit(self, op: str, key: str, value: Optional[str], expected: Optional[str],
               now: float) -> int:
        """Start an operation; its seq. (Validate before calling: see kv.check_command.)"""
        seq = self.next_seq
        self.next_seq += 1
        cmd = Command(self.client_id, seq, seq, op, key, value, expected)  # acked: set by _send
        if self.leader is None:  # guess once, so a burst does not scatter over every node
            self.leader = self.rng.choice(self.nodes)
        target = self.leader
        p = self.pending[seq] = Pending(cmd, now, target, now)
        heapq.heappush(self.timers, (now + self.timing.op_timeout, seq))
        self._send(p, now)
        return seq

    def step(self, src: int, reply: ClientReply, now: float) -> None:
        self.heard[src] = now
        p = self.pending.get(reply.seq)
        if p is None or reply.client_id != self.client_id:
            if reply.client_id == self.client_id and reply.seq < self.next_seq:
                self.duplicates += 1  # CS3700's "duplicates": answers to a finished request
            return
        if reply.status == OK:
            # A result is final whichever attempt it answers.
            if p.sent:
                sample = now - p.sent_at
                self.srtt = smoothed(self.srtt, sample)
            self.leader = src
            if p.command.op != "get":
                self.has_session = True
            self._finish(reply.seq, DONE, reply.result, now)
        elif reply.status == EXPIRED:
            # Final, like a result: the state machine refused it at its index.
            self._finish(reply.seq, FAILED, f"{EXPIRED}: {reply.result}", now, SessionExpired)
        elif src != p.target or not p.sent:
            return  # a late refusal of an attempt we no longer wait for
        elif reply.status == INVALID:
            self._finish(reply.seq, FAILED, f"invalid: {reply.result}", now, InvalidRequest)
        elif reply.status == REDIRECT and reply.leader is not None and reply.leader != src:
            self.leader = reply.leader
            p.target = reply.leader
            self._send(p, now)
        else:
            # REDIRECT without a leader (an election is on), or RETRY (the leader
            # lost its term after accepting the request, so it may yet commit).
            self.leader = reply.leader if reply.leader != src else None
            self._back_off(p, now)

    def tick(self, now: float) -> None:
        timers, op_timeout = self.timers, self.timing.op_timeout
        while timers and timers[0][0] <= now:
            t, seq = heapq.heappop(timers)
            p = self.pending.get(seq)
            if p is None:
                continue
            if now >= p.invoke + op_timeout:
                # Every write was sent at least once, and a copy may still be in
                # the network (delayed, duplicated): its outcome is unknown.
                if p.command.op != "get":
                    self._finish(seq, UNKNOWN, "timed out: the operation may or may not have "
                                 "been applied", now, Timeout)
                else:
                    self._finish(seq, FAILED, "no leader answered", now, Unavailable)
            elif t == p.deadline:
                patience = self._patience()
                if p.sent and now < p.sent_at + patience:
                    # Answers got slower since this attempt left (a deep queue,
                    # not a dead node): wait by the current estimate.
                    self._set_deadline(p, p.sent_at + patience)
                    continue
                if p.sent and now - self.heard.get(p.target, -INF) < patience:
                    # The node answers others: it is alive and busy. Ask it again
                    # (this request or its answer may have been lost) rather than
                    # send a deep queue's worth of requests around the cluster.
                    self._send(p, now)
                    continue
                if p.sent:  # no answer: the node may be dead or cut off; ask the next one
                    if self.leader == p.target:
                        self.leader = None
                    p.target = self._next_node(p.target)
                self._send(p, now)

    def next_deadline(self) -> float:
        timers, op_timeout = self.timers, self.timing.op_timeout
        while timers:  # drop timers that no longer matter
            t, seq = timers[0]
            p = self.pending.get(seq)
            if p is not None and (t == p.deadline or t == p.invoke + op_timeout):
                return t
            heapq.heappop(timers)
        return float("inf")

    def take_messages(self) -> list[tuple[int, ClientRequest]]:
        out, self.outbox = self.outbox, []
        return out

    def take_finished(self) -> list[Outcome]:
        out, self.finished = self.finished, []
        return out

    # ----------------------------------------------------------------- helpers

    def _acked(self) -> int:
        if not self.has_session:
            return 1
        # pending is ordered by seq (insertion order), so its first key is the lowest
        return next(iter(self.pending)) if self.pending else self.next_seq

    def _send(self, p: Pending, now: float) -> None:
        cmd = p.command._replace(acked=self._acked())
        p.command = cmd
        p.sent = True
        p.sent_at = now
        self._set_deadline(p, now + self._patience())
        self.outbox.append((p.target, ClientRequest(cmd)))

    def _patience(self) -> float:
        return max(self.timing.attempt_timeout, 3 * self.srtt)

    def _set_deadline(self, p: Pending, t: float) -> None:
        p.deadline = t
        heapq.heappush(self.timers, (t, p.command.seq))

    def _back_off(self, p: Pending, now: float) -> None:
        p.sent = False
        p.target = self.leader if self.leader is not None else self._next_node(p.target)
        self._set_deadline(p, now + self.timing.backoff * (1 + self.rng.random()))

    def _next_node(self, node: int) -> int:
        i = self.nodes.index(node) if node in self.nodes else -1
        return self.nodes[(i + 1) % len(self.nodes)]

    def _finish(self, seq: int, outcome: Kind, result: Any, now: float,
                error: Optional[type[RaftmpError]] = None) -> None:
        p = self.pending.pop(seq)
        self.finished.append(Outcome(p.command, outcome, result, p.invoke, now, error))
