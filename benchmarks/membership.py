"""Membership changes and leadership transfers under load, on the router cluster.

For each drop rate (``--drops``, default 0.2 and 0) a fresh 3-node cluster
runs with ``--clients`` load processes writing at full speed (closed loop,
``--concurrency`` operations in flight each, mostly writes, every outcome
kept for the linearizability check) and one *probe* process writing one put
at a time, recording when each completes (``time.monotonic``, one clock for
every process). The launcher then changes the membership, timing each
change from the call to its return (``raftmp.Cluster``):

* *grow*: ``add_node()`` twice (3 to 5 voters: a learner, promoted after the
  thesis §4.2.1 catch-up rounds);
* *replace*: a follower is killed, its data directory deleted (it then
  refuses to start), and ``replace_node()`` removes it and adds a new server;
* *remove leader*: ``remove_node(leader)`` (the leader hands over first);
* *transfer*: ``transfer_leader()`` to a random other voter, ``--transfers``
  times. A transfer's *write gap* is the longest time between two probe
  writes completing, over the transfer (from its start to the first probe
  write completed after it ended).

At the end every history (load and probe) is checked for linearizability
(``raftmp.checker``). Clients are given the ids of the servers to come too
(a node that does not exist yet is passed over like a silent one).

    .venv/bin/python benchmarks/membership.py
    .venv/bin/python benchmarks/membership.py --quick --json membership.json
"""

from __future__ import annotations

import bisect
import json
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import raftmp  # noqa: E402
from raftmp.checker import check_file  # noqa: E402
from raftmp.core.session import DONE, UNKNOWN  # noqa: E402
from raftmp.workload import Workload  # noqa: E402


def load(conn: Any, address: str, ids: list[int], workload: Workload, seed: int) -> dict:
    """Closed-loop load until told to stop; every outcome's history record."""
    client = raftmp.Client(address, ids, seed=seed)
    rng = random.Random(seed)
    records, n = [], 0
    try:
        while common.recv_command(conn) != "stop":
            while client.in_flight < workload.concurrency:
                client.submit(*workload.op(rng, n))
                n += 1
            records += [o.record() for o in client.poll(0.02)]
    finally:
        client.close()
    return {"records": records}


def probe(conn: Any, address: str, ids: list[int], seed: int) -> dict:
    """One put at a time until told to stop: the history, and when each put completed."""
    client = raftmp.Client(address, ids, seed=seed)
    records, done, n = [], [], 0
    try:
        while common.recv_command(conn) != "stop":
            if client.in_flight == 0:
                client.submit("put", f"probe{n % 10}", f"p{n}")
                n += 1
            for o in client.poll(0.01):
                records.append(o.record())
                if o.outcome == DONE:
                    done.append(o.complete)
    finally:
        client.close()
    return {"records": records, "done": done}


def write_gap(done: list[float], start: float, end: float, stop: float) -> float:
    """The longest time between completed probe writes over [start, end]: from
    the last one before ``start`` to the first one after ``end`` (or ``stop``,
    when the load stopped, if none came after it)."""
    lo = max(0, bisect.bisect_left(done, start) - 1)
    hi = bisect.bisect_right(done, end)
    window = done[lo:hi + 1] if hi < len(done) else done[lo:] + [stop]
    return max((b - a for a, b in zip(window, window[1:])), default=float("nan"))


