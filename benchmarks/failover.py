"""Failover time: from killing the leader to the first write committed by a new leader.

For each drop rate (``--drops``, default 0 and 0.2) a fresh ``--nodes``
cluster runs with default timeouts (``raftmp.Config``: election 0.2-0.4 s,
heartbeat 0.1 s; ``raftmp.Timing``: attempt timeout 0.25 s) under load:

* ``--clients`` background client processes, each keeping ``--concurrency``
  mixed operations in flight (closed loop, ``raftmp.workload.Workload``);
* one *probe* client process writing continuously, one put at a time. For
  each completed put it records the completion time (``time.monotonic``,
  the same clock in every process) and the node that answered it (the
  client's leader hint is set to the sender of each OK reply).

Each trial: wait until the cluster has a leader and the probe has just
committed a write; note the time and SIGKILL the leader (``Cluster.kill``).
Then the launcher polls ``Cluster.leader()`` until a leader of a newer term
is visible (*elected*), and asks the probe for its first write completed
after the kill by a node other than the killed one (*first write*). Mode
``kill`` restarts the old leader only after the trial is measured; mode
``restart`` restarts it right after the kill (then a write answered by the
restarted process also counts: the killed incarnation can no longer answer).
Between trials the cluster settles for ``--settle`` seconds.

The first-write time includes the client's own reaction: a put sent to the
dead leader is retried at the next node after the attempt timeout (0.25 s).
With ``--trials`` 20 the p99 is the largest but one value (nearest rank).

    .venv/bin/python benchmarks/failover.py
    .venv/bin/python benchmarks/failover.py --quick --json failover.json
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import deque
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import raftmp  # noqa: E402
from raftmp.core.session import DONE, UNKNOWN  # noqa: E402
from raftmp.workload import Workload  # noqa: E402

MODES = ("kill", "restart")


def background_load(conn: Any, address: str, ids: list[int], workload: Workload,
                    seed: int) -> dict:
    """Closed-loop load until the launcher says stop; outcome counts."""
    client = raftmp.Client(address, ids, seed=seed)
    rng = random.Random(seed)
    counts = {"ok": 0, "unknown": 0, "failed": 0}
    n = 0
    try:
        while common.recv_command(conn) != "stop":
            while client.in_flight < workload.concurrency:
                client.submit(*workload.op(rng, n))
                n += 1
            for o in client.poll(0.02):
                counts["ok" if o.outcome == DONE else
                       "unknown" if o.outcome == UNKNOWN else "failed"] += 1
    finally:
        client.close()
    return counts


def probe_writer(conn: Any, address: str, ids: list[int], seed: int) -> dict:
    """One put at a time, forever; answers queries ``(after, old, old_ok_after, deadline)``
    with the first write completed after ``after`` by a node other than ``old``
    (or by ``old`` after ``old_ok_after``): ("found", time, node) or ("timeout",)."""
    client = raftmp.Client(address, ids, seed=seed)
    recs: deque[tuple[float, Optional[int]]] = deque()
    counts = {"ok": 0, "unknown": 0, "failed": 0}
    query: Any = None
    n = 0
    try:
        while True:
            cmd = common.recv_command(conn)
            if cmd == "stop":
                break
            if cmd is not None:
                query = cmd
            if client.in_flight == 0:
                client.submit("put", f"probe{n % 10}", str(n))
                n += 1
            for o in client.poll(0.01):
                if o.outcome == DONE:
                    counts["ok"] += 1
                    recs.append((o.complete, client.session.leader))
                else:
                    counts["unknown" if o.outcome == UNKNOWN else "failed"] += 1
            if query is None:
                while len(recs) > 1000:
                    recs.popleft()
                continue
            after, old, old_ok_after, deadline = query
            while recs and recs[0][0] <= after:
                recs.popleft()
            for t, node in recs:
                if node != old or (old_ok_after is not None and t > old_ok_after):
                    conn.send(("found", t, node))
                    query = None
                    break
            else:
                if time.monotonic() > deadline:
                    conn.send(("timeout",))
                    query = None
    finally:
        client.close()
    return counts


def ask_probe(probe: Any, after: float, old: Optional[int], old_ok_after: Optional[float],
              bound: float) -> Optional[tuple[float, Optional[int]]]:
    probe.send((after, old, old_ok_after, time.monotonic() + bound))
    if not probe.poll(bound + 5.0):
        raise common.ChildError("the probe did not answer")
    reply = probe.recv()
    if reply[0] == "found":
        return reply[1], reply[2]
    if reply[0] != "timeout":
        raise common.ChildError(f"the probe failed: {reply}")
    return None


def leader_term(cluster: raftmp.Cluster) -> tuple[Optional[int], int]:
    best: tuple[Optional[int], int] = (None, -1)
    for i in cluster.alive():
        s = cluster.node_status(i, timeout=0.25)  # a node replaying its log must not stall us
        if s.get("role") == "leader" and s["term"] > best[1]:
            best = (i, s["term"])
    return best


def settle(cluster: raftmp.Cluster, probe: Any, seconds: float) -> tuple[int, int]:
    """All nodes up, a leader, a fresh probe write; (leader, term)."""
    time.sleep(seconds)
    deadline = time.monotonic() + 20.0
    while True:
        leader, term = leader_term(cluster)
        if leader is not None and len(cluster.alive()) == cluster.n:
            if ask_probe(probe, time.monotonic(), None, 0.0, 5.0) is not None:
                leader2, term2 = leader_term(cluster)
                if (leader2, term2) == (leader, term):
                    return leader, term
        if time.monotonic() > deadline:
            raise raftmp.RaftmpError("the cluster did not settle within 20 s")
        time.sleep(0.05)


def trial(cluster: raftmp.Cluster, probe: Any, mode: str, settle_s: float,
          bound: float) -> dict:
    old, old_term = settle(cluster, probe, settle_s)
    t_kill = time.monotonic()
    cluster.kill(old)
    t_restarted = None
    if mode == "restart":
        cluster.restart(old)
        t_restarted = time.monotonic()
    elected = None
    new_leader = None
    while time.monotonic() - t_kill < bound:
        leader, term = leader_term(cluster)
        if leader is not None and term > old_term:
            elected, new_leader = time.monotonic() - t_kill, leader
            break
        time.sleep(0.005)
    found = ask_probe(probe, t_kill, old, t_restarted, bound)
    if mode == "kill":
        cluster.restart(old)
    return {"mode": mode, "old_leader": old, "old_term": old_term, "new_leader": new_leader,
            "elected_s": elected,
            "first_write_s": None if found is None else found[0] - t_kill,
            "answered_by": None if found is None else found[1]}


def run_drop(args: Any, drop: float, seed: int) -> list[dict]:
    workload = Workload(keys=args.keys, read_fraction=0.5, value_size=args.value_size,
                        concurrency=args.concurrency)
    common.progress(f"drop {drop}: starting a {args.nodes}-node cluster")
    out = []
    with raftmp.Cluster(nodes=args.nodes, seed=seed) as cluster, common.Children() as kids:
        cluster.set_faults(drop=drop)
        loads = [kids.start(background_load, cluster.address, cluster.ids, workload,
                            seed * 1000 + c) for c in range(args.clients)]
        probe = kids.start(probe_writer, cluster.address, cluster.ids, seed * 1000 + 999,
                           name="bench-probe")
        try:
            for mode in args.modes:
                for k in range(args.trials):
                    r = trial(cluster, probe, mode, args.settle, args.bound)
                    r.update(drop=drop, trial=k)
                    out.append(r)
                    fw = r["first_write_s"]
                    common.progress(
                        f"drop {drop} {mode} #{k + 1}/{args.trials}: killed {r['old_leader']}, "
                        f"first write after {'-' if fw is None else f'{fw * 1000:.0f} ms'} "
                        f"via {r['answered_by']}")
        finally:
            common.send_stop(loads + [probe])
        counts = kids.collect(timeout=15.0)
    for r in out:
        r["ops"] = {"background": counts[:-1], "probe": counts[-1]}
    return out


def summarize(trials: list[dict], drop: float, mode: str) -> dict:
    ts = [t for t in trials if t["drop"] == drop and t["mode"] == mode]
    fw = sorted(t["first_write_s"] * 1000 for t in ts if t["first_write_s"] is not None)
    el = sorted(t["elected_s"] * 1000 for t in ts if t["elected_s"] is not None)
    ops = ts[0]["ops"] if ts else {"background": [], "probe": {}}
    unknown = sum(c["unknown"] for c in ops["background"]) + ops["probe"].get("unknown", 0)
    failed = sum(c["failed"] for c in ops["background"]) + ops["probe"].get("failed", 0)
    return {"drop": drop, "mode": mode, "trials": len(ts),
            "first write p50 ms": common.percentile(fw, 0.5),
            "p99 ms": common.percentile(fw, 0.99), "max ms": fw[-1] if fw else float("nan"),
            "elected p50 ms": common.percentile(el, 0.5),
            "elected max ms": el[-1] if el else float("nan"),
            "no write": len(ts) - len(fw),
            "unknown ops": unknown, "failed ops": failed}


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--drops", type=common.floats, default=[0.0, 0.2],
                   help="comma-separated drop rates (default 0,0.2)")
    p.add_argument("--modes", type=lambda s: [m for m in s.split(",") if m],
                   default=list(MODES), help="kill,restart (default both)")
    p.add_argument("--trials", type=int, default=20, help="kills per drop rate and mode")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--clients", type=int, default=1, help="background load processes")
    p.add_argument("--concurrency", type=int, default=8, help="ops in flight per load client")
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds between trials (default 1)")
    p.add_argument("--bound", type=float, default=10.0,
                   help="give up on a trial after this many seconds (default 10)")
    args = p.parse_args()
    for m in args.modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}: choose from {', '.join(MODES)}")
    if args.quick:
        args.trials, args.settle = 2, 0.2
    seed = common.pick_seed(args.seed)
    meta = {"benchmark": "failover", "machine": common.machine_info(), "seed": seed,
            "nodes": args.nodes, "drops": args.drops, "modes": args.modes,
            "trials": args.trials, "clients": args.clients, "concurrency": args.concurrency,
            "keys": args.keys, "settle_s": args.settle, "config": vars(raftmp.Config()),
            "timing": vars(raftmp.Timing()), "quick": args.quick}
    common.progress(f"seed {seed}")
    trials: list[dict] = []
    for i, drop in enumerate(args.drops):
        trials += run_drop(args, drop, seed + i)
    rows = [summarize(trials, d, m) for d in args.drops for m in args.modes]
    common.write_json(args.json, {"meta": meta, "rows": rows, "trials": trials})
    common.print_table("raftmp failover: leader SIGKILL -> first write via a new leader", rows,
                       meta, notes=[
        "first write: kill -> first probe put completed by a node other than the killed one "
        "(includes the client's 0.25 s attempt timeout when its put was at the dead leader)",
        "elected: kill -> Cluster.leader() shows a leader of a newer term (polled every ~5 ms)",
        f"load: {args.clients} background client process(es) x {args.concurrency} ops in "
        "flight, plus the probe (1 put in flight); unknown/failed ops count all of them",
        "kill: the old leader stays down until the trial is measured; "
        "restart: it is restarted right after the kill",
    ])
    return 0


if __name__ == "__main__":
    common.run_main(main)
