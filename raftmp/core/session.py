"""The client's side of the protocol, pure: whom to ask, when to retry, when to give up.

``raftmp.Client`` drives it over a real link and the simulator over a virtual
one. Many operations may be in flight at once; each carries ``(client_id,
seq)`` and is retried with the same seq (never a new one), so the session
table applies it exactly once wherever the retries land.

When no leader is known (the one we used went silent, or a node said it knows
none) the session *searches*: one operation at a time goes out as a probe,
node after node, with exponential backoff and jitter between fruitless probes
(capped; reset by a successful answer); every other operation waits. So a
client adds at most one request in flight to a cluster without a leader,
whatever its window, instead of a retry storm. The first successful answer
names the leader, and the waiting operations go to it (but for those whose
last attempt went to it: it may still hold them, and a second copy could
cross its answer and be answered twice, so they wait). The search passes
over a node that left an attempt unanswered lately (a dead leader would
cost another attempt timeout); nodes name only a leader they heard from
lately (``Node.fresh_leader``), so hints do not lead back to it either. A
hint sends the probe off the search's order, never moves its place in it.

Sessions (thesis §6.3): before its first write the client registers (a
REGISTER command, answered with the log index that names its session; the
writes wait for it). When the cluster answers that the session expired, the
writes sent in it end UNKNOWN (SessionExpired: they may have been applied in
it, and can never be applied after), the ones not yet sent wait for a new
registration. A new session has a new name, so no late copy of a command of
the old one can be applied in it: reopening is always safe.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from .config import OP_TIMEOUT
from .errors import (
    ConfigChangeRefused,
    InvalidRequest,
    RaftmpError,
    SessionExpired,
    Timeout,
    Unavailable,
    check_positive,
)
from .messages import EXPIRED, INVALID, OK, REFUSED, REGISTER, ClientReply, ClientRequest, Command
from .raft import smoothed

INF = float("inf")
_new = tuple.__new__   # builds a NamedTuple at C speed (its own __new__ is Python code)
GAVE_UP_KEPT = 1024   # seqs of operations given up on, kept to tell late answers apart


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
    # Pause after a probe that found no leader: backoff x 2^(fruitless probes - 1),
    # at most max_backoff, times a random factor in [0.5, 1) (jitter).
    backoff: float = 0.02
    max_backoff: float = 0.2
    # Give up on an operation after this long (the cluster's Config.client_op_timeout
    # must be at least this: its sessions outlive it, see Config.session_timeout).
    op_timeout: float = OP_TIMEOUT

    def __post_init__(self) -> None:
        check_positive(self, "attempt_timeout", "backoff", "op_timeout")


@dataclass(slots=True)   # one per operation: no __dict__ (a second object for the GC)
class Pending:
    command: Command
    invoke: float
    target: int
    deadline: float                 # of the current attempt, or of the backoff (INF: waiting)
    sent: bool = False              # False while backing off or waiting for a leader
    sent_at: float = 0.0            # when the current attempt left
    tries: int = 0                  # attempts sent (0: certainly not applied)
    sent_to: Optional[int] = None   # the node the last attempt went to (None: refused, held)
    held: bool = False              # not sent again to the found leader, which may hold it:
                                    # ask it again at the deadline (sent_at: when held back)
    inherited: bool = False         # the attempt was a given-up probe's (sent_at is its)


@dataclass(slots=True)
class Outcome:
    command: Command
    outcome: Kind
    result: Any         # the result (DONE), or why it did not complete
    invoke: float
    complete: float
    # What a blocking call raises for it: None (DONE), Timeout or SessionExpired
    # (UNKNOWN), InvalidRequest or Unavailable (FAILED).
    error: Optional[type[RaftmpError]] = None

    def record(self) -> dict:
        """This operation as one history line (the format ``raftmp.checker`` reads)."""
        c = self.command
        return {"client": c.client_id, "op": c.op, "key": c.key, "value": c.value,
                "expected": c.expected, "invoke": self.invoke,
                "complete": None if self.outcome == UNKNOWN else self.complete,
                "outcome": self.outcome, "result": self.result if self.outcome == DONE else None}


class Timers:
    """A session's timers, ``(time, seq)``, taken in (time, seq) order: as one
    heap of them all would give them, stale ones included (the session skips
    those), but for the timers of operations no longer pending (see ``first``).

    Most are set in time order, because ``now`` only grows: an operation's
    timeout is its invoke + op_timeout, an attempt's deadline is now + the
    patience (which changes only with the smoothed answer time). So each kind
    has a FIFO, appended to and taken from at C speed; a timer set out of its
    FIFO's order goes to a heap. ``first`` merges the three heads. (One heap of
    every timer, stale ones of the last op timeout's operations included, was
    the client's largest cost.)"""

    __slots__ = ("expiries", "deadlines", "heap")

    def __init__(self) -> None:
        self.expiries: deque[tuple[float, int]] = deque()    # op timeouts
        self.deadlines: deque[tuple[float, int]] = deque()   # attempt deadlines
        self.heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self.expiries) + len(self.deadlines) + len(self.heap)

    def push(self, t: float, seq: int, fifo: deque[tuple[float, int]]) -> None:
        timer = (t, seq)
        if fifo and timer < fifo[-1]:
            heapq.heappush(self.heap, timer)
        else:
            fifo.append(timer)

    def first(self, live: dict[int, Any]) -> tuple[Optional[tuple[float, int]], Any]:
        """The earliest timer and the queue it is in (None, None: no timer).

        The timers of an operation no longer ``live`` do nothing when taken,
        so they leave the head of every queue first, whatever their time: a
        FIFO then holds about the operations in flight, not an op timeout's
        worth of stale timers (which every full pass of the GC walked)."""
        heap = self.heap
        while heap and heap[0][1] not in live:
            heapq.heappop(heap)
        best, queue = (heap[0], heap) if heap else (None, None)
        for fifo in (self.expiries, self.deadlines):
            while fifo and fifo[0][1] not in live:
                fifo.popleft()
            if fifo and (best is None or fifo[0] < best):
                best, queue = fifo[0], fifo
        return best, queue

    def pop(self, queue: Any) -> None:
        """Remove the earliest timer, which ``first`` found in ``queue``."""
        if queue is self.heap:
            heapq.heappop(queue)
        else:
            queue.popleft()


