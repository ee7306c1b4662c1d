"""``python -m raftmp sim``: the sweep (swarm by default), a replay, or ``--explore``."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from typing import Any, Optional

from tabulate import tabulate

from ..cli import Parser, integer, number
from ..core.errors import ConfigError
from ..core.raft import Config
from .config import FAULTS, NEMESES, TIMINGS, SimConfig, SimResult
from .explore import explore_main
from .run import Simulation
from .swarm import describe, draw

SEEDS = 300   # the default sweep: well within a minute on 2 cores


def _csv(text: str) -> tuple[str, ...]:
    return tuple(f for f in text.split(",") if f and f != "none")


def main(argv: Optional[list[str]] = None) -> int:
    p = Parser(
        prog="python -m raftmp sim",
        description="Run seeded fault schedules against the Raft core in the deterministic "
                    "simulator. Each seed draws its own configuration (swarm testing: cluster "
                    "size, timers, read mode, batch and window, snapshot thresholds, loss, "
                    "faults and their intensity); a knob given here is pinned instead.")
    p.add_argument("--seeds", type=integer(1), default=SEEDS,
                   help=f"how many seeds (default {SEEDS})")
    p.add_argument("--seed", type=integer(0), default=None, help="run only this seed (replay)")
    p.add_argument("--first-seed", type=integer(0), default=0, help="first seed of the range")
    p.add_argument("--nodes", type=integer(1, 99),
                   help="cluster size, 1 to 99 (default: drawn, 3 to 7)")
    p.add_argument("--drop", type=number(0, 1, below=True),
                   help="packet loss probability, in [0, 1) (default: drawn)")
    p.add_argument("--faults", type=_csv,
                   help=f"comma-separated subset of {','.join(FAULTS)}, or 'none' (default: drawn)")
    p.add_argument("--nemeses", type=_csv,
                   help=f"comma-separated subset of {','.join(NEMESES)}, or 'none' "
                        "(default: drawn)")
    p.add_argument("--ops", type=integer(0), help="client operations per seed (default: drawn)")
    p.add_argument("--read-mode", choices=("index", "lease"), help="the nodes' read mode")
    p.add_argument("--clock-drift", type=number(0, 1, below=True),
                   help="each node's clock runs at 1 +- this rate (at most Config's "
                        f"{Config.clock_drift}, the bound lease reads assume)")
    p.add_argument("--timing", choices=tuple(TIMINGS), help="the nodes' timers")
    p.add_argument("--fixed", action="store_true",
                   help="no swarm: every knob not given takes its fixed default (5 nodes, "
                        "every fault, no nemesis, lease reads, the 'sim' timers)")
    p.add_argument("--explore", action="store_true",
                   help="systematic instead: every schedule of a short 3-node run within "
                        "--deviations delays of in-order delivery (explore.py)")
    p.add_argument("--deviations", type=integer(0), default=2, help="with --explore (default 2)")
    p.add_argument("--schedule", help="with --explore: run only this schedule (replay)")
    p.add_argument("--jobs", type=integer(1, 256), default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    if a.explore:
        try:
            return explore_main(a.deviations, a.jobs, a.schedule)
        except ValueError as exc:
            p.error(str(exc))
    pinned = {k: getattr(a, k) for k in ("nodes", "drop", "faults", "nemeses", "ops",
                                         "read_mode", "clock_drift", "timing")
              if getattr(a, k) is not None}
    if a.fixed:
        pinned = {"nodes": 5, "faults": FAULTS, "nemeses": (), "ops": 200, "read_mode": "lease",
                  "clock_drift": 0.05, "timing": "sim", "drop": 0.0, **pinned}
    seeds = [a.seed] if a.seed is not None else list(range(a.first_seed, a.first_seed + a.seeds))
    try:
        for s in seeds[:1]:
            config_of(s, pinned, a.fixed)   # a bad knob: one line, before any work
    except (ConfigError, ValueError, TypeError) as exc:
        p.error(str(exc))
    flags = " ".join(_flag(k, v) for k, v in pinned.items()) if not a.fixed else \
        "--fixed " + " ".join(_flag(k, getattr(a, k)) for k in pinned if getattr(a, k) is not None)
    print(f"raftmp sim: {len(seeds)} seeds from {seeds[0]}, "
          f"{'fixed' if a.fixed else 'swarm'} configuration, pinned: {flags.strip() or 'none'}",
          flush=True)
    start = time.monotonic()
    results = run_many(seeds, pinned, a.jobs, progress=sys.stderr.isatty(), fixed=a.fixed)
    print_table(results)
    print(f"{len(results)} seeds in {time.monotonic() - start:.1f} s on {a.jobs} processes")
    bad = [r for r in results if r.violations]
    for r in bad[:5]:
        print(f"\nseed {r.seed} violated: {r.violations[0]}")
        print(f"  drawn: {r.drawn}")
        print(f"  replay: python -m raftmp sim --seed {r.seed} {flags}".rstrip())
    return 1 if bad else 0


def _flag(knob: str, value: Any) -> str:
    if isinstance(value, tuple):
        value = ",".join(value) or "none"
    return f"--{knob.replace('_', '-')} {value}"


def config_of(seed: int, pinned: dict[str, Any], fixed: bool = False) -> SimConfig:
    """The configuration seed ``seed`` runs with."""
    return SimConfig(**pinned) if fixed else draw(seed, pinned)


def run_seed(args: tuple[int, SimConfig]) -> SimResult:
    seed, cfg = args
    result = Simulation(seed, cfg).run()
    result.history = []  # not needed across processes
    result.drawn = describe(cfg)
    return result


def run_many(seeds: list[int], pinned: Any, jobs: int = 1, progress: bool = False,
             fixed: bool = False) -> list[SimResult]:
    """Run ``seeds``; ``pinned`` is a SimConfig (every seed runs it) or the knobs
    pinned over the swarm's draw (a dict; ``fixed``: over the fixed defaults)."""
    work = [(s, pinned if isinstance(pinned, SimConfig) else config_of(s, pinned, fixed))
            for s in seeds]
    results: list[SimResult] = []
    start = time.monotonic()
    if jobs <= 1 or len(seeds) == 1:
        it = map(run_seed, work)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        it = pool.imap_unordered(run_seed, work, chunksize=4)
    try:
        for r in it:
            results.append(r)
            if progress:
                bad = sum(1 for x in results if x.violations)
                print(f"\r  {len(results)}/{len(seeds)} seeds, {bad} violating, "
                      f"{time.monotonic() - start:.1f}s", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    if progress:
        print(file=sys.stderr)
    return sorted(results, key=lambda r: r.seed)


def print_table(results: list[SimResult]) -> None:
    columns = {"ops ok": "ops_ok", "unknown": "ops_unknown", "failed": "ops_failed",
               "elections": "elections", "snapshots": "snapshots", "installs": "installs",
               "packets": "packets", "messages": "messages", "dup answers": "duplicates",
               "changes": "changes", "transfers": "transfers"}
    row = {"seeds": len(results),
           **{name: sum(getattr(r, f) for r in results) for name, f in columns.items()},
           "violations": sum(1 for r in results if r.violations)}
    print(tabulate([row], headers="keys"))
