"""The CS3700 replica: the same ``Node`` and worker loop, graded by the course's simulator.

The simulator (``../shared/cs3700/run``, described in its PROTOCOL.md) starts
``raftmp-3700kvstore <port> <id> <other ids...>`` for each replica and routes
JSON datagrams between them and its clients by their ``dst`` field. This
module is that program: ``CourseLink`` (``transports/course_link.py``) is a transport
over one UDP socket speaking the course's JSON, and ``main`` runs a
``worker.Worker`` over it with the course's timing profile.
The course's wire rules are kept with the link, in ``transports/course_link.py``.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from typing import Optional

from .cli import Parser, integer, output_dir
from .core.node import Node
from .core.raft import Config
from .procs import die_with_parent, exit_on_signals
from .storage import FileStorage
from .transports import idle
from .transports.course_link import COURSE_LIMITS, UNKNOWN, CourseLink, is_address
from .worker import Worker


def course_config(n: int) -> Config:
    """The course's timing profile for ``n`` replicas: quiet when idle.

    The judge counts every replica-to-replica datagram and its clients never
    give up, so a slow failover costs latency, not failures, while idle
    traffic costs messages in every test: a long heartbeat, heartbeats only to
    followers that got nothing else (``quiet_heartbeats``), new entries at
    once only to the followers a commit needs, and to all while appends are
    being lost (``eager_followers``; the rest catch up on heartbeats),
    vote requests and a new leader's probes resent faster than heartbeats
    (``first_rto``: at the quorum's edge they need every survivor's answer),
    and reads on the leader's lease (``read_mode="lease"``: one simulator hop
    each way, no messages between replicas; all replicas share one clock here).
    """
    return Config(heartbeat_interval=0.5, election_timeout=(2.0, 3.0),
                  max_batch_entries=256, max_batch_bytes=16 * 1024, max_inflight=4,
                  min_rto=0.02, max_rto=0.5,
                  eager_followers=n // 2, quiet_heartbeats=True, read_mode="lease",
                  first_rto=0.1)



def main(argv: Optional[list[str]] = None) -> int:
    """``raftmp-3700kvstore <port> <id> <other ids...>``: one course replica."""
    p = Parser(
        prog="raftmp-3700kvstore",
        description="A raftmp replica for the CS3700 key-value store simulator (UDP).")
    p.add_argument("port", type=integer(1, 65535),
                   help="the simulator's UDP port for this replica")
    p.add_argument("id", help="this replica's id (4 hex digits)")
    p.add_argument("others", nargs="+", help="the other replicas' ids")
    p.add_argument("--data-dir", type=output_dir, default=None,
                   help="keep the log here (default: a temporary directory, removed on exit)")
    p.add_argument("--seed", default=None, help="seed of the election timer's randomness")
    p.add_argument("--verbose", action="store_true", help="log to stderr")
    a = p.parse_args(argv)
    if idle.SPIN_ERROR is not None:
        p.error(idle.SPIN_ERROR)
    names = [a.id, *a.others]
    if not all(is_address(n) and n.upper() != UNKNOWN for n in names) \
            or len({int(n, 16) for n in names}) != len(names):
        p.error("ids must be distinct 4-hex-digit addresses other than FFFF")
    logging.basicConfig(level=logging.INFO if a.verbose else logging.CRITICAL,
                        stream=sys.stderr, format=f"{a.id} %(name)s: %(message)s")

    exit_on_signals()
    # The simulator stops its replicas at its exit; killed outright, it cannot:
    # SIGTERM then (the log is removed), not an orphan answering nobody forever.
    die_with_parent(os.getppid(), signal.SIGTERM)

    link = CourseLink(a.port, a.id, a.others)   # says hello before anything else

    temp = None
    if a.data_dir is None:
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        temp = a.data_dir = tempfile.mkdtemp(prefix=f"raftmp-3700-{a.id}-", dir=shm)
    try:
        storage = FileStorage(os.path.join(a.data_dir, a.id))
        ids = sorted(link.names)
        rng = random.Random(None if a.seed is None else f"{a.seed}/{a.id}")
        config = course_config(len(ids))
        node = Node(int(a.id, 16), ids, storage.load(), rng, time.monotonic(), config,
                    COURSE_LIMITS, storage.load_snapshot(), keep_writes=True)
        link.known_leader = node.fresh_leader
        worker = Worker(node, link, storage, replicas=node.ids)
        try:
            worker.run()
        finally:
            worker.close()    # the link, the storage, a snapshot writer still running
    finally:
        link.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
