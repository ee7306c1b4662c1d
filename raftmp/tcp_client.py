"""``raftmp.connect``: the same ``Client`` over TCP, to ``raftmp serve`` nodes' client ports.

The session (``core/session.py``) is unchanged: it numbers the nodes by their
place in the address list (0, 1, ...), and this class maps the node ids the
cluster speaks of (a reply's leader hint) to those places, from each node's
hello (``transports/tcp_link.py`` has the frames). Connections open without
blocking, when the session first sends to a node, and again after one closes;
a request to a node that cannot be reached is lost like a dropped packet, and
the session retries it elsewhere (with the same seq: exactly once).
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from typing import IO, Any, Optional, Union

from .client import Client
from .core.errors import ConfigError
from .core.kv import Limits
from .core.messages import ClientReply
from .core.session import Timing
from .transports import frames
from .transports.frames import BadFrame, FrameReader
from .transports.tcp_link import parse_address


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.out = bytearray()
        self.connected = False


class TcpClient(Client):
    """A client of a ``raftmp serve`` cluster; ``addresses`` are its client ports."""

    def __init__(self, addresses: list[str], *, timing: Optional[Timing] = None,
                 limits: Optional[Limits] = None, history: Union[str, IO[str], None] = None,
                 seed: Optional[int] = None) -> None:
        if isinstance(addresses, str) or not addresses:
            raise ConfigError("connect: give a list of 'host:port' addresses")
        try:
            self.addresses = [parse_address(a) for a in addresses]
        except ValueError as exc:
            raise ConfigError(f"connect: {exc}") from None
        self.text = {f"{h}:{p}": i for i, (h, p) in enumerate(self.addresses)}
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self.place: dict[int, int] = {}      # node id -> its place in ``addresses``
        self.poller = self
        self._start(list(range(len(addresses))), timing, limits, history, seed)

    def wait(self, timeout: float) -> list:
        """The poller's call: whether any connection is ready within ``timeout``."""
        return self.sel.select(max(0.0, timeout))

    def _drain(self) -> None:
        now = time.monotonic()
        for key, events in self.sel.select(0):
            place, conn = key.data
            if events & selectors.EVENT_WRITE:
                self._write(place, conn)
            if not events & selectors.EVENT_READ or place not in self.conns:
                continue
            try:
                data = conn.sock.recv(1 << 16)
                if not data:
                    raise ConnectionResetError
                bodies = conn.reader.feed(data)
            except (BlockingIOError, InterruptedError):
                continue
            except (OSError, BadFrame):
                self._drop(place)
                continue
            for body in bodies:
                self._frame(place, body, now)

    def _frame(self, place: int, body: bytes, now: float) -> None:
        try:
            obj = frames.parse_json(body)
        except BadFrame:
            self._drop(place)
            return
        if type(obj) is dict and type(obj.get("node")) is int:   # the node's hello
            self.place[obj["node"]] = place
            for node, addr in (obj.get("clients") or {}).items():
                if addr in self.text and str(node).isdigit():
                    self.place.setdefault(int(node), self.text[addr])
        elif type(obj) is list and len(obj) == 6 and obj[0] == "rep":
            _, cid, seq, status, result, leader = obj
            self.session.step(place, ClientReply(cid, seq, status, result,
                                                 self.place.get(leader)), now)

    def _flush(self) -> None:
        for place, m in self.session.take_messages():
            conn = self.conns.get(place) or self._open(place)
            if conn is None:
                continue   # unreachable now: lost, and the session will retry elsewhere
            conn.out += frames.frame_json(["req", *m.command])
            if conn.connected:
                self._write(place, conn)

    def _open(self, place: int) -> Optional[_Conn]:
        host, port = self.addresses[place]
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock.connect_ex((host, port)) not in (0, errno.EINPROGRESS):
            sock.close()
            return None
        conn = self.conns[place] = _Conn(sock)
        self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, (place, conn))
        return conn

    def _write(self, place: int, conn: _Conn) -> None:
        if not conn.connected:
            if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                self._drop(place)
                return
            conn.connected = True
        try:
            sent = conn.sock.send(conn.out) if conn.out else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(place)
            return
        del conn.out[:sent]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        self.sel.modify(conn.sock, want, (place, conn))

    def _drop(self, place: int) -> None:
        conn = self.conns.pop(place, None)
        if conn is not None:
            self.sel.unregister(conn.sock)
            conn.sock.close()

    def _close_links(self) -> None:
        for place in list(self.conns):
            self._drop(place)
        self.sel.close()



def connect(addresses: list[str], **options: Any) -> TcpClient:
    """A ``Client`` of the ``raftmp serve`` nodes at ``addresses`` (their client ports):
    sessions, exactly-once retries, the same typed errors. Options as ``Client``'s."""
    return TcpClient(addresses, **options)
