"""Linearizability checker for client histories of the key-value store.

A history is a JSON-lines file, one client operation per line (the format
and its loader are in :mod:`raftmp.history`)::

    {"client": 17, "op": "put", "key": "x", "value": "1", "expected": null,
     "invoke": 12.345, "complete": 12.350, "outcome": "ok", "result": null}

The model is one register per key holding a ``str`` or ``None`` (absent):
``put`` sets it, ``delete`` clears it and returns whether it was set,
``cas(expected, new)`` swaps iff the value equals ``expected`` (``None`` means
"absent") and returns whether it swapped, ``get`` returns it.

Linearizability is compositional (Herlihy & Wing 1990, Thm. 1), so each key is
checked on its own, by a depth-first search for a linearization in the manner of
Wing & Gong (1993) and Lowe (2017), with the reductions described (and proved
exact) above ``_check_key``: merged unread values, dead ends remembered with
dominance, reads taken at once, interchangeable ops, lost values cut at once,
and the earliest return tried first. Memory grows with the ops that overlap in
time and with the backtracking, not with the length of the history.

Outcomes: ``ok`` ops must take effect inside ``[invoke, complete]``;
``unknown`` ops (the client gave up) may take effect at any time after
``invoke`` or never, so the search succeeds as soon as every ``ok`` op is
linearized; ``fail`` ops are dropped. Events at the same instant count as
concurrent.

The search is exponential in the worst case. ``max_states`` (dead ends: states
searched to the end without success) and ``time_limit`` bound it per key; a key
that exceeds them is *undecided*: neither shown linearizable nor shown not to be.
The verdict is ``linearizable``, ``not linearizable`` (with a counterexample) or
``undecided``; ``python -m raftmp check`` exits 0, 1 or 3 for them, 2 on bad input.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .cli import Parser, integer, number
from .history import OPS, BadHistory, Op, load_history

__all__ = ["EXIT_STATUS", "LINEARIZABLE", "NOT_LINEARIZABLE", "SHORT_VERDICT", "UNDECIDED",
           "BadHistory", "CheckResult", "Op", "check", "check_file", "check_outcomes",
           "load_history", "main"]

DEFAULT_MAX_STATES = 1_000_000
LINEARIZABLE, NOT_LINEARIZABLE, UNDECIDED = "linearizable", "not linearizable", "undecided"
EXIT_STATUS = {LINEARIZABLE: 0, NOT_LINEARIZABLE: 1, UNDECIDED: 3}  # and 2: bad input
SHORT_VERDICT = {LINEARIZABLE: "yes", NOT_LINEARIZABLE: "NO", UNDECIDED: "undecided"}
BAD_INPUT = 2


@dataclass(frozen=True)
class CheckResult:
    """Verdict of :func:`check`: ``verdict`` is LINEARIZABLE, NOT_LINEARIZABLE or UNDECIDED.

    ``ok`` is True only if every key was shown linearizable. ``key`` is the first
    bad key (a non-linearizable one if any, else one where the search gave up).
    """

    verdict: str
    key: str | None
    explanation: str
    ops: int = 0
    keys: int = 0
    elapsed: float = 0.0
    states: int = 0  # configurations explored, all keys together
    dead_ends: int = 0  # of which searched to the end without success
    failed_keys: list[str] = field(default_factory=list)
    gave_up_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == LINEARIZABLE

    @property
    def summary(self) -> str:
        """One line for reports: 'yes', 'NO: ...' or 'undecided: ...' (never 'NO' for a
        search that gave up)."""
        if self.ok:
            return SHORT_VERDICT[self.verdict]
        first = self.explanation.splitlines()[0] if self.explanation else ""
        return f"{SHORT_VERDICT[self.verdict]}: {first}"


# ---------------------------------------------------------------- the model

_GET, _PUT, _DELETE, _CAS = range(4)
_UNREAD = object()  # the abstract value of every written value no op observes (see below)


def _step(spec: tuple, state: object) -> tuple[bool, object]:
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


def _spec(o: Op, seen: set | None = None) -> tuple:
    """An op as the model sees it. With ``seen`` (the values some op observes), a
    written value nobody observes becomes the abstract ``_UNREAD``."""
    value = o.value
    if seen is not None and value is not None and value not in seen:
        value = _UNREAD
    return OPS.index(o.op), value, o.expected, o.result, o.outcome == "ok"


# ---------------------------------------------------------------- the search
#
# A configuration is (the ok ops linearized, the unknown ops linearized, the value).
# From it, an op may go next iff no op still to be linearized returned before it was
# invoked (Herlihy & Wing 1990 §3); unknown ops have no return, ok ops must all go.
# The search is depth-first from the empty configuration, iterative (long histories
# would overflow Python's recursion limit); each rule below drops a move or a
# configuration only when another one that is, or was, explored succeeds whenever it
# does. Every rule maps a configuration with a completion of length L to an explored
# one with a completion no longer than L (shorter for the rules that drop a move), so
# by induction on L the search finds a linearization iff one exists: it is exact.
#
# (A) Abstraction. Values that no ok get returns and no cas expects are merged into
#     one abstract value. Every op treats them alike (a get never matches them, a cas
#     never swaps on them, each is "present" to a delete), so by induction over any
#     order each op's result is legal on the real register iff it is on the merged
#     one. This is what makes timed-out writes of values nobody reads cheap: they all
#     write the same abstract value, so (D) below keeps one of them in play.
#     (Leaving such a write out is NOT exact: a delete that returned True, or a cas
#     that returned False, may need the key to hold some value, any value.)
#
# (B) Dead ends with dominance. A configuration whose subtree was searched to the end
#     without success is remembered by (ok ops, value) with its set of unknown ops.
#     Another with the same ok ops and value and a superset of those unknown ops
#     cannot succeed either: unknown ops never have to be linearized and have no
#     return that could block a call, so each of its completions is also one of the
#     dead end. Only configurations proven dead are remembered, so memory grows with
#     the backtracking, not with the history.
#
# (C) Reads at once (partial-order reduction). An ok op that leaves the value as it
#     is (a get, a cas or delete that returned False, a cas of a value to itself),
#     whose result fits the current value and that may go next, is taken as the only
#     move: in any completion, moving it to the front keeps real time (everything
#     that must precede it is linearized already) and changes no value. If it fails,
#     the configuration fails.
#
# (D) Interchangeable ops. Ops with the same effect (same kind and result and, after
#     (A), same value and expected value) that are both unknown, or both ok with the
#     same return time (replies taken in one batch), are tried in invocation order
#     only: the earliest not yet linearized. In any completion, swapping two of them
#     gives a completion (same effect, so every result stays legal), and it keeps
#     real time: the one invoked earlier may go wherever the later one may, and the
#     later one moves to a later place, which its return (the same) allows.
#     An unknown op that would leave the value as it is is never tried: the
#     configuration it leads to is dominated (as in (B)) by the current one.
#
# (F) Lost values. A move that changes the value away from v, where some ok op still
#     to go needs v (a get that returned v, a cas from v that succeeded) and every op
#     that could write v again is linearized, leads to a configuration with no
#     completion: that op can never fit. It is dropped at once, instead of when that
#     op's return comes up after every order of the ops in between was tried.
#
# (E) Order. First a read that fits (C); else the ok op that returns first (f, or the
#     first of its class by (D)); then the moves after which f fits (a get waits for
#     its put); then the other ok ops by return time, then unknown ops. Anything that
#     returned earlier is linearized already, so this is the order real executions
#     mostly take (trying the earliest-invoked op first gets stuck where many ops
#     start together and finish apart). Order changes speed, not the verdict.
#
# Memory. Ok ops are numbered by return time. Every ok op before the first one not
# linearized (f) is linearized, and a linearized op after f was invoked before f
# returned (f was pending when it went). So the ok set is stored as f and a bit mask
# of the ops after f that overlap f in time: a window, never one bit per op of the key.


class _KeyVerdict(NamedTuple):
    verdict: str
    states: int  # configurations entered
    dead_ends: int  # configurations searched to the end without success
    explanation: str


def _check_key(key: str, ops: list[Op], max_states: int, deadline: float) -> _KeyVerdict:
    """Search one key's ops (already without 'fail' ops); see the comment above."""
    ops = [o for o in ops if not (o.outcome == "unknown" and o.op == "get")]  # no effect
    # By return time; at equal times (replies taken in one batch) in the history's order,
    # which is the order the client saw them in.
    ok = [o for _, o in sorted(((o.complete, i), o) for i, o in enumerate(ops)
                               if o.outcome == "ok")]
    n = len(ok)
    if n == 0:  # unknown ops alone can always be left out
        return _KeyVerdict(LINEARIZABLE, 0, 0, "")
    seen = {o.result for o in ok if o.op == "get"} | {o.expected for o in ops if o.op == "cas"}
    specs = [_spec(o, seen) for o in ok]
    call = [o.invoke for o in ok]
    ret = [o.complete for o in ok]
    read_only = [o.op == "get" or o.result is False or (o.op == "cas" and o.expected == o.value)
                 for o in ok]
    # (D) for ok ops: same effect and same return time, tried in invocation order;
    # prior[j] is the op of j's class that must be linearized before j is tried.
    # (The first try of a configuration, the head of f's class, may come up again
    # among the alternatives; its subtree is then a dead end already, (B).)
    prior = [-1] * n
    classes: dict[tuple, list[int]] = {}
    for j in range(n):
        classes.setdefault((ret[j], specs[j]), []).append(j)
    for members in classes.values():
        members.sort(key=call.__getitem__)
        for a, b in itertools.pairwise(members):
            prior[b] = a
    # last[j]: the highest-numbered op invoked by the time op j returns (the window's end).
    by_call = sorted(range(n), key=call.__getitem__)
    calls = [call[j] for j in by_call]
    reach = list(itertools.accumulate(by_call, max))
    last = [reach[bisect.bisect_right(calls, ret[j]) - 1] for j in range(n)]
    # Unknown ops in groups of the same effect (D), each group by invocation; a set of
    # placed unknown ops is a bit mask over this order (a prefix of each group).
    groups: dict[tuple, list[Op]] = {}
    for o in sorted((o for o in ops if o.outcome == "unknown"), key=lambda o: o.invoke):
        groups.setdefault(_spec(o, seen)[:3], []).append(o)
    order = sorted(groups.items(), key=lambda item: item[1][0].invoke)
    g_spec = [(*s, None, False) for s, _ in order]
    g_first = [members[0].invoke for _, members in order]
    g_size = [len(members) for _, members in order]
    g_start = list(itertools.accumulate(g_size, initial=0))
    unknown = [o for _, members in order for o in members]
    u_call = [o.invoke for o in unknown]

    # (F): for each value some ok op needs to find (a get of it, a cas from it that
    # succeeded), those ops and the ops that may write it.
    needs: dict[object, list[int]] = {}
    for j, o in enumerate(ok):
        v = o.result if o.op == "get" else o.expected if o.op == "cas" and o.result else None
        if v is not None:
            needs.setdefault(v, []).append(j)
    makers: dict[object, list[int]] = {v: [] for v in needs}
    for j, o in itertools.chain(enumerate(ok), enumerate(unknown, n)):
        if o.op in ("put", "cas") and o.result is not False and o.value in makers:
            makers[o.value].append(j)

    def done(j: int, f: int, mask: int, placed: int) -> bool:
        """Is op j (ok below n, unknown from n) linearized in this configuration?"""
        return (placed >> (j - n) & 1 if j >= n else j < f or mask >> (j - f) & 1) == 1

    def lost(v: object, f: int, mask: int, placed: int) -> bool:
        """(F): is some op that needs value v still to go, with no op left to write v?"""
        return (all(done(j, f, mask, placed) for j in makers[v])
                and not all(done(j, f, mask, placed) for j in needs[v]))

    # The least invocation time in each block of 64 and of 4096 ops, so that a scan of
    # the window skips the stretches invoked after f returns (the window reaches as far
    # as the op invoked last by then, which a long-running op pushes far ahead).
    low = [min(call[b:b + 64]) for b in range(0, n, 64)]
    lower = [min(low[b:b + 64]) for b in range(0, len(low), 64)]

    def in_reach(f: int, mask: int, start: int) -> Iterator[int]:
        """Ok ops from start on that may go next (invoked by the time op f returns), not
        yet linearized, and first of their class (D)."""
        r, end = ret[f], last[f]
        j, m = start, mask >> (start - f)
        while j <= end:
            if not j & 4095 and lower[j >> 12] > r:
                j, m = j + 4096, m >> 4096
            elif not j & 63 and low[j >> 6] > r:
                j, m = j + 64, m >> 64
            else:
                if not m & 1 and call[j] <= r:
                    p = prior[j]
                    if p < f or mask >> (p - f) & 1:
                        yield j
                j, m = j + 1, m >> 1

    def first_read(f: int, mask: int, state: object) -> tuple | None:
        """(C): a read-only op that may go next and fits, as a forced move, or None."""
        for j in in_reach(f, mask, f):
            if read_only[j] and _step(specs[j], state)[0]:
                return j, state, True
        return None

    def alternatives(f: int, mask: int, placed: int, state: object) -> Iterator[tuple]:
        """Moves after the first try (no read fits; op f was tried or does not fit)."""
        r = ret[f]
        moves = []
        for j in in_reach(f, mask, f + 1):
            legal, after = _step(specs[j], state)
            if legal:
                moves.append((j, after, False))
        for g in range(bisect.bisect_right(g_first, r)):  # (D)
            s = g_start[g]
            x = placed >> s
            c = (x ^ (x + 1)).bit_length() - 1  # members placed: the trailing ones of x
            if c < g_size[g] and u_call[s + c] <= r:
                after = _step(g_spec[g], state)[1]
                if after != state:
                    moves.append((n + s + c, after, False))
        # (E) The moves after which op f fits go first (a get waits for its put), then
        # the others, ok ops by return time before unknown ops.
        yield from sorted(moves, key=lambda mv: not _step(specs[f], mv[1])[0])

    def furthest() -> str:
        return (f"\nThe search ordered at most {best_depth - 1} of {len(ops)} ops; the first "
                f"op it could not get past:\n    {_describe(ok[best[0]])}")

    # A frame: [f, mask, placed unknown ops, value, path, alternatives, forced]. The
    # alternatives are None before the first try, 0 after it (made when needed);
    # forced marks a frame whose current move was its only one (C). The path is a
    # cons list (op, parent), so the deepest prefix is kept without copying.
    frames: list[list] = [[0, 0, 0, None, None, None, False]]
    dead: dict[tuple, list[int]] = {}
    states = dead_ends = steps = 0
    best_depth, best, starved = 1, frames[0][:5], []
    while True:
        steps += 1
        if steps & 0xFFF == 0 and time.monotonic() > deadline:
            return _KeyVerdict(UNDECIDED, states, dead_ends,
                               f"key {key!r}: search gave up at the time limit after {states} "
                               f"states ({dead_ends} dead ends); this key was NOT verified"
                               + furthest())
        fr = frames[-1]
        f, mask, placed, state, path, alts, _ = fr
        move = None
        if alts is None:
            if f == n:
                return _KeyVerdict(LINEARIZABLE, states, dead_ends, "")
            fr[5] = 0
            move = first_read(f, mask, state)  # (C)
            if move is None:
                legal, after = _step(specs[f], state)
                if legal:  # (E): the op that returns first, or the first of its class (D)
                    j, p = f, prior[f]
                    while p > f and not mask >> (p - f) & 1:
                        j, p = p, prior[p]
                    move = (j, after, False)
        if move is None:
            if alts == 0 or alts is None:
                alts = fr[5] = alternatives(f, mask, placed, state)
            move = next(alts, None)
        child = None
        if move is not None:
            j, after, forced = move
            if j < n:
                b = j - f
                m = mask | 1 << b
                if b == 0:  # the first pending op went: move the window up
                    t = (m ^ (m + 1)).bit_length() - 1
                    child = [f + t, m >> t, placed, after]
                else:
                    child = [f, m, placed, after]
            else:
                child = [f, mask, placed | 1 << (j - n), after]
            if after != state and state in needs and lost(state, *child[:3]):
                if len(frames) == best_depth:  # for the report: what the deepest point lost
                    starved = [ok[j] for j in needs[state] if not done(j, *child[:3])]
                child = None  # (F)
            for seen_placed in dead.get((child[0], child[1], after), ()) if child else ():
                if (seen_placed & ~child[2]) == 0:  # (B)
                    child = None
                    break
            if child is None and not forced:
                continue
        if child is not None:
            fr[6] = forced
            child += [(ok[j] if j < n else unknown[j - n], path), None, False]
            frames.append(child)
            states += 1
            if len(frames) > best_depth:
                best_depth, best, starved = len(frames), child[:5], []
            continue
        # This configuration is a dead end; so is each below it whose move was forced.
        while True:
            fr = frames.pop()
            dead.setdefault((fr[0], fr[1], fr[3]), []).append(fr[2])
            dead_ends += 1
            if not frames:
                return _KeyVerdict(NOT_LINEARIZABLE, states, dead_ends, _explain(
                    key, ops, ok, unknown, best, best_depth - 1, states, call, last,
                    g_start, g_size, starved))
            if dead_ends >= max_states:
                return _KeyVerdict(UNDECIDED, states, dead_ends,
                                   f"key {key!r}: search gave up after {dead_ends} dead ends "
                                   f"(max_states {max_states}), {states} states; this key was "
                                   f"NOT verified" + furthest())
            if not frames[-1][6]:
                break


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


