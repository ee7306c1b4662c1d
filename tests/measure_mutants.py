"""Measure each mutant's first detecting seed in the default sweep (seeds 0..N-1), for
test_sim.SWEEP_FINDS. Usage: ``PYTHONPATH=. python tests/measure_mutants.py [N] [names...]``."""
import re
import sys
import time

sys.path.insert(0, "tests")
import mutants
from _pytest.monkeypatch import MonkeyPatch

from raftmp.sim.cli import run_many

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
names = sys.argv[2:] or list(mutants.MUTANTS)
for name in names:
    mp = MonkeyPatch()
    what = mutants.apply(mp, name)
    t = time.monotonic()
    first, count, inv = None, 0, ""
    # chunks of 20 so we can stop early
    for lo in range(0, N, 20):
        res = sorted(run_many(list(range(lo, min(N, lo + 20))), {}, jobs=2), key=lambda r: r.seed)
        for r in res:
            if r.violations:
                count += 1
                if first is None:
                    first, inv = r.seed, r.violations[0][:90]
        if first is not None:
            break
    ok = first is not None and re.search(what, inv) is not None
    print(f"{name:32s} first={first} prefix={first + 5 if first is not None else None} "
          f"matches={ok} {time.monotonic() - t:.0f}s :: {inv}", flush=True)
    mp.undo()
