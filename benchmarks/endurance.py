"""Endurance: does a cluster under sustained writes stay bounded, and recover fast?

A ``--nodes`` cluster takes puts at full speed (``--clients`` processes x
``--concurrency`` in flight, ``--keys`` keys) for ``--duration`` seconds.
Every ``--sample`` seconds the launcher reads each worker's status: RSS, log
entries in memory, snapshot index and data-directory size; the clients count
committed writes and their latencies per second. Then, with the load still
on, three events:

* follower restart: a follower is killed and restarted at once; time until it
  has applied what the leader had committed when it came back;
* follower behind: a follower is killed, the others go on for
  ``--behind`` seconds (they compact past it), then it restarts with
  ``--behind-drop`` packet loss on replica links; time until it caught up,
  and how many snapshots it installed since its restart (``installed``);
* leader restart: the leader is killed and restarted; its log length right
  after the restart (its snapshot, not its history) and its catch-up time.

``--no-compaction`` runs the same with snapshots off (for the throughput
comparison). Prints the tables with the machine and parameters; ``--json``
keeps every sample; ``--plot FILE.png`` draws RSS, log and data size over
time (needs matplotlib: ``pip install 'raftmp[plot]'``).

    python benchmarks/endurance.py                       # 10 minutes, 5 nodes
    python benchmarks/endurance.py --quick               # a smoke run
    python benchmarks/endurance.py --duration 60 --no-compaction --json off.json
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter, defaultdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import raftmp  # noqa: E402
from raftmp.core.session import DONE  # noqa: E402

NEVER = 1 << 62   # snapshot threshold that is never reached (--no-compaction)


def load_client(conn: Any, address: str, ids: list[int], args: Any, seed: int,
                raw: tuple[float, float]) -> dict:
    """Puts until told to stop; per second: writes done and a latency histogram (0.1 ms
    bins); every write completed within ``raw`` as (completed, latency)."""
    client = raftmp.Client(address, ids, seed=seed)
    rng = random.Random(seed)
    done: Counter = Counter()
    hist: dict[int, Counter] = defaultdict(Counter)
    each: list[tuple[float, float]] = []
    value = "v" * args.value_size
    try:
        while common.recv_command(conn) != "stop":
            while client.in_flight < args.concurrency:
                client.submit("put", f"k{rng.randrange(args.keys)}", value)
            for o in client.poll(0.05):
                if o.outcome == DONE:
                    sec, took = int(o.complete), o.complete - o.invoke
                    done[sec] += 1
                    hist[sec][min(int(took * 10_000), 100_000)] += 1
                    if raw[0] <= o.complete < raw[1]:
                        each.append((o.complete, took))
    finally:
        client.close()
    return {"done": dict(done), "hist": {k: dict(v) for k, v in hist.items()}, "raw": each}


def sample(cluster: raftmp.Cluster, t0: float) -> dict:
    nodes = [cluster.node_status(i, timeout=2.0) for i in cluster.ids]
    return {"t": time.monotonic() - t0, "nodes": [
        {k: n.get(k) for k in ("node", "alive", "role", "commit", "applied", "snapshot",
                               "log_entries", "data_bytes", "rss")} for n in nodes]}


def wait_for(fn: Any, limit: float) -> tuple[float, Any]:
    """(seconds until ``fn()`` is truthy, its value), or (nan, None) after ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        value = fn()
        if value:
            return time.monotonic() - t0, value
        time.sleep(0.01)
    return float("nan"), None


def wait_caught_up(cluster: raftmp.Cluster, i: int, target: int, limit: float) -> float:
    """Seconds until node i has applied ``target`` (nan if not within ``limit``)."""
    return wait_for(lambda: cluster.node_status(i, timeout=0.5).get("applied", -1) >= target,
                    limit)[0]


def leader_commit(cluster: raftmp.Cluster) -> tuple[int, int]:
    leader = cluster.wait_for_leader(20)
    return leader, cluster.node_status(leader)["commit"]


