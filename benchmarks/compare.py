"""raftmp beside PySyncObj: the same replicated put, the same node count and window.

Both systems replicate the same command: ``put(key, value)`` into a dict,
keys ``k0..k{--keys - 1}`` drawn at random, values of ``--value-size``
characters. Both run ``--nodes`` (default 5) replica processes on this machine,
and both are measured in one run, alternating round by round (raftmp,
PySyncObj, raftmp, PySyncObj, ...), each round on a freshly started cluster.

How the load is generated (read this before comparing numbers):

* raftmp: the replicas are ``raftmp.Cluster`` workers behind the router (at 0
  drops, so the router only forwards), each persisting its log to a file on
  /dev/shm (fsync per loop turn; cheap on tmpfs). The load comes from ONE
  separate client process (``raftmp.Client`` over the router) keeping
  ``--window`` puts in flight (closed loop: a new put as soon as one
  finishes). Every put travels client -> router -> leader, is replicated
  leader -> router -> followers and back, and the reply travels leader ->
  router -> client: the client is a process of its own, like a real client.
* PySyncObj: each replica is a process running ``SyncObj`` on localhost TCP
  ports, in two configurations (``--pso-confs``): ``pysyncobj`` is
  PySyncObj's default ``SyncObjConf`` (its tick thread, batching on: new
  entries leave with the next append-entries period, 0.1 s; in-memory log,
  no journal file), and ``pysyncobj-nobatch`` the same with
  ``appendEntriesUseBatch=False`` (AppendEntries sent per command, as in
  PySyncObj's own latency benchmark ``benchmarks/testobj_delay.py``). Like PySyncObj's own
  ``benchmarks/testobj.py``, the load is generated INSIDE a replica process
  that calls the ``@replicated`` put with a callback; a semaphore keeps
  ``--window`` calls in flight (closed loop). By default that replica is the
  leader (``--pso-origin leader``): PySyncObj's best case, with no client hop
  at all. ``--pso-origin follower`` makes a follower generate it (commands
  are forwarded to the leader, and the callback fires once the follower has
  applied the entry).

Throughput: committed puts per second over ``--duration`` seconds after a
``--warmup``. CPU: seconds of CPU (user + system, from /proc) that every
process of the system spent over the same window, per 1,000 committed puts:
the replicas, raftmp's router and client process, and children they reaped
(raftmp's snapshot writers); the benchmark's own process is not counted. On a
shared machine this figure depends much less on the load than ops/s does.
Light-load latency: p50 of ``--lat-ops`` puts issued one at a time (the next
only after the previous one's reply or callback), at 5 and at 3 nodes
(``--lat-nodes``). Values are medians over the rounds. The ratio
column is raftmp / the better PySyncObj configuration (throughput above 1:
raftmp is faster; latency below 1: raftmp is faster).

PySyncObj has no way to drop packets, so the comparison is at 0 drops.
PySyncObj is optional: ``pip install 'raftmp[compare]'``; without it this
script says so and measures only raftmp.

    .venv/bin/python benchmarks/compare.py
    .venv/bin/python benchmarks/compare.py --quick --json compare.json
"""

from __future__ import annotations

import functools
import math
import os
import random
import socket
import statistics
import sys
import threading
import time
from array import array
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import raftmp  # noqa: E402
from raftmp.core.session import DONE  # noqa: E402

try:
    import pysyncobj
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
except ImportError:  # the optional "compare" extra
    pysyncobj = None

LOAD_DESCRIPTION = [
    "raftmp: 1 separate client process (raftmp.Client via the router) keeps {window} puts "
    "in flight; workers persist to /dev/shm with fsync per turn",
    "pysyncobj: the load runs inside the {origin} replica process (it calls the "
    "@replicated put with a callback; a semaphore keeps {window} in flight); SyncObjConf "
    "defaults (tick thread, in-memory log), 'pysyncobj' with batching (new entries go out "
    "with the next append-entries period, 0.1 s), 'pysyncobj-nobatch' with "
    "appendEntriesUseBatch=False (as PySyncObj's own latency benchmark)",
    "light-load latency: puts one at a time, same client placement as above",
    "PySyncObj cannot drop packets: the comparison is at 0 drops (the raftmp router only "
    "forwards)",
]


