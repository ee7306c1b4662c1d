"""The key-value state machine and its client session table.

Every node applies the same committed commands in the same order, so this
module must be deterministic: no clock, no randomness, no iteration order
that could differ between nodes.

Exactly-once (thesis §6.3): a client first registers: its REGISTER command,
applied at log index i, opens session ``(client_id, i)`` and answers i. Each
command then carries ``(client_id, seq)`` and its session. The session table
remembers the result of every seq a client may still retry, so a retried
command is answered with its first result instead of being applied again;
``acked`` (the lowest seq the client still waits for) lets the table forget
everything below it. Only a REGISTER opens a session, and a log index names
one session only: a command for a session not in the table (expired) is
refused (EXPIRED), never applied, and no copy of it can ever be applied in
the client's next session, which has another index.

Bounded sessions (thesis §6.3): the leader writes its clock into the log
(``SessionClock``), with the sessions it heard from since its previous clock
(reads, retries); a session is alive as of the first clock after any request
of it (applied, or listed in a clock), so it lives at least the timeout past
its latest request, and one idle for longer than the timeout is dropped, by
every replica at the same index.

Session 0 is the exception, for clients that do not register (the course
link, whose every request has a seq of its own; a RESP connection, which
takes a new client id when told EXPIRED): a command of session 0 with
``acked <= 1`` opens ``(client_id, 0)`` if it is not in the table, one with
``acked > 1`` is refused (EXPIRED). (Such a client keeps the weakness that
registration removes: a copy of its first request delayed past the expiry
opens a session again.)

The whole state (data, sessions, clock) is what a snapshot holds
(``snapshot_data`` / ``restore``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import check_positive
from .membership import CONF_OPS
from .messages import EXPIRED, INVALID, OK, OPS, REGISTER, Command, SessionClock


@dataclass(frozen=True)
class Limits:
    """Size limits on keys and values, in UTF-8 bytes."""

    max_key_bytes: int = 1024
    max_value_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        check_positive(self, "max_key_bytes", "max_value_bytes", integer=True)


def _too_long(s: str, limit: int) -> bool:
    # A str of n characters encodes to at most 4n bytes: skip the encode when it cannot matter.
    return len(s) * 4 > limit and len(s.encode("utf-8", "surrogatepass")) > limit


def check_command(cmd: Any, limits: Optional[Limits]) -> Optional[str]:
    """Why ``cmd`` is not a valid command, or None if it is. Sizes are checked
    only against ``limits`` (None: a committed command, admitted by a leader
    whose limits may differ from ours — every node must apply it alike)."""
    if type(cmd) is not Command:
        return f"not a Command: {type(cmd).__name__}"
    if plain_put(cmd) and (limits is None or (len(cmd.key) * 4 <= limits.max_key_bytes
                                              and len(cmd.value) * 4 <= limits.max_value_bytes)):
        return None   # a plain put (most requests), as check_fields finds it
    return check_fields(cmd, limits)


def plain_put(cmd: Command) -> bool:
    """A put whose every field has its type (most of a log): the fast path of
    ``check_command`` and of ``KVStore.apply``, which agree with ``check_fields``."""
    client_id, seq, acked, op, key, value, expected, session = cmd
    return (op == "put" and key.__class__ is str and value.__class__ is str and expected is None
            and client_id.__class__ is int and seq.__class__ is int and acked.__class__ is int
            and session.__class__ is int and session >= 0)


def check_fields(cmd: Command, limits: Optional[Limits]) -> Optional[str]:
    """check_command's general case."""
    client_id, seq, acked, op, key, value, expected, session = cmd
    if type(client_id) is not int or type(seq) is not int or type(acked) is not int:
        return "client_id, seq and acked must be int"
    if type(session) is not int or session < 0:
        return "session must be an int >= 0"
    if op == REGISTER and limits is None:
        return None   # (a committed registration; a client's is checked by Node.handle_client)
    if op not in OPS and op not in CONF_OPS:
        return f"unknown operation {op!r} (expected one of {', '.join(OPS + CONF_OPS)})"
    if type(key) is not str:
        return f"key must be str, not {type(key).__name__}"
    if op in CONF_OPS:   # key: the server's id
        return None if key.isdigit() and key.isascii() else f"{op} needs a server id, not {key!r}"
    # (len * 4 first: the call only for a string that may be too long)
    if limits is not None and len(key) * 4 > limits.max_key_bytes \
            and _too_long(key, limits.max_key_bytes):
        return f"key longer than {limits.max_key_bytes} bytes"
    if value is None:
        if op == "put" or op == "cas" or op == "incr":
            return f"{op} needs a value"
    elif type(value) is not str:
        return f"value must be str, not {type(value).__name__}"
    elif limits is not None and len(value) * 4 > limits.max_value_bytes \
            and _too_long(value, limits.max_value_bytes):
        return f"value longer than {limits.max_value_bytes} bytes"
    if op == "incr" and type(value) is str and parse_int64(value) is None:
        return f"incr needs a 64-bit decimal integer, not {value[:40]!r}"
    if expected is not None:
        if type(expected) is not str:
            return f"expected must be str, not {type(expected).__name__}"
        if limits is not None and _too_long(expected, limits.max_value_bytes):
            return f"expected longer than {limits.max_value_bytes} bytes"
    return None


INT64 = 1 << 63


