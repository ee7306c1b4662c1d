"""``TcpLink``: a node's sockets for ``raftmp serve``, a transport for ``worker.Worker``.

One ``selectors`` selector holds every socket: the listeners (peers, clients,
RESP, metrics) and their connections. Its own file descriptor (epoll) is
what ``fileno`` gives the worker's poller: readable whenever any of them is
ready, so the worker's loop stays the one loop (no thread, no asyncio).

Between nodes (``frames.py`` has the format and the hello):

* one connection per pair: the node with the lower id dials, the other
  accepts; a redial after a failure waits a backoff that doubles up to
  ``MAX_BACKOFF``, times a random factor in [0.5, 1) (jitter);
* every frame after the hello is sealed (HMAC-SHA256, a counter); a frame
  that fails a check — oversized, truncated, forged, replayed, malformed — is
  counted in ``bad_frames`` and closes the connection, and nothing it carries
  reaches the node;
* a bounded send queue per peer (``QUEUE_BYTES``): what does not fit is
  dropped and counted, as is what is sent to a peer not connected (Raft
  retransmits; a queue that grows while a peer is away would only replay old
  appends to it);
* a test-only fault layer (``Faults``, from ``RAFTMP_TEST_FAULTS``) drops or
  delays whole frames to peers.

Clients (``raftmp.connect``) send unsealed JSON frames to the client port::

    node -> client  {"node": id, "clients": {id: "host:port", ...}}   (first)
    client -> node  ["req", client_id, seq, acked, op, key, value, expected, session]
    node -> client  ["rep", client_id, seq, status, result, leader]

RESP connections are ``resp.RespConn``; the metrics port answers any HTTP GET
of ``/metrics`` with ``metrics_text()``.
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import os
import random
import selectors
import socket
import ssl
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, Optional

from ..core.messages import RAFT_MESSAGES, ClientReply, ClientRequest, Command, check_raft_message
from . import frames, jsonwire
from .frames import BadFrame, Channel, FrameReader
from .resp import RespConn

log = logging.getLogger("raftmp.tcp")

INF = float("inf")
FIRST_ENDPOINT = 1 << 20     # client and RESP connections' endpoint ids; node ids are below
QUEUE_BYTES = 16 << 20       # per peer, waiting to be written
MIN_BACKOFF, MAX_BACKOFF = 0.05, 0.5   # s; the cap bounds how long a restarted peer waits
HELLO_TIMEOUT = 5.0          # s a connection may take to finish its hello
MAX_UNTRUSTED = 64           # accepted connections still in their hello at once (then the
                             # oldest is closed: a flood of them cannot take every descriptor)
MAX_READ = 1 << 20           # bytes read from one connection per turn
CLIENT_OUT = 4 << 20         # bytes of answers a client has not read before we stop reading it
Address = tuple[str, int]
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def tls_contexts(cert: str, key: str, ca: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for mutual TLS between nodes: each side shows
    ``cert`` and requires the other's to be signed by ``ca``. Host names are
    not checked: a peer proves which node it is by the hello (``frames.py``)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    for ctx in (server, client):
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return server, client


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)


class Faults:
    """Test-only: drop or delay frames to peers. ``RAFTMP_TEST_FAULTS`` = "drop=0.1,delay=0.05"."""

    def __init__(self, text: str) -> None:
        self.drop = self.delay = 0.0
        for part in filter(None, text.split(",")):
            name, _, value = part.partition("=")
            if name not in ("drop", "delay"):
                raise ValueError(f"RAFTMP_TEST_FAULTS: unknown fault {name!r}")
            setattr(self, name, float(value))
        self.rng = random.Random()


class Conn:
    """One socket and what is known of it."""

    def __init__(self, sock: socket.socket, kind: str, cap: int, now: float) -> None:
        self.sock = sock
        self.kind = kind            # peer-out, peer-in, client, resp, http
        self.reader = FrameReader(cap)
        self.out = bytearray()
        self.opened = now
        self.state = "hello"        # connecting, hello, auth (peer-in: hello sent), up
        self.peer: Optional[int] = None
        self.nonce = ""
        self.channel: Optional[Channel] = None
        self.endpoint = 0
        self.resp: Optional[RespConn] = None
        self.closing = False        # close once ``out`` is written
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.handshaking = self.tls  # a TLS handshake is under way: nothing else moves


class TcpLink:
    def __init__(self, me: int, peers: dict[int, Address], secret: bytes, *,
                 client: Optional[Address] = None, resp: Optional[Address] = None,
                 metrics: Optional[Address] = None, cap: int = frames.MAX_FRAME,
                 faults: Optional[Faults] = None,
                 tls: Optional[tuple[ssl.SSLContext, ssl.SSLContext]] = None) -> None:
        self.me = me
        self.tls = tls                              # (server, client) contexts, for peers
        self.addresses = peers                      # every node's peer address, mine included
        self.peers = set(peers) - {me}
        self.secret = secret
        self.cap = cap
        self.faults = faults
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[str, socket.socket] = {}
        self.own_info: dict[str, str] = {}
        for kind, addr in (("peer", peers[me]), ("client", client), ("resp", resp),
                           ("http", metrics)):
            if addr is not None:
                self._listen(kind, addr)
        self.up: dict[int, Conn] = {}               # peer -> its authenticated connection
        self.dialing: dict[int, Conn] = {}          # peer -> my outgoing connection not yet up
        self.redial: dict[int, float] = {p: 0.0 for p in self.peers if me < p}
        self.backoff: dict[int, float] = {}
        self.info: dict[int, dict] = {me: self.own_info}   # peer -> its client/resp addresses
        self.endpoints: dict[int, Conn] = {}
        self.next_endpoint = FIRST_ENDPOINT
        self.delayed: list[tuple[float, int, int, bytes]] = []  # (due, n, peer, body)
        self.delayed_n = 0
        self.inbox: list[tuple[int, Any]] = []
        self.now = 0.0
        self.reject: Callable[[str], None] = lambda why: None
        self.rng = random.Random()
        # Counters (metrics.py reads them).
        self.bad_frames: Counter[str] = Counter()
        self.bytes_sent: Counter[int] = Counter()
        self.bytes_received: Counter[int] = Counter()
        self.dropped: Counter[str] = Counter()      # frames not sent: down, queue_full, fault
        # Set by whoever drives the node (serve.py): figures for INFO and /metrics.
        self.status: Callable[[], dict] = dict
        self.metrics_text: Callable[[], str] = str

    # ------------------------------------------------------------ the shape

    def fileno(self) -> int:
        return self.sel.fileno()

    def next_deadline(self) -> float:
        due = min(self.redial.values(), default=INF)
        if self.delayed:
            due = min(due, self.delayed[0][0])
        resp = [c.resp.next_deadline() for c in self.endpoints.values() if c.resp is not None]
        return min(due, min(resp, default=INF), self._hello_deadline())

    def stats(self) -> dict:
        """Counters for ``Worker.status`` (and so /metrics): bytes by peer, frames refused
        by the check they failed, frames to peers not sent by reason."""
        return {"bytes_sent": dict(self.bytes_sent), "bytes_received": dict(self.bytes_received),
                "bad_frames": dict(self.bad_frames), "frames_dropped": dict(self.dropped),
                "peers_up": sorted(self.up)}

    def pickled(self, entries: list) -> None:
        return None   # storage pickles them itself: nothing from the network is a pickle

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()

    def receive(self, now: float, readable: bool,
                reject: Callable[[str], None]) -> list[tuple[int, Any]]:
        self.reject, self.now = reject, now
        if readable:
            for key, events in self.sel.select(0):
                if key.data is None:
                    self._accept(key.fileobj, now)
                    continue
                conn: Conn = key.data
                if conn.handshaking:
                    self._handshake(conn, now)
                    continue
                if events & selectors.EVENT_WRITE:
                    self._writable(conn, now)
                if events & selectors.EVENT_READ and conn.sock.fileno() >= 0:
                    self._readable(conn, now)
        for peer, at in list(self.redial.items()):
            if at <= now:
                self._dial(peer, now)
        while self.delayed and self.delayed[0][0] <= now:
            _, _, peer, body = heapq.heappop(self.delayed)
            self._send_sealed(peer, body)
        for conn in [c for c in self.endpoints.values() if c.resp is not None]:
            self.inbox.extend((conn.endpoint, ClientRequest(cmd)) for cmd in conn.resp.due(now))
            self._flush_resp(conn)
        if self._hello_deadline() <= now:
            for key in list(self.sel.get_map().values()):
                c = key.data
                if c is not None and c.state != "up" and now - c.opened > HELLO_TIMEOUT:
                    self._close(c, now)
        out, self.inbox = self.inbox, []
        return out

    def send(self, messages: list[tuple[int, Any]], now: float) -> None:
        self.now = now
        by_peer: dict[int, list] = defaultdict(list)
        for dst, m in messages:
            if type(m) is ClientReply:
                self._answer(dst, m, now)
            elif dst in self.peers:
                by_peer[dst].append(jsonwire.dumps(m))
        for peer, parts in by_peer.items():
            for body in self._bodies(parts):
                self._send_body(peer, body, now)

    def _bodies(self, parts: list[str]) -> list[bytes]:
        """``parts`` (encoded messages) in sealed bodies that fit the frame cap: a
        receiver closes a connection on a larger frame."""
        room = self.cap - frames.COUNTER.size - frames.MAC_SIZE - 20
        out: list[bytes] = []
        chunk: list[str] = []
        size = 0
        for part in parts:
            if len(part) > room:
                log.error("node %d: a %d-byte message does not fit a frame", self.me, len(part))
                self.dropped["too_big"] += 1
                continue
            if chunk and size + len(part) + 1 > room:
                out.append(f'["msgs",[{",".join(chunk)}]]'.encode())
                chunk, size = [], 0
            chunk.append(part)
            size += len(part) + 1
        if chunk:
            out.append(f'["msgs",[{",".join(chunk)}]]'.encode())
        return out

    def _send_body(self, peer: int, body: bytes, now: float) -> None:
        f = self.faults
        if f is not None and f.drop and f.rng.random() < f.drop:
            self.dropped["fault"] += 1
        elif f is not None and f.delay:
            self.delayed_n += 1
            heapq.heappush(self.delayed, (now + f.rng.uniform(0, f.delay), self.delayed_n,
                                          peer, body))
        else:
            self._send_sealed(peer, body)

    # ------------------------------------------------------------- sockets

    def _listen(self, kind: str, addr: Address) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, None)
        self.listeners[kind] = sock
        if kind in ("client", "resp"):
            self.own_info[kind] = f"{addr[0]}:{sock.getsockname()[1]}"

    def _accept(self, listener: socket.socket, now: float) -> None:
        kind = next(k for k, s in self.listeners.items() if s is listener)
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if kind == "peer" and self.tls is not None:
            sock = self.tls[0].wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        conn = Conn(sock, "peer-in" if kind == "peer" else kind, self.cap, now)
        self.sel.register(sock, selectors.EVENT_READ, conn)
        if kind in ("peer", "http"):
            waiting = [k.data for k in self.sel.get_map().values() if k.data is not None
                       and k.data.kind in ("peer-in", "http") and k.data.state != "up"]
            if len(waiting) > MAX_UNTRUSTED:
                self._close(min(waiting, key=lambda c: c.opened), now)
        if kind in ("client", "resp"):
            conn.state = "up"
            conn.endpoint = self.next_endpoint
            self.next_endpoint += 1
            self.endpoints[conn.endpoint] = conn
        if kind == "client":
            self._write(conn, frames.frame_json({"node": self.me, "clients": self._clients()}))
        elif kind == "resp":
            conn.resp = RespConn(self, conn.endpoint)

    def _dial(self, peer: int, now: float) -> None:
        del self.redial[peer]
        host, port = self.addresses[peer]
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock, "peer-out", self.cap, now)
        conn.peer, conn.state = peer, "connecting"
        self.dialing[peer] = conn
        err = sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            self._close(conn, now)
            return
        self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _writable(self, conn: Conn, now: float) -> None:
        if conn.state == "connecting":
            if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                self._close(conn, now)
                return
            conn.state, conn.nonce = "hello", frames.new_nonce()
            conn.out += frames.frame_json({"hello": 1, "from": self.me, "to": conn.peer,
                                           "nonce": conn.nonce})
            if self.tls is not None:   # the hello waits for the handshake
                self.sel.unregister(conn.sock)
                conn.sock = self.tls[1].wrap_socket(conn.sock, do_handshake_on_connect=False)
                conn.tls = conn.handshaking = True
                self.sel.register(conn.sock, selectors.EVENT_READ, conn)
                self._handshake(conn, now)
                return
        self._flush(conn, now)

    def _handshake(self, conn: Conn, now: float) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            want = selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            want = selectors.EVENT_READ | selectors.EVENT_WRITE
        except (ssl.SSLError, OSError) as exc:
            self._bad(conn, BadFrame("tls", f"TLS handshake failed: {exc}"), now)
            return
        else:
            conn.handshaking = False
            self._flush(conn, now)
            if conn.sock.fileno() >= 0:
                self._readable(conn, now)   # what came with the handshake's end
            return
        self.sel.modify(conn.sock, want, conn)

    def _flush(self, conn: Conn, now: float) -> None:
        if conn.handshaking:
            return
        try:
            sent = conn.sock.send(conn.out) if conn.out else 0
        except WOULD_BLOCK:
            sent = 0
        except OSError:
            self._close(conn, now)
            return
        del conn.out[:sent]
        if conn.peer is not None:
            self.bytes_sent[conn.peer] += sent
        if not conn.out and conn.closing:
            self._close(conn, now)
            return
        # A client that does not read its answers is not read either (back-pressure).
        reading = conn.peer is not None or len(conn.out) < CLIENT_OUT
        want = (selectors.EVENT_READ if reading else 0) | \
            (selectors.EVENT_WRITE if conn.out else 0)
        if self.sel.get_key(conn.sock).events != want:
            self.sel.modify(conn.sock, want, conn)

    def _write(self, conn: Conn, data: bytes) -> None:
        conn.out += data
        self._flush(conn, self.now)

    def _readable(self, conn: Conn, now: float) -> None:
        got = 0
        while got < MAX_READ or conn.tls:   # TLS: what it decrypted wakes no selector
            try:
                data = conn.sock.recv(1 << 16)
            except WOULD_BLOCK:
                return
            except OSError:
                data = b""
            if not data:
                if conn.reader.buf:
                    self._bad(conn, BadFrame("truncated", "the connection closed mid-frame"),
                              now)
                else:
                    self._close(conn, now)
                return
            got += len(data)
            if conn.peer is not None:
                self.bytes_received[conn.peer] += len(data)
            try:
                if conn.kind == "resp":
                    conn.resp.feed(data, now)
                    self.inbox.extend((conn.endpoint, ClientRequest(cmd))
                                      for cmd in conn.resp.due(now))
                    self._flush_resp(conn)
                elif conn.kind == "http":
                    self._http(conn, data, now)
                else:
                    for body in conn.reader.feed(data):
                        self._frame(conn, body, now)
            except BadFrame as exc:
                self._bad(conn, exc, now)
                return
            if conn.sock.fileno() < 0 or conn.closing:
                return

    def _bad(self, conn: Conn, exc: BadFrame, now: float) -> None:
        self.bad_frames[exc.kind] += 1
        self.reject(f"{conn.kind} connection (peer {conn.peer}): {exc.kind}: {exc}")
        self._close(conn, now)

    def _close(self, conn: Conn, now: float) -> None:
        if conn.sock.fileno() >= 0:
            try:
                self.sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
        peer = conn.peer
        if conn.kind == "peer-out" and self.dialing.get(peer) is conn:
            del self.dialing[peer]
        if peer is not None and self.up.get(peer) is conn:
            del self.up[peer]
        if conn.kind == "peer-out" and peer not in self.dialing and peer not in self.up:
            wait = min(MAX_BACKOFF, self.backoff.get(peer, MIN_BACKOFF / 2) * 2)
            self.backoff[peer] = wait
            self.redial[peer] = now + wait * self.rng.uniform(0.5, 1.0)
        self.endpoints.pop(conn.endpoint, None)

    def _hello_deadline(self) -> float:
        pending = [k.data.opened for k in self.sel.get_map().values()
                   if k.data is not None and k.data.state != "up"]
        return min(pending, default=INF) + HELLO_TIMEOUT

    # -------------------------------------------------------------- frames

    def _frame(self, conn: Conn, body: bytes, now: float) -> None:
        if conn.kind == "client":
            self._client_frame(conn, body)
        elif conn.state == "up" or conn.state == "auth":
            obj = frames.parse_json(conn.channel.open(body))
            if conn.state == "auth":   # the dialer's first sealed frame: it holds the secret
                old = self.up.get(conn.peer)
                if old is not None:
                    self._close(old, now)
                conn.state = "up"
                self.up[conn.peer] = conn
                self._send_info(conn)
            self._sealed(conn, obj)
        elif conn.kind == "peer-in":
            peer, nonce = frames.check_hello(frames.parse_json(body), self.me, with_mac=False)
            if peer not in self.peers or peer > self.me:
                raise BadFrame("malformed", f"hello from {peer}, who is not a peer that dials")
            conn.peer, conn.nonce = peer, frames.new_nonce()
            conn.channel = Channel(*frames.channel_keys(self.secret, nonce, conn.nonce,
                                                        self.me, peer))
            mac = frames.hello_mac(self.secret, nonce, conn.nonce, peer, self.me)
            conn.state = "auth"
            self._write(conn, frames.frame_json({"hello": 1, "from": self.me, "to": peer,
                                                 "nonce": conn.nonce, "mac": mac}))
        else:   # peer-out, waiting for the acceptor's hello
            obj = frames.parse_json(body)
            peer, nonce = frames.check_hello(obj, self.me, with_mac=True)
            want = frames.hello_mac(self.secret, conn.nonce, nonce, self.me, conn.peer)
            if peer != conn.peer or not frames.hmac.compare_digest(obj["mac"], want):
                raise BadFrame("forged", f"node {conn.peer}'s hello has a wrong mac")
            conn.channel = Channel(*frames.channel_keys(self.secret, conn.nonce, nonce,
                                                        self.me, conn.peer))
            conn.state = "up"
            del self.dialing[conn.peer]
            self.up[conn.peer] = conn
            self.backoff.pop(conn.peer, None)
            self._send_info(conn)

    def _sealed(self, conn: Conn, obj: Any) -> None:
        if type(obj) is not list or len(obj) != 2:
            raise BadFrame("malformed", f"a sealed body that is not [tag, value]: {str(obj)[:80]}")
        tag, value = obj
        if tag == "info" and type(value) is dict:
            self.info[conn.peer] = {k: v for k, v in value.items()
                                    if k in ("client", "resp") and type(v) is str}
            return
        if tag != "msgs" or type(value) is not list:
            raise BadFrame("malformed", f"a sealed body tagged {str(tag)[:20]!r}")
        for raw in value:   # authenticated: a bad message is the peer's bug, dropped alone
            try:
                m = jsonwire.decode(raw)
            except (ValueError, RecursionError) as exc:
                self.reject(f"from {conn.peer}: {exc!r}")
                continue
            why = check_raft_message(m, conn.peer) if type(m) in RAFT_MESSAGES else "not Raft"
            if why is not None:
                self.reject(f"from {conn.peer}: {why}")
                continue
            self.inbox.append((conn.peer, m))

    def _send_info(self, conn: Conn) -> None:
        body = json.dumps(["info", self.own_info]).encode()
        self._write(conn, conn.channel.seal(body))

    def _send_sealed(self, peer: int, body: bytes) -> None:
        conn = self.up.get(peer)
        if conn is None:
            self.dropped["down"] += 1
        elif len(conn.out) + len(body) > QUEUE_BYTES:
            self.dropped["queue_full"] += 1
        else:
            self._write(conn, conn.channel.seal(body))

    # -------------------------------------------------------------- clients

    def _clients(self) -> dict[str, str]:
        return {str(n): i["client"] for n, i in self.info.items() if "client" in i}

    def _client_frame(self, conn: Conn, body: bytes) -> None:
        obj = frames.parse_json(body)
        if type(obj) is not list or len(obj) != 1 + len(Command._fields) or obj[0] != "req":
            raise BadFrame("malformed", f"not a client request: {str(obj)[:80]}")
        self.inbox.append((conn.endpoint, ClientRequest(Command(*obj[1:]))))

    def _answer(self, dst: int, reply: ClientReply, now: float) -> None:
        conn = self.endpoints.get(dst)
        if conn is None:
            return   # the client left
        if conn.resp is not None:
            conn.resp.answer(reply, now)
            self._flush_resp(conn)
        else:
            self._write(conn, frames.frame_json(["rep", *reply]))

    def _flush_resp(self, conn: Conn) -> None:
        data = conn.resp.take_output()
        if data:
            self._write(conn, data)
        if conn.resp.closed and not conn.closing:
            conn.closing = True
            self._flush(conn, self.now)

    def resp_address(self, node: Optional[int]) -> Optional[str]:
        """The RESP address of ``node`` (for -MOVED), if it told us."""
        return self.info.get(node, {}).get("resp") if node is not None else None

    # --------------------------------------------------------------- metrics

    def _http(self, conn: Conn, data: bytes, now: float) -> None:
        conn.reader.buf += data
        if len(conn.reader.buf) > 8192:
            raise BadFrame("oversized", "an HTTP request of more than 8 KiB")
        if b"\r\n\r\n" not in conn.reader.buf and b"\n\n" not in conn.reader.buf:
            return
        line = bytes(conn.reader.buf).split(b"\n", 1)[0].split()
        if len(line) >= 2 and line[0] == b"GET" and line[1] in (b"/metrics", b"/"):
            status, text = "200 OK", self.metrics_text()
        else:
            status, text = "404 Not Found", "only GET /metrics is served here\n"
        body = text.encode()
        conn.out += (f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        conn.reader.buf.clear()
        conn.closing = True
        self._flush(conn, now)


def test_faults() -> Optional[Faults]:
    """The test-only fault layer, if ``RAFTMP_TEST_FAULTS`` asks for one."""
    text = os.environ.get("RAFTMP_TEST_FAULTS", "")
    return Faults(text) if text else None
