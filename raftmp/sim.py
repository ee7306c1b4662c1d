"""A deterministic simulator: the real ``Node`` code on a virtual clock and network.

One seed fixes everything (network loss, delays, duplicates, the fault
schedule, election timeouts, the workload), so a failing seed replays
exactly. After every node turn the simulator checks Raft's safety
properties (Figure 3 of the paper); at the end it checks that every
acknowledged write reached every live node, that the live state machines
agree, that every operation started after the faults healed completed, and
that the client history is linearizable.

Faults: ``FAULTS`` below (crashes inside a turn: ``CRASH_POINTS``), each
described in ARCHITECTURE.md. Each node's disk is a ``DiskImage``:
FileStorage's format and recovery code, in memory.

Snapshots: the default thresholds are tiny (``SIM_RAFT``), so that nearly every
seed compacts its logs and sends InstallSnapshot. A snapshot is taken the
way a worker's forked child takes it: its image is fixed when it starts, it
completes a little later (a crash in between loses it), and with the crash
fault a node may also crash between saving it and compacting its log. Every
snapshot saved or installed must equal the state a reference state machine
reaches by applying the committed entries up to its index.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import multiprocessing
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from tabulate import tabulate

from .core.errors import ConfigError
from .core.kv import KVStore
from .core.messages import (
    ClientReply,
    ClientRequest,
    Snapshot,
)
from .core.node import Node
from .core.raft import LEADER, Config
from .core.session import DONE, UNKNOWN, ClientSession, Outcome, Timing
from .faults import Faults
from .simchecks import Checks, Violation, _state
from .simchurn import ADMIN, Churn
from .storage import CorruptStorage, DiskImage
from .transports.wire import FIRST_CLIENT_ID

FAULTS = ("crash", "restart", "partition", "duplicate", "delay", "hold", "corrupt", "churn")
# Where in a node's turn a crash lands ("idle": between turns).
CRASH_POINTS = ("idle", "before_save", "mid_save", "after_save")
# Small enough that most seeds snapshot many times and send InstallSnapshot in
# several chunks; the session timeout well above the clients' op timeout (Config checks it).
SIM_RAFT = {"snapshot_entries": 24, "snapshot_keep": 4, "snapshot_chunk": 200,
            "session_timeout": 60.0, "client_op_timeout": 30.0}
# The nodes' timers (``--timing``). "sim", the default: a 0.05 s heartbeat
# (Config's: 0.1 s), the pace the faults below were tuned to. "default": Config's.
TIMINGS = {"sim": {"heartbeat_interval": 0.05, "election_timeout": (0.2, 0.4)},
           "default": {}}
SNAPSHOT_TIME = (0.001, 0.05)   # virtual seconds a snapshot takes to write
SPIN_TURNS = 100                # turns of a node at one instant with its timers still due


@dataclass
class SimConfig:
    nodes: int = 5
    drop: float = 0.0                  # packet loss between nodes
    client_drop: Optional[float] = None   # between clients and nodes; default drop / 2
    faults: tuple[str, ...] = ()
    ops: int = 200
    clients: int = 3
    in_flight: int = 2                 # operations in flight per client
    fault_period: float = 5.0          # virtual seconds during which faults happen
    latency: tuple[float, float] = (0.0002, 0.002)
    extra_delay: tuple[float, float] = (0.0, 0.03)   # with the "delay" fault: reordering
    duplicate: float = 0.1             # with the "duplicate" fault
    hold: float = 0.02                 # with "hold": this fraction of packets ...
    hold_for: float = 1.6              # ... is held for up to this long (4 election timeouts)
    corrupt: float = 0.3               # with "corrupt": chance a crash flips a stored bit
    keys: int = 5
    check_history: bool = True
    check_reads: bool = True           # read safety as answers leave (see _check_reads)
    read_mode: str = "index"           # the nodes' Config.read_mode (sweep both: --read-mode)
    # Each node's clock runs at 1 - clock_drift or 1 + clock_drift times real
    # time (drawn per boot): the extremes of what lease reads assume.
    clock_drift: float = 0.0
    timing: str = "sim"                # the nodes' timers: a key of TIMINGS
    network: Faults = field(init=False)   # the per-packet faults the settings above make

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ConfigError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        if self.client_drop is None:
            self.client_drop = self.drop / 2
        if not (0 <= self.drop < 1 and 0 <= self.client_drop < 1):
            raise ConfigError("drop and client_drop must be in [0, 1)")
        if self.nodes < 1:
            raise ConfigError("nodes must be >= 1")
        self.network = Faults(
            self.drop, self.client_drop,
            self.extra_delay if "delay" in self.faults else (0.0, 0.0),
            self.duplicate if "duplicate" in self.faults else 0.0)
        if not 0 <= self.clock_drift < 1:
            raise ConfigError("clock_drift must be in [0, 1)")
        if self.timing not in TIMINGS:
            raise ConfigError(f"timing must be one of {', '.join(TIMINGS)}, not {self.timing!r}")


@dataclass
class SimResult:
    seed: int
    ops_ok: int = 0
    ops_unknown: int = 0
    ops_failed: int = 0
    elections: int = 0
    packets: int = 0
    messages: int = 0
    end_time: float = 0.0
    snapshots: int = 0          # taken by nodes on their own
    installs: int = 0           # received from a leader
    duplicates: int = 0         # answers to an operation already answered (CS3700's count)
    changes: int = 0            # configuration changes made (churn)
    transfers: int = 0          # leaderships handed over (churn)
    violations: list[str] = field(default_factory=list)
    history: list[Outcome] = field(default_factory=list)


class Simulation(Checks, Churn):
    def __init__(self, seed: int, cfg: SimConfig, raft_config: Optional[Config] = None) -> None:
        self.seed, self.cfg = seed, cfg
        self.raft_config = dataclasses.replace(
            raft_config or Config(**SIM_RAFT, **TIMINGS[cfg.timing]), read_mode=cfg.read_mode)
        self.rate: dict[int, float] = {}
        self.rng = random.Random(seed)
        self.now = 0.0
        self.ids = list(range(cfg.nodes))
        self.storage = {i: DiskImage() for i in self.ids}
        self.incarnation = defaultdict(int)
        self.crash_at: dict[int, str] = {}   # node -> where its next persisting turn crashes
        self.corrupted: set[int] = set()     # a bit of its log was flipped while it was down
        self.dead: set[int] = set()          # refused to start: stays down
        # Generous: at 50% loss a read may need many tries (liveness, not speed, is checked).
        self.timing = Timing(attempt_timeout=0.25, backoff=0.02, op_timeout=30.0)
        self._init_churn()
        self.nodes: dict[int, Node] = {i: self._boot(i) for i in self.ids}
        self.clients = {FIRST_CLIENT_ID + c: ClientSession(FIRST_CLIENT_ID + c, self.ids,
                                                       random.Random(self.rng.random()),
                                                       self.timing)
                        for c in range(cfg.clients)}
        self.net: list[tuple[float, int, int, int, list]] = []   # (time, seq, src, dst, msgs)
        self.seq = 0
        self.cut: set[tuple[int, int]] = set()      # (src, dst) pairs that cannot talk
        self.healed = not cfg.faults
        self.next_fault = self._fault_gap() if cfg.faults else float("inf")
        self.submitted = 0
        self.result = SimResult(seed)
        # Safety bookkeeping (what every node must agree on).
        self.leader_of: dict[int, int] = {}                       # term -> leader
        # (index, term) -> (command, term of the entry before)
        self.entry_at: dict[tuple[int, int], tuple[Any, int]] = {}
        self.applied_at: dict[int, tuple[int, Any]] = {}           # index -> (term, cmd)
        self.committed = 0                                          # highest index committed
        self.config_seen: set[tuple[int, Any]] = set()   # configuration entries checked
        self.committed_term = 0                             # highest term of a committed entry
        self.due_again: dict[int, tuple[float, int]] = {}   # node -> (its clock, turns)
        # (node, client_id, seq) of a get -> what was committed when it reached the node
        self.read_floor: dict[tuple[int, int, int], int] = {}
        # Snapshots: node -> (incarnation, image, when it is written); the
        # reference state machine and its state at each index it passed.
        self.snapshotting: dict[int, tuple[int, Snapshot, float]] = {}
        self.reference = KVStore()
        self.reference_at: dict[int, tuple] = {0: _state(self.reference.snapshot_data())}
        self.heal_time = 0.0 if self.healed else cfg.fault_period

    # ------------------------------------------------------------- the run

    def run(self) -> SimResult:
        try:
            self._loop()
            self._final_checks()
        except Violation as v:
            self.result.violations.append(f"t={self.now:.4f}: {v}")
        except Exception as exc:  # a bug in the simulator itself: report it against the seed
            self.result.violations.append(f"t={self.now:.4f}: simulator error {exc!r}")
        self.result.end_time = self.now
        self.result.duplicates = sum(c.duplicates for c in self.clients.values())
        self.result.changes = self.changes["ok"]
        return self.result

    def _loop(self) -> None:
        cfg = self.cfg
        limit = cfg.fault_period + 120.0
        while True:
            if self.submitted >= cfg.ops and all(not c.pending for c in self.clients.values()):
                return
            if self.now > limit:
                raise Violation("operations still pending long after the faults healed "
                                f"({sum(len(c.pending) for c in self.clients.values())} left)")
            t_net = self.net[0][0] if self.net else float("inf")
            deadlines = {i: self._deadline(i) for i in self.nodes}
            t_node = min(deadlines.values(), default=float("inf"))
            t_client = min(min(c.next_deadline() for c in self.clients.values()),
                           self.admin.next_deadline())
            t_heal = self.heal_time if not self.healed else float("inf")
            self.now = max(self.now, min(t_net, t_node, t_client, self.next_fault, t_heal,
                                         self._next_submit_time()))
            changed: Optional[int] = None   # the one node whose deadline may have moved
            if t_net <= self.now:
                _, _, src, dst, msgs = heapq.heappop(self.net)
                self._deliver(src, dst, msgs)
                changed = dst
            elif not self.healed and self.now >= self.heal_time:
                self._heal_all()
                deadlines = {}
            elif self.now >= self.next_fault:
                self._inject_fault()
                deadlines = {}
            for i, node in list(self.nodes.items()):
                due = deadlines.get(i) if i != changed else None
                if (self._deadline(i) if due is None else due) <= self.now:
                    self._turn(i, node)
            for cid, c in self.clients.items():
                if c.next_deadline() <= self.now:
                    c.tick(self.now)
                    self._client_flush(cid, c)
            self._admin_turn()
            self._submit_ready()

    # ------------------------------------------------------------- workload

    def _next_submit_time(self) -> float:
        return self.now if self._can_submit() else float("inf")

    def _can_submit(self) -> bool:
        return self._quota_open() and any(len(c.pending) < self.cfg.in_flight
                                          for c in self.clients.values())

    def _quota_open(self) -> bool:
        if self.submitted >= self.cfg.ops:
            return False
        # Spread roughly 70% of the operations over the fault period, the rest after.
        quota = 0.7 * self.cfg.ops * self.now / self.cfg.fault_period
        return self.healed or self.submitted < quota

    def _submit_ready(self) -> None:
        for cid, c in self.clients.items():
            while len(c.pending) < self.cfg.in_flight and self._quota_open():
                r = self.rng
                key = f"k{r.randrange(self.cfg.keys)}"
                op = r.choice(("get", "get", "put", "put", "cas", "delete"))
                value = f"v{self.submitted}"
                expected = r.choice((None, f"v{r.randrange(max(1, self.submitted))}"))
                c.submit(op, key, value if op in ("put", "cas") else None,
                         expected if op == "cas" else None, self.now)
                self.submitted += 1
            self._client_flush(cid, c)

    def _client_flush(self, cid: int, c: ClientSession) -> None:
        for dst, msg in c.take_messages():
            self._send(cid, dst, [msg])
        for out in c.take_finished():
            self.result.history.append(out)
            if out.outcome == DONE:
                self.result.ops_ok += 1
            elif out.outcome == UNKNOWN:
                self.result.ops_unknown += 1
            else:
                self.result.ops_failed += 1
            if out.invoke >= self.heal_time + 1e-9 and self.healed and out.outcome != DONE:
                raise Violation(f"operation started after the faults healed did not complete: "
                                f"{out.command} -> {out.outcome} {out.result}")

    # -------------------------------------------------------------- network

    def _send(self, src: int, dst: int, msgs: list) -> None:
        """One packet; loss, delay and duplication apply per packet."""
        cfg, r, net = self.cfg, self.rng, self.cfg.network
        self.result.packets += 1
        self.result.messages += len(msgs)
        drop = net.drop if src < FIRST_CLIENT_ID and dst < FIRST_CLIENT_ID else net.client_drop
        if (src, dst) in self.cut or r.random() < drop:
            return
        copies = 2 if net.duplicate and r.random() < net.duplicate else 1
        for _ in range(copies):
            delay = r.uniform(*cfg.latency)
            if net.delay[1] > 0:
                delay += r.uniform(*net.delay)
            if "hold" in cfg.faults and r.random() < cfg.hold:
                delay += r.uniform(0.0, cfg.hold_for)
            self.seq += 1
            heapq.heappush(self.net, (self.now + delay, self.seq, src, dst, msgs))

    def _deliver(self, src: int, dst: int, msgs: list) -> None:
        if dst == ADMIN:
            for m in msgs:
                self._admin_turn(src, m)
            return
        if dst in self.clients:
            c = self.clients[dst]
            for m in msgs:
                assert type(m) is ClientReply
                c.step(src, m, self.now)
            self._client_flush(dst, c)
            return
        node = self.nodes.get(dst)
        if node is None:
            return  # crashed: the packet vanishes
        local = self._local(dst)
        for m in msgs:
            if type(m) is ClientRequest and m.command.op == "get" and self.cfg.check_reads:
                c = m.command
                self.read_floor.setdefault((dst, c.client_id, c.seq), self.committed)
            self._guard(dst, node.step, src, m, local)
        self._turn(dst, node)

    # ----------------------------------------------------------------- nodes

    def _boot(self, i: int) -> Node:
        self.incarnation[i] += 1
        rng = random.Random(f"{self.seed}/{i}/{self.incarnation[i]}")
        storage = self.storage[i]
        drift = self.cfg.clock_drift
        self.rate[i] = 1 + drift * rng.choice((-1, 1)) if drift else 1.0
        return Node(i, self._boot_nodes(i), storage.load(), rng, self._local(i),
                    self.raft_config, snapshot=storage.load_snapshot())

    def _local(self, i: int) -> float:
        """Node i's clock reading now."""
        return self.now * self.rate[i]

    def _deadline(self, i: int) -> float:
        """Node i's next deadline in simulated (real) time, rounded up so that
        node i's clock has reached it then."""
        rate = self.rate[i]
        t = self.nodes[i].next_deadline()
        return t if rate == 1.0 else t / rate * (1 + 1e-12)

    def _guard(self, i: int, fn, *args):
        try:
            return fn(*args)
        except Violation:
            raise
        except Exception as exc:  # a broken invariant inside the node: report, loudly
            raise Violation(f"node {i} raised {exc!r}") from exc

    def _turn(self, i: int, node: Node) -> None:
        """One worker loop turn, in the Ready's order: finish a snapshot that is
        due, tick, ready, check, send the early messages, persist (a snapshot
        from the leader first), send the rest; a pending crash lands in it."""
        if not self._snapshot_step(i, node):
            return   # crashed while it compacted
        local = self._local(i)
        self._guard(i, node.tick, local)
        rd = self._guard(i, node.ready, local)
        if node.next_deadline() <= local:   # due again at once: the next turn acts
            at, turns = self.due_again.get(i, (None, 0))
            turns = turns + 1 if at == local else 1
            self.due_again[i] = (local, turns)
            if turns > SPIN_TURNS:
                raise Violation(f"node {i}: its timers stay due after {turns} turns at "
                                f"{local:.4f} (a timer loop that spins)")
        self._check_entries(i, node, rd.entries)
        self._check_applied(i, rd.committed)
        self._check_configs(i, node, rd.entries)
        self._check_compaction(i, node)
        if node.role == LEADER:
            self._check_leader(i, node)
        if self.read_floor:
            self._check_reads(i, node, rd.persisted_messages)
        if rd.snapshot is not None:
            self.result.installs += 1
            self._check_snapshot(i, rd.snapshot)
        if i not in self.snapshotting and node.snapshot_due():
            done = self.now + self.rng.uniform(*SNAPSHOT_TIME)
            self.snapshotting[i] = (self.incarnation[i], node.make_snapshot(), done)
        persists = rd.entries or rd.hard_state or rd.snapshot
        if persists:
            self._check_early(i, rd.messages)
        self._send_each(i, rd.messages)
        storage = self.storage[i]
        point = self.crash_at.pop(i, None) if persists else None
        if rd.snapshot is not None and point != "before_save":
            storage.save_snapshot(rd.snapshot)
            storage.compact(rd.snapshot.index, rd.snapshot.term)
        if point == "mid_save":
            storage.save_torn(rd.entries, self.rng)
        elif point != "before_save":
            storage.save(rd.hard_state, rd.entries)
        if point is not None:
            self._crash(i, corrupt=point != "mid_save")
            return
        self._send_each(i, rd.persisted_messages)

    def _send_each(self, i: int, messages: list[tuple[int, Any]]) -> None:
        """One packet per destination."""
        by_dst: dict[int, list] = defaultdict(list)
        for dst, m in messages:
            by_dst[dst].append(m)
        for dst, msgs in by_dst.items():
            self._send(i, dst, msgs)

    def _crash(self, i: int, corrupt: bool) -> None:
        """Node i stops; its disk keeps what was written (and, with the "corrupt"
        fault, once per run, one flipped bit: a cluster of 3 or more can lose one
        node for good)."""
        del self.nodes[i]
        self.crash_at.pop(i, None)
        cfg, r = self.cfg, self.rng
        if (corrupt and "corrupt" in cfg.faults and not self.corrupted and not self.dead
                and cfg.nodes >= 3
                and r.random() < cfg.corrupt and self.storage[i].flip_bit(r)):
            self.corrupted.add(i)
        self._check_durable(i)

    def _restart(self, i: int) -> None:
        """Boot node i from its disk: a flipped bit must stop it (CorruptStorage)."""
        try:
            self.nodes[i] = self._boot(i)
        except CorruptStorage as exc:
            if i not in self.corrupted:
                raise Violation(f"node {i} refused to start from an intact disk: {exc}") from exc
            self.dead.add(i)
            return
        if i in self.corrupted:
            raise Violation(f"node {i} started from a log with a flipped bit: entries "
                            "may be silently lost")

    def _snapshot_step(self, i: int, node: Node) -> bool:
        """Finish node i's snapshot if its time has come: save it, then compact
        (with the crash fault, sometimes crash in between). False if it crashed."""
        pending = self.snapshotting.get(i)
        if pending is None or pending[2] > self.now:
            return True
        del self.snapshotting[i]
        incarnation, snap, _ = pending
        if incarnation != self.incarnation[i]:
            return True   # the node crashed while writing it: the image is lost
        self._check_snapshot(i, snap)
        storage = self.storage[i]
        storage.save_snapshot(snap)
        self.result.snapshots += 1
        if self._may_crash() and self.rng.random() < 0.05:
            self._crash(i, corrupt=True)
            return False
        base = node.snapshot_saved(snap)
        if base is not None:
            storage.compact(*base)
        return True

    # ---------------------------------------------------------------- faults

    def _may_crash(self) -> bool:
        if self.healed or "crash" not in self.cfg.faults:
            return False
        down, voters = self._down_voters()   # over every configuration in use
        return down < (voters - 1) // 2 + ("restart" in self.cfg.faults)

    def _fault_gap(self) -> float:
        return self.now + self.rng.uniform(0.2, 0.8)

    def _inject_fault(self) -> None:
        cfg, r = self.cfg, self.rng
        self.next_fault = self._fault_gap()
        if self.next_fault >= self.heal_time:
            self.next_fault = float("inf")
        for victim in list(self.crash_at):   # never reached a persisting turn: crash now
            self._crash(victim, corrupt=True)
        choices = []
        down = [i for i in self.ids if i not in self.nodes]
        restartable = [i for i in down if i not in self.dead]
        if self._may_crash():
            choices.append("crash")
        if "restart" in cfg.faults and restartable:
            choices += ["restart", "restart"]
        if "partition" in cfg.faults:
            choices += ["partition", "isolate_leader", "one_way", "heal"]
        choices += self._churn_choices()
        if not choices:
            return
        kind = r.choice(choices)
        if kind == "churn":
            self._churn()
        elif kind == "crash":
            victim = r.choice(sorted(self.nodes))
            point = r.choice(CRASH_POINTS)
            if point == "idle":
                self._crash(victim, corrupt=True)
            else:
                self.crash_at[victim] = point
        elif kind == "restart":
            self._restart(r.choice(restartable))
        elif kind == "partition":
            self._partition(r.sample(self.ids, r.randint(1, max(1, cfg.nodes // 2))))
        elif kind == "isolate_leader":
            leaders = [i for i, n in self.nodes.items() if n.role == LEADER]
            minority = leaders[:1] + r.sample(self.ids, (cfg.nodes - 1) // 2)
            self._partition(list(dict.fromkeys(minority))[: max(1, (cfg.nodes - 1) // 2)])
        elif kind == "one_way":
            a, b = r.sample(self.ids, 2) if cfg.nodes > 1 else (0, 0)
            self.cut.add((a, b))
        else:
            self.cut.clear()

    def _partition(self, side: list[int]) -> None:
        other = [i for i in self.ids if i not in side]
        self.cut = {(a, b) for a in side for b in other} | {(b, a) for a in side for b in other}

    def _heal_all(self) -> None:
        self.healed = True
        self.next_fault = float("inf")
        self.cut.clear()
        self.crash_at.clear()
        if "restart" in self.cfg.faults:
            for i in self.ids:
                if i not in self.nodes and i not in self.dead:
                    self._restart(i)

    def _step_time(self) -> None:
        t_net = self.net[0][0] if self.net else float("inf")
        t_node = min(self._deadline(i) for i in self.nodes)
        self.now = max(self.now, min(t_net, t_node))
        if t_net <= self.now:
            _, _, src, dst, msgs = heapq.heappop(self.net)
            if dst in self.clients:
                return
            self._deliver(src, dst, msgs)
        for i, node in list(self.nodes.items()):
            if self._deadline(i) <= self.now:
                self._turn(i, node)


def run_seed(args: tuple[int, SimConfig]) -> SimResult:
    seed, cfg = args
    result = Simulation(seed, cfg).run()
    result.history = []  # not needed across processes
    return result


# ------------------------------------------------------------------ command


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftmp sim",
                                description="Run seeded fault schedules against the Raft core "
                                            "in the deterministic simulator.")
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    p.add_argument("--seed", type=int, default=None, help="run only this seed (replay)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed of the range")
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--drop", type=float, default=0.0, help="packet loss probability")
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated subset of {','.join(FAULTS)} (default: all), or 'none'")
    p.add_argument("--ops", type=int, default=200, help="client operations per seed")
    p.add_argument("--read-mode", choices=("index", "lease"), default=Config.read_mode,
                   help=f"the nodes' read mode (default {Config.read_mode})")
    p.add_argument("--clock-drift", type=float, default=0.05,
                   help="each node's clock runs at 1 +- this rate (default 0.05, the bound "
                        "lease reads assume)")
    p.add_argument("--timing", choices=tuple(TIMINGS), default="sim",
                   help="the nodes' timers: 'sim' (default; 0.05 s heartbeat) or 'default'")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    faults = tuple(f for f in a.faults.split(",") if f and f != "none")
    try:
        cfg = SimConfig(nodes=a.nodes, drop=a.drop, faults=faults, ops=a.ops,
                        read_mode=a.read_mode, clock_drift=a.clock_drift, timing=a.timing)
    except ValueError as exc:
        p.error(str(exc))
    seeds = [a.seed] if a.seed is not None else list(range(a.first_seed, a.first_seed + a.seeds))
    print(f"raftmp sim: {len(seeds)} seeds from {seeds[0]}, nodes={a.nodes} drop={a.drop} "
          f"faults={','.join(faults) or 'none'} ops={a.ops} read-mode={a.read_mode} "
          f"clock-drift={a.clock_drift} timing={a.timing}", flush=True)
    start = time.monotonic()
    results = run_many(seeds, cfg, a.jobs, progress=sys.stderr.isatty())
    print_table(results, cfg)
    print(f"{len(results)} seeds in {time.monotonic() - start:.1f} s on {a.jobs} processes")
    bad = [r for r in results if r.violations]
    for r in bad[:5]:
        print(f"\nseed {r.seed} violated: {r.violations[0]}")
        print(f"  replay: python -m raftmp sim --seed {r.seed} --nodes {a.nodes} --drop {a.drop} "
              f"--faults {','.join(faults) or 'none'} --ops {a.ops} --read-mode {a.read_mode} "
              f"--clock-drift {a.clock_drift} --timing {a.timing}")
    return 1 if bad else 0


def run_many(seeds: list[int], cfg: SimConfig, jobs: int = 1,
             progress: bool = False) -> list[SimResult]:
    work = [(s, cfg) for s in seeds]
    results: list[SimResult] = []
    start = time.monotonic()
    if jobs <= 1 or len(seeds) == 1:
        it = map(run_seed, work)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        it = pool.imap_unordered(run_seed, work, chunksize=4)
    try:
        for r in it:
            results.append(r)
            if progress:
                bad = sum(1 for x in results if x.violations)
                print(f"\r  {len(results)}/{len(seeds)} seeds, {bad} violating, "
                      f"{time.monotonic() - start:.1f}s", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    if progress:
        print(file=sys.stderr)
    return sorted(results, key=lambda r: r.seed)


def print_table(results: list[SimResult], cfg: SimConfig) -> None:
    columns = {"ops ok": "ops_ok", "unknown": "ops_unknown", "failed": "ops_failed",
               "elections": "elections", "snapshots": "snapshots", "installs": "installs",
               "packets": "packets", "messages": "messages", "dup answers": "duplicates",
               "changes": "changes", "transfers": "transfers"}
    row = {"seeds": len(results), "drop": cfg.drop, "faults": ",".join(cfg.faults) or "none",
           **{name: sum(getattr(r, f) for r in results) for name, f in columns.items()},
           "violations": sum(1 for r in results if r.violations)}
    print(tabulate([row], headers="keys"))
