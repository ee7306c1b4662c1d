"""``python -m raftmp``: the main job, and the subcommands.

    python -m raftmp                      the main job: a 5-node cluster on a lossy network,
                                          a workload, the leader killed and restarted, a summary
    python -m raftmp run ...              a cluster with an interactive console
    python -m raftmp sim ...              seeded fault schedules in the simulator
    python -m raftmp scenario FILE.json   a CS3700-style fault scenario
    python -m raftmp check HISTORY.jsonl  check a recorded history for linearizability
    python -m raftmp cs3700 [configs...]  the CS3700 course simulator against this replica
    python -m raftmp serve --id N ...     one node of a cluster over TCP (README: "Across machines")
"""

from __future__ import annotations

import logging
import os
import platform
import random
import signal
import sys
import time
from typing import Optional

from tabulate import tabulate

from . import checker, console, cs3700_suite, scenario, serve, sim
from .checker import EXIT_STATUS, check_outcomes
from .cli import INTERRUPTED, CtrlC, Parser, complain, integer, number, output_file
from .cluster import Cluster
from .console import MAX_NODES, start_cluster
from .core.errors import RaftmpError
from .seeds import pick_seed
from .transports import idle
from .workload import Workload, drive, summarize

SUBCOMMANDS = ("run", "sim", "scenario", "check", "cs3700", "serve")


def main(argv: Optional[list[str]] = None) -> int:
    """Run a command; bad input ends it with one line and 2, Ctrl-C with
    ``interrupted`` and 130 (see cli.py), never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if idle.SPIN_ERROR is not None:
        return complain(idle.SPIN_ERROR)
    previous = CtrlC().install()
    try:
        if argv and argv[0] in SUBCOMMANDS:
            command = {"run": console, "sim": sim, "check": checker, "scenario": scenario,
                       "cs3700": cs3700_suite, "serve": serve}[argv[0]]
            return command.main(argv[1:])
        return main_job(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED
    except (RaftmpError, OSError) as e:    # a data dir, a file: named in the message
        return complain(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGALRM, previous[1])


def main_job(argv: list[str]) -> int:
    p = Parser(
        prog="python -m raftmp",
        description="Run a raftmp cluster on a lossy network under a mixed workload, kill and "
                    "restart its leader part-way, and print a summary. Subcommands: "
                    + ", ".join(SUBCOMMANDS) + " (each with --help).")
    p.add_argument("--nodes", type=integer(1, MAX_NODES), default=5,
                   help=f"replicas, 1 to {MAX_NODES} (5)")
    p.add_argument("--drop", type=number(0, 1, below=True), default=0.2,
                   help="replica-link packet loss, in [0, 1) (0.2)")
    p.add_argument("--duration", type=number(0, above=True), default=10.0,
                   help="seconds of workload, > 0 (10)")
    p.add_argument("--concurrency", type=integer(1), default=32,
                   help="operations in flight, >= 1 (32)")
    p.add_argument("--keys", type=integer(1), default=100, help="distinct keys, >= 1 (100)")
    p.add_argument("--reads", type=number(0, 1), default=0.5,
                   help="fraction of operations that are reads, in [0, 1] (0.5)")
    p.add_argument("--seed", type=integer(0), default=None,
                   help="a seed >= 0 (default: a fresh one, printed)")
    p.add_argument("--history", type=output_file, default=None,
                   help="also write the history (JSON lines) here")
    a = p.parse_args(argv)

    seed = pick_seed(a.seed)
    print(f"raftmp main job: {a.nodes} nodes, drop={a.drop}, {a.duration:g} s, "
          f"concurrency={a.concurrency}, keys={a.keys}, reads={a.reads}, seed={seed}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}")
    workload = Workload(keys=a.keys, read_fraction=a.reads, concurrency=a.concurrency)
    rng = random.Random(seed)
    events: list[str] = []
    with start_cluster(Cluster(a.nodes, drop=a.drop, seed=seed), a.drop) as cluster:
        kv = cluster.client(history=a.history)
        state = {"killed": None, "leaders": [cluster.leader()], "done": 0}
        kill_at, restart_at = 0.4 * a.duration, 0.6 * a.duration

        def on_tick(elapsed: float) -> None:
            if state["killed"] is None and elapsed >= kill_at and a.nodes > 1:
                victim = cluster.leader()
                if victim is not None:
                    cluster.kill(victim)
                    state["killed"] = victim
                    events.append(f"{elapsed:5.1f}s  killed leader {victim}")
            elif state["killed"] not in (None, -1) and elapsed >= restart_at:
                cluster.restart(state["killed"])
                events.append(f"{elapsed:5.1f}s  restarted node {state['killed']}")
                state["killed"] = -1
            leader = cluster.leader()
            if leader is not None and leader != state["leaders"][-1]:
                state["leaders"].append(leader)
                events.append(f"{elapsed:5.1f}s  node {leader} leads")
            if sys.stdout.isatty():
                print(f"\r  {elapsed:5.1f}s  leader={leader}  in flight={kv.in_flight}   ",
                      end="", flush=True)

        start = time.monotonic()
        outcomes: list = []
        interrupted = False
        try:
            print(f"node {state['leaders'][0]} leads; workload for {a.duration:g} s "
                  "(Ctrl-C: stop and print the summary)", flush=True)
            drive(kv, workload, a.duration, rng, on_tick=on_tick, tick=0.25, outcomes=outcomes)
        except KeyboardInterrupt:     # still print what was measured so far
            interrupted = True
            events.append(f"{time.monotonic() - start:5.1f}s  interrupted")
        elapsed = time.monotonic() - start
        if sys.stdout.isatty():
            print()
        stats = cluster.stats()
    for e in events:
        print(e)
    total = stats["router"]["total"]
    s = summarize(outcomes, elapsed)
    # Interrupted, the operations still in flight have no outcome: a read of
    # their value would look wrong, so the history is not checked.
    verdict = None if interrupted else check_outcomes(outcomes)
    terms = max((n.get("term", 0) for n in stats["nodes"]), default=0)
    rows = [
        ("operations committed", s["ops"]),
        ("throughput (ops/s)", f"{s['ops/s']:.0f}"),
        ("latency p50 / p99 (ms)", f"{s['p50 ms']:.2f} / {s['p99 ms']:.2f}"),
        ("failed / unknown outcome", f"{s['failed']} / {s['unknown']}"),
        ("messages per op", f"{total['messages'] / max(1, s['ops']):.2f}"),
        ("packets per op", f"{total['packets'] / max(1, s['ops']):.2f}"),
        ("packets dropped", total["dropped"]),
        ("elections (terms)", terms),
        ("leader changes seen", len(state["leaders"]) - 1),
        ("linearizable", "not checked (interrupted)" if verdict is None else verdict.summary),
    ]
    print(tabulate(rows, headers=("summary", f"seed {seed}")), flush=True)
    if verdict is None:
        raise KeyboardInterrupt
    if not verdict.ok:
        print(verdict.explanation)
    return EXIT_STATUS[verdict.verdict]


if __name__ == "__main__":
    sys.exit(main())