def _explain(key: str, ops: list[Op], ok: list[Op], unknown: list[Op], best: list,
             depth: int, states: int, call: list[float], last: list[int],
             g_start: list[int], g_size: list[int], starved: list[Op]) -> str:
    """Describe where the search got stuck: the deepest linearizable prefix it found,
    the op whose return it could not get past (the first pending one, f), and why each
    op that could go next does not work."""
    f, mask, placed, _, path = best
    prefix = []
    while path is not None:
        prefix.append(path[0])
        path = path[1]
    prefix.reverse()
    state = None  # the real value, replayed (the search's may be abstract)
    for o in prefix:
        state = _step(_spec(o), state)[1]
    lines = [f"key {key!r} is not linearizable ({len(ops)} ops on this key, {states} states "
             f"searched: every order consistent with real time was tried)."]
    if prefix:
        lines.append(f"The longest valid prefix orders {depth} of them and leaves the value "
                     f"{_show(state)}; it ends with")
        # Show the prefix back to (and including) the last op that changed the value.
        tail = []
        for o in reversed(prefix[-5:]):
            tail.append(o)
            if o.op != "get":
                break
        lines.extend(f"    {_describe(o)}" for o in reversed(tail))
    else:
        lines.append(f"No op can even go first: the value starts {_show(state)}.")
    stuck = ok[f]
    pending = [ok[j] for j in range(f, last[f] + 1)
               if not mask >> (j - f) & 1 and call[j] <= stuck.complete]
    pending += [o for s, size in zip(g_start, g_size, strict=False)
                for i, o in enumerate(unknown[s:s + size])
                if not placed >> (s + i) & 1 and o.invoke <= stuck.complete]
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
    for o in pending[:12]:
        legal, after = _step(_spec(o), state)
        if not legal:
            would = {"get": _show(state), "delete": state is not None,
                     "cas": state == o.expected}[o.op]
            why = f"would return {would}"
        else:
            why = f"fits (value becomes {_show(after)}), but nothing works after it"
        lines.append(f"    {_describe(o)}  -- {why}")
    if len(pending) > 12:
        lines.append(f"    ... and {len(pending) - 12} more")
    if starved:
        lines.append("Every write that fits changes the value, which these ops still need "
                     "and no op left can write again:")
        lines.extend(f"    {_describe(o)}" for o in starved[:6])
    return "\n".join(lines)


