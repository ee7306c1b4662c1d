"""The run loop: the real ``Node`` code on a virtual clock and network.

One seed fixes everything (network loss, delays, duplicates, the fault
schedule, election timeouts, the workload), so a failing seed replays
exactly. After every node turn the simulator checks Raft's safety
properties (``checks.py``) and its liveness bounds (``liveness.py``); at the
end, that the nodes converge on one whole state, that every acknowledged
write reached every live node, that every operation started after the
faults healed completed, and that the client history is linearizable.

Each node's disk is a ``DiskImage``: FileStorage's format and recovery
code, in memory. A snapshot is taken the way a worker's forked child takes
it: its image is fixed when it starts, it completes a little later (a crash
in between loses it), and with the crash fault a node may also crash between
saving it and compacting its log.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import defaultdict
from typing import Any, Optional

from ..core.errors import SessionExpired
from ..core.messages import ClientReply, ClientRequest, Snapshot
from ..core.node import Node
from ..core.raft import LEADER, Config
from ..core.session import DONE, UNKNOWN, ClientSession, Timing
from ..storage import DiskImage
from ..transports.wire import FIRST_CLIENT_ID
from .checks import Checks, Violation
from .churn import ADMIN, Churn
from .config import SIM_RAFT, SNAPSHOT_TIME, TIMINGS, SimConfig, SimResult

SPIN_TURNS = 100    # turns of a node at one instant with its timers still due
from .liveness import Liveness
from .nemesis import Nemeses


class Simulation(Checks, Liveness, Nemeses, Churn):
    def __init__(self, seed: int, cfg: SimConfig, raft_config: Optional[Config] = None) -> None:
        self.seed, self.cfg = seed, cfg
        self.raft_config = dataclasses.replace(
            raft_config or Config(**{**SIM_RAFT, **TIMINGS[cfg.timing], **cfg.raft}),
            read_mode=cfg.read_mode)
        self.rate: dict[int, float] = {}
        self.rng = random.Random(seed)
        self.now = 0.0
        self.seq = 0
        self.ids = list(range(cfg.nodes))
        self.storage = {i: DiskImage() for i in self.ids}
        self.incarnation: dict[int, int] = defaultdict(int)
        self.crash_at: dict[int, str] = {}   # node -> where its next persisting turn crashes
        self.corrupted: set[int] = set()     # a bit of its log was flipped while it was down
        self.dead: set[int] = set()          # refused to start: stays down
        self.restart_soon: set[int] = set()  # restarts within milliseconds of its crash
        self.net: list[tuple[float, int, int, int, list]] = []   # (time, seq, src, dst, msgs)
        self.actions: list[tuple[float, int, Any]] = []          # the nemeses' next steps
        self.cut: set[tuple[int, int]] = set()      # (src, dst) pairs that cannot talk
        self.nemesis_until = 0.0                    # a targeted nemesis plays out until then
        self.quiet_until = 0.0                      # ... and clients only read until then
        self.stale_snapshot_until = 0.0             # stale_snapshot: at a leader's turn until then
        self.slow_to: Optional[tuple[int, float]] = None   # (node, extra delay to it)
        self.holding_votes = False                  # vote_hold: vote traffic is held ...
        self.held_votes: list[tuple[int, int, list]] = []   # ... here, until the cut changes
        self.healed = not cfg.active
        self.next_fault = self._fault_gap() if cfg.active else float("inf")
        self.heal_time = 0.0 if self.healed else cfg.fault_period
        self.result = SimResult(seed)
        self._init_checks()
        # Generous: at 50% loss a read may need many tries (liveness, not speed, is checked).
        # (op_timeout: the cluster's client_op_timeout, below its session timeout)
        self.timing = Timing(attempt_timeout=0.25, backoff=0.02,
                             op_timeout=self.raft_config.client_op_timeout)
        self._init_churn()
        self.nodes: dict[int, Node] = {}
        for i in self.ids:
            self.nodes[i] = self._boot(i)
        self._init_liveness()
        self.clients = {FIRST_CLIENT_ID + c: ClientSession(FIRST_CLIENT_ID + c, self.ids,
                                                       random.Random(self.rng.random()),
                                                       self.timing)
                        for c in range(cfg.clients)}
        self.submitted = 0
        # Snapshots being written: node -> (incarnation, image, when it is written).
        self.snapshotting: dict[int, tuple[int, Snapshot, float]] = {}

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
            t_action = self.actions[0][0] if self.actions else float("inf")
            self.now = max(self.now, min(t_net, t_node, t_client, self.next_fault, t_heal,
                                         t_action, self._next_submit_time()))
            changed: Optional[int] = None   # the one node whose deadline may have moved
            if t_net <= self.now:
                _, _, src, dst, msgs = heapq.heappop(self.net)
                self._deliver(src, dst, msgs)
                changed = dst
            elif not self.healed and self.now >= self.heal_time:
                self._heal_all()
                deadlines = {}
            elif t_action <= self.now:
                self._run_actions()
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
            self._check_liveness()

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
                if self.now < self.quiet_until:
                    op = "get"
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
            # Checked only where an operation can wait out an election (not with the
            # swarm's short sessions, whose short op timeouts a slow commit outlasts).
            # A session may have expired during the faults: a write sent in it before
            # its client knew is unknown (thesis §6.3).
            if out.invoke >= self.heal_time + 1e-9 and self.healed and out.outcome != DONE \
                    and self.timing.op_timeout >= self.elect_bound \
                    and out.error is not SessionExpired:
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
        if self.holding_votes:
            votes = [m for m in msgs if self._is_vote(m)]
            if votes:
                self.held_votes.append((src, dst, votes))
                msgs = [m for m in msgs if not self._is_vote(m)]
                if not msgs:
                    return
        copies = 2 if net.duplicate and r.random() < net.duplicate else 1
        late = self._deviation(src, dst)
        for _ in range(copies):
            delay = late + r.uniform(*cfg.latency)
            if net.delay[1] > 0:
                delay += r.uniform(*net.delay)
            if "hold" in cfg.faults and r.random() < cfg.hold:
                delay += r.uniform(0.0, cfg.hold_for)
            self.seq += 1
            heapq.heappush(self.net, (self.now + delay, self.seq, src, dst, msgs))

    def _deviation(self, src: int, dst: int) -> float:
        """Extra delay for this packet: to a node ``edge_partition`` slows down
        (explore.py sets its own)."""
        slow = self.slow_to
        return slow[1] if slow is not None and dst == slow[0] else 0.0

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
                self.read_floor.setdefault((dst, c.client_id, c.seq), (self.committed, c.key))
            self._guard(dst, node.step, src, m, local)
        self._turn(dst, node)

    # ----------------------------------------------------------------- nodes

    def _boot(self, i: int) -> Node:
        self.incarnation[i] += 1
        rng = random.Random(f"{self.seed}/{i}/{self.incarnation[i]}")
        storage = self.storage[i]
        drift = self.cfg.clock_drift
        self.rate[i] = 1 + drift * rng.choice((-1, 1)) if drift else 1.0
        return Node(i, self._boot_nodes(i), storage.load(), rng, self._local(i), self.raft_config,
                    snapshot=storage.load_snapshot())

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
        self._check_compaction(i, node)
        self._check_leader(i, node)
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
        # Applied (and answered) only now, after the save: a crash inside it
        # applied nothing (a single node commits its own entries at once).
        self._check_applied(i, rd.committed)
        self._check_configs(i, node, rd.entries)
        if self.read_floor:
            self._check_reads(i, node, rd.persisted_messages)
        self._check_promises(i, node, rd.persisted_messages)
        self._send_each(i, rd.persisted_messages)
        if node.role == LEADER:
            self._check_leader_alone(i, node)
            if self.now < self.stale_snapshot_until:
                self._stale_snapshot(i, node)

    def _send_each(self, i: int, messages: list[tuple[int, Any]]) -> None:
        """One packet per destination."""
        by_dst: dict[int, list] = defaultdict(list)
        for dst, m in messages:
            by_dst[dst].append(m)
        for dst, msgs in by_dst.items():
            self._send(i, dst, msgs)

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

    def _step_time(self) -> None:
        """One event after the workload: the next packet or timer."""
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

