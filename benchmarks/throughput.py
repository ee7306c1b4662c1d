"""Throughput and latency of raftmp against the router's packet-drop rate.

For each drop rate (``--drops``) a fresh ``--nodes`` cluster is started (at
drop 0, so the first election is not part of the measurement), the drop rate
is set on replica-replica links (client links stay lossless), and
``--clients`` client processes each keep ``--concurrency`` operations in flight
(closed loop: a new operation is submitted as soon as one finishes) over
``--keys`` keys, a ``--reads`` fraction of gets, the rest puts/cas/deletes with
``--value-size``-character values (``raftmp.workload.Workload``). Before the
load starts, once a leader is elected, the router's packet rate is measured
for ``--idle`` seconds (idle pkts/s: heartbeats and their answers). After a
``--warmup`` the launcher snapshots the router counters and node terms, and
again after ``--duration`` seconds; the row reports what happened in between:

* committed ops/s: operations that completed successfully within the window;
* p50/p99/p99.9 latency (ms) of those operations (invoke to reply);
* packets/op and msgs/op: router ``packets`` / ``messages`` counter deltas
  (every link, client links included) divided by committed operations;
* dropped: router ``dropped`` delta (faults, and any buffer overflow);
* elections: the largest node term at the end minus at the start;
* unknown / failed: operations that ended in the window with an unknown
  outcome (gave up after it may have been applied) or failed.

Operations still in flight at the end of the window are abandoned (not
counted). Timeouts are raftmp's defaults (``raftmp.Config``, ``raftmp.Timing``);
``--read-mode`` picks ReadIndex or lease reads.

    .venv/bin/python benchmarks/throughput.py                  # the full sweep
    .venv/bin/python benchmarks/throughput.py --quick          # a smoke run
    .venv/bin/python benchmarks/throughput.py --drops 0,0.3 --plot tput.png --json tput.json

``--plot FILE.png`` draws ops/s and p50/p99 latency against the drop rate
(needs matplotlib: ``pip install 'raftmp[plot]'``).
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import raftmp  # noqa: E402
from raftmp.core.session import DONE, UNKNOWN  # noqa: E402
from raftmp.workload import Workload  # noqa: E402

OK, UNK, FAIL = 0, 1, 2


def load_client(conn: Any, address: str, ids: list[int], workload: Workload, seed: int,
                t_start: float, t_end: float) -> dict:
    """Closed-loop load from ``t_start`` to ``t_end``; every finished op as
    (invoke, complete, code). In-flight ops at ``t_end`` are abandoned."""
    client = raftmp.Client(address, ids, seed=seed)
    rng = random.Random(seed)
    records: list[tuple[float, float, int]] = []
    try:
        time.sleep(max(0.0, t_start - time.monotonic()))
        n = 0
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            while client.in_flight < workload.concurrency:
                client.submit(*workload.op(rng, n))
                n += 1
            try:
                done = client.poll(min(0.05, max(0.0, t_end - now)))
            except raftmp.Unavailable:
                break
            for o in done:
                code = OK if o.outcome == DONE else UNK if o.outcome == UNKNOWN else FAIL
                records.append((o.invoke, o.complete, code))
    finally:
        client.close()
    return {"records": records, "submitted": n}


def snapshot(cluster: raftmp.Cluster) -> dict:
    t0 = time.monotonic()
    st = cluster.stats()
    t1 = time.monotonic()
    terms = [n.get("term", 0) for n in st["nodes"] if n.get("alive")]
    return {"t": (t0 + t1) / 2, "router": st["router"]["total"], "term": max(terms or [0])}


def measure(args: Any, drop: float, seed: int) -> dict:
    workload = Workload(keys=args.keys, read_fraction=args.reads, value_size=args.value_size,
                        concurrency=args.concurrency)
    common.progress(f"drop {drop}: starting a {args.nodes}-node cluster")
    config = raftmp.Config(read_mode=args.read_mode)
    with raftmp.Cluster(nodes=args.nodes, seed=seed, config=config) as cluster, \
            common.Children() as kids:
        cluster.set_faults(drop=drop)
        cluster.wait_for_leader()
        i0 = snapshot(cluster)
        time.sleep(args.idle)
        i1 = snapshot(cluster)
        idle_rate = (i1["router"]["packets"] - i0["router"]["packets"]) / (i1["t"] - i0["t"])
        t_start = time.monotonic() + 0.2
        warm_end = t_start + args.warmup
        t_end = warm_end + args.duration
        for c in range(args.clients):
            kids.start(load_client, cluster.address, cluster.ids, workload, seed * 1000 + c,
                       t_start, t_end)
        common.progress(f"drop {drop}: {args.clients} clients x {args.concurrency} in flight; "
                        f"warm-up {args.warmup} s")
        time.sleep(max(0.0, warm_end - time.monotonic()))
        s1 = snapshot(cluster)
        common.progress(f"drop {drop}: measuring for {args.duration} s")
        time.sleep(max(0.0, t_end - time.monotonic()))
        s2 = snapshot(cluster)
        results = kids.collect(timeout=30.0)
    window = s2["t"] - s1["t"]
    recs = [r for res in results for r in res["records"] if s1["t"] <= r[1] < s2["t"]]
    lat = sorted((c - i) * 1000 for i, c, code in recs if code == OK)
    ops = len(lat)
    d = {k: s2["router"][k] - s1["router"][k] for k in ("packets", "messages", "dropped",
                                                        "delivered", "bytes")}
    row = {
        "drop": drop,
        "ops/s": ops / window if window > 0 else 0.0,
        "p50 ms": common.percentile(lat, 0.50),
        "p99 ms": common.percentile(lat, 0.99),
        "p99.9 ms": common.percentile(lat, 0.999),
        "pkts/op": d["packets"] / ops if ops else float("nan"),
        "msgs/op": d["messages"] / ops if ops else float("nan"),
        "dropped": d["dropped"],
        "elections": s2["term"] - s1["term"],
        "unknown": sum(code == UNK for _, _, code in recs),
        "failed": sum(code == FAIL for _, _, code in recs),
        "idle pkts/s": idle_rate,
    }
    common.progress(f"drop {drop}: {row['ops/s']:.0f} ops/s, p99 {row['p99 ms']:.1f} ms")
    return {"row": row, "committed": ops, "window_s": window, "router_delta": d,
            "submitted": sum(r["submitted"] for r in results), "seed": seed}


def plot(path: str, rows: list[dict], meta: dict) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'raftmp[plot]'): skipping --plot",
              file=sys.stderr)
        return
    drops = [r["drop"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(drops, [r["ops/s"] for r in rows], "o-")
    a1.set_xlabel("packet drop rate (replica links)")
    a1.set_ylabel("committed ops/s")
    a1.set_ylim(bottom=0)
    a1.grid(True)
    a2.plot(drops, [r["p50 ms"] for r in rows], "o-", label="p50")
    a2.plot(drops, [r["p99 ms"] for r in rows], "o-", color="tab:red", label="p99")
    a2.set_xlabel("packet drop rate (replica links)")
    a2.set_ylabel("latency (ms)")
    a2.set_yscale("log")
    a2.legend()
    a2.grid(True)
    fig.suptitle(f"raftmp, {meta['nodes']} nodes, {meta['clients']}x{meta['concurrency']} "
                 f"in flight, reads: {meta['read_mode']}, {meta['machine']['cores']} cores, "
                 f"seed {meta['seed']}")
    fig.tight_layout()
    fig.savefig(path)
    common.progress(f"plot written to {path}")


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--drops", type=common.floats, default=[0, 0.1, 0.2, 0.3, 0.4, 0.5],
                   help="comma-separated drop rates (default 0,0.1,0.2,0.3,0.4,0.5)")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--concurrency", type=int, default=200,
                   help="ops in flight per client (default 200)")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--reads", type=float, default=0.5, help="fraction of gets (default 0.5)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--idle", type=float, default=2.0,
                   help="seconds of idle packet rate measured before the load (default 2)")
    p.add_argument("--read-mode", choices=("index", "lease"), default=raftmp.Config.read_mode,
                   help=f"the nodes' read mode (default {raftmp.Config.read_mode})")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="plot throughput and p50/p99 latency against drop rate (needs matplotlib)")
    args = p.parse_args()
    if args.quick:
        args.drops, args.warmup, args.duration, args.idle = [0.0, 0.3], 0.5, 1.0, 0.5
    seed = common.pick_seed(args.seed)
    meta = {"benchmark": "throughput", "machine": common.machine_info(), "seed": seed,
            "nodes": args.nodes, "clients": args.clients, "concurrency": args.concurrency,
            "keys": args.keys, "value_size": args.value_size, "reads": args.reads,
            "warmup_s": args.warmup, "duration_s": args.duration, "drops": args.drops,
            "idle_s": args.idle, "read_mode": args.read_mode, "quick": args.quick}
    common.progress(f"seed {seed}")
    runs = [measure(args, drop, seed + i) for i, drop in enumerate(args.drops)]
    rows = [r["row"] for r in runs]
    common.write_json(args.json, {"meta": meta, "rows": rows, "runs": runs})
    common.print_table("raftmp throughput vs packet drop rate", rows, meta, notes=[
        f"closed loop: {args.clients} client processes x {args.concurrency} ops in flight; "
        "drop applies to replica-replica links only",
        "pkts/op and msgs/op count every router link (client links too) over the window",
        f"idle pkts/s: router packets per second over {args.idle} s before the load, "
        "once a leader was elected",
        "elections = increase of the highest node term over the window",
    ])
    if args.plot:
        plot(args.plot, rows, meta)
    return 0


if __name__ == "__main__":
    common.run_main(main)
