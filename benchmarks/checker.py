"""Linearizability checker on the unknown-writes family: time and states per size.

The family (issue 13): k puts on one key time out (outcome unknown, values
nobody reads), then ``--rounds`` rounds of three overlapping puts followed by
a get of the value of the put that started and finished first, which forces
the search to backtrack in every round. Every member is linearizable (leave
the unknown puts out). A checker that tries the unknown puts at each dead end
grows exponentially with k.

``--baseline FILE`` also times another version of ``raftmp/checker.py`` (for
example the one before issue 13: ``git show 30c906f:raftmp/checker.py >
/tmp/old_checker.py``) on the same histories, with the same budget.

    python benchmarks/checker.py --ks 8,12,24,48,96 --baseline /tmp/old_checker.py
    python benchmarks/checker.py --quick --json checker.json
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from types import ModuleType
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from raftmp import checker  # noqa: E402
from raftmp.checker import Op  # noqa: E402


def unknown_writes_family(k: int, rounds: int = 20) -> list[Op]:
    """k timed-out puts nobody reads, then rounds of three puts and a get that reads
    the first of them (so the order that ends with it must be found)."""
    ops = [Op(i, "put", "x", f"lost{i}", None, i * 0.001, None, "unknown") for i in range(k)]
    t = 1.0
    for r in range(rounds):
        values = [f"r{r}{c}" for c in "abc"]
        for c, v in enumerate(values):
            ops.append(Op(k + c, "put", "x", v, None, t + 0.1 * c, t + 1 + 0.1 * c, "ok"))
        ops.append(Op(k + 3, "get", "x", None, None, t + 2, t + 3, "ok", values[0]))
        t += 4
    return ops


def load_checker(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_checker", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def measure(module: Any, ops: list, max_states: int) -> dict:
    """Run one checker on a history (its own Op type); verdict, time, states."""
    ops = [module.Op(*o) for o in ops]
    t0 = time.perf_counter()
    res = module.check(ops, max_states=max_states)
    took = time.perf_counter() - t0
    gave_up = bool(res.gave_up_keys)
    verdict = "undecided" if gave_up else "linearizable" if res.ok else "not linearizable"
    return {"verdict": verdict, "seconds": took, "states": res.states,
            "dead_ends": getattr(res, "dead_ends", None)}


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--ks", type=common.ints, default=[8, 12, 24, 48, 96],
                   help="sizes k: unknown puts before the rounds (8,12,24,48,96)")
    p.add_argument("--rounds", type=int, default=20, help="rounds of three puts and a get (20)")
    p.add_argument("--max-states", type=int, default=checker.DEFAULT_MAX_STATES,
                   help="each checker's own budget (states for the old one, dead ends now)")
    p.add_argument("--baseline", metavar="FILE", default=None,
                   help="another checker.py to time on the same histories")
    a = p.parse_args()
    seed = common.pick_seed(a.seed)  # the family is deterministic; printed for the record
    if a.quick:
        a.ks, a.rounds = [8, 24], 5
    checkers = [("now", checker)]
    if a.baseline:
        checkers.insert(0, ("baseline", load_checker(a.baseline)))
    rows = []
    for k in a.ks:
        ops = unknown_writes_family(k, a.rounds)
        for name, module in checkers:
            common.progress(f"k={k} ({len(ops)} ops): {name}")
            r = measure(module, ops, a.max_states)
            rows.append({"k": k, "ops": len(ops), "checker": name, **r})
    meta = {"benchmark": "checker: unknown-writes family", "seed": seed, "quick": a.quick,
            "rounds": a.rounds, "max_states": a.max_states, "baseline": a.baseline,
            "machine": common.machine_info()}
    common.print_table("linearizability checker, unknown-writes family", rows, meta,
                       ["every member is linearizable; 'undecided' means the budget ran out"])
    common.write_json(a.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
