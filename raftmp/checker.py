"""Linearizability checker for client histories of the key-value store.

A history is a JSON-lines file, one client operation per line::

    {"client": 17, "op": "put", "key": "x", "value": "1", "expected": null,
     "invoke": 12.345, "complete": 12.350, "outcome": "ok", "result": null}

The model is one register per key holding a ``str`` or ``None`` (absent):
``put`` sets it, ``delete`` clears it and returns whether it was set,
``cas(expected, new)`` swaps iff the value equals ``expected`` (``None`` means
"absent") and returns whether it swapped, ``get`` returns it.

Linearizability is compositional (Herlihy & Wing 1990, Thm. 1), so each key is
checked on its own with the Wing-Gong search as improved by Lowe (2017) and
implemented in Porcupine: walk a time-sorted doubly linked list of call/return
events, linearize any call that comes before the first pending return, and
memoize ``(set of linearized ops, register value)`` so that no configuration
is explored twice. The search is iterative (an explicit stack), so long
histories do not hit Python's recursion limit. Two refinements keep it near
linear on real histories: a read-only op (a matching get, a cas or delete
returning False) that is legal at a configuration is taken without branching
(moving it to the front never breaks a linearization), and unknown ops are
tried only where no ok op fits.

Outcomes: ``ok`` ops must take effect inside ``[invoke, complete]``;
``unknown`` ops (the client gave up) may take effect at any time after
``invoke`` or never, so their return is placed at +infinity and the search
succeeds as soon as every ``ok`` op is linearized; ``fail`` ops are dropped.
Events at the same instant count as concurrent (calls sort before returns).

The search is exponential in the worst case. ``max_states`` and
``time_limit`` bound it per key; a key that exceeds them is reported as
*gave up*: ``CheckResult.ok`` is False and the explanation says the key was
not verified. A gave-up key is never reported as passing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["BadHistory", "CheckResult", "Op", "check", "check_file", "check_outcomes",
           "load_history", "main"]

FIELDS = ("client", "op", "key", "value", "expected", "invoke", "complete", "outcome", "result")
OPS = ("get", "put", "delete", "cas")
OUTCOMES = ("ok", "unknown", "fail")
DEFAULT_MAX_STATES = 1_000_000


class BadHistory(ValueError):
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


@dataclass(frozen=True)
class CheckResult:
    """Verdict of :func:`check`.

    ``ok`` is True only if every key was shown linearizable. ``key`` is the first
    failing key (a non-linearizable one if any, else one where the search gave up).
    """

    ok: bool
    key: str | None
    explanation: str
    ops: int = 0
    keys: int = 0
    elapsed: float = 0.0
    states: int = 0  # configurations explored, all keys together
    failed_keys: list[str] = field(default_factory=list)
    gave_up_keys: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- loading


def _is_num(x: object) -> bool:
    # bool is an int subclass; a time of `true` is a bug in the writer, not a number.
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_line(n: int, text: str) -> Op:
    def bad(msg: str) -> BadHistory:
        return BadHistory(f"line {n}: {msg}")

    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"not valid JSON ({e.msg} at column {e.colno})") from None
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


def load_history(source: str | os.PathLike[str] | Iterable[str]) -> list[Op]:
    """Parse a history from a file path or an iterable of JSON lines.

    Blank lines are skipped. Raises :class:`BadHistory` naming the first bad line,
    and ``OSError`` if the file cannot be read.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8") as f:
            return load_history(list(f))
    ops = []
    for n, text in enumerate(source, 1):
        if text.strip():
            ops.append(_parse_line(n, text))
    return ops


# ---------------------------------------------------------------- the model

_GET, _PUT, _DELETE, _CAS = range(4)
_FORCED = 2  # stack frame mode, see _check_key


def _step(spec: tuple, state: str | None) -> tuple[bool, str | None]:
    """Apply one op to a register value: (is the recorded result possible?, new value)."""
    kind, value, expected, result, known = spec
    if kind == _PUT:
        return True, value
    if kind == _GET:
        return (not known or result == state), state
    if kind == _DELETE:
        return (not known or result == (state is not None)), None
    swapped = state == expected
    return (not known or result == swapped), (value if swapped else state)


# ---------------------------------------------------------------- the search


class _KeyVerdict(NamedTuple):
    verdict: str  # "ok" | "fail" | "gave up"
    states: int
    explanation: str


