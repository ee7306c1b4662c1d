"""The worker's loop (worker.py) with a transport that hands it one big read."""

from __future__ import annotations

import random
import socket

import pytest

from raftmp.core.messages import ClientReply, ClientRequest, Command
from raftmp.core.node import Node
from raftmp.storage import MemoryStorage
from raftmp.worker import TURN_REQUESTS, Worker


class _OneRead:
    """Every request in one read, then nothing; stops the worker once it has
    answered them all. Records the answers of each turn."""

    def __init__(self, requests: list) -> None:
        self.a, self.b = socket.socketpair()
        self.b.send(b"x")          # always readable: the loop never blocks
        self.requests = requests
        self.turns: list[list] = []
        self.worker = None

    def fileno(self) -> int:
        return self.a.fileno()

    def next_deadline(self) -> float:
        return float("inf")

    def receive(self, now, readable, reject):
        out, self.requests = self.requests, []
        return out

    def send(self, messages, now) -> None:
        self.turns.append([m for _, m in messages if type(m) is ClientReply])
        if sum(map(len, self.turns)) == self.total:
            self.worker.running = False

    def pickled(self, entries):
        return []

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.mark.timeout(30)
def test_a_big_read_is_stepped_a_turn_at_a_time_in_order():
    """A window's worth of requests in one read (one client packet) is not
    stepped in one turn: at most TURN_REQUESTS a turn, answers sent between
    turns (a leader's appends leave while the rest wait: no lock step), every
    request once, in the order it came, each timed from its arrival."""
    n = 2 * TURN_REQUESTS + 100
    reqs = [(1000, ClientRequest(Command(7, s, 1, "put", f"k{s}", "v", None, 0)))
            for s in range(1, n + 1)]
    link = _OneRead(reqs)
    link.total = n
    node = Node(0, [0, 1, 2], (0, None, []), random.Random(1), 0.0)   # a follower: no leader
    worker = Worker(node, link, MemoryStorage())
    link.worker = worker
    arrived = {}
    worker.metrics.request = lambda cmd, now: arrived.setdefault(cmd.seq, now)
    try:
        worker.run()
    finally:
        link.close()
    sizes = [len(t) for t in link.turns if t]
    assert sizes == [TURN_REQUESTS, TURN_REQUESTS, 100]
    assert [r.seq for t in link.turns for r in t] == list(range(1, n + 1))
    assert not worker.backlog
    assert len(set(arrived.values())) == 1   # timed (metrics) from the read, not the step
