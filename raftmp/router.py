"""The router process: every packet between endpoints passes here.

The router is the one place where the network misbehaves. It forwards packets
(``wire.HEADER`` + opaque payload) from the link they came in on to the link
of their destination, and on the way it may drop, delay, duplicate (and, by
random delay, reorder) them, or refuse them because of a partition or a
one-way cut. It never unpickles a payload: it reads the header to route and
count, stamps ``src`` with the endpoint id of the incoming link (so nobody can
speak for another endpoint), and forwards the frame bytes unchanged.

Design notes
------------
* One thread, one ``selectors`` loop over the listening socket, the control
  connection and every link, plus a heap of delayed packets. The loop waits
  until the next timer or readiness, polling for a while before it blocks
  (``transports/idle.py``: a wake-up from a blocking wait costs more than the
  packets of a light load).
* Links are raw non-blocking ``AF_UNIX`` stream sockets speaking the framing
  of ``multiprocessing.connection.Connection`` (``!i`` length, or ``-1`` then
  ``!Q`` length), so endpoints simply use ``Client(...).send_bytes``.
* Each link has a bounded outbound buffer (``out_cap`` bytes). A packet that
  would overflow it is dropped and counted (``overflow``): a slow or dead
  endpoint can never block the router or the others. The cap only applies
  once something is buffered, so one frame larger than the cap still passes.
* Output is batched: packets are queued during one loop turn and each
  destination is flushed once per turn with ``sendmsg`` (scatter/gather).
* With no faults, no delay, no partition and no cut, packets take a fast
  path: no random draws, no heap.

Hellos (format in ``wire.py``): ``ANY`` gets a fresh client id; a replica id
needs the cluster's secret and is refused while a live link holds it (a dead
endpoint's link is noticed and closed first, so a restarted worker gets its id
back). Anything else is refused: the link is closed, counted as malformed.

The control protocol and the counters (``stats()``): ``router_control.py``.
"""

from __future__ import annotations

import functools
import heapq
import hmac
import itertools
import logging
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, Optional

from .faults import Cuts, Faults
from .router_control import RouterControl
from .transports import wire
from .transports.idle import Spinner

__all__ = ["run_router", "MAX_FRAME", "DEFAULT_OUT_CAP"]

log = logging.getLogger("raftmp.router")

MAX_FRAME = 256 * 1024 * 1024  # a longer frame is a broken or hostile endpoint: close it
DEFAULT_OUT_CAP = 32 * 1024 * 1024  # per-link outbound buffer, bytes
_RECV_SIZE = 256 * 1024
_RECV_MAX = 4 * 1024 * 1024  # read up to this much at once while a big frame is pending
_IOV_MAX = 512  # buffers per sendmsg (Linux IOV_MAX is 1024)
_SOCK_BUF = 1024 * 1024  # SO_SNDBUF / SO_RCVBUF asked for on each link
_STALE_READS = 64  # reads of an id's old link, looking for its EOF, before a hello is refused

_LEN = struct.Struct("!i")
_LEN_Q = struct.Struct("!Q")
_SRC = struct.Struct("!i")  # the first field of wire.HEADER
_HEADER = wire.HEADER
_HEADER_SIZE = wire.HEADER.size
_FIRST_CLIENT = wire.FIRST_CLIENT_ID

# Indices into a per-link counter list (a list, not a dict: this is the hot path;
# router_control.COUNTER_NAMES names them in this order).
_PACKETS, _BYTES, _MESSAGES, _DELIVERED, _DROPPED, _DUPLICATED = range(6)

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_LISTENER = object()  # selector tags
_CONTROL = object()


class _Link:
    """One endpoint's connection. ``eid`` is None until its hello."""

    __slots__ = ("sock", "eid", "inbuf", "out", "out_size", "writing", "dirty", "closed", "row")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.eid: Optional[int] = None
        self.inbuf = bytearray()
        self.out: deque = deque()  # frames (bytes or memoryview) waiting to be written
        self.out_size = 0  # invariant: out_size == sum(len(b) for b in out)
        # Registered for EVENT_WRITE. Invariant after a flush: writing == bool(out).
        self.writing = False
        self.dirty = False  # queued for a flush at the end of this loop turn
        self.closed = False
        self.row: dict = {}  # dst -> counter list for (eid, dst); shared with Router._links_stats


