"""redis-benchmark against a 3-node ``raftmp serve`` cluster on loopback.

Starts ``--nodes`` serve processes (``raftmp.serve_local.LocalServe``: one per
loopback address, fsync on unless ``--no-sync``), waits for a leader, and runs
``redis-benchmark -t set,get -n N -c C -P P --csv`` against the leader's RESP
port for each ``-P`` in ``--pipelines``: requests/s and p50/p99 latency per
test, in one table. Every SET goes through the log (a commit by a majority,
fsync'd); every GET is a linearizable read on the leader's lease (or
ReadIndex with ``--read-mode index``).

Needs ``redis-benchmark`` (Debian: ``apt-get install redis-tools``); without it
the script says so and exits 0.

    python benchmarks/resp.py                        # -n 100000 -c 50, -P 1 and -P 16
    python benchmarks/resp.py --quick --json resp.json
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from raftmp import serve  # noqa: E402
from raftmp.serve_local import LocalServe  # noqa: E402


def run_benchmark(host: str, port: int, tests: str, n: int, clients: int,
                  pipeline: int) -> list[dict]:
    cmd = ["redis-benchmark", "-h", host, "-p", str(port), "-t", tests, "-n", str(n),
           "-c", str(clients), "-P", str(pipeline), "--csv"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:   # redis-benchmark stops at the first error reply
        why = (run.stderr.strip().splitlines() or ["?"])[-1][:120]
        return [{"test": tests.upper(), "-P": pipeline, "requests/s": None, "p50 ms": None,
                 "p99 ms": None, "max ms": None, "error": why}]
    out = run.stdout
    rows = []
    for r in csv.DictReader(io.StringIO(out)):
        rows.append({"test": r["test"], "-P": pipeline, "requests/s": float(r["rps"]),
                     "p50 ms": float(r["p50_latency_ms"]), "p99 ms": float(r["p99_latency_ms"]),
                     "max ms": float(r["max_latency_ms"])})
    return rows


def main() -> int:
    p = common.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("-n", "--requests", type=int, default=100_000)
    p.add_argument("-c", "--clients", type=int, default=50)
    p.add_argument("--pipelines", type=common.ints, default=[1, 16])
    p.add_argument("--tests", default="set,get")
    p.add_argument("--read-mode", default="lease", choices=("lease", "index"))
    p.add_argument("--no-sync", action="store_true", help="serve without fsync")
    p.add_argument("--election-timeout", default=None,
                   help="MIN,MAX for every node (default: serve's, 1.0,2.0); shorter ones "
                        "change leaders in the stalls of an overloaded machine, and "
                        "redis-benchmark stops at its first error reply")
    a = p.parse_args()
    seed = common.pick_seed(a.seed)
    if a.quick:
        a.requests = 2000
    meta = {"benchmark": "redis-benchmark vs raftmp serve", "nodes": a.nodes,
            "requests": a.requests, "clients": a.clients, "tests": a.tests,
            "read_mode": a.read_mode, "fsync": not a.no_sync, "seed": seed, "quick": a.quick,
            "election_timeout": a.election_timeout or serve.ELECTION_TIMEOUT,
            "machine": common.machine_info()}
    if shutil.which("redis-benchmark") is None:
        reason = "redis-benchmark is not installed (Debian: apt-get install redis-tools)"
        print(f"skipped: {reason}")
        common.write_json(a.json, {"meta": meta, "rows": [], "skipped": reason})
        return 0
    rows: list[dict] = []
    with LocalServe(a.nodes, sync=not a.no_sync, read_mode=a.read_mode,
                    election_timeout=a.election_timeout) as cluster:
        for pipeline in a.pipelines:
            leader = cluster.wait_for_leader()
            host, port = cluster.address(leader, "resp").rsplit(":", 1)
            common.progress(f"redis-benchmark -P {pipeline} against node {leader} ({host}:{port})")
            rows += run_benchmark(host, int(port), a.tests, a.requests, a.clients, pipeline)
        meta["terms"] = cluster.figure(cluster.wait_for_leader(), "raftmp_term")
    notes = ["SET: committed by a majority (fsync'd unless --no-sync) before the answer; "
             "GET: a linearizable read on the leader"]
    notes += [f"-P {r['-P']}: redis-benchmark stopped: {r['error']}" for r in rows
              if r.get("error")]
    common.print_table("redis-benchmark against raftmp serve", rows, meta, notes=notes)
    common.write_json(a.json, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