def _check_key(key: str, ops: list[Op], max_states: int, deadline: float) -> _KeyVerdict:
    """Wing-Gong/Lowe search over one key's ops (already without 'fail' ops)."""
    # An unknown get neither constrains nor changes anything: drop it up front.
    ops = [o for o in ops if not (o.outcome == "unknown" and o.op == "get")]
    n = len(ops)
    specs = [(OPS.index(o.op), o.value, o.expected, o.result, o.outcome == "ok") for o in ops]
    is_ok = [o.outcome == "ok" for o in ops]
    # Ops that, whenever their recorded result is possible, leave the value unchanged.
    # (A put of the current value does not qualify: elsewhere in the order it changes it.)
    read_only = [o.outcome == "ok" and (o.op == "get" or o.result is False
                                        or (o.op == "cas" and o.expected == o.value))
                 for o in ops]
    n_ok = sum(is_ok)
    if n_ok == 0:  # unknown ops alone can always be left out
        return _KeyVerdict("ok", 0, "")
    bits = [1 << i for i in range(n)]

    # Events (time, 0=call/1=return, op); calls first at equal times => concurrent.
    inf = math.inf
    events = sorted([(o.invoke, 0, i) for i, o in enumerate(ops)]
                    + [(o.complete if o.outcome == "ok" else inf, 1, i) for i, o in enumerate(ops)])
    m = len(events)
    head = m  # sentinel node; -1 means "no node"
    is_call = [ev[1] == 0 for ev in events]
    opid = [ev[2] for ev in events]
    pos = [[0, 0] for _ in range(n)]
    for p, (_, kind, i) in enumerate(events):
        pos[i][kind] = p
    match = [pos[i][1 - k] for (_, k, i) in events]
    nxt = list(range(1, m + 1)) + [0]
    nxt[m - 1] = -1
    prv = [p - 1 for p in range(m)] + [-1]
    prv[0] = head

    def lift(e: int) -> None:  # take a call entry and its return out of the list
        r = match[e]
        nxt[prv[e]] = nxt[e]
        prv[nxt[e]] = prv[e]  # a call always has a successor: its own return
        nxt[prv[r]] = nxt[r]
        if nxt[r] != -1:
            prv[nxt[r]] = prv[r]

    def unlift(e: int) -> None:  # exact inverse of lift, undone in reverse order
        r = match[e]
        nxt[prv[r]] = r
        if nxt[r] != -1:
            prv[nxt[r]] = r
        nxt[prv[e]] = e
        prv[nxt[e]] = e

    # Stack frames: (call entry, state before, ok count before, path before, mode).
    # Mode 0 or 1 is the pass that chose the entry (0 tries ok ops, 1 unknown ops, so
    # an unknown op is only placed where no ok op fits); the scan resumes there on
    # backtrack. Mode _FORCED marks a move that was the only one worth trying, so its
    # failure fails the configuration below it too. The path is a cons list
    # (op, parent) so the deepest prefix can be reported without copying.
    stack: list[tuple[int, str | None, bool, tuple | None, int]] = []
    cache: set[tuple[int, str | None]] = set()
    lin, state, done_ok, path = 0, None, 0, None
    best_lin, best_state, best_depth, best_path = 0, None, 0, None  # deepest point reached
    blocker = -1  # op whose return stopped the search at the deepest point
    entry, mode = -1, 0  # entry -1: just entered a new configuration
    steps = 0
    while done_ok < n_ok:
        steps += 1
        if steps & 0xFFF == 0 and time.monotonic() > deadline:
            return _KeyVerdict("gave up", len(cache),
                               f"key {key!r}: search gave up at the time limit after "
                               f"{len(cache)} states; this key was NOT verified")
        move, new_state, dead = -1, None, False
        if entry == -1:
            # Partial-order reduction: a minimal read-only op that is legal now (a get
            # that matches, a cas or delete returning False) can be moved to the front
            # of any linearization from here: everything that must precede it is
            # linearized already, and it changes the value neither here nor where it
            # was. So take it without branching; this stops concurrent reads from
            # multiplying the states.
            e = nxt[head]
            while e != -1 and is_call[e]:
                if read_only[opid[e]] and _step(specs[opid[e]], state)[0]:
                    break
                e = nxt[e]
            if e != -1 and is_call[e]:
                if (lin | bits[opid[e]], state) in cache:
                    dead = True  # explored before, and it failed
                else:
                    move, new_state, mode = e, state, _FORCED
            else:
                entry, mode = nxt[head], 0
        elif is_call[entry]:
            i = opid[entry]
            if is_ok[i] == (mode == 0):
                legal, ns = _step(specs[i], state)
                if legal and (lin | bits[i], ns) not in cache:
                    move, new_state = entry, ns
            if move == -1:
                entry = nxt[entry]
        elif mode == 0:
            entry, mode = nxt[head], 1  # no ok op fits before this return: try unknown ops
        else:
            # An ok op returns here and no linearized order could include it in time.
            if blocker == -1 and lin == best_lin:
                blocker = opid[entry]
            dead = True
        if move != -1:
            i = opid[move]
            stack.append((move, state, done_ok, path, mode))
            lin |= bits[i]
            state, done_ok, path = new_state, done_ok + is_ok[i], (i, path)
            cache.add((lin, state))
            if len(cache) > max_states:
                return _KeyVerdict("gave up", len(cache),
                                   f"key {key!r}: search gave up after {max_states} "
                                   f"states (max_states); this key was NOT verified")
            lift(move)
            if len(stack) > best_depth:
                best_lin, best_state, best_depth, best_path = lin, state, len(stack), path
                blocker = -1
            entry = -1
        elif dead:
            while True:
                if not stack:
                    return _KeyVerdict("fail", len(cache), _explain(
                        key, ops, specs, pos, best_lin, best_state, best_path, blocker,
                        len(cache)))
                entry, state, done_ok, path, mode = stack.pop()
                lin ^= bits[opid[entry]]
                unlift(entry)
                if mode != _FORCED:
                    break
            entry = nxt[entry]
    return _KeyVerdict("ok", len(cache), "")