class _Router(RouterControl):
    def __init__(
        self, address: str, control: Connection, seed: int, secret: bytes,
        cleanup_dir: Optional[str], out_cap: int,
    ) -> None:
        self.address = address
        self.control = control
        self.seed = seed
        self.secret = secret
        self.cleanup_dir = cleanup_dir
        self.out_cap = out_cap
        self.rng = random.Random(seed)
        self.sel = selectors.DefaultSelector()
        self.listener: Optional[socket.socket] = None
        self.links: dict[int, _Link] = {}  # endpoint id -> its live link
        self.all_links: set[_Link] = set()  # including links still waiting for their hello
        self.rows: dict[int, dict[int, list]] = {}  # src -> dst -> counters (survives reconnects)
        self.next_client = _FIRST_CLIENT  # ids below it were handed out
        self.heap: list = []  # (deadline, seq, dst, frame, counters)
        self.seq = itertools.count()
        self.dirty: list[_Link] = []
        self.running = True
        self.orphaned = False  # the control pipe hit EOF: the launcher is gone
        self.faults = Faults()
        self.cuts = Cuts()
        self.plain = True  # no fault, no delay, no partition, no cut: the fast path
        self.malformed = 0
        self.unroutable = 0
        self.dropped_fault = 0
        self.dropped_partition = 0
        self.dropped_no_link = 0
        self.overflow = 0
        self._complaints = 0

    # --- setup / teardown ---------------------------------------------------

    def listen(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.address)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.listener = sock
        self.sel.register(sock, _READ, _LISTENER)
        self.sel.register(self.control.fileno(), _READ, _CONTROL)

    def shutdown(self, orphaned: bool) -> None:
        for link in list(self.all_links):
            self.close_link(link, None)
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.address)
            except OSError:
                pass
        self.sel.close()
        if orphaned and self.cleanup_dir:
            shutil.rmtree(self.cleanup_dir, ignore_errors=True)

    # --- the loop -----------------------------------------------------------

    def serve(self) -> None:
        sel_select = self.sel.select
        heap = self.heap
        monotonic = time.monotonic
        spin = Spinner().wait   # poll briefly before blocking (idle.py)
        check = functools.partial(sel_select, 0)
        while self.running:
            timeout = wire.FOREVER
            if heap:
                timeout = max(0.0, heap[0][0] - monotonic())
            for key, mask in spin(check, sel_select, timeout):
                obj = key.data
                if obj.__class__ is _Link:
                    if mask & _READ and not obj.closed:
                        self.read(obj)
                    if mask & _WRITE and not obj.closed:
                        self.flush(obj)
                elif obj is _LISTENER:
                    self.accept()
                else:
                    self.on_control()
                    if not self.running:
                        return
            if heap and heap[0][0] <= monotonic():
                self.release_due()
            if self.dirty:
                dirty = self.dirty
                self.dirty = []
                for link in dirty:
                    self.flush(link)

    def complain(self, fmt: str, *args: Any) -> None:
        """Log remote misbehaviour without letting a flood of garbage flood the log."""
        self._complaints += 1
        n = self._complaints
        if n <= 20 or n % 1000 == 0:
            log.warning(fmt + (" (%d complaints so far)" % n if n > 20 else ""), *args)

    # --- links --------------------------------------------------------------

    def accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the links we have
                log.error("accept failed: %r", exc)
                return
            sock.setblocking(False)
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, _SOCK_BUF)
                except OSError:
                    pass
            link = _Link(sock)
            self.all_links.add(link)
            self.sel.register(sock, _READ, link)

    def close_link(self, link: _Link, why: Optional[str]) -> None:
        if link.closed:
            return
        link.closed = True
        if why:
            log.info("closing link of endpoint %s: %s", link.eid, why)
        self.all_links.discard(link)
        if link.eid is not None and self.links.get(link.eid) is link:
            del self.links[link.eid]
        try:
            self.sel.unregister(link.sock)
        except (KeyError, ValueError):
            pass
        link.sock.close()
        link.out.clear()
        link.out_size = 0
        link.inbuf = bytearray()

    def read(self, link: _Link) -> bool:
        """Read and handle what has arrived; whether anything had (EOF closes the link)."""
        buf = link.inbuf
        size = _RECV_SIZE
        if len(buf) >= 4:  # a big frame is pending: read it in bigger bites
            size = min(_RECV_MAX, max(size, _LEN.unpack_from(buf)[0] + 4 - len(buf)))
        try:
            data = link.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.close_link(link, f"recv failed: {exc!r}")
            return False
        if not data:
            self.close_link(link, None if link.eid is None else "EOF")
            return False
        buf += data
        self.parse(link)
        return True

    def parse(self, link: _Link) -> None:
        """Handle every complete frame in ``link.inbuf``; keep a partial tail."""
        buf = link.inbuf
        end = len(buf)
        pos = 0
        unpack_len = _LEN.unpack_from
        unpack_header = _HEADER.unpack_from
        pack_src = _SRC.pack_into
        with memoryview(buf) as mv:
            while end - pos >= 4:
                size = unpack_len(buf, pos)[0]
                head = 4
                if size < 0:
                    if size != -1:
                        self.malformed += 1
                        self.complain("endpoint %s sent a negative frame length", link.eid)
                        mv.release()
                        self.close_link(link, "negative frame length")
                        return
                    if end - pos < 12:
                        break
                    size = _LEN_Q.unpack_from(buf, pos + 4)[0]
                    head = 12
                if size > MAX_FRAME:
                    self.malformed += 1
                    self.complain("endpoint %s announced a %d-byte frame", link.eid, size)
                    mv.release()
                    self.close_link(link, f"frame of {size} bytes > {MAX_FRAME}")
                    return
                stop = pos + head + size
                if stop > end:
                    break
                eid = link.eid
                if eid is None:
                    if not self.hello(link, bytes(mv[pos + head:stop])):
                        mv.release()
                        return
                elif size < _HEADER_SIZE:
                    self.malformed += 1
                    self.complain("endpoint %s sent a %d-byte frame (no header)", eid, size)
                else:
                    _, dst, count = unpack_header(buf, pos + head)
                    pack_src(buf, pos + head, eid)  # endpoints cannot spoof their source
                    if head == 4:
                        frame = bytes(mv[pos:stop])
                    else:  # re-frame the (legal but odd) long form as the usual one
                        frame = _LEN.pack(size) + bytes(mv[pos + head:stop])
                    counters = link.row.get(dst)
                    if counters is None:
                        counters = self.counters_for(link, dst)
                    if counters is not None:
                        counters[_PACKETS] += 1
                        counters[_BYTES] += size
                        counters[_MESSAGES] += count
                        if self.plain:
                            target = self.links.get(dst)
                            if target is None:
                                counters[_DROPPED] += 1
                                self.dropped_no_link += 1
                            else:
                                self.enqueue(target, frame, counters)
                        else:
                            self.route(eid, dst, frame, counters)
                pos = stop
        if pos:
            del buf[:pos]

    def counters_for(self, link: _Link, dst: int) -> Optional[list]:
        """The counters of (link.eid, dst), or None (counted) if dst can never exist."""
        if dst < 0 or self.next_client <= dst:
            self.unroutable += 1
            self.complain("endpoint %s sent a packet to unknown endpoint %d", link.eid, dst)
            return None
        counters = [0, 0, 0, 0, 0, 0]
        link.row[dst] = counters
        return counters

    def hello(self, link: _Link, frame: bytes) -> bool:
        """Handle the first frame of a link; False if the link was closed."""
        try:
            eid = self.admit(*wire.parse_hello(frame))
        except ValueError as exc:
            self.malformed += 1
            self.complain("bad hello: %s", exc)
            self.close_link(link, f"bad hello: {exc}")
            return False
        link.eid = eid
        link.row = self.rows.setdefault(eid, {})
        self.links[eid] = link
        log.debug("endpoint %d connected", eid)
        self.enqueue_raw(link, _LEN.pack(wire.HELLO_ID.size) + wire.HELLO_ID.pack(eid))
        return True

    def admit(self, requested: int, secret: bytes) -> int:
        """The endpoint id a hello gets; ValueError if it is refused (module doc: Hellos)."""
        if requested == wire.ANY and not secret:
            self.next_client += 1
            return self.next_client - 1
        if not 0 <= requested < _FIRST_CLIENT:
            raise ValueError(f"hello asks for endpoint id {requested}: only ANY or a replica id")
        if not hmac.compare_digest(secret, self.secret):
            raise ValueError(f"hello for replica {requested} without the cluster's secret")
        old = self.links.get(requested)
        for _ in range(_STALE_READS):  # handle what the old link still holds; EOF closes it
            if old is None or old.closed or not self.read(old):
                break
        if old is not None and not old.closed:
            raise ValueError(f"hello for replica {requested}, whose link is still open")
        return requested

    # --- routing ------------------------------------------------------------

    def route(self, src: int, dst: int, frame: bytes, counters: list) -> None:
        """The slow path: cuts, partitions, loss, duplication, delay."""
        if self.cuts.blocks(src, dst):
            counters[_DROPPED] += 1
            self.dropped_partition += 1
            return
        faults = self.faults
        rng = self.rng
        client_link = src >= _FIRST_CLIENT or dst >= _FIRST_CLIENT
        p = faults.client_drop if client_link else faults.drop
        if p and rng.random() < p:
            counters[_DROPPED] += 1
            self.dropped_fault += 1
            return
        copies = 1
        duplicate = faults.duplicate
        if duplicate and rng.random() < duplicate:
            copies = 2
            counters[_DUPLICATED] += 1
        lo, hi = faults.delay
        for _ in range(copies):
            delay = lo + (hi - lo) * rng.random() if hi > 0 else 0.0
            if delay > 0:
                deadline = time.monotonic() + delay
                heapq.heappush(self.heap, (deadline, next(self.seq), dst, frame, counters))
            else:
                self.deliver(dst, frame, counters)

    def deliver(self, dst: int, frame: bytes, counters: list) -> None:
        target = self.links.get(dst)
        if target is None:
            counters[_DROPPED] += 1
            self.dropped_no_link += 1
        else:
            self.enqueue(target, frame, counters)

    def release_due(self) -> None:
        heap = self.heap
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, dst, frame, counters = heapq.heappop(heap)
            self.deliver(dst, frame, counters)

    def enqueue(self, link: _Link, frame: bytes, counters: list) -> None:
        n = len(frame)
        if link.out_size and link.out_size + n > self.out_cap:
            counters[_DROPPED] += 1
            self.overflow += 1
            return
        counters[_DELIVERED] += 1
        link.out.append(frame)
        link.out_size += n
        if not link.dirty:
            link.dirty = True
            self.dirty.append(link)

    def enqueue_raw(self, link: _Link, frame: bytes) -> None:
        """Queue router-originated bytes (the hello answer), never dropped."""
        link.out.append(frame)
        link.out_size += len(frame)
        if not link.dirty:
            link.dirty = True
            self.dirty.append(link)

    def flush(self, link: _Link) -> None:
        link.dirty = False
        if link.closed:
            return
        out = link.out
        sock = link.sock
        while out:
            bufs = out if len(out) <= _IOV_MAX else list(itertools.islice(out, _IOV_MAX))
            try:
                sent = sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # EPIPE / ECONNRESET: the endpoint is gone
                self.close_link(link, f"send failed: {exc!r}")
                return
            if not sent:
                break
            link.out_size -= sent
            while sent:
                first = out[0]
                n = len(first)
                if sent >= n:
                    out.popleft()
                    sent -= n
                else:
                    out[0] = memoryview(first)[sent:]
                    sent = 0
        want = bool(out)
        if want != link.writing:
            link.writing = want
            self.sel.modify(sock, _READ | _WRITE if want else _READ, link)


