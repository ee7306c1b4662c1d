"""``raftmp.Client``: a client endpoint on the router, blocking or pipelined.

The protocol (leader hint, redirects, retries with the same request id,
giving up) is ``session.ClientSession``; this class only moves its messages
over a real link and turns outcomes into return values or typed errors.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict
from typing import IO, Any, Optional, Union

from .core.errors import InvalidRequest, Unavailable
from .core.kv import Limits, check_command
from .core.membership import CONF_OPS
from .core.messages import ClientReply, Command
from .core.session import ClientSession, Outcome, Timing
from .transports import wire


class Client:
    """A key-value client of one cluster. Not thread-safe; one per thread or process.

    ``history``: a path or text file to which every finished operation is
    appended as one JSON line (see ``raftmp.checker``).
    """

    def __init__(self, address: str, nodes: list[int], *, timing: Optional[Timing] = None,
                 limits: Optional[Limits] = None, history: Union[str, IO[str], None] = None,
                 seed: Optional[int] = None) -> None:
        self.link, self.endpoint = wire.connect_router(address)
        self.poller = wire.Poller(self.link)
        self.reader = wire.Reader(self.link)
        self._start(nodes, timing, limits, history, seed)

    def _start(self, nodes: list[int], timing: Optional[Timing], limits: Optional[Limits],
               history: Union[str, IO[str], None], seed: Optional[int]) -> None:
        client_id = int.from_bytes(os.urandom(8), "big") >> 1   # unique across runs and restarts
        rng = random.Random(seed if seed is not None else client_id)
        self.session = ClientSession(client_id, nodes, rng, timing)
        self.limits = limits or Limits()
        self.finished: dict[int, Outcome] = {}   # seq -> outcome, for blocking calls
        self._own_history = isinstance(history, str)
        self.history: Optional[IO[str]] = (open(history, "a") if isinstance(history, str)
                                           else history)
        self.closed = False

    # ------------------------------------------------------------ blocking API

    def get(self, key: str) -> Optional[str]:
        """The value of ``key``, or None if it is absent (a linearizable read)."""
        return self._call("get", key)

    def put(self, key: str, value: str) -> None:
        self._call("put", key, value)

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return self._call("delete", key)

    def cas(self, key: str, expected: Optional[str], new: str) -> bool:
        """Set ``key`` to ``new`` if its value is ``expected`` (None: if absent); whether it did."""
        return self._call("cas", key, new, expected)

    def change_config(self, op: str, node: int) -> None:
        """A configuration change (``membership.CONF_OPS``: add_voter, add_learner,
        promote, remove ``node``), through this client's session like a write:
        applied exactly once. ConfigChangeRefused says why the leader would not."""
        self._call(op, str(node))

    def _call(self, op: str, key: str, value: Optional[str] = None,
              expected: Optional[str] = None) -> Any:
        seq = self.submit(op, key, value, expected)
        while seq not in self.finished:
            for outcome in self.poll(1.0):
                self.finished[outcome.command.seq] = outcome
        return result_of(self.finished.pop(seq))

    # ----------------------------------------------------------- pipelined API

    def submit(self, op: str, key: str, value: Optional[str] = None,
               expected: Optional[str] = None) -> int:
        """Start an operation without waiting; its seq. Outcomes come from ``poll``."""
        err = check_command(tuple.__new__(Command, (0, 0, 0, op, key, value, expected, 0)),
                            self.limits)   # (Command's own __new__ is Python code: twice as slow)
        if err is not None:
            raise InvalidRequest(err)
        if self.closed:
            raise Unavailable("the client is closed")
        # Sent by the next poll, with every other request of this turn in one packet.
        return self.session.submit(op, key, value, expected, time.monotonic())

    @property
    def in_flight(self) -> int:
        return len(self.session.pending)

    def poll(self, timeout: float) -> list[Outcome]:
        """Move messages for up to ``timeout`` seconds; the operations that finished.

        Returns as soon as at least one operation finished."""
        end = time.monotonic() + timeout
        session = self.session
        self._flush()
        while True:
            now = time.monotonic()
            wait = min(end, session.next_deadline()) - now
            if self.poller.wait(wait):
                self._drain()
            now = time.monotonic()
            session.tick(now)
            self._flush()
            done = session.take_finished()
            if done or now >= end:
                if self.history is not None:
                    for o in done:
                        if o.command.op not in CONF_OPS:   # the history holds the store's ops
                            self.history.write(json.dumps(o.record()) + "\n")
                return done

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close_links()
            if self.history is not None:
                self.history.flush()
                if self._own_history:
                    self.history.close()

    def _close_links(self) -> None:
        self.link.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- helpers

    def _drain(self) -> None:
        now = time.monotonic()
        try:
            packets = self.reader.read()
        except (EOFError, OSError):
            self.closed = True
            raise Unavailable("the router is gone (cluster stopped?)") from None
        for packet in packets:
            try:
                src, _, messages = wire.decode(packet)
            except ValueError:
                continue  # garbage on the wire is not ours to act on
            for m in messages:
                if type(m) is ClientReply:
                    self.session.step(src, m, now)

    def _flush(self) -> None:
        by_dst: dict[int, list] = defaultdict(list)
        for dst, m in self.session.take_messages():
            by_dst[dst].append(m)
        if not by_dst:
            return
        try:
            wire.send_packets(self.link, [wire.encode(self.endpoint, dst, batch)
                                          for dst, batch in by_dst.items()])
        except OSError:
            self.closed = True
            raise Unavailable("the router is gone (cluster stopped?)") from None


def result_of(outcome: Outcome) -> Any:
    """The operation's result, or the typed error its outcome calls for."""
    if outcome.error is None:
        return outcome.result
    cmd = outcome.command
    raise outcome.error(f"{cmd.op} {cmd.key!r}: {outcome.result}")