def events(cluster: raftmp.Cluster, args: Any) -> list[dict]:
    rows = []
    leader, _ = leader_commit(cluster)
    follower = (leader + 1) % args.nodes
    cluster.kill(follower)
    cluster.restart(follower)
    _, target = leader_commit(cluster)
    took = wait_caught_up(cluster, follower, target, 60)
    rows.append({"event": "follower killed + restarted", "node": follower,
                 "caught up s": took, "log after restart": None, "installed": None})

    leader, _ = leader_commit(cluster)
    follower = (leader + 2) % args.nodes
    cluster.kill(follower)
    time.sleep(args.behind)
    cluster.set_faults(drop=args.behind_drop)
    cluster.restart(follower)
    _, target = leader_commit(cluster)
    took = wait_caught_up(cluster, follower, target, 120)
    cluster.set_faults(drop=args.drop)
    rows.append({"event": f"follower down {args.behind} s, back at drop {args.behind_drop}",
                 "node": follower, "caught up s": took, "log after restart": None,
                 "installed": cluster.node_status(follower).get("installs")})

    leader, _ = leader_commit(cluster)
    cluster.kill(leader)
    cluster.restart(leader)
    first = wait_for(lambda: cluster.node_status(leader, timeout=0.5).get("alive")
                     and cluster.node_status(leader, timeout=0.5), 30)[1]
    _, target = leader_commit(cluster)
    took = wait_caught_up(cluster, leader, target, 60)
    rows.append({"event": "leader killed + restarted", "node": leader, "caught up s": took,
                 "log after restart": first.get("log_entries") if first else None,
                 "installed": None})
    return rows


def split_p99(raw: list[tuple[float, float]], times: list[tuple[float, float]]) -> dict:
    """p99 latency (ms) of the writes that completed while some node was taking a
    snapshot (from its fork to its log compaction) and of the others."""
    merged: list[list[float]] = []          # the union of the intervals, in order
    for a, b in sorted(times):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    during, between = [], []
    i = 0
    for done, took in sorted(raw):
        while i < len(merged) and merged[i][1] < done:
            i += 1
        inside = i < len(merged) and merged[i][0] <= done
        (during if inside else between).append(took * 1000)
    return {"writes during snapshots": len(during), "writes between": len(between),
            "p99 ms during": common.percentile(sorted(during), 0.99),
            "p99 ms between": common.percentile(sorted(between), 0.99)}


