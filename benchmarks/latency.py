"""Commit latency with one operation in flight, beside the router's own round trip.

For each node count (``--nodes``, default 3 and 5) a fresh cluster is started
(``--drop`` on replica links, default 0) and two helper processes join its
router:

* an *echo* endpoint (``raftmp.wire.connect_router(address)``)
  that decodes every packet it gets and sends the same messages back to
  the sender (``wire.encode``), as a worker would answer;
* a *client* process holding a ``raftmp.Client`` and its own raw router
  endpoint. It runs ``--ops`` rounds, each strictly one thing at a time:
  a ping to the echo endpoint (router round trip), a put, a get.
  Interleaving the three keeps them under the same conditions.

Reported per node count: p50/p90/p99 of put and get latency (invoke to
reply, ms), of the raw router round trip, and the ratio put p50 / RTT p50:
how many router round trips one committed write costs (a write needs at
least two: client -> leader -> followers -> leader -> client).
The first ``--warmup`` rounds are not counted.

    .venv/bin/python benchmarks/latency.py
    .venv/bin/python benchmarks/latency.py --quick --json lat.json
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import raftmp  # noqa: E402
from raftmp.transports import wire  # noqa: E402


def echo_endpoint(conn: Any, address: str) -> None:
    """Send every packet's messages back to its sender until the launcher says stop."""
    link, me = wire.connect_router(address)
    conn.send(("id", me))
    try:
        while True:
            ready = common.recv_command(conn, 0.0)
            if ready == "stop":
                return None
            if link.poll(0.05):
                packet = link.recv_bytes()
                src, _, messages = wire.decode(packet)
                link.send_bytes(wire.encode(me, src, messages))
    finally:
        link.close()


def latency_client(conn: Any, address: str, ids: list[int], echo_id: int, ops: int,
                   warmup: int, value_size: int, seed: int) -> dict:
    client = raftmp.Client(address, ids, seed=seed)
    link, me = wire.connect_router(address)
    rtt: list[float] = []
    put: list[float] = []
    get: list[float] = []
    errors = 0
    try:
        value = "v" * value_size
        for i in range(warmup + ops):
            keep = i >= warmup
            t0 = time.monotonic()
            link.send_bytes(wire.encode(me, echo_id, [i]))
            while True:  # the echo is over the lossless client links; still, bound the wait
                if not link.poll(1.0):
                    break
                _, _, msgs = wire.decode(link.recv_bytes())
                if msgs == [i]:
                    if keep:
                        rtt.append((time.monotonic() - t0) * 1000)
                    break
            key = f"k{i % 100}"
            try:
                t0 = time.monotonic()
                client.put(key, value)
                t1 = time.monotonic()
                client.get(key)
                t2 = time.monotonic()
            except raftmp.RaftmpError:
                errors += 1
                continue
            if keep:
                put.append((t1 - t0) * 1000)
                get.append((t2 - t1) * 1000)
    finally:
        client.close()
        link.close()
    return {"rtt": rtt, "put": put, "get": get, "errors": errors}


def measure(args: Any, nodes: int, seed: int) -> dict:
    common.progress(f"{nodes} nodes: starting the cluster")
    with raftmp.Cluster(nodes=nodes, seed=seed) as cluster, common.Children() as kids:
        cluster.set_faults(drop=args.drop)
        echo = kids.start(echo_endpoint, cluster.address, name="bench-echo")
        if not echo.poll(10.0):
            raise common.ChildError("the echo endpoint did not connect")
        _, echo_id = echo.recv()
        cli = kids.start(latency_client, cluster.address, cluster.ids, echo_id, args.ops,
                         args.warmup, args.value_size, seed)
        common.progress(f"{nodes} nodes: {args.warmup} + {args.ops} rounds of ping, put, get")
        (res,) = kids.collect(timeout=60.0 + args.ops * 0.5, conns=[cli])
        echo.send("stop")
        kids.collect(timeout=5.0, conns=[echo])
    out = {"nodes": nodes}
    for name in ("put", "get", "rtt"):
        s = sorted(res[name])
        out[name] = {"n": len(s), "p50": common.percentile(s, 0.5),
                     "p90": common.percentile(s, 0.9), "p99": common.percentile(s, 0.99)}
    out["errors"] = res["errors"]
    r = out["rtt"]["p50"]
    out["put_p50_over_rtt_p50"] = out["put"]["p50"] / r if r and r > 0 else float("nan")
    common.progress(f"{nodes} nodes: put p50 {out['put']['p50']:.2f} ms, "
                    f"rtt p50 {r:.3f} ms")
    return out


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--nodes", type=common.ints, default=[3, 5],
                   help="comma-separated node counts (default 3,5)")
    p.add_argument("--ops", type=int, default=1000, help="measured rounds (default 1000)")
    p.add_argument("--warmup", type=int, default=50, help="uncounted rounds (default 50)")
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--drop", type=float, default=0.0, help="replica-link drop rate (default 0)")
    args = p.parse_args()
    if args.quick:
        args.ops, args.warmup = 100, 10
    seed = common.pick_seed(args.seed)
    meta = {"benchmark": "latency", "machine": common.machine_info(), "seed": seed,
            "nodes": args.nodes, "ops": args.ops, "warmup": args.warmup,
            "value_size": args.value_size, "drop": args.drop, "quick": args.quick}
    common.progress(f"seed {seed}")
    results = [measure(args, n, seed + i) for i, n in enumerate(args.nodes)]
    rows = []
    for r in results:
        for name, label in (("put", "put"), ("get", "get"), ("rtt", "router RTT")):
            rows.append({"nodes": r["nodes"], "what": label, "n": r[name]["n"],
                         "p50 ms": r[name]["p50"], "p90 ms": r[name]["p90"],
                         "p99 ms": r[name]["p99"],
                         "put p50 / RTT p50": r["put_p50_over_rtt_p50"] if name == "put" else ""})
    common.write_json(args.json, {"meta": meta, "results": results, "rows": rows})
    common.print_table("raftmp commit latency, one operation in flight", rows, meta, notes=[
        "router RTT: client endpoint -> router -> echo endpoint -> router -> client endpoint, "
        "measured interleaved with the puts and gets in the same run",
        "a put needs at least 2 router round trips (client<->leader, leader<->followers)",
    ])
    for r in results:
        print(f"{r['nodes']} nodes: put p50 / router RTT p50 = {r['put_p50_over_rtt_p50']:.1f}")
    return 0


if __name__ == "__main__":
    common.run_main(main)
