"""The packet format shared by the router, the workers and the clients.

A *packet* is one frame on an endpoint's link to the router: a fixed header
the router reads to route and count, then an opaque payload the router never
unpickles::

    frame   = length:int32 (big-endian, as multiprocessing.Connection frames)
              + header + payload
    header  = src:int32  dst:int32  count:uint16      (struct "!iiH")
    payload = pickle of the ``count`` messages: when all are NamedTuples,
              (their classes, their fields as plain tuples); when all are one
              wrapper of one NamedTuple (a client's ClientRequest(Command)),
              (wrapper class, inner class, the inner fields); else a list

``src`` is stamped by the router from the link the packet came in on, so an
endpoint cannot speak for another. The first frame on a new link is a hello::

    hello   = "RAFTMP-HELLO" + requested id:int32 + secret (SECRET_SIZE bytes, or none)

A client asks for ``ANY`` and is handed a fresh id (``FIRST_CLIENT_ID`` and
up); only a replica asks for its own id (``0 .. FIRST_CLIENT_ID - 1``), and
only with the cluster's secret, which the launcher generates and gives to the
router and to the workers it forks. The router answers with the id as an
int32, or closes the link if it refuses the hello.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
from itertools import repeat
from multiprocessing.connection import Client, Connection
from operator import itemgetter
from typing import Any, Optional

from ..core.errors import Unavailable
from .idle import Spinner

HEADER = struct.Struct("!iiH")
HELLO = b"RAFTMP-HELLO"
HELLO_ID = struct.Struct("!i")
ANY = -1  # hello: "give me a fresh client endpoint id"
# Endpoint ids: replicas are 0..N-1 (N <= FIRST_CLIENT_ID), clients get ids from
# FIRST_CLIENT_ID up. The one place that splits the range (the simulator too).
FIRST_CLIENT_ID = 1000
FOREVER = 24 * 3600.0  # seconds: the longest blocking wait (poll takes no inf)
SECRET_SIZE = 16  # bytes of the per-cluster secret a replica's hello carries


# Pickling a NamedTuple calls Python code per message (``__getnewargs__``) and
# unpickling calls its Python ``__new__``; a leader answers every put with a
# message. So a packet of NamedTuples travels as their classes and their fields
# as plain tuples, taken apart and rebuilt by C-level ``map`` calls.
_new = tuple.__new__
_first = itemgetter(0)


_NAMED: dict[type, int] = {}   # NamedTuple classes seen -> their number of fields


def _named(kind: Any) -> bool:
    if type(kind) is not type:
        return False
    if kind in _NAMED:
        return True
    if issubclass(kind, tuple) and hasattr(kind, "_fields"):
        _NAMED[kind] = len(kind._fields)
        return True
    return False


_arity = _NAMED.__getitem__   # of a class ``_named`` said yes to


def encode(src: int, dst: int, messages: list, payload: Optional[bytes] = None) -> bytes:
    """One packet carrying ``messages`` (a list) from ``src`` to ``dst``;
    ``payload``: their ``encode_payload``, if already made (for another dst)."""
    if payload is None:
        payload = encode_payload(messages)
    return HEADER.pack(src, dst, len(messages)) + payload


def encode_payload(messages: list) -> bytes:
    """The payload of ``encode``: what follows the header (the same for every
    destination of the same messages)."""
    kinds = set(map(type, messages))
    payload: Any = list(messages)
    if all(map(_named, kinds)):
        payload = (list(map(type, messages)), list(map(tuple, messages)))
        kind = messages[0].__class__ if len(kinds) == 1 else None
        if kind is not None and len(kind._fields) == 1:
            inner = list(map(_first, messages))
            inner_kinds = set(map(type, inner))
            if len(inner_kinds) == 1 and _named(inner[0].__class__):
                payload = (kind, inner[0].__class__, list(map(tuple, inner)))
    return pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)


def decode(packet: bytes) -> tuple[int, int, list[Any]]:
    """(src, dst, messages) of a packet; raises ValueError on a malformed one."""
    if len(packet) < HEADER.size:
        raise ValueError(f"packet of {len(packet)} bytes is shorter than its header")
    src, dst, count = HEADER.unpack_from(packet)
    try:
        payload = pickle.loads(memoryview(packet)[HEADER.size:])
    except Exception as exc:  # any unpickling failure means a corrupt payload
        raise ValueError(f"undecodable payload from {src}: {exc!r}") from None
    try:
        payload = _messages(payload)
    except TypeError as exc:   # a field row that is no sequence, an unhashable "class", ...
        raise ValueError(f"payload from {src} is not NamedTuple messages: {exc}") from None
    if payload is None:
        raise ValueError(f"payload from {src} is not NamedTuple messages")
    if not isinstance(payload, list) or len(payload) != count:
        raise ValueError(f"payload from {src} is not a list of {count} messages")
    return src, dst, payload


def _messages(payload: Any) -> Any:
    """The messages of an unpickled payload in one of ``encode_payload``'s forms
    (a plain list as it is); None if it is in neither NamedTuple form whole."""
    if type(payload) is tuple and len(payload) == 3:
        kind, inner_kind, fields = payload
        if not (_named(kind) and _arity(kind) == 1 and _named(inner_kind)
                and type(fields) is list and set(map(len, fields)) <= {_arity(inner_kind)}):
            return None
        n = len(fields)
        return list(map(_new, repeat(kind, n), zip(map(_new, repeat(inner_kind, n), fields))))
    if type(payload) is tuple and len(payload) == 2:
        kinds, fields = payload
        if not (type(kinds) is list and type(fields) is list and len(kinds) == len(fields)):
            return None
        if len(kinds) == 1:    # the usual packet: one message (a reply, an append)
            kind, row = kinds[0], fields[0]
            return [_new(kind, row)] if _named(kind) and len(row) == _arity(kind) else None
        if not (all(map(_named, set(kinds)))
                and list(map(len, fields)) == list(map(_arity, kinds))):
            return None
        return list(map(_new, kinds, fields))
    return payload


_LENGTH = struct.Struct("!i")  # multiprocessing.Connection's frame header


def send_packets(link: Connection, packets: list[bytes]) -> None:
    """Write ``packets`` to ``link`` as Connection frames, all in one system
    call where the kernel takes them: one wake-up of the router per turn."""
    data = b"".join([b for p in packets for b in (_LENGTH.pack(len(p)), p)])
    view, fd = memoryview(data), link.fileno()
    while view:
        view = view[os.write(fd, view):]


class Reader:
    """Reads every whole frame that has arrived on a connection, with as few
    system calls as it takes (``Connection.recv_bytes`` costs two per frame).
    Call ``read`` only when the connection is readable: it blocks otherwise."""

    CHUNK = 1 << 16      # below malloc's mmap threshold: a 1 MiB read buffer costs 15 us
    MAX_READ = 1 << 22   # per call, so one busy link cannot starve the rest of a turn

    def __init__(self, link: Connection) -> None:
        self._fd = link.fileno()
        self._buf = bytearray()
        self._more = select.poll()
        self._more.register(self._fd, select.POLLIN)

    def read(self) -> list[bytes]:
        """The frames that arrived; raises EOFError when the other end closed."""
        buf, fd = self._buf, self._fd
        got = 0
        while True:
            data = os.read(fd, self.CHUNK)
            if not data:
                raise EOFError("the link is closed")
            buf += data
            got += len(data)
            if len(data) < self.CHUNK or got >= self.MAX_READ or not self._more.poll(0):
                break
        frames, pos, end = [], 0, len(buf)
        while end - pos >= 4:
            size = _LENGTH.unpack_from(buf, pos)[0]
            if size < 0:  # Connection's "-1 then 8-byte length" form: never sent to us
                raise EOFError(f"unsupported frame length {size}")
            if end - pos - 4 < size:
                break
            frames.append(bytes(buf[pos + 4:pos + 4 + size]))
            pos += 4 + size
        del buf[:pos]
        return frames


class Poller:
    """A reusable readiness check on connections (``connection.wait`` builds a
    new selector on every call; an event loop calls it every turn)."""

    def __init__(self, *conns: Connection) -> None:
        self._poll = select.poll()
        self._conns = {c.fileno(): c for c in conns}
        for fd in self._conns:
            self._poll.register(fd, select.POLLIN)
        self._spinner = Spinner()

    def wait(self, timeout: float) -> list[Connection]:
        """The connections with data (or EOF) within ``timeout`` seconds (polling
        briefly before blocking: ``idle.py``)."""
        poll = self._poll.poll
        ready = self._spinner.wait(lambda: poll(0), lambda t: poll(min(t, FOREVER) * 1000.0),
                                   timeout)
        return [self._conns[fd] for fd, _ in ready]


def hello(requested_id: int, secret: bytes = b"") -> bytes:
    return HELLO + HELLO_ID.pack(requested_id) + secret


def parse_hello(frame: bytes) -> tuple[int, bytes]:
    """(requested endpoint id, secret) of a hello frame; ValueError if it is not one."""
    head = len(HELLO) + HELLO_ID.size
    if len(frame) not in (head, head + SECRET_SIZE) or not frame.startswith(HELLO):
        raise ValueError("first frame on a link is not a hello")
    return HELLO_ID.unpack_from(frame, len(HELLO))[0], frame[head:]


def connect_router(address: str, requested_id: int = ANY,
                   secret: bytes = b"") -> tuple[Connection, int]:
    """Open a link to the router and say hello; (link, endpoint id). Raises
    Unavailable if the router is not there or refuses the hello."""
    try:
        link = Client(address, family="AF_UNIX")
    except OSError as exc:
        raise Unavailable(f"cannot reach the router at {address}: {exc}") from None
    try:
        link.send_bytes(hello(requested_id, secret))
        return link, HELLO_ID.unpack(link.recv_bytes())[0]
    except (OSError, EOFError):
        link.close()
        raise Unavailable(f"the router at {address} refused the hello for endpoint "
                          f"{requested_id}") from None