class Records:
    """(invoke, complete, ok) of every operation of a load, kept in arrays.

    Both systems' loads use it. It keeps no Python object per operation in the
    process that generates the load. A list of a tuple per operation was
    700,000 objects by the end of a round. It cost raftmp's client process
    about 1 µs of CPU per put, most of it the cyclic collector walking the
    list. That was about 5% of the CPU per put measured for the whole cluster.
    """

    def __init__(self) -> None:
        self.invoke, self.complete, self.ok = array("d"), array("d"), array("b")

    def add(self, invoke: float, complete: float, ok: bool) -> None:
        self.invoke.append(invoke)
        self.complete.append(complete)
        self.ok.append(ok)


# -------------------------------------------------------------------- raftmp

def raftmp_load(conn: Any, address: str, ids: list[int], window: int, keys: int,
                value_size: int, seed: int, t_start: float, t_end: float) -> Records:
    """Closed-loop puts from ``t_start`` to ``t_end``: (invoke, complete, ok) per reply."""
    client = raftmp.Client(address, ids, seed=seed)
    rng = random.Random(seed)
    value = "v" * value_size
    records = Records()
    try:
        time.sleep(max(0.0, t_start - time.monotonic()))
        while time.monotonic() < t_end:
            while client.in_flight < window:
                client.submit("put", f"k{rng.randrange(keys)}", value)
            for o in client.poll(min(0.05, max(0.0, t_end - time.monotonic()))):
                records.add(o.invoke, o.complete, o.outcome == DONE)
    finally:
        client.close()
    return records


def raftmp_serial(conn: Any, address: str, ids: list[int], ops: int, warmup: int, keys: int,
                  value_size: int, seed: int) -> list[float]:
    """Latency (ms) of ``ops`` puts issued one at a time."""
    client = raftmp.Client(address, ids, seed=seed)
    rng = random.Random(seed)
    value = "v" * value_size
    lat = []
    try:
        for i in range(warmup + ops):
            t0 = time.monotonic()
            client.put(f"k{rng.randrange(keys)}", value)
            if i >= warmup:
                lat.append((time.monotonic() - t0) * 1000)
    finally:
        client.close()
    return lat


def raftmp_round(args: Any, nodes: int, seed: int, throughput: bool) -> dict:
    out: dict = {"system": "raftmp", "nodes": nodes}
    with raftmp.Cluster(nodes=nodes, seed=seed) as cluster, common.Children() as kids:
        if throughput:
            t_start = time.monotonic() + 0.2
            warm_end, t_end = t_start + args.warmup, t_start + args.warmup + args.duration
            kids.start(raftmp_load, cluster.address, cluster.ids, args.window, args.keys,
                       args.value_size, seed, t_start, t_end)
            cpu = cpu_window(warm_end, t_end)
            (recs,) = kids.collect(timeout=args.warmup + args.duration + 30.0)
            out.update(window_stats(recs, warm_end, t_end))
            out["cpu s/1k ops"] = cpu_per_kop(out, cpu, args.duration)
            time.sleep(DRAIN)  # as for PySyncObj: the tail of the window drains first
        c = kids.start(raftmp_serial, cluster.address, cluster.ids, args.lat_ops,
                       args.lat_warmup, args.keys, args.value_size, seed + 1)
        (lat,) = kids.collect(timeout=60.0 + args.lat_ops, conns=[c])
        out["lat p50 ms"] = common.percentile(sorted(lat), 0.5)
    return out


