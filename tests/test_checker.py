"""Tests for raftmp.checker: a brute-force oracle on tiny histories, the classic
non-linearizable anomalies, unknown outcomes, bad input and the CLI."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftmp.checker import (
    BadHistory,
    Op,
    check,
    check_file,
    load_history,
    main,
)
from raftmp.core.errors import RaftmpError

# ---------------------------------------------------------------- helpers


def op(client: int, kind: str, key: str, invoke: float, complete: float | None,
       result: object = None, value: str | None = None, expected: str | None = None,
       outcome: str = "ok") -> Op:
    return Op(client, kind, key, value, expected, invoke, complete, outcome, result)


def apply(kind: str, value: str | None, expected: str | None,
          state: str | None) -> tuple[object, str | None]:
    """The register model, written independently of the checker: (result, new state)."""
    if kind == "get":
        return state, state
    if kind == "put":
        return None, value
    if kind == "delete":
        return state is not None, None
    if state == expected:
        return True, value
    return False, state


def brute_force_linearizable(ops: list[Op]) -> bool:
    """Oracle: try every subset of unknown ops and every total order of the chosen ops
    that respects real time (a before b if a returned before b was invoked)."""
    ops = [o for o in ops if o.outcome != "fail"]
    ok = [o for o in ops if o.outcome == "ok"]
    unknown = [o for o in ops if o.outcome == "unknown"]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            for order in itertools.permutations(ok + list(extra)):
                if any(b.outcome == "ok" and b.complete < a.invoke
                       for x, a in enumerate(order) for b in order[x + 1:]):
                    continue  # b returned before a was invoked, yet a is placed first
                state: dict[str, str | None] = {}
                for o in order:
                    res, state[o.key] = apply(o.op, o.value, o.expected, state.get(o.key))
                    if o.outcome == "ok" and res != o.result:
                        break
                else:
                    return True
    return False


VALUES = ["a", "b"]


@st.composite
def small_histories(draw: st.DrawFn) -> list[Op]:
    """A random concurrent execution on a real register (linearizable by construction),
    then maybe a few random mutations of results and times (which may break it)."""
    keys = ["x", "y"][: draw(st.integers(1, 2))]
    n = draw(st.integers(1, 6))
    planned = []  # (linearization point or None, index, Op without result)
    for i in range(n):
        kind = draw(st.sampled_from(["get", "put", "delete", "cas"]))
        invoke = float(draw(st.integers(0, 8)))
        complete = invoke + draw(st.integers(0, 4))
        outcome = draw(st.sampled_from(["ok"] * 4 + ["unknown"] * 3 + ["fail"]))
        value = draw(st.sampled_from(VALUES)) if kind in ("put", "cas") else None
        expected = draw(st.sampled_from([None, *VALUES])) if kind == "cas" else None
        o = Op(i, kind, draw(st.sampled_from(keys)), value, expected, invoke, complete,
               outcome, None)
        if outcome == "ok":
            point = invoke + (complete - invoke) * draw(st.integers(0, 4)) / 4
        elif outcome == "unknown" and draw(st.booleans()):
            point = invoke + draw(st.integers(0, 12)) / 2  # took effect, maybe much later
        else:
            point = None  # failed, or an unknown op that never happened
        planned.append((point, i, o))
    state: dict[str, str | None] = {}
    ops: list[Op | None] = [None] * n
    for point, i, o in sorted(planned, key=lambda t: (t[0] is None, t[0] or 0, t[1])):
        res = None
        if point is not None:
            res, state[o.key] = apply(o.op, o.value, o.expected, state.get(o.key))
        if o.outcome == "ok":
            ops[i] = o._replace(result=res)
        else:
            ops[i] = o._replace(complete=None if draw(st.booleans()) else o.complete)
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, n - 1))
        o = ops[i]
        if draw(st.booleans()):
            choices = {"get": [None, *VALUES], "put": [None], "delete": [True, False],
                       "cas": [True, False]}[o.op]
            ops[i] = o._replace(result=draw(st.sampled_from(choices)))
        else:
            shift = float(draw(st.integers(-4, 4)))
            ops[i] = o._replace(invoke=o.invoke + shift,
                                complete=None if o.complete is None else o.complete + shift)
    return ops  # type: ignore[return-value]


# ---------------------------------------------------------------- oracle agreement


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_histories())
def test_agrees_with_brute_force(ops: list[Op]) -> None:
    expected = brute_force_linearizable(ops)
    res = check(ops)
    assert res.ok == expected, (res.explanation, ops)
    if not res.ok:
        assert res.key is not None and repr(res.key) in res.explanation


def test_generator_produces_both_verdicts() -> None:
    """Guard against a generator that only ever makes one kind of history."""
    seen = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(small_histories())
    def collect(ops: list[Op]) -> None:
        seen.add(check(ops).ok)

    collect()
    assert seen == {True, False}


def test_generator_puts_unknown_ops_in_most_histories() -> None:
    """The cross-check must exercise the unknown-op reductions, not only plain ops."""
    counts = []

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(small_histories())
    def collect(ops: list[Op]) -> None:
        counts.append(sum(o.outcome == "unknown" for o in ops))

    collect()
    assert sum(c > 0 for c in counts) > len(counts) / 2
    assert sum(c > 1 for c in counts) > len(counts) / 10


# ---------------------------------------------------------------- classics


def test_stale_read_after_completed_write() -> None:
    ops = [op(1, "put", "x", 0, 1, value="1"), op(2, "get", "x", 2, 3, result=None)]
    res = check(ops)
    assert not res.ok and res.key == "x" and res.failed_keys == ["x"]
    assert "get() -> absent" in res.explanation


def test_concurrent_read_may_see_either_value() -> None:
    ops = [op(1, "put", "x", 0, 3, value="1"), op(2, "get", "x", 1, 2, result=None),
           op(3, "get", "x", 1, 2, result="1")]
    assert check(ops).ok


def test_lost_write() -> None:
    ops = [op(1, "put", "x", 0, 1, value="old"), op(1, "put", "x", 2, 3, value="new"),
           op(2, "get", "x", 4, 5, result="old")]
    assert not check(ops).ok


def test_cas_succeeds_twice_from_same_expected_value() -> None:
    ops = [op(1, "put", "x", 0, 1, value="a"),
           op(2, "cas", "x", 2, 4, result=True, expected="a", value="b"),
           op(3, "cas", "x", 3, 5, result=True, expected="a", value="c")]
    res = check(ops)
    assert not res.ok
    assert "cas('a' -> 'c') -> True" in res.explanation or "cas('a' -> 'b')" in res.explanation


def test_delete_true_on_absent_key() -> None:
    assert not check([op(1, "delete", "x", 0, 1, result=True)]).ok
    assert check([op(1, "delete", "x", 0, 1, result=False)]).ok


def test_cas_with_expected_none_means_absent() -> None:
    ops = [op(1, "cas", "x", 0, 1, result=True, expected=None, value="v"),
           op(1, "cas", "x", 2, 3, result=False, expected=None, value="w"),
           op(1, "get", "x", 4, 5, result="v")]
    assert check(ops).ok


def test_failing_key_is_isolated_from_good_keys() -> None:
    ops = [op(1, "put", "good", 0, 1, value="1"), op(2, "get", "good", 2, 3, result="1"),
           op(1, "put", "bad", 0, 1, value="1"), op(2, "get", "bad", 2, 3, result="2")]
    res = check(ops)
    assert (res.ok, res.key, res.failed_keys, res.keys, res.ops) == (False, "bad", ["bad"], 2, 4)


def test_failed_ops_are_ignored() -> None:
    ops = [op(1, "put", "x", 0, 1, value="1", outcome="fail"), op(2, "get", "x", 2, 3)]
    assert check(ops).ok


# ---------------------------------------------------------------- unknown outcomes


def test_read_of_value_only_an_unknown_put_wrote() -> None:
    put = op(1, "put", "x", 10, None, value="1", outcome="unknown")
    assert check([put, op(2, "get", "x", 20, 21, result="1")]).ok
    # The unknown put may take effect long after the client gave up ...
    assert check([put, op(2, "get", "x", 20, 21, result=None),
                  op(2, "get", "x", 30, 31, result="1")]).ok
    # ... or never.
    assert check([put, op(2, "get", "x", 30, 31, result=None)]).ok


def test_read_before_unknown_put_was_invoked() -> None:
    put = op(1, "put", "x", 10, None, value="1", outcome="unknown")
    res = check([put, op(2, "get", "x", 5, 6, result="1")])
    assert not res.ok and "would return absent" in res.explanation


def test_unknown_put_cannot_take_effect_twice() -> None:
    put = op(1, "put", "x", 0, None, value="1", outcome="unknown")
    ops = [put, op(2, "get", "x", 1, 2, result="1"), op(2, "put", "x", 3, 4, value="2"),
           op(2, "get", "x", 5, 6, result="1")]
    assert not check(ops).ok


def test_unread_unknown_write_may_be_what_a_delete_or_cas_saw() -> None:
    """Leaving out an unknown write because no get reads its value is not exact: a
    delete that returned True, or a cas(absent -> ...) that returned False, needs the
    key to hold something, and the unknown put is the only op that could have put it."""
    put = op(1, "put", "x", 0, None, value="never read", outcome="unknown")
    deleted = op(2, "delete", "x", 1, 2, result=True)
    refused = op(2, "cas", "x", 1, 2, result=False, expected=None, value="w")
    for ops in ([put, deleted], [put, refused]):
        assert brute_force_linearizable(ops) and check(ops).ok
        assert not check(ops[1:]).ok


def test_interchangeable_unknown_writes_each_take_effect_once() -> None:
    """Two unknown puts of the same value can explain two reads of it across another
    write, not three."""
    puts = [op(1, "put", "x", 0, None, value="v", outcome="unknown"),
            op(3, "put", "x", 0.5, None, value="v", outcome="unknown")]
    ops = list(puts)
    for i in range(3):
        ops += [op(2, "get", "x", 10 * i + 1, 10 * i + 2, result="v"),
                op(2, "put", "x", 10 * i + 3, 10 * i + 4, value=f"w{i}")]
    assert check(ops[:6]).ok
    res = check(ops)
    assert not res.ok and res.failed_keys == ["x"]
    assert check(ops + [op(4, "put", "x", 0.7, None, value="v", outcome="unknown")]).ok


def test_unknown_writes_applied_or_not_among_many() -> None:
    """A dozen writes time out during a 'partition'; later reads see one of them, then
    absent, then another: decided quickly, and a read of a value never written fails."""
    lost = [op(i, "put", "x", i * 0.01, None, value=f"u{i}", outcome="unknown")
            for i in range(12)]
    reads = [op(20, "get", "x", 5, 6, result="u7"), op(20, "delete", "x", 7, 8, result=True),
             op(20, "get", "x", 9, 10, result=None), op(20, "get", "x", 11, 12, result="u3"),
             op(20, "get", "x", 13, 14, result="u3")]
    res = check(lost + reads)
    assert res.ok and res.dead_ends < 100, res
    bad = check(lost + reads + [op(20, "get", "x", 15, 16, result="u12")])
    assert not bad.ok and "No op on this key ever writes 'u12'" in bad.explanation


# ---------------------------------------------------------------- the families of issue 13


def bench_checker():
    """benchmarks/checker.py, which generates the families (shared with the benchmark)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "benchmarks", "checker.py")
    spec = importlib.util.spec_from_file_location("bench_checker", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_checker", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("k", [8, 24, 96])
def test_unknown_writes_family_is_decided_whatever_k(k: int) -> None:
    """k timed-out puts nobody reads do not multiply the search (they did: 2^k)."""
    family = bench_checker().unknown_writes_family
    res, base = check(family(k)), check(family(1))
    assert res.ok, res.explanation
    assert res.states == base.states and res.dead_ends == base.dead_ends


def test_unknown_writes_family_broken_is_caught() -> None:
    family = bench_checker().unknown_writes_family(48)
    i = max(i for i, o in enumerate(family) if o.op == "get")
    family[i] = family[i]._replace(result="lost3")  # a timed-out put that took effect
    assert check(family).ok
    family[i] = family[i]._replace(result="r0a")  # overwritten twenty rounds ago
    res = check(family)
    assert not res.ok and "get() -> 'r0a'" in res.explanation


# ---------------------------------------------------------------- budget


def concurrent_history(n: int) -> list[Op]:
    """n fully concurrent puts, each read by a concurrent get, and a final read of a
    value nobody wrote: not linearizable, but every order of the puts is a dead end."""
    ops = [op(i, "put", "x", 0, 10, value=str(i)) for i in range(n)]
    ops += [op(n + i, "get", "x", 0, 10, result=str(i)) for i in range(n)]
    return ops + [op(2 * n, "get", "x", 11, 12, result="nope")]


def test_search_gives_up_loudly_at_max_states() -> None:
    res = check(concurrent_history(14), max_states=1000)
    assert not res.ok and res.gave_up_keys == ["x"] and res.failed_keys == []
    assert res.verdict == "undecided" and res.dead_ends == 1000
    assert "gave up" in res.explanation and "NOT verified" in res.explanation


def test_search_gives_up_at_time_limit() -> None:
    res = check(concurrent_history(18), time_limit=0.05)
    assert not res.ok and res.gave_up_keys == ["x"] and "time limit" in res.explanation
    assert res.verdict == "undecided" and res.summary.startswith("undecided: ")


def test_gave_up_key_does_not_hide_a_failing_one() -> None:
    hard = concurrent_history(14)
    bad = [op(1, "put", "y", 0, 1, value="1"), op(2, "get", "y", 2, 3, result="2")]
    res = check(hard + bad, max_states=100)
    assert res.verdict == "not linearizable" and res.key == "y" and res.gave_up_keys == ["x"]
    assert res.summary.startswith("NO: ")


# ---------------------------------------------------------------- loading and the CLI

GOOD = {"client": 1, "op": "put", "key": "x", "value": "1", "expected": None,
        "invoke": 1.0, "complete": 2.0, "outcome": "ok", "result": None}


def line(**changes: object) -> str:
    rec = dict(GOOD, **changes)
    for k in [k for k, v in changes.items() if v is KeyError]:
        del rec[k]
    return json.dumps(rec)


def test_load_round_trip_and_blank_lines() -> None:
    ops = load_history([line(), "", "  \n", line(op="get", value=None, result="1")])
    assert [o.op for o in ops] == ["put", "get"]
    assert ops[1].line == 4 and ops[1].result == "1"


@pytest.mark.parametrize("bad, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (line(outcome=KeyError), "missing field(s): outcome"),
    (line(op="incr"), "'op'"),
    (line(client="1"), "'client'"),
    (line(key=3), "'key'"),
    (line(value=None), "'value' of a put"),
    (line(invoke="soon"), "'invoke'"),
    (line(complete=0.5), "before 'invoke'"),
    (line(complete=None), "'complete' is null"),
    (line(outcome="maybe"), "'outcome'"),
    (line(op="delete", value=None, result="yes"), "'result' of an ok delete"),
])
def test_bad_line_names_line_number(bad: str, words: str) -> None:
    with pytest.raises(BadHistory) as e:
        load_history([line(), "", bad])
    assert str(e.value).startswith("line 3:") and words in str(e.value)