def run_drop(args: Any, drop: float, seed: int) -> dict:
    common.progress(f"drop {drop}: a 3-node cluster, {args.clients} load clients")
    times: dict[str, list[float]] = {"grow": [], "replace": [], "remove leader": [],
                                     "transfer": []}
    spans: list[tuple[float, float]] = []
    rng = random.Random(seed)
    workload = Workload(keys=args.keys, read_fraction=0.2, value_size=8,
                        concurrency=args.concurrency)
    ids = list(range(3 + 3))     # the three servers to come too
    with raftmp.Cluster(3, seed=seed, drop=drop) as cluster, common.Children() as kids:
        loads = [kids.start(load, cluster.address, ids, workload, seed * 1000 + c)
                 for c in range(args.clients)]
        prober = kids.start(probe, cluster.address, ids, seed * 1000 + 999, name="bench-probe")
        try:
            time.sleep(args.warmup)
            for _ in range(2):
                t = time.monotonic()
                node = cluster.add_node()
                times["grow"].append(time.monotonic() - t)
                common.progress(f"drop {drop}: added node {node} ({times['grow'][-1]:.2f} s)")
            leader = cluster.wait_for_leader()
            lost = rng.choice([i for i in cluster.ids if i != leader])
            cluster.kill(lost)
            shutil.rmtree(os.path.join(cluster.data_dir, f"node{lost}"))
            t = time.monotonic()
            node = cluster.replace_node(lost)
            times["replace"].append(time.monotonic() - t)
            common.progress(f"drop {drop}: replaced {lost} by {node} "
                            f"({times['replace'][-1]:.2f} s)")
            leader = cluster.wait_for_leader()
            t = time.monotonic()
            cluster.remove_node(leader)
            times["remove leader"].append(time.monotonic() - t)
            common.progress(f"drop {drop}: removed the leader {leader} "
                            f"({times['remove leader'][-1]:.2f} s); members {cluster.ids}")
            for k in range(args.transfers):
                time.sleep(args.pause)
                leader = cluster.wait_for_leader()
                to = rng.choice([i for i in cluster.ids if i != leader])
                t = time.monotonic()
                cluster.transfer_leader(to)
                spans.append((t, time.monotonic()))
                times["transfer"].append(spans[-1][1] - t)
            time.sleep(args.pause)
        finally:
            stop = time.monotonic()
            common.send_stop(loads + [prober])
        results = kids.collect(timeout=30.0)
    records = [r for res in results for r in res["records"]]
    done = sorted(results[-1]["done"])
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    try:
        verdict = check_file(f.name)
    finally:
        os.unlink(f.name)
    gaps = sorted(write_gap(done, a, b, stop) for a, b in spans)
    common.progress(f"drop {drop}: {len(records)} operations, {verdict.verdict}")
    return {"drop": drop, "times": times, "gaps": gaps, "ops": len(records),
            "ok": sum(r["outcome"] == DONE for r in records),
            "unknown": sum(r["outcome"] == UNKNOWN for r in records),
            "verdict": verdict.verdict, "linearizable": verdict.ok}


def rows_of(run: dict) -> list[dict]:
    rows = []
    for kind, ts in run["times"].items():
        ms = sorted(x * 1000 for x in ts)
        rows.append({"drop": run["drop"], "change": kind, "count": len(ms),
                     "p50 ms": common.percentile(ms, 0.5), "p99 ms": common.percentile(ms, 0.99),
                     "max ms": ms[-1] if ms else float("nan")})
    gaps = [g * 1000 for g in run["gaps"]]
    rows.append({"drop": run["drop"], "change": "transfer write gap", "count": len(gaps),
                 "p50 ms": common.percentile(gaps, 0.5), "p99 ms": common.percentile(gaps, 0.99),
                 "max ms": gaps[-1] if gaps else float("nan")})
    return rows


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--drops", type=common.floats, default=[0.2, 0.0],
                   help="comma-separated drop rates (default 0.2,0)")
    p.add_argument("--transfers", type=int, default=20)
    p.add_argument("--clients", type=int, default=2, help="load processes")
    p.add_argument("--concurrency", type=int, default=8, help="ops in flight per load client")
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before changes")
    p.add_argument("--pause", type=float, default=0.3, help="seconds between transfers")
    args = p.parse_args()
    if args.quick:
        args.transfers, args.warmup, args.pause, args.drops = 3, 0.3, 0.1, args.drops[:1]
    seed = common.pick_seed(args.seed)
    meta = {"benchmark": "membership", "machine": common.machine_info(), "seed": seed,
            "drops": args.drops, "transfers": args.transfers, "clients": args.clients,
            "concurrency": args.concurrency, "keys": args.keys, "quick": args.quick,
            "config": vars(raftmp.Config())}
    common.progress(f"seed {seed}")
    runs = [run_drop(args, drop, seed) for drop in args.drops]
    rows = [r for run in runs for r in rows_of(run)]
    notes = [f"drop {run['drop']}: {run['ops']} operations ({run['ok']} ok, {run['unknown']} "
             f"unknown), history {run['verdict']}" for run in runs]
    common.print_table("membership changes under load", rows, meta, notes)
    common.write_json(args.json, {"meta": meta, "runs": runs, "rows": rows})
    return 0 if all(run["linearizable"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