class ClientSession:
    def __init__(self, client_id: int, nodes: list[int], rng: random.Random,
                 timing: Optional[Timing] = None) -> None:
        self.client_id = client_id
        self.nodes = list(nodes)
        self.rng = rng
        self.timing = timing or Timing()
        self.leader: Optional[int] = None  # hint
        self.next_seq = 1
        self.low = 1   # no pending seq below it (see _acked)
        self.pending: dict[int, Pending] = {}
        self.outbox: list[tuple[int, ClientRequest]] = []
        self.finished: list[Outcome] = []
        # CS3700's "duplicates": answers to an operation already answered. The
        # first result for one the client gave up on (op_timeout) is ``late``
        # instead (the operation stays unknown or failed); any answer after it
        # is a duplicate.
        self.duplicates = 0
        self.late = 0
        self.gave_up: dict[int, None] = {}   # seqs given up and not answered since (bounded)
        self.srtt = 0.0   # smoothed time from sending an attempt to its result
        self.heard: dict[int, float] = {}   # node -> when it last answered anything
        self.silent: dict[int, float] = {}  # node -> when an attempt to it last went unanswered
        self.timers = Timers()   # (time, seq) of op timeouts and attempt deadlines; stale ones skipped
        # Our session: the log index of our registration (0: none yet, or expired),
        # and the seq of the registration under way (None: none).
        self.session = 0
        self.registering: Optional[int] = None
        self.session_heard = -INF   # when a request of our session was last answered
        self.registrations: set[int] = set()   # seqs of our registrations given up on
        self.new_sessions = 0       # sessions registered after one expired (a statistic)
        self.searching = False      # no leader known: one probe at a time, the rest wait
        self.probe: Optional[int] = None    # seq of the probe while searching
        self.cursor: Optional[int] = None   # the search's place in the node order
        self.fruitless = 0          # probes in a row that found no leader

    def submit(self, op: str, key: str, value: Optional[str], expected: Optional[str],
               now: float) -> int:
        """Start an operation; its seq. (Validate before calling: see kv.check_command.)"""
        seq = self.next_seq
        self.next_seq += 1
        # (acked and session: set by _send.) Built as a plain tuple is, at C speed.
        cmd = _new(Command, (self.client_id, seq, seq, op, key, value, expected, 0))
        if op == REGISTER:
            self.registering = seq
        if self.leader is None and not self.searching:
            self.leader = self.rng.choice(self.nodes)  # guess once: a burst goes to one node
        target = self.leader if self.leader is not None else self.rng.choice(self.nodes)
        p = self.pending[seq] = Pending(cmd, now, target, now)
        self.timers.push(now + self.timing.op_timeout, seq, self.timers.expiries)
        self._dispatch(p, now)
        return seq

    def step(self, src: int, reply: ClientReply, now: float) -> None:
        self.heard[src] = now
        client_id, seq, status, result, leader = reply   # (faster than its properties)
        p = self.pending.get(seq)
        if p is None or client_id != self.client_id:
            if client_id == self.client_id and seq < self.next_seq:
                if seq not in self.gave_up:
                    self.duplicates += 1     # it had its answer already
                elif status in (OK, EXPIRED, INVALID, REFUSED):   # its first result
                    del self.gave_up[seq]
                    self.late += 1
                    if seq in self.registrations and status == OK:
                        self.registrations.discard(seq)
                        if self.session == 0:   # a session all the same: take it
                            self._registered(None, result, src, now)
            return
        if status == OK:
            # A result is final whichever attempt it answers.
            if p.sent and not p.inherited:
                sample = now - p.sent_at
                self.srtt = smoothed(self.srtt, sample)
            self.session_heard = now
            if p.command.op == REGISTER:
                self._registered(seq, result, src, now)
                return
            self._finish(seq, DONE, result, now)
            self._found_leader(src, now)
            return
        if status == EXPIRED:
            # The state machine has no session ``result`` (it expired). An answer to
            # an attempt sent in an older session says nothing of the current one.
            if result == self.session:
                self._expired(now)
            return
        if src == p.sent_to:
            p.sent_to = None   # it refused our last attempt: it will not answer it
        if src != p.target or not p.sent:
            return  # a late refusal of an attempt we no longer wait for
        if status == INVALID:
            self._finish(seq, FAILED, f"invalid: {result}", now, InvalidRequest)
            return
        if status == REFUSED:   # a configuration change the leader will not make
            self._finish(seq, FAILED, f"refused: {result}", now, ConfigChangeRefused)
            return
        if leader is not None and leader != src:
            # REDIRECT, or RETRY (the leader lost its term after accepting the
            # request, so it may yet commit), naming the leader: ask it.
            p.target = leader
            if not self.searching:
                self.leader = leader
            elif self.probe == p.command.seq:
                # Hints can be stale (two nodes naming each other): a probe
                # follows them at once only as many times as there are nodes.
                self.fruitless += 1
                if self.fruitless > len(self.nodes):
                    self._back_off(p, now)
                    return
            self._dispatch(p, now)
        else:
            # Nobody known to lead (an election is on): search, backing off.
            self._lost_leader()
            p.target = self._next_node(src, now)
            if self.probe == p.command.seq:
                self.fruitless += 1
                self._back_off(p, now)
            else:
                self._dispatch(p, now)

    def tick(self, now: float) -> None:
        timers, op_timeout = self.timers, self.timing.op_timeout
        while True:
            timer, queue = timers.first(self.pending)
            if timer is None or timer[0] > now:
                break
            timers.pop(queue)
            t, seq = timer
            p = self.pending.get(seq)
            if p is None:
                continue
            if now >= p.invoke + op_timeout and p.command.op == REGISTER:
                # Ours: it goes on while a write waits for it (a new one could only
                # be slower: its answer would come after this one's).
                if any(not self._can_go(q) for q in self.pending.values()):
                    p.invoke = now
                    timers.push(now + op_timeout, seq, timers.expiries)
                else:
                    self._finish(seq, FAILED, "no write waits for it", now)
                    if p.tries:
                        self._gave_up(seq)
                        self.registrations.add(seq)
            elif now >= p.invoke + op_timeout:
                # A write sent at least once may still have a copy in the network
                # (delayed, duplicated): its outcome is unknown.
                if p.command.op != "get" and p.tries:
                    self._finish(seq, UNKNOWN, "timed out: the operation may or may not have "
                                 "been applied", now, Timeout)
                else:
                    self._finish(seq, FAILED, "no leader answered", now, Unavailable)
                if p.tries:
                    self._gave_up(seq)
            elif t == p.deadline:
                patience = self._patience()
                if p.sent and now < p.sent_at + patience:
                    # Answers got slower since this attempt left (a deep queue,
                    # not a dead node): wait by the current estimate.
                    self._set_deadline(p, p.sent_at + patience)
                    continue
                if p.held:
                    # Held back for the found leader's answer, which did not come:
                    # it lost the request (deposed, restarted). Ask it again.
                    p.held = False
                    self._dispatch(p, now)
                    continue
                if p.sent and now - self.heard.get(p.target, -INF) < patience:
                    # The node answers others: it is alive and busy. Ask it again
                    # (this request or its answer may have been lost) rather than
                    # send a deep queue's worth of requests around the cluster.
                    self._dispatch(p, now)
                    continue
                if p.sent:  # no answer: the node may be dead or cut off; ask the next one
                    self.silent[p.target] = now
                    if self.leader == p.target or self.probe == p.command.seq:
                        self._lost_leader()
                    p.target = self._next_node(p.target, now)
                self._dispatch(p, now)

    def next_deadline(self) -> float:
        timers, op_timeout = self.timers, self.timing.op_timeout
        while True:  # drop timers that no longer matter
            timer, queue = timers.first(self.pending)
            if timer is None:
                return INF
            t, seq = timer
            p = self.pending.get(seq)
            if p is not None and (t == p.deadline or t == p.invoke + op_timeout):
                return t
            timers.pop(queue)

    def take_messages(self) -> list[tuple[int, ClientRequest]]:
        out, self.outbox = self.outbox, []
        return out

    def take_finished(self) -> list[Outcome]:
        out, self.finished = self.finished, []
        return out

    # ----------------------------------------------------------------- helpers

    def _acked(self) -> int:
        """The lowest seq still pending (next_seq: none). A seq enters ``pending``
        once, in order, so that only grows: a pointer walks up to it. (The first
        key of a dict that lost its oldest keys is a scan over their holes.)"""
        low, pending, end = self.low, self.pending, self.next_seq
        while low < end and low not in pending:
            low += 1
        self.low = low
        return low

    def _can_go(self, p: Pending) -> bool:
        """Whether ``p`` may be sent: a write needs a session."""
        return self.session != 0 or p.command.op in ("get", REGISTER)

    def _idle_session(self, p: Pending, now: float) -> bool:
        """Whether ``p``, a write about to leave for the first time, should go in a
        new session: nothing was answered in ours for an op timeout (it may have
        expired: a write sent in an expired session ends unknown) and no write
        is under way in it. A new session is always safe; this one idles out."""
        return (p.tries == 0 and p.command.op not in ("get", REGISTER)
                and now - self.session_heard > self.timing.op_timeout
                and not any(q.tries and q.command.op != "get" for q in self.pending.values()))

    def _registered(self, seq: Optional[int], session: int, src: int, now: float) -> None:
        """Our registration ``seq`` (None: one given up on) was applied at log
        index ``session``: the writes waiting for a session go (to ``src``, which
        leads)."""
        if seq is None and self.registering is not None:
            self._finish(self.registering, FAILED, "another registration answered", now)
        elif seq is not None:
            self._finish(seq, DONE, session, now)
        self.session = session
        self._found_leader(src, now)
        for p in list(self.pending.values()):
            if not p.sent and p.deadline == INF:
                p.target = src
                self._dispatch(p, now)

    def _expired(self, now: float) -> None:
        """Our session is gone (thesis §6.3). The writes sent in it may have been
        applied there, and never will be after it: UNKNOWN, for good. The others
        wait for a new session, which no copy of an old command can enter."""
        self.session = 0
        self.new_sessions += 1
        for seq, p in list(self.pending.items()):
            if p.command.op not in ("get", REGISTER) and p.tries:
                self._finish(seq, UNKNOWN, "session expired: the operation may or may not "
                             "have been applied", now, SessionExpired)
                self._gave_up(seq)
        self._wait_for_session(now)

    def _wait_for_session(self, now: float) -> None:
        """Register, if a write waits for a session and no registration is under way."""
        if self.session == 0 and self.registering is None and any(
                not self._can_go(p) for p in self.pending.values()):
            self.submit(REGISTER, "", None, None, now)

    def _gave_up(self, seq: int) -> None:
        self.gave_up[seq] = None
        if len(self.gave_up) > GAVE_UP_KEPT:
            self.registrations.discard(next(iter(self.gave_up)))
            del self.gave_up[next(iter(self.gave_up))]

    def _dispatch(self, p: Pending, now: float) -> None:
        """Send ``p`` — unless it is a write and we have no session (it waits
        for our registration), or a search is on and another operation is the
        probe (it waits for the leader to be found)."""
        if self.session and self._idle_session(p, now):
            self.session = 0
            self.new_sessions += 1
        if not self._can_go(p):
            p.sent = False
            p.deadline = INF
            self._wait_for_session(now)
            return
        if self.searching:
            if self.probe is None:
                self.probe = p.command.seq
            elif self.probe != p.command.seq:
                p.sent = False
                p.deadline = INF
                return
        self._send(p, now)

    def _silent(self, node: int, now: float) -> bool:
        """Whether ``node`` left an attempt unanswered lately (within two attempts'
        patience) and has said nothing since: the search tries the others first."""
        went = self.silent.get(node, -INF)
        return went > self.heard.get(node, -INF) and now - went < 2 * self._patience()

    def _lost_leader(self) -> None:
        if not self.searching:
            self.searching = True
            self.leader = None
            self.probe = None
            self.cursor = None
            self.fruitless = 0

    def _found_leader(self, node: int, now: float) -> None:
        """A successful answer: ``node`` leads. End any search; the operations
        that waited go to it now, except those whose last attempt went to it: it
        may still hold them (a slow commit, not a lost request; its answers to
        them may be on their way with this one), and a second copy crossing its
        answer would be answered twice. They wait one more patience for it."""
        self.leader = node
        self.fruitless = 0
        if self.searching:
            self.searching = False
            self.probe = None
            for p in list(self.pending.values()):   # (_dispatch may register)
                if not p.sent and p.deadline == INF:
                    p.target = node
                    if p.sent_to == node:   # held back once per attempt
                        p.sent_to, p.held = None, True
                        p.sent, p.sent_at = True, now
                        self._set_deadline(p, now + self._patience())
                    else:
                        self._dispatch(p, now)

    def _send(self, p: Pending, now: float) -> None:
        cmd, acked, session = p.command, self._acked(), self.session
        client_id, seq, _, op, key, value, expected, _ = cmd
        if cmd[2] != acked or cmd[7] != session:   # (a NamedTuple's _replace: 5x slower)
            cmd = p.command = _new(Command, (client_id, seq, acked, op, key, value, expected,
                                             session))
        p.sent = True
        p.sent_at = now
        p.sent_to = p.target
        p.held = p.inherited = False
        p.tries += 1
        p.deadline = t = now + self._patience()   # (_set_deadline, inline: once per request)
        self.timers.push(t, seq, self.timers.deadlines)
        self.outbox.append((p.target, _new(ClientRequest, (cmd,))))

    def _patience(self) -> float:
        return max(self.timing.attempt_timeout, 3 * self.srtt)

    def _set_deadline(self, p: Pending, t: float) -> None:
        p.deadline = t
        self.timers.push(t, p.command.seq, self.timers.deadlines)

    def _back_off(self, p: Pending, now: float) -> None:
        """The probe found no leader: wait (exponential, capped, jittered) before
        the next probe (to ``p.target``)."""
        t = self.timing
        pause = min(t.max_backoff, t.backoff * 2 ** (self.fruitless - 1))
        p.sent = False
        self._set_deadline(p, now + pause * (0.5 + 0.5 * self.rng.random()))

    def _next_node(self, node: int, now: float) -> int:
        """The node to ask after ``node`` failed us: the next in the node order,
        passing over the ones that went silent on us (unless all did). A search
        keeps its own place in that order, which a hint does not move: else a
        leader cut off with a follower that still names it would hold the
        search between the two, away from the majority's new leader."""
        if self.searching and self.cursor is not None:
            node = self.cursor
        i = self.nodes.index(node) if node in self.nodes else -1
        n = len(self.nodes)
        order = [self.nodes[(i + k) % n] for k in range(1, n + 1)]
        nxt = next((x for x in order if not self._silent(x, now)), order[0])
        if self.searching:
            self.cursor = nxt
        return nxt

    def _finish(self, seq: int, outcome: Kind, result: Any, now: float,
                error: Optional[type[RaftmpError]] = None) -> None:
        p = self.pending.pop(seq)
        if p.command.op == REGISTER:   # ours, not the caller's: no outcome
            self.registering = None
        else:
            self.finished.append(Outcome(p.command, outcome, result, p.invoke, now, error))
        if seq == self.probe and outcome is not DONE:
            # The probe gave up: the oldest waiting operation probes on (same node).
            self.probe = None
            waiting = next((q for q in self.pending.values() if not q.sent and self._can_go(q)
                            and now < q.invoke + self.timing.op_timeout), None)
            if waiting is not None:
                waiting.target = p.target
                self._dispatch(waiting, now)
                if p.sent and waiting.sent:
                    # It takes over the probe's attempt, deadline included: a
                    # node gets one attempt timeout in all. (A fresh one per
                    # probe never ran out while every waiting operation was
                    # within attempt_timeout of its op_timeout: the search
                    # stayed at a dead node for good.) No RTT sample from it.
                    waiting.sent_at, waiting.inherited = p.sent_at, True
                    self._set_deadline(waiting, p.deadline)
