"""A deterministic simulator: the real ``Node`` code on a virtual clock and network.

One seed fixes everything (network loss, delays, duplicates, the fault
schedule, election timeouts, the workload), so a failing seed replays
exactly. After every node turn the simulator checks Raft's safety
properties (Figure 3 of the paper); at the end it checks that every
acknowledged write reached every live node, that the live state machines
agree, that every operation started after the faults healed completed, and
that the client history is linearizable.
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

from .checker import check_outcomes
from .core.messages import ClientReply
from .core.node import Node
from .core.raft import LEADER, Config
from .core.session import DONE, ClientSession, Outcome, Timing
from .storage import MemoryStorage

FAULTS = ("crash", "restart", "partition", "duplicate", "delay")
CLIENT_BASE = 100  # client endpoint ids in the simulator


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
    keys: int = 5
    check_history: bool = True
    read_mode: str = "index"           # the nodes' Config.read_mode (sweep both: --read-mode)
    # Each node's clock runs at 1 - clock_drift or 1 + clock_drift times real
    # time (drawn per boot): the extremes of what lease reads assume.
    clock_drift: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        if self.client_drop is None:
            self.client_drop = self.drop / 2
        if not (0 <= self.drop < 1 and 0 <= self.client_drop < 1):
            raise ValueError("drop and client_drop must be in [0, 1)")
        if self.nodes < 1:
            raise ValueError("nodes must be >= 1")
        if not 0 <= self.clock_drift < 1:
            raise ValueError("clock_drift must be in [0, 1)")


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
    violations: list[str] = field(default_factory=list)
    history: list[Outcome] = field(default_factory=list)


class Violation(Exception):
    pass


class Simulation:
    def __init__(self, seed: int, cfg: SimConfig, raft_config: Optional[Config] = None) -> None:
        self.seed, self.cfg = seed, cfg
        self.raft_config = dataclasses.replace(raft_config or Config(), read_mode=cfg.read_mode)
        self.rate: dict[int, float] = {}
        self.rng = random.Random(seed)
        self.now = 0.0
        self.ids = list(range(cfg.nodes))
        self.storage = {i: MemoryStorage() for i in self.ids}
        self.incarnation = defaultdict(int)
        self.nodes: dict[int, Node] = {i: self._boot(i) for i in self.ids}
        # Generous: at 50% loss a read may need many tries (liveness, not speed, is checked).
        self.timing = Timing(attempt_timeout=0.25, backoff=0.02, op_timeout=30.0)
        self.clients = {CLIENT_BASE + c: ClientSession(CLIENT_BASE + c, self.ids,
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
            t_node = min((self._deadline(i) for i in self.nodes), default=float("inf"))
            t_client = min(c.next_deadline() for c in self.clients.values())
            t_heal = self.heal_time if not self.healed else float("inf")
            self.now = max(self.now, min(t_net, t_node, t_client, self.next_fault, t_heal,
                                         self._next_submit_time()))
            if t_net <= self.now:
                _, _, src, dst, msgs = heapq.heappop(self.net)
                self._deliver(src, dst, msgs)
            elif not self.healed and self.now >= self.heal_time:
                self._heal_all()
            elif self.now >= self.next_fault:
                self._inject_fault()
            for i, node in list(self.nodes.items()):
                if self._deadline(i) <= self.now:
                    self._turn(i, node)
            for cid, c in self.clients.items():
                if c.next_deadline() <= self.now:
                    c.tick(self.now)
                    self._client_flush(cid, c)
            self._submit_ready()

    # ------------------------------------------------------------- workload

    def _next_submit_time(self) -> float:
        return self.now if self._can_submit() else float("inf")

    def _can_submit(self) -> bool:
        if self.submitted >= self.cfg.ops:
            return False
        # Spread roughly 70% of the operations over the fault period, the rest after.
        quota = 0.7 * self.cfg.ops * self.now / self.cfg.fault_period
        if not self.healed and self.submitted >= quota:
            return False
        return any(len(c.pending) < self.cfg.in_flight for c in self.clients.values())

    def _submit_ready(self) -> None:
        for cid, c in self.clients.items():
            while self._can_submit() and len(c.pending) < self.cfg.in_flight:
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
            elif out.outcome == "unknown":
                self.result.ops_unknown += 1
            else:
                self.result.ops_failed += 1
            if out.invoke >= self.heal_time + 1e-9 and self.healed and out.outcome != DONE:
                raise Violation(f"operation started after the faults healed did not complete: "
                                f"{out.command} -> {out.outcome} {out.result}")

    # -------------------------------------------------------------- network

    def _send(self, src: int, dst: int, msgs: list) -> None:
        """One packet; loss, delay and duplication apply per packet."""
        cfg, r = self.cfg, self.rng
        self.result.packets += 1
        self.result.messages += len(msgs)
        drop = cfg.drop if src < CLIENT_BASE and dst < CLIENT_BASE else cfg.client_drop
        if (src, dst) in self.cut or r.random() < drop:
            return
        copies = 2 if "duplicate" in cfg.faults and r.random() < cfg.duplicate else 1
        for _ in range(copies):
            delay = r.uniform(*cfg.latency)
            if "delay" in cfg.faults:
                delay += r.uniform(*cfg.extra_delay)
            self.seq += 1
            heapq.heappush(self.net, (self.now + delay, self.seq, src, dst, msgs))

    def _deliver(self, src: int, dst: int, msgs: list) -> None:
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
            self._guard(dst, node.step, src, m, local)
        self._turn(dst, node)

    # ----------------------------------------------------------------- nodes

    def _boot(self, i: int) -> Node:
        self.incarnation[i] += 1
        rng = random.Random(f"{self.seed}/{i}/{self.incarnation[i]}")
        drift = self.cfg.clock_drift
        self.rate[i] = 1 + drift * rng.choice((-1, 1)) if drift else 1.0
        return Node(i, self.ids, self.storage[i].load(), rng, self._local(i), self.raft_config)

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
        """One worker loop turn: tick, ready, persist, check, send."""
        local = self._local(i)
        self._guard(i, node.tick, local)
        rd = self._guard(i, node.ready, local)
        raft = node.raft
        self._check_entries(i, raft, rd.entries)
        self.storage[i].save(rd.hard_state, rd.entries)
        self._check_applied(i, rd.committed)
        if raft.role == LEADER:
            self._check_leader(i, raft)
        by_dst: dict[int, list] = defaultdict(list)
        for dst, m in rd.messages:
            by_dst[dst].append(m)
        for dst, msgs in by_dst.items():
            self._send(i, dst, msgs)

    # ---------------------------------------------------------------- faults

    def _fault_gap(self) -> float:
        return self.now + self.rng.uniform(0.2, 0.8)

    def _inject_fault(self) -> None:
        cfg, r = self.cfg, self.rng
        self.next_fault = self._fault_gap()
        if self.next_fault >= self.heal_time:
            self.next_fault = float("inf")
        choices = []
        down = [i for i in self.ids if i not in self.nodes]
        if "crash" in cfg.faults and len(down) < (cfg.nodes - 1) // 2 + ("restart" in cfg.faults):
            choices.append("crash")
        if "restart" in cfg.faults and down:
            choices += ["restart", "restart"]
        if "partition" in cfg.faults:
            choices += ["partition", "isolate_leader", "one_way", "heal"]
        if not choices:
            return
        kind = r.choice(choices)
        if kind == "crash":
            victim = r.choice(sorted(self.nodes))
            del self.nodes[victim]
        elif kind == "restart":
            i = r.choice(down)
            self.nodes[i] = self._boot(i)
        elif kind == "partition":
            self._partition(r.sample(self.ids, r.randint(1, max(1, cfg.nodes // 2))))
        elif kind == "isolate_leader":
            leaders = [i for i, n in self.nodes.items() if n.raft.role == LEADER]
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
        if "restart" in self.cfg.faults:
            for i in self.ids:
                if i not in self.nodes:
                    self.nodes[i] = self._boot(i)

    # ---------------------------------------------------------------- checks

    def _check_entries(self, i: int, raft, entries: list) -> None:
        """Log matching (§5.3): an (index, term) pair names one command and one
        predecessor term everywhere, so equal pairs mean equal prefixes."""
        for e in entries:
            here = (e.command, raft.log.term(e.index - 1))
            seen = self.entry_at.setdefault((e.index, e.term), here)
            if seen != here:
                raise Violation(f"log matching: node {i} has {e} after term "
                                f"{raft.log.term(e.index - 1)}, another node {seen}")

    def _check_applied(self, i: int, committed: list) -> None:
        """State machine safety (§5.4.3): one command per index, on every node."""
        for e in committed:
            seen = self.applied_at.setdefault(e.index, (e.term, e.command))
            if seen != (e.term, e.command):
                raise Violation(f"state machine safety: node {i} applied {e} at {e.index}, "
                                f"another node applied {seen}")

    def _check_leader(self, i: int, raft) -> None:
        """Election safety (§5.2) and leader completeness (§5.4)."""
        leader = self.leader_of.get(raft.term)
        if leader is not None and leader != i:
            raise Violation(f"election safety: nodes {leader} and {i} both lead term {raft.term}")
        if leader is None:  # a new leader: it must hold everything committed so far
            self.leader_of[raft.term] = i
            self.result.elections += 1
            for j, other in self.nodes.items():
                # Thesis §6.4.1: no leader is elected while an older one's lease holds.
                if j != i and other.raft.lease_until() > self._local(j):
                    raise Violation(f"lease: node {i} leads term {raft.term} while node {j} "
                                    f"(term {other.raft.term}) holds a lease for "
                                    f"{other.raft.lease_until() - self._local(j):.4f} s more")
            for index, (term, _) in self.applied_at.items():
                if raft.log.term(index) != term:
                    raise Violation(f"leader completeness: leader {i} of term {raft.term} "
                                    f"lacks committed entry {index} (term {term})")

    def _final_checks(self) -> None:
        # Let the live nodes converge on the leader's commit index.
        deadline = self.now + 10.0
        while self.now < deadline:
            leaders = [n for n in self.nodes.values() if n.raft.role == LEADER]
            applied = {n.raft.applied for n in self.nodes.values()}
            if leaders and applied == {leaders[0].raft.commit} and not self.net:
                break
            self._step_time()
        live = sorted(self.nodes)
        states = {i: self.nodes[i].kv.data for i in live}
        first = states[live[0]]
        for i in live:
            if states[i] != first:
                raise Violation(f"state machines differ at the end: node {live[0]} {first} "
                                f"vs node {i} {states[i]}")
        acked = {(o.command.client_id, o.command.seq) for o in self.result.history
                 if o.outcome == DONE and o.command.op != "get"}
        upto = min(self.nodes[i].raft.applied for i in live)
        present = {(cmd.client_id, cmd.seq) for index, (_, cmd) in self.applied_at.items()
                   if cmd is not None and index <= upto}
        lost = acked - present
        if lost:
            raise Violation(f"acknowledged writes missing from live nodes: {sorted(lost)[:5]}")
        if self.cfg.check_history:
            verdict = check_outcomes(self.result.history)
            if not verdict.ok:
                raise Violation(f"history not linearizable: {verdict.explanation}")

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
    p.add_argument("--faults", default="crash,restart,partition",
                   help=f"comma-separated subset of {','.join(FAULTS)} (or 'none')")
    p.add_argument("--ops", type=int, default=200, help="client operations per seed")
    p.add_argument("--read-mode", choices=("index", "lease"), default=Config.read_mode,
                   help=f"the nodes' read mode (default {Config.read_mode})")
    p.add_argument("--clock-drift", type=float, default=0.05,
                   help="each node's clock runs at 1 +- this rate (default 0.05, the bound "
                        "lease reads assume)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    faults = tuple(f for f in a.faults.split(",") if f and f != "none")
    try:
        cfg = SimConfig(nodes=a.nodes, drop=a.drop, faults=faults, ops=a.ops,
                        read_mode=a.read_mode, clock_drift=a.clock_drift)
    except ValueError as exc:
        p.error(str(exc))
    seeds = [a.seed] if a.seed is not None else list(range(a.first_seed, a.first_seed + a.seeds))
    print(f"raftmp sim: {len(seeds)} seeds from {seeds[0]}, nodes={a.nodes} drop={a.drop} "
          f"faults={','.join(faults) or 'none'} ops={a.ops} read-mode={a.read_mode} "
          f"clock-drift={a.clock_drift}", flush=True)
    start = time.monotonic()
    results = run_many(seeds, cfg, a.jobs, progress=sys.stderr.isatty())
    print_table(results, cfg)
    print(f"{len(results)} seeds in {time.monotonic() - start:.1f} s on {a.jobs} processes")
    bad = [r for r in results if r.violations]
    for r in bad[:5]:
        print(f"\nseed {r.seed} violated: {r.violations[0]}")
        print(f"  replay: python -m raftmp sim --seed {r.seed} --nodes {a.nodes} --drop {a.drop} "
              f"--faults {','.join(faults) or 'none'} --ops {a.ops} --read-mode {a.read_mode} "
              f"--clock-drift {a.clock_drift}")
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
    from tabulate import tabulate

    row = {
        "seeds": len(results),
        "drop": cfg.drop,
        "faults": ",".join(cfg.faults) or "none",
        "ops ok": sum(r.ops_ok for r in results),
        "unknown": sum(r.ops_unknown for r in results),
        "failed": sum(r.ops_failed for r in results),
        "elections": sum(r.elections for r in results),
        "packets": sum(r.packets for r in results),
        "messages": sum(r.messages for r in results),
        "violations": sum(1 for r in results if r.violations),
    }
    print(tabulate([row], headers="keys"))
