"""The worker process: one replica's single-threaded event loop.

    loop:
        wait on the transport (and the launcher's control pipe, if any) until
            the core's next deadline
        take every message that has arrived (one read); node.step(...) for each
        node.tick(now)
        rd = node.ready(now)
        storage.save(rd.hard_state, rd.entries)     # durable before any send (but a
        send one packet per destination             #   leader's AppendEntries, §10.2.1)

The loop does not know what carries its packets: a transport (``transport.py``)
does — the router link here, UDP to the CS3700 simulator in ``cs3700.py``.

No threads (``threading.active_count() == 1`` always): the links are plain
``multiprocessing`` connections or sockets, polled (``wire.Poller``) and read a
whole turn's worth at a time.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import random
import signal
import threading
import time
from multiprocessing.connection import Client as connect
from multiprocessing.connection import Connection
from typing import Any, Optional

from . import wire
from .core.kv import Limits
from .core.messages import RAFT_MESSAGES, AppendEntries, ClientRequest
from .core.node import Node
from .core.raft import LEADER, Config
from .storage import FileStorage
from .transport import RouterLink

log = logging.getLogger("raftmp.worker")

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGKILL when the launcher dies, however it dies (even SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: pipe EOF still ends the worker
        pass
    if os.getppid() != parent_pid:  # the launcher died before prctl took effect
        os._exit(1)


def connect_router(address: str, requested_id: int) -> tuple[Connection, int]:
    """Open a link to the router and say hello; (link, endpoint id)."""
    link = connect(address, family="AF_UNIX")
    link.send_bytes(wire.hello(requested_id))
    return link, wire.HELLO_ID.unpack(link.recv_bytes())[0]


class Worker:
    def __init__(self, node: Node, transport: Any, storage: Any,
                 ctl: Optional[Connection] = None) -> None:
        self.id = node.id
        self.ids = set(node.raft.peers) | {node.id}
        self.node = node
        self.transport = transport
        self.storage = storage
        self.ctl = ctl
        self.poller = wire.Poller(transport, *([ctl] if ctl is not None else []))
        self.bad_packets = 0
        self.running = True

    def run(self) -> None:
        node, transport, storage = self.node, self.transport, self.storage
        while self.running:
            deadline = min(node.next_deadline(), transport.next_deadline())
            readable = False
            for conn in self.poller.wait(deadline - time.monotonic()):
                if conn is transport:
                    readable = True
                else:
                    self.control()
            now = time.monotonic()
            try:
                for src, m in transport.receive(now, readable, self.reject):
                    self.step(src, m, now)
            except (EOFError, OSError):
                log.info("node %d: transport closed, exiting", self.id)
                self.running = False
                return
            node.tick(now)
            rd = node.ready(now)
            messages = rd.messages
            if rd.entries and rd.hard_state is None and node.raft.role == LEADER:
                # Thesis §10.2.1: a leader may write its log while it replicates
                # it. It counts itself toward a commit only when acknowledgements
                # come back, in a later turn, after this one's save.
                # (Only to peers that get nothing else: one packet per peer per turn.)
                later = {dst for dst, m in messages if type(m) is not AppendEntries}
                self.send([x for x in messages if x[0] not in later], now)
                messages = [x for x in messages if x[0] in later]
            if rd.entries:
                storage.save(rd.hard_state, rd.entries, transport.pickled(rd.entries))
            elif rd.hard_state is not None:
                storage.save(rd.hard_state, ())
            if messages:
                self.send(messages, now)

    def step(self, src: int, m: Any, now: float) -> None:
        t = type(m)
        if t is ClientRequest or (t in RAFT_MESSAGES and src in self.ids and src != self.id):
            try:
                self.node.step(src, m, now)
            except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
                # A well-typed message with ill-typed fields: remote misbehaviour.
                # (A broken invariant is an AssertionError and stops the worker.)
                self.reject(f"bad {t.__name__} from {src}: {exc!r}")
        else:
            self.reject(f"unexpected {t.__name__} from {src}")

    def reject(self, why: str) -> None:
        self.bad_packets += 1
        if self.bad_packets <= 10 or self.bad_packets % 1000 == 0:
            log.warning("node %d: dropped (%d so far): %s", self.id, self.bad_packets, why)

    def send(self, messages: list[tuple[int, Any]], now: float) -> None:
        try:
            self.transport.send(messages, now)
        except EOFError:
            self.running = False

    def control(self) -> None:
        try:
            number, request = self.ctl.recv()   # numbered: a late answer is recognised
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
            reply = dict(self.node.kv.data)
        else:
            reply = ValueError(f"unknown control request {request!r}")
        self.ctl.send((number, reply))

    def status(self) -> dict:
        raft, kv = self.node.raft, self.node.kv
        digest = hashlib.sha256(repr(sorted(kv.data.items())).encode()).hexdigest()[:16]
        return {
            "node": self.id, "pid": os.getpid(), "alive": True,
            "role": raft.role, "term": raft.term, "vote": raft.vote, "leader": raft.leader,
            "commit": raft.commit, "applied": raft.applied, "log": raft.log.last_index,
            "keys": len(kv.data), "kv_digest": digest,
            "threads": threading.active_count(), "bad_packets": self.bad_packets,
        }

    def close(self) -> None:
        self.transport.close()
        self.storage.close()


def worker_main(node_id: int, nodes: list[int], address: str, data_dir: str,
                ctl: Connection, seed: Any, config: Optional[Config], limits: Optional[Limits],
                sync: bool, parent_pid: int) -> None:
    """Process entry point (forked by the launcher)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    storage = FileStorage(os.path.join(data_dir, f"node{node_id}"), sync=sync)
    node = Node(node_id, nodes, storage.load(), random.Random(seed), time.monotonic(),
                config, limits)
    link, _ = connect_router(address, node_id)
    worker = Worker(node, RouterLink(link, node_id), storage, ctl)
    try:
        worker.run()
    finally:
        worker.close()
