"""``raftmp.Cluster``: the launcher. Forks a router and N workers, and controls them.

Process tree::

    launcher (this object) ─┬─ router      (every packet passes here; faults live here)
                            └─ worker 0..N-1 (one Raft replica each)

Each worker has a link to the router and a control pipe to the launcher
(status, stop); ``launcher.py`` holds the launcher's side of every child.
Nothing outlives the launcher: ``stop()`` (also on Ctrl-C via the ``with``
block, and at interpreter exit) stops and reaps every process;
if the launcher is killed outright, workers get SIGKILL from the kernel
(PR_SET_PDEATHSIG) and see EOF, and the router sees EOF on its control pipe
and removes the temporary directory.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import tempfile
import time
import weakref
from dataclasses import asdict
from typing import Any, Iterable, Optional

from . import identity
from .client import Client
from .core.errors import ConfigChangeRefused, ConfigError, RaftmpError, Timeout, Unavailable
from .core.kv import Limits
from .core.raft import LEADER, Config
from .core.reconfig import passing
from .core.session import Timing
from .faults import Faults
from .launcher import RouterHandle, WorkerHandle, start_router, start_worker
from .procs import poll
from .seeds import pick_seed
from .transports import idle, wire

log = logging.getLogger("raftmp.cluster")


def _fresh_dir() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="raftmp-", dir=base)


class Cluster:
    """A running raftmp cluster of ``nodes`` local processes behind a lossy router.

    ``data_dir=None`` keeps the nodes' data in a fresh temporary directory
    (on /dev/shm where it exists) removed at ``stop()``; a given ``data_dir``
    is kept across runs. Nodes are numbered ``0..nodes-1``; a node added later
    (``add_node``) gets the next number never used, and ``ids`` lists the
    current members.
    """

    def __init__(self, nodes: int = 5, *, drop: float = 0.0, client_drop: float = 0.0,
                 delay: tuple[float, float] = (0.0, 0.0), duplicate: float = 0.0,
                 seed: Optional[int] = None, data_dir: Optional[str] = None,
                 config: Optional[Config] = None, limits: Optional[Limits] = None,
                 timing: Optional[Timing] = None, sync: bool = True,
                 start_timeout: float = 10.0) -> None:
        most = wire.FIRST_CLIENT_ID - 1
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= most:
            raise ConfigError(f"nodes must be an int in [1, {most}], not {nodes!r}")
        if idle.SPIN_ERROR is not None:
            raise ConfigError(idle.SPIN_ERROR)
        self.n = nodes
        self.ids = list(range(nodes))     # the members, as this launcher changed them
        self.first = list(self.ids)       # the cluster's first configuration
        self.removed: set[int] = set()
        self.seed = pick_seed(seed)
        self.faults = Faults(drop, client_drop, delay, duplicate)
        self.secret = secrets.token_bytes(wire.SECRET_SIZE)  # only our workers speak as replicas
        self.config = config or Config()
        self.limits = limits or Limits()
        self.timing = self._check_timing(timing)
        self.sync = sync
        self.start_timeout = start_timeout
        self.user_data_dir = data_dir
        self.ctx = multiprocessing.get_context("fork")
        self.runtime_dir: Optional[str] = None
        self.data_dir: Optional[str] = None
        self.address = ""
        self.router: Optional[RouterHandle] = None
        self.workers: dict[int, WorkerHandle] = {}   # the running ones
        self.starts: dict[int, int] = {i: 0 for i in self.ids}
        self._clients: list[Client] = []
        self._started = False

    # --------------------------------------------------------------- lifecycle

    def start(self) -> "Cluster":
        if self._started:
            return self
        self._started = True
        self.runtime_dir = _fresh_dir()  # the router socket, and the data unless data_dir is given
        self.data_dir = self.user_data_dir or os.path.join(self.runtime_dir, "data")
        self.address = os.path.join(self.runtime_dir, "router.sock")
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _close_in_child(ref))
        atexit.register(_stop_at_exit, ref)
        try:   # from here on, a failure stops what started and removes runtime_dir
            os.makedirs(self.data_dir, exist_ok=True)
            self.cluster_id = identity.init_cluster(self.data_dir, self.ids)
            # A data dir kept from an earlier run holds the members as it left them.
            self.first, known, removed = identity.members(self.data_dir)
            self.removed = set(removed)
            self.ids = [i for i in known if i not in self.removed]
            self.starts.update({i: 0 for i in self.ids if i not in self.starts})
            self.router = start_router(self.ctx, self.address, self.seed, secret=self.secret,
                                       cleanup_dir=self.runtime_dir)
            self.router.set_faults(**asdict(self.faults))
            for i in self.ids:
                self._spawn(i)
            self.wait_for_leader(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        log.info("cluster of %d nodes up (seed %d, dir %s)", self.n, self.seed, self.runtime_dir)
        return self

    def stop(self) -> None:
        """Stop every process (bounded waits, then SIGKILL) and remove temporary data."""
        for c in self._clients:
            c.close()
        self._clients = []
        for w in self.workers.values():
            w.request_stop()
        deadline = time.monotonic() + 3.0
        for i in list(self.workers):
            self.workers.pop(i).reap(max(0.0, deadline - time.monotonic()))
        if self.router is not None:
            self.router.stop()
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- control

    def client(self, *, history: Any = None, timing: Optional[Timing] = None) -> Client:
        """A new client endpoint (closed with the cluster)."""
        self._need_started()
        c = Client(self.address, self.ids, timing=self._check_timing(timing or self.timing),
                   limits=self.limits, history=history)
        self._clients.append(c)
        return c

    def _check_timing(self, timing: Optional[Timing]) -> Optional[Timing]:
        """A client's op timeout may not outlast what the sessions are sized for
        (None: the default Timing's, checked too)."""
        op_timeout = (timing or Timing()).op_timeout
        if op_timeout > self.config.client_op_timeout:
            raise ConfigError(f"Timing.op_timeout ({op_timeout}) is above "
                              f"Config.client_op_timeout ({self.config.client_op_timeout}), "
                              f"for which the session timeout was checked")
        return timing

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (its data dir stays for ``restart``)."""
        self._check_node(i)
        w = self.workers.pop(i, None)
        if w is None:
            raise RaftmpError(f"node {i} is not running")
        os.kill(w.pid, signal.SIGKILL)
        w.reap(5.0)

    def restart(self, i: int) -> None:
        """Start node ``i`` again from its data dir."""
        self._check_node(i)
        if i in self.workers:
            raise RaftmpError(f"node {i} is running; kill it first")
        self._spawn(i)

    def partition(self, *groups: Iterable[int]) -> None:
        """Nodes in different groups cannot reach each other (clients reach everyone)."""
        self._need_started()
        for g in groups:
            for i in g:
                self._check_node(i)
        self.router.partition(*[list(g) for g in groups])

    def cut(self, src: int, dst: int) -> None:
        """Drop every packet from node ``src`` to node ``dst`` (one way) until ``heal()``."""
        self._need_started()
        self.router.cut(src, dst)

    def heal(self) -> None:
        self._need_started()
        self.router.heal()

    def set_faults(self, **changes: Any) -> Faults:
        """Change drop, client_drop, delay=(lo, hi), duplicate at run time; the new Faults."""
        self._need_started()
        self.faults = self.router.set_faults(**changes)
        return self.faults

    def alive(self) -> list[int]:
        return sorted(self.workers)

    def node_status(self, i: int, timeout: float = 2.0) -> dict:
        """Role, term, commit, applied, log length, snapshot index, data size, RSS...
        of node ``i``; for a node that is down, its exit status if it exited
        (``worker.LOST_STATE_EXIT``: it refused to start without its data)."""
        status = self._ask(i, "status", timeout)
        if status is not None:
            return status
        w = self.workers.get(i)
        return {"node": i, "alive": False, "exitcode": w.process.exitcode if w else None}

    def dump(self, i: int, timeout: float = 5.0) -> Optional[dict]:
        """Node ``i``'s whole key-value map (for checks), or None if it is down."""
        return self._ask(i, "dump", timeout)

    def stats(self) -> dict:
        """Router counters plus each node's status."""
        self._need_started()
        return {"seed": self.seed, "router": self.router.stats(), "members": list(self.ids),
                "nodes": [self.node_status(i) for i in self.ids]}

    def leader(self) -> Optional[int]:
        """The node that leads the newest term among live nodes, or None."""
        best = None
        for i in self.alive():
            s = self.node_status(i, timeout=0.25)  # a node busy replaying its log can wait
            if s.get("role") == LEADER and (best is None or s["term"] > best[0]):
                best = (s["term"], i)
        return best[1] if best else None

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """Poll until some node leads; its number. Raises RaftmpError after ``timeout``."""
        leader = poll(self.leader, timeout, 0.01)
        if leader is None:
            raise RaftmpError(f"no leader elected within {timeout} s")
        return leader

    # ------------------------------------------------ membership (thesis ch. 4)

    def add_node(self, timeout: float = 30.0, rounds: int = 10) -> int:
        """Start a new server under an id never used, add it as a learner, and
        promote it to voter once it has caught up; its id. Thesis §4.2.1:
        replication in rounds, each to the leader's log end as the round began,
        until one takes less than an election timeout; if none does within
        ``rounds``, it is removed again and RaftmpError raised."""
        self._need_started()
        deadline = time.monotonic() + timeout
        i = max(self.ids + sorted(self.removed)) + 1
        if i >= wire.FIRST_CLIENT_ID:
            raise RaftmpError(f"no node id left (ids are below {wire.FIRST_CLIENT_ID})")
        identity.add_node(self.data_dir, i)
        self.ids.append(i)
        self.starts[i] = 0
        self._spawn(i)
        self._change("add_learner", i, deadline)
        if not self._catch_up(i, rounds, deadline):
            self.remove_node(i, max(1.0, deadline - time.monotonic()))
            raise RaftmpError(f"node {i} did not catch up within {rounds} rounds: removed")
        self._change("promote", i, deadline)
        return i

    def remove_node(self, i: int, timeout: float = 30.0) -> None:
        """Remove node ``i`` from the configuration (its leadership handed to
        another voter first, thesis §3.10), then stop it and delete its data:
        its id is never used again."""
        self._check_node(i)
        deadline = time.monotonic() + timeout
        if self.leader() == i:
            status = self.node_status(i)
            heir = next((v for v in status.get("voters", []) if v != i and v in self.workers),
                        None)
            if heir is not None:
                try:
                    self.transfer_leader(heir, max(0.5, deadline - time.monotonic()))
                except RaftmpError as e:   # it then leads without counting itself (§4.2.2)
                    log.info("transfer before removing %d: %s", i, e)
        self._change("remove", i, deadline)
        w = self.workers.pop(i, None)
        if w is not None:
            w.request_stop()
            w.reap(3.0)
        self.ids.remove(i)
        self.removed.add(i)
        identity.remove_node(self.data_dir, i)

    def replace_node(self, i: int, timeout: float = 60.0) -> int:
        """Replace node ``i`` (say, one whose data directory was lost): remove it,
        then add a new server; the new server's id."""
        deadline = time.monotonic() + timeout
        self.remove_node(i, timeout)
        return self.add_node(max(1.0, deadline - time.monotonic()))

    def transfer_leader(self, i: int, timeout: float = 10.0) -> float:
        """Hand leadership to voter ``i`` (thesis §3.10); seconds it took.
        RaftmpError if the leader refuses or the transfer does not complete."""
        self._check_node(i)
        start = time.monotonic()
        leader = self.wait_for_leader(timeout)
        if leader == i:
            return 0.0
        why = self._ask(leader, "transfer", timeout, i)
        if why is not None:
            raise RaftmpError(f"node {leader} refused to hand leadership to {i}: {why}")
        while self.leader() != i:
            if time.monotonic() > start + timeout:
                raise RaftmpError(f"leadership did not move from {leader} to {i} "
                                  f"within {timeout} s")
            time.sleep(0.005)
        return time.monotonic() - start

    def _change(self, op: str, i: int, deadline: float) -> None:
        """Submit a configuration change through a client session (exactly once,
        thesis §6.3), asking again while the refusal is one that passes."""
        with Client(self.address, sorted(self.workers), timing=self.timing,
                    limits=self.limits) as admin:
            while True:
                try:
                    admin.change_config(op, i)
                    return
                except ConfigChangeRefused as e:
                    if not passing(str(e)) or time.monotonic() > deadline:
                        raise
                except (Timeout, Unavailable):
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.02)

    def _catch_up(self, i: int, rounds: int, deadline: float) -> bool:
        """Thesis §4.2.1's rounds: whether learner ``i`` caught up with the leader."""
        quick = self.config.election_timeout[0]
        for _ in range(rounds):
            start = time.monotonic()
            leader = self.wait_for_leader(max(0.1, deadline - start))
            target = self.node_status(leader).get("log", 0)
            while self.node_status(i).get("log", -1) < target:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
            if time.monotonic() - start < quick:
                return True
        return False

    @property
    def pids(self) -> dict[str, Any]:
        return {"router": self.router.pid if self.router else None,
                "workers": {i: w.pid for i, w in self.workers.items()}}

    # ---------------------------------------------------------------- helpers

    def _spawn(self, i: int) -> None:
        self.starts[i] += 1
        # A server added later starts in no configuration: it learns its own
        # from the leader's log (thesis §4.2.1).
        first = self.first if i in self.first else []
        self.workers[i] = start_worker(
            self.ctx, i, first, self.address, self.secret, self.data_dir,
            f"{self.seed}/{i}/{self.starts[i]}", self.config, self.limits, self.sync)

    def _ask(self, i: int, verb: str, timeout: float, *args: Any) -> Any:
        w = self.workers.get(i)
        return None if w is None else w.ask(verb, timeout, *args)

    def _check_node(self, i: Any) -> None:
        if isinstance(i, bool) or not isinstance(i, int) or i not in self.ids:
            gone = " (removed)" if i in self.removed else ""
            raise ValueError(f"no node {i!r}{gone}: the nodes are {self.ids}")

    def _need_started(self) -> None:
        if not self._started or self.router is None:
            raise RaftmpError("the cluster is not started (use start() or a with block)")


def _close_in_child(ref: "weakref.ref[Cluster]") -> None:
    """At fork: a child forgets the launcher's processes (``launcher.py`` closes
    their pipes), so it never stops them or removes the launcher's directory."""
    cluster = ref()
    if cluster is not None:
        cluster.workers = {}
        cluster._clients = []
        cluster.router = None
        cluster.runtime_dir = None


def _stop_at_exit(ref: "weakref.ref[Cluster]") -> None:
    cluster = ref()
    if cluster is not None and cluster.workers:
        cluster.stop()
