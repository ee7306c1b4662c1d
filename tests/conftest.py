"""Shared helpers for the real-process tests (``test_cluster``, ``test_processes``,
``test_bad_input``).

Every wait polls a condition with a deadline (``wait_until``); pytest-timeout
is the outer bound. Every cluster gets a seed from the ``seed`` fixture, which
is printed and appears in assertion messages: replay one with
``RAFTMP_TEST_SEED=1234 pytest ...``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from raftmp.core.session import DONE
from raftmp.seeds import pick_seed

WAIT = 10.0  # default bound of a wait, seconds


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition",
               interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def seed(request) -> int:
    env = os.environ.get("RAFTMP_TEST_SEED")
    value = pick_seed(int(env) if env else None)
    print(f"{request.node.nodeid}: seed {value} (replay with RAFTMP_TEST_SEED={value})")
    return value


# --------------------------------------------------------------------- processes


def proc_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (R, S, Z, ...) or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def gone(pid: int) -> bool:
    """No such process, or only a zombie left (it has exited, nobody reaped it yet)."""
    return proc_state(pid) in (None, "Z", "X")


def all_pids(pids: dict) -> list[int]:
    return [pids["router"], *pids["workers"].values()]


# ----------------------------------------------------------------------- cluster


def statuses(cluster, ids: Iterable[int] | None = None) -> list[dict]:
    return [cluster.node_status(i) for i in (cluster.alive() if ids is None else ids)]


def converged(cluster, ids: Iterable[int] | None = None) -> list[dict] | None:
    """The statuses of ``ids`` (default: live nodes) if all report the same applied index
    and that index is the newest commit among them; else None. When it returns, the
    caller checks the digests: equal applied indexes must mean equal states."""
    ss = statuses(cluster, ids)
    if not all(s.get("alive") for s in ss):
        return None
    applied = {s["applied"] for s in ss}
    if len(applied) != 1 or applied != {max(s["commit"] for s in ss)}:
        return None
    return ss


def assert_same_state(cluster, seed: int, ids: Iterable[int] | None = None,
                      expected: dict | None = None, timeout: float = WAIT) -> list[dict]:
    """Wait until ``ids`` applied the same prefix; assert equal digests (and dumps)."""
    ss = wait_until(lambda: converged(cluster, ids), timeout,
                    f"nodes to apply the same prefix (seed {seed})")
    digests = {s["node"]: s["kv_digest"] for s in ss}
    assert len(set(digests.values())) == 1, \
        f"seed {seed}: same applied index {ss[0]['applied']}, different states: {digests}"
    if expected is not None:
        for s in ss:
            dump = cluster.dump(s["node"])
            assert dump == expected, f"seed {seed}: node {s['node']} state differs: " \
                f"missing {sorted(set(expected) - set(dump or {}))[:10]}, extra " \
                f"{sorted(set(dump or {}) - set(expected))[:10]}"
    return ss


def run_ops(client, ops: list[tuple], concurrency: int = 32, timeout: float = 60.0) -> list:
    """Run ``ops`` ((op, key, value, expected) tuples) pipelined, ``concurrency`` at a time.

    Returns the outcomes in the order of ``ops``. Ops on the same key may run
    concurrently: give them distinct keys where the order matters."""
    outcomes: list = [None] * len(ops)
    by_seq: dict[int, int] = {}
    nxt = 0
    done = 0
    deadline = time.monotonic() + timeout
    while done < len(ops):
        while nxt < len(ops) and len(by_seq) < concurrency:
            op, key, value, expected = (tuple(ops[nxt]) + (None, None))[:4]
            by_seq[client.submit(op, key, value, expected)] = nxt
            nxt += 1
        assert time.monotonic() < deadline, f"run_ops: {done} of {len(ops)} done in {timeout} s"
        for o in client.poll(0.5):
            outcomes[by_seq.pop(o.command.seq)] = o
            done += 1
    return outcomes


def put_all(client, items: dict, seed: int, concurrency: int = 32) -> None:
    """Put every item (distinct keys, pipelined); assert every put was acknowledged."""
    outs = run_ops(client, [("put", k, v) for k, v in items.items()], concurrency)
    bad = [(o.command.key, o.outcome, o.result) for o in outs if o.outcome != DONE]
    assert not bad, f"seed {seed}: {len(bad)} puts not acknowledged, e.g. {bad[:3]}"


def assert_readable(client, expected: dict, seed: int, concurrency: int = 32) -> None:
    """Read every key back (linearizable gets); each must have its acknowledged value."""
    keys = list(expected)
    outs = run_ops(client, [("get", k) for k in keys], concurrency)
    wrong = [(k, expected[k], o.outcome, o.result) for k, o in zip(keys, outs, strict=True)
             if o.outcome != DONE or o.result != expected[k]]
    assert not wrong, f"seed {seed}: {len(wrong)} of {len(keys)} acknowledged writes not " \
        f"read back, e.g. (key, wanted, outcome, got) {wrong[:5]}"