def check(ops: Iterable[Op], *, max_states: int = DEFAULT_MAX_STATES,
          time_limit: float | None = None) -> CheckResult:
    """Check a history for linearizability, key by key.

    ``max_states`` bounds the dead ends per key and ``time_limit`` (seconds) the
    time per key; a key that hits either is reported in ``gave_up_keys`` and, unless
    another key is not linearizable, makes the verdict UNDECIDED (not a pass).
    """
    t0 = time.monotonic()
    by_key: dict[str, list[Op]] = {}
    count = 0
    for o in ops:
        count += 1
        if o.outcome != "fail":
            by_key.setdefault(o.key, []).append(o)
    failed, gave_up, notes, states, dead_ends = [], [], {}, 0, 0
    for key, key_ops in by_key.items():
        deadline = math.inf if time_limit is None else time.monotonic() + time_limit
        v = _check_key(key, key_ops, max_states, deadline)
        states += v.states
        dead_ends += v.dead_ends
        if v.verdict != LINEARIZABLE:
            (failed if v.verdict == NOT_LINEARIZABLE else gave_up).append(key)
            notes[key] = v.explanation
    elapsed = time.monotonic() - t0
    bad_key = failed[0] if failed else gave_up[0] if gave_up else None
    explanation = notes.get(bad_key, "")
    if len(failed) > 1:
        names = ", ".join(map(repr, failed[:10])) + (", ..." if len(failed) > 10 else "")
        explanation += f"\n({len(failed)} keys are not linearizable: {names})"
    if gave_up and bad_key != gave_up[0]:
        explanation += f"\n(the search also gave up on {len(gave_up)} key(s))"
    verdict = NOT_LINEARIZABLE if failed else UNDECIDED if gave_up else LINEARIZABLE
    return CheckResult(verdict, bad_key, explanation, count, len(by_key), elapsed, states,
                       dead_ends, failed, gave_up)