def test_unknown_op_may_have_null_complete() -> None:
    [o] = load_history([line(outcome="unknown", complete=None)])
    assert o.complete is None


def write(tmp_path, lines: list[str]) -> str:
    p = tmp_path / "h.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_cli_linearizable(tmp_path, capsys) -> None:
    path = write(tmp_path, [line(), line(op="get", value=None, invoke=3, complete=4, result="1")])
    assert main([path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("linearizable: 2 ops, 1 keys")
    assert check_file(path).ok


def test_cli_not_linearizable(tmp_path, capsys) -> None:
    path = write(tmp_path, [line(), line(op="get", value=None, invoke=3, complete=4, result="2")])
    assert main([path]) == 1
    out = capsys.readouterr().out
    assert "NOT linearizable" in out and "line 2: client 1 get() -> '2'" in out


def test_cli_bad_input_and_missing_file(tmp_path, capsys) -> None:
    assert main([write(tmp_path, [line(), "oops"])]) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_undecided_exits_3_with_its_budget(tmp_path, capsys) -> None:
    path = write(tmp_path, [json.dumps(o._asdict()) for o in concurrent_history(14)])
    assert main([path, "--max-states", "100"]) == 3
    out = capsys.readouterr().out
    assert out.startswith("UNDECIDED") and "--max-states 100" in out and "NOT" not in out[:40]


def test_cli_rejects_a_bad_budget(tmp_path, capsys) -> None:
    path = write(tmp_path, [line()])
    for bad in (["--max-states", "-1"], ["--time-limit", "0"]):
        with pytest.raises(SystemExit) as e:
            main([path, *bad])
        assert e.value.code == 2
    capsys.readouterr()


def test_bad_history_is_a_raftmp_error() -> None:
    with pytest.raises(RaftmpError):
        load_history(["{}"])


def test_cli_help(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "linearizability" in capsys.readouterr().out


# ---------------------------------------------------------------- scale


def simulate_history(n_ops: int, n_keys: int, n_clients: int, seed: int,
                     unknown_rate: float = 0.002, fail_rate: float = 0.002,
                     batch: float = 0.0, unique: bool = False, late: float = 0.0) -> list[Op]:
    """A linearizable history from clients running concurrently against a register
    per key: each op takes effect at a random point of its interval (unknown ops at a
    random later point, or never), and results are computed in that order. With
    ``batch``, replies are taken in batches: completion times are rounded up to it
    (lines stay in reply order). With ``late``, ops take effect in the last part of
    their interval (a reply leaves after the commit), not anywhere in it.
    Values come from a small set, or with ``unique`` each is written once."""
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(n_keys)]
    clock = [rng.random() for _ in range(n_clients)]
    planned, written = [], []
    for i in range(n_ops):
        c = rng.randrange(n_clients)
        invoke = clock[c] + rng.expovariate(1000)
        complete = invoke + rng.expovariate(200)
        clock[c] = complete
        kind = rng.choice(["get", "get", "put", "cas", "delete"])
        if not unique:
            value = str(rng.randrange(5)) if kind in ("put", "cas") else None
            expected = rng.choice([None, "0", "1", "2"]) if kind == "cas" else None
        else:  # each value written once (as the workload does); cas expects a recent one
            value = f"v{i}" if kind in ("put", "cas") else None
            expected = rng.choice([None, *written[-3:]]) if kind == "cas" else None
            written += [value] if value else []
        u = rng.random()
        outcome = "unknown" if u < unknown_rate else "fail" if u < unknown_rate + fail_rate \
            else "ok"
        o = Op(c, kind, rng.choice(keys), value, expected, invoke, complete, outcome, None, i + 1)
        if outcome == "ok":
            point = rng.uniform(invoke + (complete - invoke) * late, complete)
        elif outcome == "unknown" and rng.random() < 0.5:
            point = invoke + rng.expovariate(10)
        else:
            point = None
        planned.append((point, i, o))
    state: dict[str, str | None] = {}
    ops: list[Op] = [None] * n_ops  # type: ignore[list-item]
    for point, i, o in sorted(planned, key=lambda t: (t[0] is None, t[0] or 0.0)):
        res = None
        if point is not None:
            res, state[o.key] = apply(o.op, o.value, o.expected, state.get(o.key))
        ops[i] = o._replace(result=res) if o.outcome == "ok" else o._replace(complete=None)
    if batch:  # recorded in the order the replies came, as a client writes its history
        ops.sort(key=lambda o: math.inf if o.complete is None else o.complete)
        ops = [o._replace(line=i + 1, complete=None if o.complete is None
                          else math.ceil(o.complete / batch) * batch)
               for i, o in enumerate(ops)]
    return ops


@pytest.mark.timeout(120)
def test_generated_20k_history_is_linearizable() -> None:
    ops = simulate_history(20_000, 200, 40, seed=1)
    res = check(ops)
    assert res.ok, res.explanation
    assert res.keys == 200 and res.ops == 20_000


@pytest.mark.timeout(120)
def test_generated_history_with_one_corrupted_read_is_rejected() -> None:
    ops = simulate_history(2_000, 20, 20, seed=2)
    i = next(i for i, o in enumerate(ops) if o.op == "get" and o.outcome == "ok")
    ops[i] = ops[i]._replace(result="never written")
    res = check(ops)
    assert not res.ok and res.key == ops[i].key and f"line {ops[i].line}:" in res.explanation


@pytest.mark.timeout(120)
def test_long_one_key_history_in_batches() -> None:
    """One hot key, 64 clients, replies taken in 5 ms batches (many equal completion
    times), 1% unknown outcomes: decided without giving up, and a stale read is caught."""
    ops = simulate_history(40_000, 1, 64, seed=3, unknown_rate=0.01, batch=0.005, unique=True)
    assert sum(o.outcome == "unknown" for o in ops) > 300
    res = check(ops)
    assert res.ok, res.explanation
    i = next(i for i, o in enumerate(ops) if i > 30_000 and o.op == "get" and o.outcome == "ok"
             and o.result is not None)
    first = next(o for o in ops if o.op in ("put", "cas") and o.value is not None
                 and o.outcome == "ok" and o.value != ops[i].result)
    ops[i] = ops[i]._replace(result=first.value)  # a value overwritten long before
    res = check(ops, max_states=10_000)
    assert res.verdict == "not linearizable" and f"line {ops[i].line}:" in res.explanation
