"""The worker process: one replica's single-threaded event loop.

    loop:
        wait on the router link (and the launcher's control pipe) until the
            core's next deadline
        drain every packet that has arrived (one read); node.step(...) for each message
        node.tick(now)
        rd = node.ready(now)
        send rd.messages                            # a leader's appends (thesis §10.2.1)
        storage.save(rd.hard_state, rd.entries)     # durable before ...
        send rd.persisted_messages                  # ... votes and acknowledgements
        reap a finished snapshot writer (compact), or fork one if a snapshot is due

No threads (``threading.active_count() == 1`` always): the links are plain
``multiprocessing`` connections, polled (``wire.Poller``) and read a whole
turn's worth at a time (``wire.Reader``).

Entries are pickled once: on the wire an AppendEntries carries its entries as
one pickle (``bytes``), cached by range, so a leader pickles a batch once for
its log file and every follower, and a follower writes the pickles it received
to its log file as they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import random
import signal
import threading
import time
from collections import defaultdict, deque
from multiprocessing.connection import Connection
from typing import Any, Optional

from . import identity, wire
from .core.kv import Limits
from .core.messages import RAFT_MESSAGES, AppendEntries, ClientRequest, Entry, check_raft_message
from .core.node import Node
from .core.raft import Config
from .procs import die_with_parent
from .snapshots import SnapshotWriter
from .storage import FileStorage

log = logging.getLogger("raftmp.worker")

PICKLE_CACHE = 64           # pickled entry batches kept for reuse
LOST_STATE_EXIT = 3         # exit status of a worker that refuses to start (identity.py)


class Worker:
    def __init__(self, node_id: int, nodes: list[int], address: str, secret: bytes,
                 data_dir: str, ctl: Connection, seed: Any, config: Optional[Config] = None,
                 limits: Optional[Limits] = None, sync: bool = True) -> None:
        self.id = node_id
        self.ids = set(nodes)
        self.ctl = ctl
        self.incarnation = identity.start_node(data_dir, node_id)
        self.storage = FileStorage(identity.node_dir(data_dir, node_id), sync=sync)
        self.node = Node(node_id, nodes, self.storage.load(), random.Random(seed),
                         time.monotonic(), config, limits, self.storage.load_snapshot())
        self.writer = SnapshotWriter(self.storage)
        self.snapshot_started = 0.0
        self.snapshot_times: deque[tuple[float, float]] = deque(maxlen=256)  # (fork, compacted)
        self.link, _ = wire.connect_router(address, node_id, secret)
        self.poller = wire.Poller(self.link, ctl)
        self.reader = wire.Reader(self.link)
        self.bad_packets = 0
        self.running = True
        self.pickles: dict[tuple[int, int, int], bytes] = {}   # (first, last, last term) -> pickle
        self.received: list[tuple[tuple, bytes]] = []          # this turn's (entries, pickle)

    def run(self) -> None:
        node, link = self.node, self.link
        while self.running:
            timeout = max(0.0, node.next_deadline() - time.monotonic())
            for conn in self.poller.wait(timeout):
                if conn is link:
                    self.drain()
                else:
                    self.control()
            now = time.monotonic()
            node.tick(now)
            rd = node.ready(now)
            if rd.messages:
                self.send(rd.messages)   # a leader's appends (thesis §10.2.1)
            if rd.snapshot is not None:   # from the leader: durable before anything else
                self.storage.save_snapshot(rd.snapshot)
                self.storage.compact(rd.snapshot.index, rd.snapshot.term)
            if rd.entries:
                self.storage.save(rd.hard_state, rd.entries, self.pickled(rd.entries))
            elif rd.hard_state is not None:
                self.storage.save(rd.hard_state, ())
            self.received.clear()
            if rd.persisted_messages:
                self.send(rd.persisted_messages)
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

    def drain(self) -> None:
        now = time.monotonic()
        try:
            packets = self.reader.read()
        except (EOFError, OSError):
            log.info("node %d: router gone, exiting", self.id)
            self.running = False
            return
        for packet in packets:
            try:
                src, _, messages = wire.decode(packet)
            except ValueError as exc:
                self.reject(f"undecodable packet: {exc}")
            else:
                for m in messages:
                    self.step(src, m, now)

    def step(self, src: int, m: Any, now: float) -> None:
        """One message off the wire: a malformed or inconsistent one is remote
        misbehaviour, dropped and counted (``reject``); the core only sees
        messages that pass ``check_raft_message`` (client commands are checked
        by the node, which answers INVALID)."""
        t = type(m)
        if t is ClientRequest:
            self.node.step(src, m, now)
        elif t in RAFT_MESSAGES and src in self.ids and src != self.id:
            blob = m.entries if t is AppendEntries and type(m.entries) is bytes else None
            if blob is not None:
                try:
                    m = m._replace(entries=pickle.loads(blob))
                except Exception as exc:  # noqa: BLE001 — any unpickling failure: bad payload
                    self.reject(f"undecodable AppendEntries from {src}: {exc!r}")
                    return
            why = check_raft_message(m, src)
            if why is not None:
                self.reject(f"from {src}: {why}")
                return
            if blob is not None and m.entries:
                self.received.append((m.entries, blob))  # the log file takes it as it is
            self.node.step(src, m, now)
        else:
            self.reject(f"unexpected {t.__name__} from {src}")

    def reject(self, why: str) -> None:
        self.bad_packets += 1
        if self.bad_packets <= 10 or self.bad_packets % 1000 == 0:
            log.warning("node %d: dropped (%d so far): %s", self.id, self.bad_packets, why)

    def pickled(self, entries: list[Entry]) -> list[bytes]:
        """Pickles whose entries concatenate to ``entries``: what arrived this turn
        when it lines up exactly (the usual case on a follower), else one new one."""
        want, out = entries[0].index, []
        first, last = entries[0].index, entries[-1].index
        for got, blob in self.received:
            hi = got[-1].index
            if got[0].index == want and hi <= last and entries[hi - first].term == got[-1].term:
                out.append(blob)
                want = hi + 1
        if want == last + 1:
            return out
        return [self.pickle_batch(tuple(entries))]

    def pickle_batch(self, entries: tuple) -> bytes:
        """One pickle per batch of entries, shared by the log file and every
        follower it goes to. Equal (index, term) at the end means equal entries
        throughout (Log Matching, §5.3), so that is the cache key."""
        key = (entries[0].index, entries[-1].index, entries[-1].term)
        blob = self.pickles.get(key)
        if blob is None:
            blob = self.pickles[key] = pickle.dumps(entries, pickle.HIGHEST_PROTOCOL)
            if len(self.pickles) > PICKLE_CACHE:
                del self.pickles[next(iter(self.pickles))]
        return blob

    def send(self, messages: list[tuple[int, Any]]) -> None:
        by_dst: dict[int, list] = defaultdict(list)
        for dst, m in messages:
            if type(m) is AppendEntries and m.entries:
                m = m._replace(entries=self.pickle_batch(m.entries))
            by_dst[dst].append(m)
        try:
            wire.send_packets(self.link, [wire.encode(self.id, dst, batch)
                                          for dst, batch in by_dst.items()])
        except (BrokenPipeError, ConnectionResetError):
            self.running = False

    def control(self) -> None:
        try:
            number, request = self.ctl.recv()   # launcher.Control's numbered protocol
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
        else:
            reply = ValueError(f"unknown control request {request!r}")
        self.ctl.send((number, reply))

    def status(self) -> dict:
        node, data = self.node, self.node.data()
        digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:16]
        with open("/proc/self/statm") as f:   # Linux: resident pages are the second field
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {
            "node": self.id, "pid": os.getpid(), "alive": True,
            "role": node.role, "term": node.term, "vote": node.vote, "leader": node.leader,
            "commit": node.commit, "applied": node.applied, "log": node.last_index,
            "keys": len(data), "kv_digest": digest,
            "snapshot": node.snapshot_index, "installs": node.installs,
            "log_entries": node.log_entries, "sessions": node.sessions,
            "data_bytes": self.storage.disk_usage(), "rss": rss,
            "incarnation": self.incarnation, "snapshot_times": list(self.snapshot_times),
            "threads": threading.active_count(), "bad_packets": self.bad_packets,
        }

    def close(self) -> None:
        self.writer.close()
        self.link.close()
        self.storage.close()


def worker_main(node_id: int, nodes: list[int], address: str, secret: bytes, data_dir: str,
                ctl: Connection, seed: Any, config: Optional[Config], limits: Optional[Limits],
                sync: bool, parent_pid: int) -> None:
    """Process entry point (forked by the launcher)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    try:
        worker = Worker(node_id, nodes, address, secret, data_dir, ctl, seed, config, limits, sync)
    except identity.LostState as e:
        log.error("%s", e)
        os._exit(LOST_STATE_EXIT)
    try:
        worker.run()
    finally:
        worker.close()