# ---------------------------------------------------------------- reporting


def _show(v: object) -> str:
    return "absent" if v is None else repr(v)


def _describe(o: Op) -> str:
    args = {"get": "", "put": repr(o.value), "delete": "",
            "cas": f"{_show(o.expected)} -> {o.value!r}"}[o.op]
    res = "" if o.outcome != "ok" or o.op == "put" else \
        f" -> {_show(o.result) if o.op == 'get' else o.result}"
    end = "?" if o.outcome != "ok" or o.complete is None else f"{o.complete:.6f}"
    where = f"line {o.line}: " if o.line else ""
    return f"{where}client {o.client} {o.op}({args}){res} [{o.invoke:.6f}, {end}] {o.outcome}"


def _explain(key: str, ops: list[Op], specs: list[tuple], pos: list[list[int]], best_lin: int,
             best_state: str | None, best_path: tuple | None, blocker: int, states: int) -> str:
    """Describe where the search got stuck: the deepest linearizable prefix it found,
    the op whose return it could not get past, and why each pending op could not go next."""
    depth = bin(best_lin).count("1")
    lines = [f"key {key!r} is not linearizable ({len(ops)} ops on this key, {states} states "
             f"searched: every order consistent with real time was tried)."]
    if best_path is not None:
        lines.append(f"The longest valid prefix orders {depth} of them and leaves the value "
                     f"{_show(best_state)}; it ends with")
        # Show the prefix back to (and including) the last op that changed the value.
        tail, node = [], best_path
        while node is not None and len(tail) < 5:
            tail.append(node[0])
            node = node[1]
            if ops[tail[-1]].op != "get":
                break
        lines.extend(f"    {_describe(ops[i])}" for i in reversed(tail))
    else:
        lines.append(f"No op can even go first: the value starts {_show(best_state)}.")
    if blocker == -1:  # cannot happen (see _check_key); keep the report anyway
        return "\n".join(lines)
    pending = [i for i in range(len(ops))
               if not best_lin >> i & 1 and pos[i][0] < pos[blocker][1]]
    stuck = ops[blocker]
    lines.append(f"Then this op must take effect before it returns, but cannot:\n"
                 f"    {_describe(stuck)}")
    if stuck.op == "get" and stuck.result is not None:
        # A read of a value nobody wrote in time is the most common report: show the
        # writes of that value nearest in time, e.g. a put the history dates too late.
        writers = sorted((abs(o.invoke - stuck.invoke), i) for i, o in enumerate(ops)
                         if o.op in ("put", "cas") and o.value == stuck.result
                         and o.result is not False)
        if not writers:
            lines.append(f"No op on this key ever writes {stuck.result!r}.")
        else:
            lines.append(f"Writes of {stuck.result!r} nearest in time:")
            near = sorted((i for _, i in writers[:3]), key=lambda i: ops[i].invoke)
            lines.extend(f"    {_describe(ops[i])}" for i in near)
    lines.append("Ops that could go next at that point, and why none works:")
    for i in pending[:12]:
        legal, after = _step(specs[i], best_state)
        o = ops[i]
        if not legal:
            would = {"get": _show(best_state), "delete": best_state is not None,
                     "cas": best_state == o.expected}[o.op]
            why = f"would return {would}"
        else:
            why = f"fits (value becomes {_show(after)}), but nothing works after it"
        lines.append(f"    {_describe(o)}  -- {why}")
    if len(pending) > 12:
        lines.append(f"    ... and {len(pending) - 12} more")
    return "\n".join(lines)