def p99(hists: list[Counter]) -> float:
    total = Counter()
    for h in hists:
        total.update(h)
    n = sum(total.values())
    if not n:
        return float("nan")
    seen = 0
    for b in sorted(total):
        seen += total[b]
        if seen >= 0.99 * n:
            return b / 10.0
    return float("nan")


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of writes (10 min)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--drop", type=float, default=0.0, help="replica-link loss while writing")
    p.add_argument("--behind", type=float, default=10.0, help="seconds a follower stays down")
    p.add_argument("--behind-drop", type=float, default=0.3,
                   help="replica-link loss while the follower that was down catches up")
    p.add_argument("--no-compaction", action="store_true", help="snapshots off")
    p.add_argument("--raw", type=float, default=20.0,
                   help="seconds at the end of the writes whose latencies are split into "
                        "during/between snapshots (default 20)")
    p.add_argument("--plot", metavar="FILE.png", default=None)
    args = p.parse_args()
    if args.quick:
        args.duration, args.sample, args.behind, args.nodes = 3.0, 1.0, 1.0, 3
    seed = common.pick_seed(args.seed)
    config = raftmp.Config()
    if args.no_compaction:
        config = raftmp.Config(snapshot_entries=NEVER, snapshot_bytes=NEVER)
    meta = {"benchmark": "endurance", "machine": common.machine_info(), "seed": seed,
            "nodes": args.nodes, "duration_s": args.duration, "sample_s": args.sample,
            "clients": args.clients, "concurrency": args.concurrency, "keys": args.keys,
            "value_size": args.value_size, "drop": args.drop, "behind_s": args.behind,
            "behind_drop": args.behind_drop, "compaction": not args.no_compaction,
            "snapshot_entries": config.snapshot_entries, "snapshot_keep": config.snapshot_keep,
            "snapshot_bytes": config.snapshot_bytes, "raw_s": args.raw, "quick": args.quick}
    common.progress(f"seed {seed}")
    samples = []
    with raftmp.Cluster(nodes=args.nodes, seed=seed, drop=args.drop, config=config) as cluster, \
            common.Children() as kids:
        t0 = time.monotonic()
        raw = (t0 + args.duration - min(args.raw, args.duration / 2), t0 + args.duration)
        conns = [kids.start(load_client, cluster.address, cluster.ids, args, seed * 100 + c, raw)
                 for c in range(args.clients)]
        while time.monotonic() - t0 < args.duration:
            time.sleep(min(args.sample, max(0.0, t0 + args.duration - time.monotonic())))
            samples.append(sample(cluster, t0))
            s = samples[-1]["nodes"]
            common.progress(f"t={samples[-1]['t']:.0f}s max rss "
                            f"{max(n['rss'] or 0 for n in s) / 2**20:.0f} MB, max log "
                            f"{max(n['log_entries'] or 0 for n in s)}, commit "
                            f"{max(n['commit'] or 0 for n in s)}")
        t_events = time.monotonic()
        times = [t for i in cluster.ids
                 for t in cluster.node_status(i).get("snapshot_times", [])]
        rows_events = events(cluster, args)
        for c in conns:
            c.send("stop")
        results = kids.collect(timeout=60.0)
    done: Counter = Counter()
    hist: dict[int, list[Counter]] = defaultdict(list)
    for r in results:
        done.update({int(k): v for k, v in r["done"].items()})
        for k, h in r["hist"].items():
            hist[int(k)].append(Counter({int(b): n for b, n in h.items()}))
    rows = []
    prev = 0.0
    for s in samples:
        lo, hi = int(t0 + prev), int(t0 + s["t"])
        secs = range(lo + 1, hi + 1)
        live = [n for n in s["nodes"] if n["alive"]]
        rows.append({
            "t s": round(s["t"]),
            "writes/s": sum(done[x] for x in secs) / max(1, len(secs)),
            "p99 ms": p99([h for x in secs for h in hist[x]]),
            "max RSS MB": max((n["rss"] or 0) for n in live) / 2**20,
            "max log entries": max((n["log_entries"] or 0) for n in live),
            "max data MB": max((n["data_bytes"] or 0) for n in live) / 2**20,
            "min snapshot": min((n["snapshot"] or 0) for n in live),
            "commit": max((n["commit"] or 0) for n in live),
        })
        prev = s["t"]
    total = sum(v for k, v in done.items() if k <= int(t_events))
    summary = {"writes": total, "writes_per_s": total / max(1e-9, t_events - t0),
               "raw_window_s": raw[1] - raw[0], "snapshots_in_window":
               sum(1 for a, _ in times if raw[0] <= a < raw[1]),
               **split_p99([x for r in results for x in r["raw"]], times)}
    common.write_json(args.json, {"meta": meta, "rows": rows, "events": rows_events,
                                  "samples": samples, "summary": summary})
    common.print_table("raftmp endurance: sustained writes", rows, meta, notes=[
        f"{summary['writes']} writes in {t_events - t0:.0f} s "
        f"({summary['writes_per_s']:.0f}/s) before the restarts",
        "RSS, log entries and data size: the largest over the live workers at each sample",
        f"last {summary['raw_window_s']:.0f} s of writes: p99 {summary['p99 ms during']:.1f} ms "
        f"for the {summary['writes during snapshots']} completed while a node was taking one "
        f"of {summary['snapshots_in_window']} snapshots, p99 {summary['p99 ms between']:.1f} ms "
        f"for the {summary['writes between']} others"])
    common.print_table("raftmp endurance: restarts under load", rows_events, {"seed": seed})
    if args.plot:
        plot(args.plot, rows, meta)
    return 0


def plot(path: str, rows: list[dict], meta: dict) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    t = [r["t s"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key in zip(axes, ("max RSS MB", "max log entries", "max data MB"), strict=True):
        ax.plot(t, [r[key] for r in rows], "o-")
        ax.set_xlabel("seconds")
        ax.set_ylabel(key)
        ax.grid(True)
    fig.suptitle(f"raftmp endurance, {meta['nodes']} nodes, compaction "
                 f"{'on' if meta['compaction'] else 'off'}")
    fig.tight_layout()
    fig.savefig(path)
    common.progress(f"plot written to {path}")


if __name__ == "__main__":
    common.run_main(main)
