"""The simulator's own reference: a key-value model and a majority, written
apart from the core they check (``core/kv.py``, ``core/raft.majority_of``),
so that a bug there cannot weaken the checks too.

``Model`` applies the committed commands in index order, as the thesis
describes the state machine (§6.3: only a client's registration opens a
session, named by the registration's log index, so a command for a session
that is gone is never applied; each session's results are kept until its
client acknowledges them, a retry is answered from them; the leader's clock
entries expire the sessions no leader heard from for the timeout, every
replica at the same index: a session is heard from by a command of it, or by
its name in a clock entry's ``seen``, and dated by the next clock entry).
Session 0 (clients that never register: the course link, RESP) opens with
a command whose ``acked`` is at most 1. Its ``state()`` has
the shape of a node's snapshot, so the two compare whole: data, sessions and
session clock. It also keeps every key's history (``values_between``), so a
read is checked by the value it returned.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Optional

from ..core.membership import CONF_OPS, Configuration
from ..core.messages import REGISTER, Command, SessionClock


def majority(n: int) -> int:
    """The smallest number of servers that any two such sets share one of (§5.2)."""
    smallest = 1
    while 2 * smallest <= n:
        smallest += 1
    return smallest


class Model:
    """The state after applying committed entries 1..``index``."""

    def __init__(self) -> None:
        self.index = 0
        self.data: dict[str, str] = {}
        # (client_id, session) -> [floor, {seq: result}, clock it was last dated by, heard since]
        self.sessions: dict[tuple[int, int], list] = {}
        self.clock = 0.0
        # (client_id, seq) of every write executed, and any executed a second time
        # (a client's seqs never repeat, whatever its session: that is exactly-once broken)
        self.executed: set[tuple[int, int]] = set()
        self.twice: list[tuple[int, Command]] = []
        # key -> ([index where it changed...], [value from then on...]); None: absent
        self.history: dict[str, tuple[list[int], list[Optional[str]]]] = {}

    def apply(self, index: int, cmd: Any) -> None:
        assert index == self.index + 1, (index, self.index)
        self.index = index
        if cmd is None:              # a leader's no-op (§8)
            return
        if type(cmd) is SessionClock:
            self._tick(cmd.time, cmd.timeout, cmd.seen)
            return
        if type(cmd) is Configuration:   # (membership churn) its session records it
            cmd = cmd.request
            if cmd is None:
                return
        assert type(cmd) is Command, cmd
        if cmd.op == REGISTER:       # a new session, named by this index
            self.sessions[(cmd.client_id, index)] = [0, {}, 0.0, True]
            return
        session = self.sessions.get((cmd.client_id, cmd.session))
        if session is None:
            if cmd.session or cmd.acked > 1:   # gone (expired): refused, nothing happens
                return
            session = self.sessions[(cmd.client_id, 0)] = [0, {}, 0.0, True]
        session[3] = True
        floor, results = session[0], session[1]
        if cmd.seq < floor or cmd.seq in results:
            return                   # a duplicate: answered from the table, not re-applied
        if cmd.op != "get":
            if (cmd.client_id, cmd.seq) in self.executed:
                self.twice.append((index, cmd))
            self.executed.add((cmd.client_id, cmd.seq))
        results[cmd.seq] = self._run(cmd)
        if cmd.acked > floor:
            session[0] = cmd.acked
            for seq in [s for s in results if s < cmd.acked]:
                del results[seq]

    def _tick(self, time: float, timeout: float, seen: tuple) -> None:
        self.clock = max(self.clock, time)
        for key in seen:
            if key in self.sessions:
                self.sessions[key][3] = True
        for cid, session in list(self.sessions.items()):
            if session[3]:           # heard from since the last clock: alive as of this one
                session[2], session[3] = self.clock, False
            elif session[2] < self.clock - timeout:
                del self.sessions[cid]

    def _run(self, cmd: Command) -> Any:
        if cmd.op in CONF_OPS:
            return None                  # the configuration changed when it was appended
        before = self.data.get(cmd.key)
        if cmd.op == "get":
            return before
        if cmd.op == "put":
            self._set(cmd.key, cmd.value)
            return None
        if cmd.op == "delete":
            self._set(cmd.key, None)
            return before is not None
        if before != cmd.expected:   # cas
            return False
        self._set(cmd.key, cmd.value)
        return True

    def _set(self, key: str, value: Optional[str]) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        at, values = self.history.setdefault(key, ([0], [None]))
        at.append(self.index)
        values.append(value)

    def state(self) -> tuple:
        """(data, {(client_id, session): (floor, results, active, seen)}, clock):
        a snapshot's shape."""
        return (dict(self.data), {c: (s[0], dict(s[1]), s[2], s[3])
                                  for c, s in self.sessions.items()}, self.clock)

    def values_between(self, key: str, lo: int, hi: int) -> list[Optional[str]]:
        """The values ``key`` had at some index in [lo, hi] (hi <= self.index)."""
        at, values = self.history.get(key, ([0], [None]))
        first = bisect_right(at, lo) - 1
        last = bisect_right(at, hi) - 1
        return values[first:last + 1]