def check_outcomes(outcomes: Iterable[Any], **kwargs: Any) -> CheckResult:
    """:func:`check` a client's outcomes (``raftmp.core.session.Outcome``) directly."""
    return check([Op(**o.record()) for o in outcomes], **kwargs)


def check_file(path: str | os.PathLike[str], **kwargs: object) -> CheckResult:
    """Load a history file and :func:`check` it (keyword arguments go to ``check``)."""
    return check(load_history(path), **kwargs)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    """CLI body of ``python -m raftmp check``.

    Exit status: 0 linearizable, 1 not linearizable (the counterexample is printed),
    2 bad input or unreadable file, 3 undecided (the search gave up; the budget it
    used is printed). Usage errors and ``--help`` raise ``SystemExit`` (2 and 0)
    from argparse, as usual.
    """
    parser = Parser(
        prog="python -m raftmp check",
        description="Check a recorded client history (JSON lines) for linearizability. "
                    "Exit status: 0 linearizable, 1 not linearizable, 2 bad input, "
                    "3 undecided (the search gave up).")
    parser.add_argument("history", help="history file, one operation per line")
    parser.add_argument("--max-states", type=integer(0), default=DEFAULT_MAX_STATES,
                        help="give up on a key after this many dead ends (states searched "
                             "to the end without success; default %(default)s)")
    parser.add_argument("--time-limit", type=number(0, above=True), default=None,
                        help="give up on a key after this many seconds, > 0 (default: none)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        ops = load_history(args.history)
    except BadHistory as e:
        print(f"error: {args.history}: {e}", file=sys.stderr)
        return BAD_INPUT
    except OSError as e:
        print(f"error: cannot read {args.history}: {e.strerror or e}", file=sys.stderr)
        return BAD_INPUT
    res = check(ops, max_states=args.max_states, time_limit=args.time_limit)
    took = time.monotonic() - t0
    facts = (f"{res.ops} ops, {res.keys} keys, {res.states} states "
             f"({res.dead_ends} dead ends), {took:.2f} s")
    if res.verdict == LINEARIZABLE:
        print(f"linearizable: {facts}")
    elif res.verdict == NOT_LINEARIZABLE:
        print(f"NOT linearizable ({len(res.failed_keys)} key(s)): {facts}")
    else:
        limit = "none" if args.time_limit is None else f"{args.time_limit:g} s"
        print(f"UNDECIDED: the search gave up on {len(res.gave_up_keys)} key(s), nothing "
              f"proven wrong (budget: --max-states {args.max_states}, --time-limit {limit}): "
              f"{facts}")
    if res.explanation:
        print(res.explanation)
    return EXIT_STATUS[res.verdict]
