"""The worker: one replica's single-threaded event loop, over any transport.

    loop:
        wait on the transport (and the launcher's control pipe, if any) until
            the core's next deadline
        take every message that has arrived (one read); node.step(...) for each
            (client requests: at most TURN_REQUESTS a turn, the rest wait
            in a backlog for the next turns, which do not block)
        node.tick(now)
        rd = node.ready(now)
        send rd.messages                            # a leader's appends (thesis §10.2.1)
        storage.save(rd.hard_state, rd.entries)     # durable before ... (a snapshot
        send rd.persisted_messages                  #   from the leader first) ... votes,
                                                    #   acknowledgements, client answers
        reap a finished snapshot writer (compact), or fork one if a snapshot is due

The loop does not know what carries its packets: a transport (``transports/``)
does — the router link for a cluster's worker process, UDP to the CS3700
simulator in ``transports/course_link.py``. A transport hands over only well-formed messages
(``core.messages.check_raft_message``); what it drops, it counts here.

No threads (``threading.active_count() == 1`` always): the links are plain
``multiprocessing`` connections or sockets, polled (``wire.Poller``) and read a
whole turn's worth at a time.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import random
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, Optional

from . import identity
from .core.errors import PeerMisbehaved
from .core.kv import Limits
from .core.messages import RAFT_MESSAGES, ClientRequest
from .core.node import Node
from .core.raft import Config
from .metrics import Metrics
from .procs import die_with_parent
from .snapshots import SnapshotWriter
from .storage import FileStorage
from .transports import wire
from .transports.router_link import RouterLink

log = logging.getLogger("raftmp.worker")

GC_YOUNG = 200_000           # allocations between two young collections (default 700)
# Client requests stepped per turn; the rest wait in ``Worker.backlog`` for the
# next turns (which do not block). A leader that took a window's worth of
# requests in one turn sent its appends only after all of them, and the
# cluster moved in lock step: client, leader, followers, leader, client, one
# at a time. Turns of at most this many keep every process busy at once.
TURN_REQUESTS = 1024
LOST_STATE_EXIT = 3         # exit status of a worker that refuses to start (identity.py)


class Worker:
    def __init__(self, node: Node, transport: Any, storage: FileStorage,
                 ctl: Optional[Connection] = None, incarnation: int = 0,
                 replicas: Optional[frozenset[int]] = None) -> None:
        """``replicas``: the ids Raft messages may come from (a fixed membership,
        CS3700's); None: any replica id the router vouches for, ``0 ..
        FIRST_CLIENT_ID - 1``, as members come and go (thesis chapter 4)."""
        self.id = node.id
        self.replicas = replicas
        self.node = node
        self.transport = transport
        self.storage = storage
        self.ctl = ctl
        self.incarnation = incarnation
        self.poller = wire.Poller(transport, *([ctl] if ctl is not None else []))
        self.writer = SnapshotWriter(storage)
        self.snapshot_started = 0.0
        self.snapshot_times: deque[tuple[float, float]] = deque(maxlen=256)  # (fork, compacted)
        self.bad_packets = 0
        self.metrics = Metrics()
        self.running = True
        self.backlog: deque[tuple[int, ClientRequest]] = deque()   # over TURN_REQUESTS

    def run(self) -> None:
        transport, node = self.transport, self.node
        while self.running:
            deadline = min(node.next_deadline(), transport.next_deadline())
            readable = False
            for conn in self.poller.wait(0 if self.backlog else deadline - time.monotonic()):
                if conn is transport:
                    readable = True
                else:
                    self.control()
            self.turn(readable)

    def turn(self, readable: bool) -> None:
        """One turn of the loop, after the wait: ``readable``, the transport has data."""
        node, transport, storage, backlog = self.node, self.transport, self.storage, self.backlog
        now = time.monotonic()
        try:
            budget = TURN_REQUESTS
            while backlog and budget:
                src, m = backlog.popleft()
                self.step(src, m, now)
                budget -= 1
            for src, m in transport.receive(now, readable, self.reject):
                if type(m) is ClientRequest:
                    self.metrics.request(m.command, now)   # (timed from its arrival)
                    if not budget:
                        backlog.append((src, m))
                        continue
                    budget -= 1
                self.step(src, m, now)
        except (EOFError, OSError):
            log.info("node %d: transport closed, exiting", self.id)
            self.running = False
            return
        node.tick(now)
        rd = node.ready(now)
        self.metrics.turn(self.id, node.leader)
        if rd.messages:
            self.send(rd.messages, now)   # a leader's appends (thesis §10.2.1)
        if rd.snapshot is not None:       # from the leader: durable before anything else
            storage.save_snapshot(rd.snapshot)
            storage.compact(rd.snapshot.index, rd.snapshot.term)
        if rd.entries or rd.hard_state is not None:
            started = time.perf_counter()
            if rd.entries:
                storage.save(rd.hard_state, rd.entries, transport.pickled(rd.entries))
            else:
                storage.save(rd.hard_state, ())
            self.metrics.fsync.observe(time.perf_counter() - started)
        if rd.persisted_messages:
            self.send(rd.persisted_messages, now)
        self.snapshot_turn()

    def snapshot_turn(self) -> None:
        """Compact once the forked writer has made a snapshot durable; start
        one when the node wants it (see snapshots.py for why a fork)."""
        node, writer = self.node, self.writer
        snap = writer.poll()
        if snap is not None:
            self.storage.save_snapshot(snap, written=True)
            base = node.snapshot_saved(snap)
            if base is not None:
                self.storage.compact(*base)
            self.snapshot_times.append((self.snapshot_started, time.monotonic()))
        if not writer.busy and node.snapshot_due():
            self.snapshot_started = time.monotonic()
            writer.start(node)

    def step(self, src: int, m: Any, now: float) -> None:
        t = type(m)
        if t is ClientRequest or (t in RAFT_MESSAGES and self.is_replica(src)):
            try:
                self.node.step(src, m, now)
            except (TypeError, ValueError, AttributeError, KeyError, IndexError,
                    PeerMisbehaved) as exc:
                # A well-typed message with ill-typed fields that passed the
                # transport's checks, or one no honest peer sends (a second
                # leader of our term): remote misbehaviour, dropped before it
                # changed anything. (A broken invariant of our own is an
                # AssertionError and stops the worker.)
                self.reject(f"bad {t.__name__} from {src}: {exc!r}")
        else:
            self.reject(f"unexpected {t.__name__} from {src}")

    def is_replica(self, src: int) -> bool:
        if src == self.id:
            return False
        return src < wire.FIRST_CLIENT_ID if self.replicas is None else src in self.replicas

    def reject(self, why: str) -> None:
        self.bad_packets += 1
        if self.bad_packets <= 10 or self.bad_packets % 1000 == 0:
            log.warning("node %d: dropped (%d so far): %s", self.id, self.bad_packets, why)

    def send(self, messages: list[tuple[int, Any]], now: float) -> None:
        self.metrics.sent(messages, now)
        try:
            self.transport.send(messages, now)
        except EOFError:
            self.running = False

    def control(self) -> None:
        try:
            number, request, *args = self.ctl.recv()   # numbered: a late answer is recognised
        except (EOFError, OSError):
            log.info("node %d: launcher gone, exiting", self.id)
            self.running = False
            return
        if request == "stop":
            self.running = False
            reply: Any = None
        elif request == "status":
            reply = self.status()
        elif request == "dump":
            reply = self.node.data()
        elif request == "transfer" and len(args) == 1:
            reply = self.node.transfer_leader(args[0], time.monotonic())
        else:
            reply = ValueError(f"unknown control request {request!r}")
        self.ctl.send((number, reply))

    def status(self) -> dict:
        node, data = self.node, self.node.data()
        config_index, config = node.configuration
        digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:16]
        with open("/proc/self/statm") as f:   # Linux: resident pages are the second field
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {
            "node": self.id, "pid": os.getpid(), "alive": True,
            "role": node.role, "term": node.term, "vote": node.vote, "leader": node.leader,
            "member": node.membership, "config_index": config_index,
            "voters": list(config.voters), "learners": list(config.learners),
            "commit": node.commit, "applied": node.applied, "log": node.last_index,
            "keys": len(data), "kv_digest": digest,
            "snapshot": node.snapshot_index, "installs": node.installs,
            "log_entries": node.log_entries, "sessions": node.sessions,
            "data_bytes": self.storage.disk_usage(), "rss": rss,
            "incarnation": self.incarnation, "snapshot_times": list(self.snapshot_times),
            "threads": threading.active_count(), "bad_packets": self.bad_packets,
            "unsent_rounds": node.unsent_rounds,
            **self.metrics.figures(node), **getattr(self.transport, "stats", dict)(),
        }

    def close(self) -> None:
        self.writer.close()
        self.transport.close()
        self.storage.close()


def worker_main(node_id: int, nodes: list[int], address: str, secret: bytes, data_dir: str,
                ctl: Connection, seed: Any, config: Optional[Config], limits: Optional[Limits],
                sync: bool, parent_pid: int) -> None:
    """Process entry point (forked by the launcher)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    try:
        incarnation = identity.start_node(data_dir, node_id)
    except identity.LostState as e:
        log.error("%s", e)
        os._exit(LOST_STATE_EXIT)
    storage = FileStorage(identity.node_dir(data_dir, node_id), sync=sync)
    node = Node(node_id, nodes, storage.load(), random.Random(seed), time.monotonic(),
                config, limits, storage.load_snapshot())
    link, _ = wire.connect_router(address, node_id, secret)
    worker = Worker(node, RouterLink(link, node_id), storage, ctl, incarnation)
    # What start-up built (the replayed log, the snapshot's data, the modules)
    # lives as long as the process: keep the cyclic collector from scanning it
    # again at every full collection. And collect the young generation less
    # often: a loaded worker makes thousands of short-lived messages per turn
    # (freed by reference counting, never in cycles), and at the default
    # threshold the collector ran every 700 of them: about 10% of its CPU
    # (at 20,000, still about 5% of a loaded follower's, issue 20).
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    try:
        worker.run()
    finally:
        worker.close()