def parse_int64(s: Optional[str]) -> Optional[int]:
    """The 64-bit signed integer ``s`` spells in decimal (as Redis reads one:
    no sign but '-', no leading zero), or None; an absent value counts as 0."""
    if s is None:
        return 0
    body = s[1:] if s[:1] == "-" else s
    if not (body.isascii() and body.isdigit()) or len(body) > 19 \
            or (len(body) > 1 and body[0] == "0"):
        return None
    n = int(s)
    return n if -INT64 <= n < INT64 else None


@dataclass
class Session:
    floor: int = 0                                   # every seq below this was acknowledged
    results: dict[int, Any] = field(default_factory=dict)
    active: float = 0.0     # the log clock that followed its latest request
    seen: bool = True       # a request of it came after the latest clock (active is behind)


class KVStore:
    def __init__(self, limits: Optional[Limits] = None) -> None:
        self.limits = limits or Limits()
        self.data: dict[str, str] = {}
        self.sessions: dict[tuple[int, int], Session] = {}   # (client_id, session) -> it
        self.clock = 0.0     # the latest SessionClock time applied (never goes back)

    def get(self, key: str) -> Optional[str]:
        return self.data.get(key)

    def cached(self, client_id: int, seq: int, session: int = 0) -> tuple[bool, Any]:
        """(True, result) if this request was already applied and its result kept."""
        s = self.sessions.get((client_id, session))
        if s is not None and seq in s.results:
            return True, s.results[seq]
        return False, None

    def apply(self, cmd: Any, index: int = 0) -> tuple[Optional[str], Any]:
        """Apply one committed command, log entry ``index`` (needed by a REGISTER
        only): ``(status, result)``.

        status is OK, INVALID or EXPIRED, or None for a request the client has
        already acknowledged (a stale duplicate: nobody waits for its answer).
        """
        if cmd.__class__ is SessionClock:
            self.expire(cmd)
            return None, None
        if cmd.__class__ is not Command:
            return INVALID, check_command(cmd, None)
        client_id, seq, acked, op, key, value, expected, session = cmd
        put = plain_put(cmd)   # (most of a log: no check_command call)
        if not put:
            err = check_command(cmd, None)
            if err is not None:
                return INVALID, err
            if op == REGISTER:   # thesis §6.3: the session is named by its entry's index
                assert index > 0, "a registration is applied at its log index"
                self.sessions[(client_id, index)] = Session()
                return OK, index
        s = self.sessions.get((client_id, session))
        if s is None:
            if session or acked > 1:
                return EXPIRED, session
            s = self.sessions[(client_id, 0)] = Session()
        s.seen = True
        if seq < s.floor:
            return None, None
        results = s.results
        if seq in results:
            return OK, results[seq]
        if put:
            self.data[key] = value
            result = None
        else:
            result = self._execute(cmd)
        results[seq] = result
        floor = s.floor
        if acked > floor:
            if acked == floor + 1:   # (the usual step: a client acknowledging as it goes)
                s.floor = acked
                results.pop(floor, None)
            else:
                self._forget(s, acked)
        return OK, result

    @staticmethod
    def _forget(s: Session, floor: int) -> None:
        """Raise ``s.floor`` to ``floor``, dropping the results below it. Every
        kept seq is at or above the old floor, so this costs what it drops
        (a client acknowledging as it goes moves its floor at every request),
        or one pass over the results if fewer are kept than seqs skipped."""
        results, old = s.results, s.floor
        s.floor = floor
        if floor - old <= len(results):
            pop = results.pop
            for seq in range(old, floor):
                pop(seq, None)
        else:
            for seq in [q for q in results if q < floor]:
                del results[seq]

    def expire(self, clock: SessionClock) -> None:
        """Date the sessions heard from since the previous clock, then drop those
        idle for longer than ``clock.timeout`` (thesis §6.3). The clock is the
        leaders' (the maximum written so far): on one machine every process
        shares the monotonic clock; across machines a new leader's clock running
        ahead would expire sessions early (never late)."""
        self.clock = max(self.clock, clock.time)
        sessions = self.sessions
        for key in clock.seen:
            s = sessions.get(key)
            if s is not None:
                s.seen = True
        cutoff = self.clock - clock.timeout
        for cid, s in list(sessions.items()):
            if s.seen:
                s.active, s.seen = self.clock, False
            elif s.active < cutoff:
                del sessions[cid]

    def snapshot_data(self) -> bytes:
        """The whole state machine, for a snapshot: data, sessions and clock."""
        sessions = {key: (s.floor, s.results, s.active, s.seen)
                    for key, s in self.sessions.items()}
        return pickle.dumps((self.data, sessions, self.clock), pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        """Replace the state by a snapshot's (``snapshot_data``). A snapshot from
        before registration keyed sessions by client id: they load as session 0."""
        data, sessions, clock = pickle.loads(blob)
        self.data = data
        self.sessions = {key if type(key) is tuple else (key, 0): Session(*s)
                         for key, s in sessions.items()}
        self.clock = clock

    def _execute(self, cmd: Command) -> Any:
        data, key = self.data, cmd.key
        if cmd.op in CONF_OPS:
            return None   # a configuration change: the Raft core acted on it when appended
        if cmd.op == "put":
            data[key] = cmd.value
            return None
        if cmd.op == "delete":
            return data.pop(key, None) is not None
        if cmd.op == "cas":
            if data.get(key) != cmd.expected:
                return False
            data[key] = cmd.value
            return True
        if cmd.op == "incr":
            old = parse_int64(data.get(key))
            if old is None or not -INT64 <= old + int(cmd.value) < INT64:
                return None
            data[key] = str(old + int(cmd.value))
            return old + int(cmd.value)
        return data.get(key)  # a get through the log
