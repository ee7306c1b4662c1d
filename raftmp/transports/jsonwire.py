"""A JSON encoding of the Raft messages, for links anyone can write to.

Pickle (``wire.py``) is only for the local router link: unpickling runs code
chosen by the sender. Here a message is a JSON array, its tag first and then
its fields in declaration order::

    ["rv",  term, candidate, last_index, last_term, pre, transfer]
    ["rvr", term, voter, granted, pre]
    ["ae",  term, leader, prev_index, prev_term, [entry...], commit, round]
    ["aer", term, follower, success, index, conflict_term, conflict_index, round]
    ["is",  term, leader, index, last_term, size, offset, data]    data: base64
    ["isr", term, follower, index, offset, done]

    entry   = [term, index, command]       command = null (a leader's no-op),
              [client_id, seq, acked, op, key, value, expected, session]
              (op "register": a client's registration, thesis §6.3) or
              ["clock", time, timeout, [[client_id, session]...]]   (a SessionClock)

``decode`` checks every field's type (an int is never a bool), that numbers
are not negative, that entries are the run ``prev_index + 1 ...`` and that
commands are well-formed (``kv.check_command``); anything else is a
``ValueError``. (No configuration entries, snapshots or ``TimeoutNow``: the
CS3700 replica's membership is fixed.)
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..core.kv import check_command
from ..core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Command,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
    SessionClock,
)

N, B, D = "int", "bool", "data"   # a field kind: a non-negative int, a bool, base64 bytes
_SCHEMAS: dict[str, tuple[type, tuple[str, ...]]] = {
    "rv": (RequestVote, (N, N, N, N, B, B)),
    "rvr": (RequestVoteReply, (N, N, B, B)),
    "ae": (AppendEntries, (N, N, N, N, "entries", N, N, B)),
    "aer": (AppendEntriesReply, (N, N, B, N, N, N, N)),
    "is": (InstallSnapshot, (N, N, N, N, N, N, D)),
    "isr": (InstallSnapshotReply, (N, N, N, N, B)),
}
_TAGS = {cls: tag for tag, (cls, _) in _SCHEMAS.items()}


def encode(m: Any) -> list:
    """The JSON-ready form of a Raft message (a list: ``json.dumps`` it)."""
    if type(m) is AppendEntries:
        entries = [[e.term, e.index, _command(e.command)] for e in m.entries]
        return ["ae", m.term, m.leader, m.prev_index, m.prev_term, entries, m.commit, m.round,
                m.reply]
    if type(m) is InstallSnapshot:
        # (its configuration stays home: a membership fixed on both ends, the
        # receiver's own applies; InstallSnapshot.config is for the router link)
        return ["is", *m[:6], base64.b64encode(m.data).decode("ascii")]
    return [_TAGS[type(m)], *m]


def dumps(m: Any) -> str:
    """One message as compact JSON text (``encode``'s form)."""
    return json.dumps(encode(m), separators=(",", ":"))


def decode(obj: Any) -> Any:
    """The Raft message ``obj`` (parsed JSON) encodes; ValueError if it is not one."""
    if type(obj) is not list or not obj or type(obj[0]) is not str or obj[0] not in _SCHEMAS:
        raise ValueError(f"not a tagged Raft message: {str(obj)[:80]}")
    cls, kinds = _SCHEMAS[obj[0]]
    fields = obj[1:]
    if len(fields) != len(kinds):
        raise ValueError(f"{obj[0]}: {len(fields)} fields, expected {len(kinds)}")
    for kind, v in zip(kinds, fields, strict=True):
        if kind == N and not (type(v) is int and v >= 0):
            raise ValueError(f"{obj[0]}: {v!r} is not a non-negative int")
        if kind == B and type(v) is not bool:
            raise ValueError(f"{obj[0]}: {v!r} is not a bool")
    if cls is InstallSnapshot:
        try:
            fields[-1] = base64.b64decode(fields[-1], validate=True)
        except (TypeError, ValueError, binascii.Error):
            raise ValueError(f"is: data {str(fields[-1])[:40]} is not base64") from None
    if cls is AppendEntries:
        fields[4] = _entries(fields[4], fields[2])
    return cls(*fields)


def _entries(raw: Any, prev_index: int) -> tuple:
    if type(raw) is not list:
        raise ValueError("ae: entries is not a list")
    out = []
    for i, e in enumerate(raw, prev_index + 1):
        if type(e) is not list or len(e) != 3:
            raise ValueError(f"ae: entry {str(e)[:80]} is not [term, index, command]")
        term, index, cmd = e
        if type(term) is not int or term < 1 or index != i or type(index) is not int:
            raise ValueError(f"ae: entry ({term!r}, {index!r}) where index {i} belongs")
        if type(cmd) is list and cmd[:1] == ["clock"]:
            cmd = _clock(cmd)
        elif cmd is not None:
            if type(cmd) is not list or len(cmd) != len(Command._fields):
                raise ValueError(f"ae: command {str(cmd)[:80]} is not a list of "
                                 f"{len(Command._fields)} fields")
            cmd = Command(*cmd)
            err = check_command(cmd, None)
            if err is not None:
                raise ValueError(f"ae: bad command: {err}")
        out.append(Entry(term, index, cmd))
    return tuple(out)


def _command(cmd: Any) -> Any:
    if cmd is None:
        return None
    if type(cmd) is SessionClock:
        return ["clock", cmd.time, cmd.timeout, [list(k) for k in cmd.seen]]
    return list(cmd)


def _clock(raw: list) -> SessionClock:
    """A SessionClock from ``["clock", time, timeout, [[client_id, session]...]]``."""
    if len(raw) != 4:
        raise ValueError(f"ae: clock {str(raw)[:80]} is not [\"clock\", time, timeout, seen]")
    _, time, timeout, seen = raw
    for v in (time, timeout):
        if type(v) not in (int, float) or not 0 <= v < float("inf"):
            raise ValueError(f"ae: clock time {v!r} is not a finite number >= 0")
    if type(seen) is not list or any(type(k) is not list or len(k) != 2 or
                                     any(type(c) is not int for c in k) for k in seen):
        raise ValueError(f"ae: clock seen {str(seen)[:80]} is not a list of "
                         f"[client_id, session] pairs")
    return SessionClock(float(time), float(timeout), tuple(map(tuple, seen)))