# Seconds between a throughput window and the one-at-a-time puts on the same
# cluster, for both systems (until issue 20's second session only PySyncObj
# had it: raftmp's serial puts began while its load's last puts, snapshot
# writers and catch-up were still running).
DRAIN = 0.5

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system, plus reaped children's) of every descendant of
    ``root`` now alive, from /proc (Linux; nan elsewhere)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return float("nan")
    parent, ticks = {}, {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue   # exited meanwhile
        parent[int(name)] = int(fields[1])
        ticks[int(name)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        total += sum(ticks[c] for c in kids)
        todo += kids
    return total / _TICK


def cpu_window(warm_end: float, t_end: float) -> float:
    """CPU seconds all the benchmark's descendants spend between the two times
    (sleeps until ``t_end``)."""
    time.sleep(max(0.0, warm_end - time.monotonic()))
    before = tree_cpu(os.getpid())
    time.sleep(max(0.0, t_end - time.monotonic()))
    return tree_cpu(os.getpid()) - before


def cpu_per_kop(stats: dict, cpu: float, seconds: float) -> float:
    ops = stats["ops/s"] * seconds
    return cpu / ops * 1000 if ops else float("nan")


def window_stats(recs: Records, warm_end: float, t_end: float) -> dict:
    inside = [r for r in zip(recs.invoke, recs.complete, recs.ok, strict=True)
              if warm_end <= r[1] < t_end]
    lat = sorted((c - i) * 1000 for i, c, ok in inside if ok)
    return {"ops/s": len(lat) / (t_end - warm_end), "load p50 ms": common.percentile(lat, 0.5),
            "load p99 ms": common.percentile(lat, 0.99),
            "failed": sum(not ok for _, _, ok in inside)}


# ----------------------------------------------------------------- pysyncobj

def _kv_class() -> Any:
    class KV(SyncObj):
        def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
            super().__init__(self_addr, partners, conf=conf)
            self._data: dict = {}

        @replicated
        def put(self, key: str, value: str) -> None:
            self._data[key] = value
    return KV


def pso_load(obj: Any, window: int, keys: int, value_size: int, seed: int,
             t_start: float, t_end: float) -> Records:
    """Closed loop inside this replica: ``window`` replicated puts in flight."""
    sem = threading.BoundedSemaphore(window)
    records = Records()
    rng = random.Random(seed)
    value = "v" * value_size

    def done(res: Any, err: Any, t0: float) -> None:  # on PySyncObj's tick thread
        records.add(t0, time.monotonic(), err == FAIL_REASON.SUCCESS)
        sem.release()

    time.sleep(max(0.0, t_start - time.monotonic()))
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        if sem.acquire(timeout=min(0.05, t_end - now)):
            obj.put(f"k{rng.randrange(keys)}", value,
                    callback=functools.partial(done, t0=time.monotonic()))
    return records


def pso_serial(obj: Any, ops: int, warmup: int, keys: int, value_size: int,
               seed: int) -> list[float]:
    rng = random.Random(seed)
    value = "v" * value_size
    lat = []
    ev = threading.Event()
    for i in range(warmup + ops):
        ev.clear()
        t0 = time.monotonic()
        obj.put(f"k{rng.randrange(keys)}", value, callback=lambda res, err: ev.set())
        if not ev.wait(10.0):
            raise RuntimeError("a PySyncObj put got no callback within 10 s")
        if i >= warmup:
            lat.append((time.monotonic() - t0) * 1000)
    return lat


def pso_node(conn: Any, self_addr: str, partners: list[str], conf: dict) -> None:
    """One PySyncObj replica; serves the launcher's requests until "stop"."""
    import logging
    logging.getLogger("pysyncobj").setLevel(logging.ERROR)
    obj = _kv_class()(self_addr, partners, SyncObjConf(**conf))
    try:
        while True:
            cmd = common.recv_command(conn, 0.05)
            if cmd is None:
                continue
            if cmd == "stop":
                return None
            if cmd == "status":
                leader = obj._getLeader()
                conn.send(("status", obj._isLeader(), None if leader is None else str(leader)))
            elif cmd[0] == "load":
                conn.send(("load", pso_load(obj, *cmd[1:])))
            elif cmd[0] == "serial":
                conn.send(("serial", pso_serial(obj, *cmd[1:])))
    finally:
        obj.destroy()


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ask(conn: Any, request: Any, timeout: float, meanwhile: Any = None) -> Any:
    conn.send(request)
    if meanwhile is not None:
        meanwhile()
    if not conn.poll(timeout):
        raise common.ChildError(f"a PySyncObj replica did not answer {str(request)[:20]}")
    kind, *value = conn.recv()
    if kind == "error":
        raise common.ChildError(f"a PySyncObj replica failed:\n{value[0]}")
    return value


PSO_CONFS = {
    # PySyncObj's defaults: new entries wait for the next append-entries period (0.1 s).
    "pysyncobj": {},
    # As PySyncObj's own benchmarks/testobj_delay.py: send AppendEntries per command.
    "pysyncobj-nobatch": {"appendEntriesUseBatch": False},
}


def pso_round(args: Any, nodes: int, seed: int, throughput: bool,
              system: str = "pysyncobj") -> dict:
    out: dict = {"system": system, "nodes": nodes}
    addrs = [f"127.0.0.1:{p}" for p in free_ports(nodes)]
    with common.Children() as kids:
        conns = []
        try:
            for i, a in enumerate(addrs):
                conns.append(kids.start(pso_node, a, addrs[:i] + addrs[i + 1:],
                                        PSO_CONFS[system], name=f"bench-pso{i}"))
            t0 = time.monotonic()
            while True:  # one leader that every replica knows
                st = [ask(c, "status", 10.0) for c in conns]
                leaders = [i for i, (is_leader, _) in enumerate(st) if is_leader]
                if len(leaders) == 1 and all(s[1] == addrs[leaders[0]] for s in st):
                    break
                if time.monotonic() - t0 > 30.0:
                    raise RuntimeError("PySyncObj elected no leader within 30 s")
                time.sleep(0.05)
            out["startup_s"] = time.monotonic() - t0
            origin = leaders[0] if args.pso_origin == "leader" else (leaders[0] + 1) % nodes
            if throughput:
                t_start = time.monotonic() + 0.05
                warm_end, t_end = t_start + args.warmup, t_start + args.warmup + args.duration
                cpu: list[float] = []
                (recs,) = ask(conns[origin], ("load", args.window, args.keys, args.value_size,
                                              seed, t_start, t_end),
                              args.warmup + args.duration + 30.0,
                              meanwhile=lambda: cpu.append(cpu_window(warm_end, t_end)))
                out.update(window_stats(recs, warm_end, t_end))
                out["cpu s/1k ops"] = cpu_per_kop(out, cpu[0], args.duration)
                time.sleep(DRAIN)  # let the tail of the window drain before the serial puts
            (lat,) = ask(conns[origin], ("serial", args.lat_ops, args.lat_warmup, args.keys,
                                         args.value_size, seed + 1), 60.0 + 10 * args.lat_ops)
            out["lat p50 ms"] = common.percentile(sorted(lat), 0.5)
        finally:
            common.send_stop(conns)
            try:
                kids.collect(timeout=5.0)
            except common.ChildError as exc:
                common.progress(f"pysyncobj shutdown: {exc}")
    return out


# ---------------------------------------------------------------------- main

def median_of(rows: list[dict], system: str, nodes: int, key: str) -> float:
    vals = [r[key] for r in rows if r["system"] == system and r["nodes"] == nodes
            and key in r and not math.isnan(r[key])]
    return statistics.median(vals) if vals else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def main() -> int:
    p = common.base_parser(__doc__)
    p.add_argument("--nodes", type=int, default=5, help="replicas for throughput (default 5)")
    p.add_argument("--lat-nodes", type=common.ints, default=[5, 3],
                   help="node counts for the light-load latency (default 5,3)")
    p.add_argument("--window", type=int, default=32, help="puts in flight (default 32)")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--lat-ops", type=int, default=200, help="one-at-a-time puts (default 200)")
    p.add_argument("--lat-warmup", type=int, default=10)
    p.add_argument("--pso-origin", choices=["leader", "follower"], default="leader",
                   help="which PySyncObj replica generates the load (default leader)")
    p.add_argument("--pso-confs", type=lambda s: [c for c in s.split(",") if c],
                   default=list(PSO_CONFS),
                   help="PySyncObj configurations: pysyncobj (its defaults) and/or "
                        "pysyncobj-nobatch (appendEntriesUseBatch=False); default both")
    args = p.parse_args()
    for c in args.pso_confs:
        if c not in PSO_CONFS:
            p.error(f"unknown PySyncObj configuration {c!r}: choose from {', '.join(PSO_CONFS)}")
    if args.quick:
        args.rounds, args.warmup, args.duration = 1, 0.5, 1.0
        args.lat_ops, args.lat_warmup = 10, 2
    seed = common.pick_seed(args.seed)
    have_pso = pysyncobj is not None
    if not have_pso:
        print("PySyncObj is not installed (pip install 'raftmp[compare]'): "
              "measuring raftmp only", file=sys.stderr)
        args.pso_confs = []
    meta = {"benchmark": "compare", "machine": common.machine_info(), "seed": seed,
            "nodes": args.nodes, "lat_nodes": args.lat_nodes, "window": args.window,
            "keys": args.keys, "value_size": args.value_size, "rounds": args.rounds,
            "warmup_s": args.warmup, "duration_s": args.duration, "lat_ops": args.lat_ops,
            "pso_origin": args.pso_origin, "pso_confs": {c: PSO_CONFS[c] for c in args.pso_confs},
            "drop": 0.0, "pysyncobj": None, "quick": args.quick}
    if have_pso:
        from importlib.metadata import PackageNotFoundError, version
        try:
            meta["pysyncobj"] = version("pysyncobj")
        except PackageNotFoundError:
            pass
    common.progress(f"seed {seed}")
    systems: list[tuple[str, Any]] = [("raftmp", raftmp_round)]
    systems += [(c, functools.partial(pso_round, system=c)) for c in args.pso_confs]
    runs: list[dict] = []
    plan = [(args.nodes, True, r) for r in range(args.rounds)]
    plan += [(n, False, 0) for n in args.lat_nodes if n != args.nodes]
    for nodes, tput, r in plan:
        for name, fn in systems:
            common.progress(f"round {r + 1}: {name}, {nodes} nodes"
                            + (", throughput + latency" if tput else ", latency"))
            res = fn(args, nodes, seed + 17 * r + nodes, tput)
            res["round"] = r
            runs.append(res)
            common.progress("  " + ", ".join(f"{k} {common.fmt(v)}" for k, v in res.items()
                                             if isinstance(v, float)))
    metrics = [(f"throughput ops/s ({args.nodes} nodes, window {args.window})", args.nodes,
                "ops/s", max)]
    metrics.append((f"CPU s per 1,000 puts ({args.nodes} nodes, all processes)", args.nodes,
                    "cpu s/1k ops", min))
    metrics += [(f"one-at-a-time put p50 ms ({n} nodes)", n, "lat p50 ms", min)
                for n in args.lat_nodes]
    metrics.append((f"p99 ms under load ({args.nodes} nodes)", args.nodes, "load p99 ms", min))
    rows = []
    for label, n, key, best in metrics:
        row: dict = {"metric": label, "raftmp": median_of(runs, "raftmp", n, key)}
        for c in PSO_CONFS:
            row[c] = median_of(runs, c, n, key) if c in args.pso_confs else "n/a"
        vals = [row[c] for c in args.pso_confs if not math.isnan(row[c])]
        row["raftmp / best pysyncobj"] = ratio(row["raftmp"], best(vals)) if vals else "n/a"
        rows.append(row)
    load = [line.format(window=args.window, origin=args.pso_origin) for line in LOAD_DESCRIPTION]
    common.write_json(args.json, {"meta": meta, "rows": rows, "runs": runs, "load": load,
                                  "pysyncobj_available": have_pso})
    notes = ([] if have_pso else ["PySyncObj is not installed: only raftmp was measured"])
    notes += load + [f"values are medians over {args.rounds} alternating round(s)",
                     "ratios: throughput above 1 = raftmp faster; latency below 1 = raftmp faster"]
    common.print_table("raftmp vs PySyncObj (0 drops: PySyncObj cannot drop packets)", rows,
                       meta, notes=notes)
    return 0


if __name__ == "__main__":
    common.run_main(main)