def check(ops: Iterable[Op], *, max_states: int = DEFAULT_MAX_STATES,
          time_limit: float | None = None) -> CheckResult:
    """Check a history for linearizability, key by key.

    ``max_states`` bounds the configurations explored per key and ``time_limit``
    (seconds) the time per key; a key that hits either is reported in
    ``gave_up_keys`` and makes ``ok`` False (unverified, not a pass).
    """
    t0 = time.monotonic()
    by_key: dict[str, list[Op]] = {}
    count = 0
    for o in ops:
        count += 1
        if o.outcome != "fail":
            by_key.setdefault(o.key, []).append(o)
    failed, gave_up, notes, states = [], [], {}, 0
    for key, key_ops in by_key.items():
        deadline = math.inf if time_limit is None else time.monotonic() + time_limit
        v = _check_key(key, key_ops, max_states, deadline)
        states += v.states
        if v.verdict != "ok":
            (failed if v.verdict == "fail" else gave_up).append(key)
            notes[key] = v.explanation
    elapsed = time.monotonic() - t0
    bad_key = failed[0] if failed else gave_up[0] if gave_up else None
    explanation = notes.get(bad_key, "")
    if len(failed) > 1:
        names = ", ".join(map(repr, failed[:10])) + (", ..." if len(failed) > 10 else "")
        explanation += f"\n({len(failed)} keys are not linearizable: {names})"
    if gave_up and bad_key != gave_up[0]:
        explanation += f"\n(the search also gave up on {len(gave_up)} key(s))"
    return CheckResult(bad_key is None, bad_key, explanation, count, len(by_key), elapsed,
                       states, failed, gave_up)


def check_outcomes(outcomes: Iterable[Any], **kwargs: Any) -> CheckResult:
    """:func:`check` a client's outcomes (``raftmp.core.session.Outcome``) directly."""
    return check([Op(**o.record()) for o in outcomes], **kwargs)


def check_file(path: str | os.PathLike[str], **kwargs: object) -> CheckResult:
    """Load a history file and :func:`check` it (keyword arguments go to ``check``)."""
    return check(load_history(path), **kwargs)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    """CLI body of ``python -m raftmp check``.

    Exit status: 0 linearizable, 1 not linearizable *or search gave up* (the verdict
    line says which), 2 bad input or unreadable file. Usage errors and ``--help`` raise
    ``SystemExit`` (2 and 0) from argparse, as usual.
    """
    parser = argparse.ArgumentParser(
        prog="python -m raftmp check",
        description="Check a recorded client history (JSON lines) for linearizability.")
    parser.add_argument("history", help="history file, one operation per line")
    parser.add_argument("--max-states", type=int, default=DEFAULT_MAX_STATES,
                        help="give up on a key after this many search states "
                             "(default %(default)s)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="give up on a key after this many seconds (default: none)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        ops = load_history(args.history)
    except BadHistory as e:
        print(f"error: {args.history}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot read {args.history}: {e.strerror or e}", file=sys.stderr)
        return 2
    res = check(ops, max_states=args.max_states, time_limit=args.time_limit)
    took = time.monotonic() - t0
    facts = f"{res.ops} ops, {res.keys} keys, {res.states} states, {took:.2f} s"
    if res.ok:
        print(f"linearizable: {facts}")
        return 0
    if res.failed_keys:
        print(f"NOT linearizable ({len(res.failed_keys)} key(s)): {facts}")
    else:
        print(f"UNKNOWN: search gave up on {len(res.gave_up_keys)} key(s), "
              f"nothing proven wrong: {facts}")
    print(res.explanation)
    return 1
