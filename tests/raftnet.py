"""An in-memory network of Raft cores for tests (etcd raft_test.go's ``network``).

No sockets, no sleeps, no wall clock: ``now`` is a number the test moves by
hand, every message sits in ``queue`` until a test delivers it, and each core
persists through its own ``MemoryStorage`` in the order the Ready prescribes
(a leader's appends are queued before the save, everything else after it), so
``crash(i)`` / ``restart(i)`` rebuild a core from exactly what it had made
durable.

Typical use::

    net = Network(3)
    net.elect(0)                      # 0 times out, pre-votes, wins, replicates its no-op
    net.propose(0, "x")
    net.settle()                      # deliver until nothing is in flight
    net.heartbeat()                   # advance one heartbeat interval, tick everyone, settle

Faults (all undone by ``recover()``): ``cut(a, b)`` (both directions),
``isolate(i)``, ``drop(src, dst, p)`` (probability, seeded), ``ignore(type)``,
``drop_if(pred)`` (any predicate on (src, dst, message)), ``drop_every(k)``
(deterministically lose every k-th message), ``rewrite(fn)`` (replace a message).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from raftmp.core.log import RaftLog
from raftmp.core.messages import Entry, Snapshot
from raftmp.core.raft import LEADER, Config, Raft
from raftmp.storage import MemoryStorage


def make_log(terms: list[int], start: int = 1) -> list[Entry]:
    """Entries with the given terms at indexes start, start+1, ... (command "t<term>i<index>")."""
    return [Entry(t, i, f"t{t}i{i}") for i, t in enumerate(terms, start)]


def terms_of(entries) -> list[int]:
    return [e.term for e in entries]


class Network:
    def __init__(self, n: int = 3, seed: int = 0, config: Config | None = None,
                 states: dict[int, tuple] | None = None, now: float = 0.0) -> None:
        """``states`` maps a node id to its stored ``(term, vote, entries)``."""
        self.ids = list(range(n))
        self.seed = seed
        # The paper's rules, with ReadIndex reads and votes from the first
        # instant; lease reads (the product default) are tested in test_lease.
        self.config = config or Config(read_mode="index")
        self.now = now
        self.rng = random.Random(f"net/{seed}")
        self.storage = {i: MemoryStorage() for i in self.ids}
        for i, (term, vote, entries) in (states or {}).items():
            self.storage[i].save((term, vote), list(entries))
        self.incarnation: dict[int, int] = defaultdict(int)
        self.joined: set[int] = set()     # servers added after the cluster began (``add``)
        self.cores: dict[int, Raft] = {}
        for i in self.ids:
            self._boot(i)
        self.queue: list[tuple[int, int, Any]] = []       # (src, dst, message), FIFO
        self.sent: list[tuple[int, int, Any]] = []        # every message sent, for counting
        self.dropped: list[tuple[int, int, Any]] = []     # every message the faults ate
        self.applied: dict[int, list[Entry]] = defaultdict(list)    # per node, in apply order
        self.reads: dict[int, list[tuple[Any, int]]] = defaultdict(list)
        self.leaders: dict[int, set[int]] = defaultdict(set)        # term -> every leader seen
        self.applied_at: dict[int, Entry] = {}       # index -> the entry anybody applied there
        self.recover()

    # ------------------------------------------------------------------ nodes

    def _boot(self, i: int) -> Raft:
        self.incarnation[i] += 1
        rng = random.Random(f"{self.seed}/{i}/{self.incarnation[i]}")
        first = [] if i in self.joined else [j for j in self.ids if j not in self.joined]
        core = Raft(i, first, self.storage[i].load(), rng, self.now, self.config,
                    self.storage[i].load_snapshot())
        self.cores[i] = core
        return core

    def add(self, i: int, state: tuple | None = None) -> Raft:
        """Boot a new server ``i`` that is in no configuration yet (it waits to be
        added: thesis §4.2.1), from ``state`` (term, vote, entries) if given."""
        assert i not in self.ids
        self.ids.append(i)
        self.joined.add(i)
        self.storage[i] = MemoryStorage()
        if state is not None:
            self.storage[i].save(state[:2], list(state[2]))
        return self._boot(i)

    def change(self, i: int, op: str, server: int) -> int:
        """Leader ``i`` appends a configuration change (asserted accepted); its index."""
        index, why = self.cores[i].propose_config(op, server)
        assert why is None, why
        self.flush(i)
        return index

    def __getitem__(self, i: int) -> Raft:
        return self.cores[i]

    @property
    def live(self) -> list[int]:
        return sorted(self.cores)

    def crash(self, i: int) -> None:
        """The node stops; what it persisted survives; messages to it vanish."""
        del self.cores[i]

    def restart(self, i: int) -> Raft:
        """Rebuild the node from its storage (volatile state is lost)."""
        assert i not in self.cores
        self.applied[i] = []          # no snapshots: the state machine replays from index 1
        self.reads[i] = []
        return self._boot(i)

    def leader(self) -> int | None:
        """The live leader of the highest term, if any."""
        leaders = [(c.term, i) for i, c in self.cores.items() if c.role == LEADER]
        return max(leaders)[1] if leaders else None

    # ----------------------------------------------------------------- faults

    def recover(self) -> None:
        self.cuts: set[tuple[int, int]] = set()
        self.drop_prob: dict[tuple[int, int], float] = {}
        self.ignored: set[type] = set()
        self.filters: list[Callable[[int, int, Any], bool]] = []
        self.rewriters: list[Callable[[int, int, Any], Any]] = []
        self.every = 0
        self.counter = 0

    def cut(self, a: int, b: int) -> None:
        self.cuts |= {(a, b), (b, a)}

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut(i, j)

    def partition(self, *groups: list[int]) -> None:
        for g in groups:
            for h in groups:
                if g is not h:
                    self.cuts |= {(a, b) for a in g for b in h}

    def drop(self, src: int, dst: int, p: float) -> None:
        self.drop_prob[(src, dst)] = p

    def ignore(self, t: type) -> None:
        self.ignored.add(t)

    def drop_if(self, pred: Callable[[int, int, Any], bool]) -> None:
        self.filters.append(pred)

    def rewrite(self, fn: Callable[[int, int, Any], Any]) -> None:
        """Deliver ``fn(src, dst, m)`` instead of ``m`` (a test-scripted network)."""
        self.rewriters.append(fn)

    def drop_every(self, k: int) -> None:
        """Lose every k-th message sent from now on (k=2: every other one)."""
        self.every, self.counter = k, 0

    def _lost(self, src: int, dst: int, m: Any) -> bool:
        if (src, dst) in self.cuts or type(m) in self.ignored:
            return True
        if any(f(src, dst, m) for f in self.filters):
            return True
        p = self.drop_prob.get((src, dst), 0.0)
        if p and self.rng.random() < p:
            return True
        if self.every:
            self.counter += 1
            if self.counter % self.every == 0:
                return True
        return False

    # ---------------------------------------------------------------- traffic

    def send(self, src: int, dst: int, m: Any) -> None:
        self.sent.append((src, dst, m))
        for fn in self.rewriters:
            m = fn(src, dst, m)
        if self._lost(src, dst, m):
            self.dropped.append((src, dst, m))
        else:
            self.queue.append((src, dst, m))

    def flush(self, i: int):
        """One worker turn's output in the Ready's order: early sends, persist,
        record, then the sends that wait for the persist."""
        core = self.cores[i]
        rd = core.ready(self.now)
        for dst, m in rd.messages:
            self.send(i, dst, m)
        storage = self.storage[i]
        if rd.snapshot is not None:
            storage.save_snapshot(rd.snapshot)
            storage.compact(rd.snapshot.index, rd.snapshot.term)
        storage.save(rd.hard_state, rd.entries)
        # What the core persisted is exactly its log: nothing sent may promise more.
        done = core.snapshot.index if core.snapshot else 0
        assert storage.load() == (core.term, core.vote,
                                  [e for e in core.log.entries if e.index > done])
        self.applied[i].extend(rd.committed)
        for e in rd.committed:
            # State machine safety (§5.4.3), across every node and incarnation.
            assert self.applied_at.setdefault(e.index, e) == e, \
                f"node {i} applied {e}, another node {self.applied_at[e.index]}"
        self.reads[i].extend(rd.reads)
        if core.role == LEADER:
            self.leaders[core.term].add(i)
        for dst, m in rd.persisted_messages:
            self.send(i, dst, m)
        return rd

    def step(self, src: int, dst: int, m: Any) -> None:
        """Deliver one message now (if ``dst`` is alive) and flush ``dst``."""
        if dst not in self.cores:
            return
        self.cores[dst].step(src, m, self.now)
        self.flush(dst)

    def deliver(self, n: int | None = None,
                pred: Callable[[int, int, Any], bool] | None = None) -> int:
        """Deliver up to ``n`` queued messages (those matching ``pred``) in FIFO order."""
        done = 0
        i = 0
        while i < len(self.queue) and (n is None or done < n):
            src, dst, m = self.queue[i]
            if pred is None or pred(src, dst, m):
                del self.queue[i]
                self.step(src, dst, m)
                done += 1
            else:
                i += 1
        return done

    def take(self, pred: Callable[[int, int, Any], bool] = lambda s, d, m: True) -> list:
        """Remove and return the queued messages matching ``pred`` (to hold, reorder, replay)."""
        out = [x for x in self.queue if pred(*x)]
        self.queue = [x for x in self.queue if not pred(*x)]
        return out

    def settle(self, limit: int = 100_000) -> int:
        """Deliver until nothing is in flight (bounded: a livelock fails loudly)."""
        n = 0
        while self.queue:
            src, dst, m = self.queue.pop(0)
            self.step(src, dst, m)
            n += 1
            assert n < limit, "network did not settle"
        return n

    # ------------------------------------------------------------------- time

    def tick(self, i: int) -> None:
        self.cores[i].tick(self.now)
        self.flush(i)

    def advance(self, dt: float, nodes: list[int] | None = None) -> None:
        """Move the clock and tick ``nodes`` (default: every live node)."""
        self.now += dt
        for i in (self.live if nodes is None else nodes):
            if i in self.cores:
                self.tick(i)

    def heartbeat(self, n: int = 1, nodes: list[int] | None = None) -> None:
        """``n`` times: one heartbeat interval passes, then the network settles."""
        for _ in range(n):
            self.advance(self.config.heartbeat_interval, nodes)
            self.settle()

    def answered_heartbeat(self, i: int) -> None:
        """Leader i's next check-quorum period (§6.2) begins: its heartbeat asks
        every follower for an answer (an idle leader's heartbeats ask only
        where it needs one); the network settles. Only i is ticked."""
        self.now = max(self.now, self.cores[i].quorum_deadline)
        self.tick(i)
        self.settle()

    def timeout(self, i: int) -> None:
        """Let node i's election timer fire (only i is ticked)."""
        self.now = max(self.now, self.cores[i].election_deadline)
        self.tick(i)

    def elect(self, i: int) -> Raft:
        """Node i times out and campaigns; deliver everything. Asserts it won."""
        self.timeout(i)
        self.settle()
        assert self.cores[i].role == LEADER, f"node {i} did not win: {self.cores[i].role}"
        return self.cores[i]

    def snapshot(self, i: int, size: int = 1000) -> Snapshot:
        """Node i snapshots its applied state (``size`` bytes standing for the
        state machine's) and compacts: what a driver does when it is due."""
        core = self.cores[i]
        data = (b"%d:" % core.applied).ljust(size, b".")
        snap = core.snapshot_of(data)
        self.storage[i].save_snapshot(snap)
        base = core.snapshot_saved(snap)
        if base is not None:
            self.storage[i].compact(*base)
        return snap

    def propose(self, i: int, *commands: Any) -> list[int | None]:
        out = [self.cores[i].propose(c) for c in commands]
        self.flush(i)
        return out

    # ----------------------------------------------------------------- checks

    def check_safety(self) -> None:
        """Election safety, log matching and state machine safety over what was seen."""
        for term, who in self.leaders.items():
            assert len(who) == 1, f"term {term} had leaders {sorted(who)}"
        logs = [c.log for c in self.cores.values()]
        for a in logs:
            for b in logs:
                check_log_matching(a, b)
        seqs = list(self.applied.values())
        for a in seqs:
            for b in seqs:
                n = min(len(a), len(b))
                assert a[:n] == b[:n], "nodes applied different entries"

    def converged(self) -> bool:
        """Every live node holds the same log and has applied all of it."""
        cores = list(self.cores.values())
        first = cores[0].log.entries
        return all(c.log.entries == first and c.commit == len(first) for c in cores)


def check_log_matching(a: RaftLog, b: RaftLog) -> None:
    """§5.3 Log Matching: an equal (index, term) means equal prefixes up to it."""
    n = min(a.last_index, b.last_index)
    lo = max(a.base, b.base) + 1      # below it, one of them was compacted
    for i in range(n, lo - 1, -1):
        if a.term(i) == b.term(i):
            assert a.slice(lo, i + 1) == b.slice(lo, i + 1), \
                f"logs differ before matching index {i}"
            return
