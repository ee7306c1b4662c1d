"""``python -m raftmp run``: a cluster with a console, interactive or driven from stdin."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict
from typing import Callable, Optional

from tabulate import tabulate

from .cluster import Cluster
from .core.errors import RaftmpError
from .seeds import pick_seed

HELP = """commands:
  put KEY VALUE            get KEY              del KEY
  cas KEY EXPECTED NEW     (EXPECTED '-' means: only if KEY is absent)
  status                   leader
  kill N                   restart N
  add_node                 (a new server: learner, then voter once caught up)
  remove_node N            transfer_leader N
  partition 0,1 2,3,4      (groups of nodes that cannot reach each other)
  heal                     faults [drop=P] [client_drop=P] [delay=LO,HI] [duplicate=P]
  help                     quit"""


class Console:
    def __init__(self, cluster: Cluster, out: Callable[[str], None] = print) -> None:
        self.cluster = cluster
        self.kv = cluster.client()
        self.out = out

    def execute(self, line: str) -> bool:
        """Run one command line; False when the console should end."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.out(f"error: {exc}")
            return True
        if not words:
            return True
        cmd, args = words[0].lower(), words[1:]
        if cmd in ("quit", "exit"):
            return False
        handler = getattr(self, f"do_{cmd}", None)
        if handler is None:
            self.out(f"error: unknown command {cmd!r} (try 'help')")
            return True
        try:
            handler(*args)
        except TypeError:
            self.out(f"error: wrong arguments for {cmd!r} (try 'help')")
        except (RaftmpError, ValueError) as exc:
            self.out(f"error: {type(exc).__name__}: {exc}")
        return True

    def do_help(self) -> None:
        self.out(HELP)

    def do_put(self, key: str, value: str) -> None:
        self.kv.put(key, value)
        self.out("ok")

    def do_get(self, key: str) -> None:
        value = self.kv.get(key)
        self.out("(absent)" if value is None else value)

    def do_del(self, key: str) -> None:
        self.out("deleted" if self.kv.delete(key) else "(absent)")

    def do_cas(self, key: str, expected: str, new: str) -> None:
        swapped = self.kv.cas(key, None if expected == "-" else expected, new)
        self.out("swapped" if swapped else "not swapped")

    def do_leader(self) -> None:
        self.out(str(self.cluster.leader()))

    def do_status(self) -> None:
        stats = self.cluster.stats()
        cols = ("node", "alive", "role", "member", "config_index", "term", "leader", "commit",
                "applied", "log", "snapshot", "log_entries", "data_bytes", "keys")
        rows = [[n.get(c, "") for c in cols] for n in stats["nodes"]]
        self.out(tabulate(rows, headers=cols))
        t = stats["router"]["total"]
        self.out(f"router: {t['packets']} packets, {t['delivered']} delivered, "
                 f"{t['dropped']} dropped, {t['duplicated']} duplicated; "
                 f"faults {stats['router']['faults']}")

    def do_kill(self, n: str) -> None:
        self.cluster.kill(int(n))
        self.out(f"killed node {n}")

    def do_restart(self, n: str) -> None:
        self.cluster.restart(int(n))
        self.out(f"restarted node {n}")

    def do_add_node(self) -> None:
        self.out(f"added node {self.cluster.add_node()} (a voter)")

    def do_remove_node(self, n: str) -> None:
        self.cluster.remove_node(int(n))
        self.out(f"removed node {n}; members {self.cluster.ids}")

    def do_transfer_leader(self, n: str) -> None:
        took = self.cluster.transfer_leader(int(n))
        self.out(f"node {n} leads (took {took:.3f} s)")

    def do_partition(self, *groups: str) -> None:
        if len(groups) < 2:
            raise ValueError("give at least two groups, e.g. partition 0,1 2,3,4")
        parsed = [[int(x) for x in g.split(",") if x] for g in groups]
        self.cluster.partition(*parsed)
        self.out(f"partitioned {' | '.join(groups)}")

    def do_heal(self) -> None:
        self.cluster.heal()
        self.out("healed")

    def do_faults(self, *settings: str) -> None:
        changes: dict = {}
        for s in settings:
            name, sep, value = s.partition("=")
            if not sep:
                raise ValueError(f"expected NAME=VALUE, got {s!r}")
            if name == "delay":
                lo, _, hi = value.partition(",")
                changes[name] = (float(lo), float(hi or lo))
            else:
                changes[name] = float(value)
        self.out(str(asdict(self.cluster.set_faults(**changes))))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftmp run",
                                description="Start a cluster and open a console (reads commands "
                                            "from stdin when it is not a terminal).\n\n" + HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-dir", default=None,
                   help="keep the nodes' data here (default: a temporary directory)")
    a = p.parse_args(argv)
    seed = pick_seed(a.seed)
    interactive = sys.stdin.isatty()
    print(f"raftmp: starting {a.nodes} nodes, drop={a.drop}, seed={seed}"
          + (f", data in {a.data_dir}" if a.data_dir else ""), flush=True)
    with Cluster(a.nodes, drop=a.drop, seed=seed, data_dir=a.data_dir) as cluster:
        console = Console(cluster, out=lambda s: print(s, flush=True))
        print(f"leader: node {cluster.leader()}. Type 'help' for commands.", flush=True)
        while True:
            try:
                line = input("raftmp> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                print()
                break
            if not console.execute(line):
                break
    return 0
