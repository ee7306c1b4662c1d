"""The history format: one client operation per line, as JSON.

    {"client": 17, "op": "put", "key": "x", "value": "1", "expected": null,
     "invoke": 12.345, "complete": 12.350, "outcome": "ok", "result": null}

``op`` is get, put, delete or cas (``expected`` is cas's old value, ``None``
meaning absent); ``outcome`` is ok, unknown (the client gave up: ``complete``
may be null) or fail; ``result`` is what an ok op returned. Times are seconds
on one clock. :mod:`raftmp.checker` checks such a history.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import NamedTuple

from .core.errors import RaftmpError

__all__ = ["FIELDS", "OPS", "OUTCOMES", "BadHistory", "Op", "load_history"]

FIELDS = ("client", "op", "key", "value", "expected", "invoke", "complete", "outcome", "result")
OPS = ("get", "put", "delete", "cas")
OUTCOMES = ("ok", "unknown", "fail")


class BadHistory(RaftmpError, ValueError):
    """A history line is malformed; the message names the 1-based line number."""


class Op(NamedTuple):
    """One client operation as recorded in a history (see the module docstring)."""

    client: int
    op: str
    key: str
    value: str | None
    expected: str | None
    invoke: float
    complete: float | None
    outcome: str
    result: object = None
    line: int = 0  # 1-based line in the history file; 0 when built in code


def _is_num(x: object) -> bool:
    # bool is an int subclass; a time of `true` is a bug in the writer, not a number.
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_line(n: int, text: str) -> Op:
    def bad(msg: str) -> BadHistory:
        return BadHistory(f"line {n}: {msg}")

    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        at = "" if e.msg.endswith(" at") else " at"   # "Unterminated string starting at"
        raise bad(f"not valid JSON ({e.msg}{at} column {e.colno})") from None
    if not isinstance(rec, dict):
        raise bad(f"expected a JSON object, got {type(rec).__name__}")
    missing = [f for f in FIELDS if f not in rec]
    if missing:
        raise bad(f"missing field(s): {', '.join(missing)}")
    client, op, key, value, expected, invoke, complete, outcome, result = (rec[f] for f in FIELDS)
    if type(client) is not int:
        raise bad(f"'client' must be an integer, got {client!r}")
    if op not in OPS:
        raise bad(f"'op' must be one of {', '.join(OPS)}, got {op!r}")
    if not isinstance(key, str):
        raise bad(f"'key' must be a string, got {key!r}")
    if op in ("put", "cas") and not isinstance(value, str):
        raise bad(f"'value' of a {op} must be a string, got {value!r}")
    if value is not None and not isinstance(value, str):
        raise bad(f"'value' must be a string or null, got {value!r}")
    if expected is not None and not isinstance(expected, str):
        raise bad(f"'expected' must be a string or null, got {expected!r}")
    if outcome not in OUTCOMES:
        raise bad(f"'outcome' must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if not _is_num(invoke):
        raise bad(f"'invoke' must be a finite number, got {invoke!r}")
    if complete is None:
        if outcome == "ok":
            raise bad("'complete' is null but outcome is 'ok'")
    elif not _is_num(complete):
        raise bad(f"'complete' must be a finite number or null, got {complete!r}")
    elif complete < invoke:
        raise bad(f"'complete' ({complete}) is before 'invoke' ({invoke})")
    if outcome == "ok":
        want = {"get": (str, type(None)), "put": (type(None),), "delete": (bool,), "cas": (bool,)}
        if not isinstance(result, want[op]):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in want[op])
            raise bad(f"'result' of an ok {op} must be {names}, got {result!r}")
    return Op(client, op, key, value, expected if op == "cas" else None,
              float(invoke), None if complete is None else float(complete), outcome, result, n)


def _decode(n: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadHistory(f"line {n}: not UTF-8 text (byte {line[e.start]:#04x} at column "
                         f"{e.start + 1})") from None


def load_history(source: str | os.PathLike[str] | Iterable[str]) -> list[Op]:
    """Parse a history from a file path or an iterable of JSON lines.

    Blank lines are skipped. Raises :class:`BadHistory` naming the first bad line
    (a line that is not UTF-8 too), and ``OSError`` if the file cannot be read.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return load_history(_decode(n, line) for n, line in enumerate(f, 1))
    ops = []
    for n, text in enumerate(source, 1):
        if text.strip():
            ops.append(_parse_line(n, text))
    return ops
