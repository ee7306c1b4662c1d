"""``python -m raftmp run``: a cluster with a console, interactive or driven from stdin."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable, Optional

from tabulate import tabulate

from .cli import Parser, integer, number, output_dir
from .cluster import Cluster
from .core.errors import ConfigError, RaftmpError
from .faults import Faults
from .seeds import pick_seed

MAX_NODES = 99      # what the commands start (Cluster takes up to 999)
SLOW_DELAY_MS = 1000.0

USAGE = {
    "put": "put KEY VALUE", "get": "get KEY", "del": "del KEY",
    "cas": "cas KEY EXPECTED NEW     (EXPECTED '-' means: only if KEY is absent)",
    "status": "status", "leader": "leader", "kill": "kill N", "restart": "restart N",
    "add_node": "add_node", "remove_node": "remove_node N", "transfer_leader": "transfer_leader N",
    "partition": "partition 0,1 2,3,4  (groups of nodes that cannot reach each other)",
    "heal": "heal",
    "faults": "faults [drop=P] [client_drop=P] [duplicate=P] [delay=MS or MIN,MAX]",
    "help": "help", "quit": "quit",
}
HELP = """commands:
  put KEY VALUE            get KEY              del KEY
  cas KEY EXPECTED NEW     (EXPECTED '-' means: only if KEY is absent)
  status                   leader
  kill N                   restart N            (N: a node number)
  add_node                 (a new server: learner, then voter once caught up)
  remove_node N            transfer_leader N
  partition 0,1 2,3,4      (groups of nodes that cannot reach each other)
  heal                     faults [drop=P] [client_drop=P] [duplicate=P] [delay=MS or MIN,MAX]
                           (P: a probability in [0, 1]; delays in milliseconds)
  help                     quit"""


class Usage(Exception):
    """A command line the console cannot read: answered with its usage."""


def start_cluster(cluster: Cluster, drop: float) -> Cluster:
    """``cluster.start()``, with a hint when no leader came up on a lossy network."""
    try:
        return cluster.start()
    except ConfigError:
        raise
    except RaftmpError as e:
        if drop > 0:
            raise RaftmpError(f"{e} with --drop {drop:g}: so much loss may keep any election "
                              "from succeeding; try a lower --drop") from None
        raise


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
            self.out(f"error: cannot read the line ({exc})")
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
            try:
                handler(*args)
            except TypeError:
                raise Usage(f"usage: {USAGE[cmd]}") from None
        except Usage as exc:
            self.out(f"error: {exc}")
        except (ConfigError, ValueError) as exc:   # a setting out of range, no such node:
            self.out(f"error: {exc}")                # the message names it
        except RaftmpError as exc:      # refused; unavailable, timed out: the kind matters
            kind = "" if type(exc) is RaftmpError else f"{type(exc).__name__}: "
            self.out(f"error: {kind}{exc}")
        return True

    def node(self, cmd: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            ids = self.cluster.ids
            nodes = (("0" if len(ids) == 1 else f"0-{len(ids) - 1}")
                     if ids == list(range(len(ids))) else ", ".join(map(str, ids)))
            raise Usage(f"usage: {USAGE[cmd]}  (N: a node, {nodes}; not {text!r})") from None

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
        # The figures raftmp serve's /metrics shows (metrics.py), from the same status.
        figs = ("node", "leader_changes", "proposals_committed", "proposals_failed",
                "proposals_pending", "reads_lease", "reads_index", "snapshots_sent",
                "snapshots_installed")
        self.out(tabulate([[n.get(c, "") for c in figs] for n in stats["nodes"]],
                          headers=[c.replace("_", " ") for c in figs]))
        t = stats["router"]["total"]
        self.out(f"router: {t['packets']} packets, {t['delivered']} delivered, "
                 f"{t['dropped']} dropped, {t['duplicated']} duplicated; "
                 f"faults {stats['router']['faults']}")

    def do_kill(self, n: str) -> None:
        self.cluster.kill(self.node("kill", n))
        self.out(f"killed node {n}")

    def do_restart(self, n: str) -> None:
        self.cluster.restart(self.node("restart", n))
        self.out(f"restarted node {n}")

    def do_add_node(self) -> None:
        self.out(f"added node {self.cluster.add_node()} (a voter)")

    def do_remove_node(self, n: str) -> None:
        self.cluster.remove_node(self.node("remove_node", n))
        self.out(f"removed node {n}; members {self.cluster.ids}")

    def do_transfer_leader(self, n: str) -> None:
        took = self.cluster.transfer_leader(self.node("transfer_leader", n))
        self.out(f"node {n} leads (took {took:.3f} s)")

    def do_partition(self, *groups: str) -> None:
        if len(groups) < 2:
            raise Usage(f"give at least two groups: {USAGE['partition']}")
        parsed = [[self.node("partition", x) for x in g.split(",") if x] for g in groups]
        self.cluster.partition(*parsed)
        self.out(f"partitioned {' | '.join(groups)}")

    def do_heal(self) -> None:
        self.cluster.heal()
        self.out("healed")

    def do_faults(self, *settings: str) -> None:
        changes: dict = {}
        for s in settings:
            name, sep, value = s.partition("=")
            if not sep or name not in ("drop", "client_drop", "duplicate", "delay"):
                raise Usage(f"usage: {USAGE['faults']}  (not {s!r})")
            try:
                if name == "delay":     # milliseconds here, seconds in Faults
                    lo, _, hi = value.partition(",")
                    changes[name] = (float(lo) / 1000, float(hi or lo) / 1000)
                else:
                    changes[name] = float(value)
            except ValueError:
                raise Usage(f"usage: {USAGE['faults']}  (not {s!r})") from None
        faults = self.cluster.set_faults(**changes)
        self.out(self.show_faults(faults))
        if faults.delay[1] * 1000 > SLOW_DELAY_MS:
            self.out(f"warning: a delay above {SLOW_DELAY_MS:g} ms holds every packet longer "
                     "than an election takes: the cluster may elect no leader")

    @staticmethod
    def show_faults(f: Faults) -> str:
        lo, hi = (round(x * 1000, 3) for x in f.delay)
        return (f"faults: drop={f.drop:g} client_drop={f.client_drop:g} "
                f"duplicate={f.duplicate:g} delay={lo:g},{hi:g} ms")


def main(argv: Optional[list[str]] = None) -> int:
    p = Parser(prog="python -m raftmp run",
               description="Start a cluster and open a console (reads commands from stdin when "
                           "it is not a terminal).\n\n" + HELP,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=integer(1, MAX_NODES), default=5,
                   help=f"replicas, 1 to {MAX_NODES} (5)")
    p.add_argument("--drop", type=number(0, 1, below=True), default=0.0,
                   help="replica-link packet loss, in [0, 1) (0)")
    p.add_argument("--seed", type=integer(0), default=None,
                   help="a seed >= 0 (default: a fresh one, printed)")
    p.add_argument("--data-dir", type=output_dir, default=None,
                   help="keep the nodes' data here, to start again with the same --nodes "
                        "(default: a temporary directory)")
    a = p.parse_args(argv)
    seed = pick_seed(a.seed)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    print(f"raftmp: starting {a.nodes} nodes, drop={a.drop}, seed={seed}"
          + (f", data in {a.data_dir}" if a.data_dir else ""), flush=True)
    cluster = Cluster(a.nodes, drop=a.drop, seed=seed, data_dir=a.data_dir)
    with start_cluster(cluster, a.drop):
        console = Console(cluster, out=lambda s: print(s, flush=True))
        print(f"leader: node {cluster.leader()}. Type 'help' for commands.", flush=True)
        while True:
            try:
                line = input("raftmp> " if interactive else "")
            except EOFError:
                break
            if not console.execute(line):
                break
    return 0
