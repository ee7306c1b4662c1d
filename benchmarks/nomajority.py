"""Traffic without a majority: does a client with writes pending raise it?

For each count in ``--pending`` (default 0, 20, 200), a fresh ``--nodes``
cluster (default settings) elects a leader and commits a write; then the
leader is killed and the rest are split in two halves, so that no side has
a majority. After ``--settle`` seconds (the cut-off nodes start campaigning)
the router's packet rate is measured for ``--window`` seconds with nothing
pending (*no-majority idle*), then the client submits that many puts and the
rate is measured again while they wait (*with writes pending*). A client
that searches one probe at a time with backoff (``core/session.py``) keeps
the ratio near 1; one that retried every pending write would multiply it.
The healthy cluster's idle rate, before the kill, is reported beside.

    python benchmarks/nomajority.py
    python benchmarks/nomajority.py --pending 20,200,2000 --json nomajority.json
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import raftmp  # noqa: E402


def packet_rate(cluster: raftmp.Cluster, seconds: float, client: raftmp.Client) -> float:
    """Router packets per second over ``seconds``, polling ``client`` meanwhile."""
    t0, p0 = time.monotonic(), cluster.stats()["router"]["total"]["packets"]
    end = t0 + seconds
    while (left := end - time.monotonic()) > 0:
        client.poll(min(0.05, left))
    t1, p1 = time.monotonic(), cluster.stats()["router"]["total"]["packets"]
    return (p1 - p0) / (t1 - t0)


def measure(args, pending: int, seed: int) -> dict:
    with raftmp.Cluster(args.nodes, seed=seed) as cluster:
        kv = cluster.client()
        kv.put("before", "1")
        healthy = packet_rate(cluster, args.window, kv)
        leader = cluster.leader()
        if leader is None:
            raise common.ChildError("no leader after a committed write")
        cluster.kill(leader)
        rest = cluster.alive()
        half = len(rest) // 2
        cluster.partition(rest[:half], rest[half:])
        packet_rate(cluster, args.settle, kv)
        idle = packet_rate(cluster, args.window, kv)
        for i in range(pending):
            kv.submit("put", f"w{i}", "x")
        busy = packet_rate(cluster, args.window, kv)
        waiting = kv.in_flight
    common.progress(f"{pending} pending: {idle:.0f} -> {busy:.0f} pkts/s")
    return {"pending": pending, "healthy idle pkts/s": healthy,
            "no-majority idle pkts/s": idle, "with writes pending pkts/s": busy,
            "ratio": busy / idle if idle else float("nan"), "still pending": waiting}


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--pending", type=common.ints, default=[0, 20, 200],
                   help="comma-separated counts of pending writes (default 0,20,200)")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds after the split before measuring (default 1)")
    p.add_argument("--window", type=float, default=3.0,
                   help="seconds per measurement (default 3)")
    args = p.parse_args()
    if args.quick:
        args.pending, args.settle, args.window = [20], 0.5, 0.5
    seed = common.pick_seed(args.seed)
    meta = {"benchmark": "nomajority", "machine": common.machine_info(), "seed": seed,
            "nodes": args.nodes, "pending": args.pending, "settle_s": args.settle,
            "window_s": args.window, "config": vars(raftmp.Config()), "quick": args.quick}
    common.progress(f"seed {seed}")
    rows = [measure(args, n, seed + i) for i, n in enumerate(args.pending)]
    common.write_json(args.json, {"meta": meta, "rows": rows})
    common.print_table("raftmp router traffic without a majority", rows, meta, notes=[
        "the leader is killed and the other nodes split in halves: nobody can commit",
        "ratio = with writes pending / no-majority idle (the pending puts wait throughout: "
        "'still pending')",
    ])
    return 0


if __name__ == "__main__":
    common.run_main(main)