def run_router(
    address: str,
    control: Connection,
    seed: int,
    secret: bytes,
    cleanup_dir: Optional[str] = None,
    *,
    out_cap: int = DEFAULT_OUT_CAP,
) -> None:
    """The router process body: listen on ``address`` and serve until stopped.

    Answers request 0 on ``control`` once listening (its pid, or the exception
    that prevented it), then answers control requests (router_control.py).
    Returns on ``("stop",)`` or when ``control`` hits EOF; on EOF it also
    removes ``cleanup_dir``. Either way it removes its socket file.
    """
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher handles Ctrl-C and stops us
    except ValueError:  # not the main thread (only in odd test setups)
        pass
    router = _Router(address, control, seed, secret, cleanup_dir, out_cap)
    try:
        router.listen()
    except Exception as exc:
        log.error("router cannot listen on %s: %r", address, exc)
        try:
            control.send((0, exc))
        except OSError:
            pass
        router.sel.close()
        return
    log.info("router listening on %s (seed %d)", address, seed)
    try:
        control.send((0, os.getpid()))
    except OSError:
        router.orphaned = True
        router.running = False
    try:
        router.serve()
    finally:
        router.shutdown(router.orphaned)
        log.info("router stopped%s", " (launcher gone)" if router.orphaned else "")
