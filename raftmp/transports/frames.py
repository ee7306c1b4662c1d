"""Frames on a TCP stream, and the authenticated channel between two nodes.

Every TCP connection raftmp accepts (between nodes, and from ``raftmp.connect``
clients) carries *frames*::

    frame = length:uint32 (big-endian) + body      length <= the link's cap

A length above the cap is a ``BadFrame``: the connection is closed, nothing
buffered (a peer cannot make us hold an unbounded frame). Bodies are JSON
(``jsonwire`` for Raft messages), never pickle: anyone can write to a port.

Between two nodes the first frames are a hello (``Handshake``), then every
body is *sealed*::

    sealed = counter:uint64 + mac:32 bytes + JSON
    mac    = HMAC-SHA256(key, counter + JSON)

with one key per direction, drawn from the cluster secret and both sides'
fresh nonces (``channel_keys``). The receiver checks the MAC
(``hmac.compare_digest``: forged, truncated or under a wrong secret fails it)
and that the counter is exactly one more than the last (a replayed or
reordered frame fails it; a frame recorded on an earlier connection fails the
MAC, the nonces being fresh). Any failure closes the connection.

Hello, dialer D to acceptor A (node ids, so each side knows whom it talks to)::

    D -> A   {"hello": 1, "from": d, "to": a, "nonce": Nd}
    A -> D   {"hello": 1, "from": a, "to": d, "nonce": Na, "mac": HMAC(secret, Nd|Na|d|a)}
    D -> A   sealed frames (A trusts the connection at the first good one)

The dialer knows A is genuine from the mac; A knows D is from D's first sealed
frame, which only a holder of the secret who saw ``Na`` can make.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import Any

LENGTH = struct.Struct(">I")
COUNTER = struct.Struct(">Q")
MAC_SIZE = 32
NONCE_SIZE = 16
MAX_FRAME = 16 << 20       # bytes of one frame's body, by default


class BadFrame(ValueError):
    """A frame that must close its connection. ``kind`` names the check it
    failed (a metrics label): oversized, truncated, forged, replayed, malformed."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def frame_json(obj: Any) -> bytes:
    return frame(json.dumps(obj, separators=(",", ":")).encode())


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadFrame("malformed", f"not JSON: {exc!r}") from None


class FrameReader:
    """Splits a byte stream into frame bodies; ``BadFrame`` when a length passes ``cap``."""

    def __init__(self, cap: int = MAX_FRAME) -> None:
        self.cap = cap
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        out, pos, end = [], 0, len(buf)
        while end - pos >= LENGTH.size:
            size = LENGTH.unpack_from(buf, pos)[0]
            if size > self.cap:
                raise BadFrame("oversized", f"a frame of {size} bytes (cap {self.cap})")
            if end - pos - LENGTH.size < size:
                break
            out.append(bytes(buf[pos + LENGTH.size:pos + LENGTH.size + size]))
            pos += LENGTH.size + size
        del buf[:pos]
        return out


# ------------------------------------------------------------------ the hello

def new_nonce() -> str:
    return os.urandom(NONCE_SIZE).hex()


def hello_mac(secret: bytes, dialer_nonce: str, acceptor_nonce: str,
              dialer: int, acceptor: int) -> str:
    text = f"raftmp-hello|{dialer_nonce}|{acceptor_nonce}|{dialer}|{acceptor}".encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


def channel_keys(secret: bytes, dialer_nonce: str, acceptor_nonce: str,
                 me: int, peer: int) -> tuple[bytes, bytes]:
    """(key I seal with, key I open with) on a connection between ``me`` and ``peer``."""
    def key(src: int, dst: int) -> bytes:
        text = f"raftmp-channel|{dialer_nonce}|{acceptor_nonce}|{src}>{dst}".encode()
        return hmac.new(secret, text, hashlib.sha256).digest()
    return key(me, peer), key(peer, me)


def check_hello(obj: Any, me: int, with_mac: bool) -> tuple[int, str]:
    """(sender, nonce) of a hello to ``me``; BadFrame if it is not one."""
    keys = {"hello", "from", "to", "nonce"} | ({"mac"} if with_mac else set())
    if type(obj) is not dict or set(obj) != keys or obj["hello"] != 1 \
            or type(obj["from"]) is not int or obj["to"] != me \
            or type(obj["nonce"]) is not str or len(obj["nonce"]) != 2 * NONCE_SIZE \
            or (with_mac and type(obj["mac"]) is not str):
        raise BadFrame("malformed", f"not a hello to node {me}: {str(obj)[:100]}")
    return obj["from"], obj["nonce"]


class Channel:
    """One direction pair of sealed frames (see the module docstring)."""

    def __init__(self, seal_key: bytes, open_key: bytes) -> None:
        self.seal_key = seal_key
        self.open_key = open_key
        self.sent = 0       # counter of the last frame sealed
        self.received = 0   # counter of the last frame opened

    def seal(self, body: bytes) -> bytes:
        self.sent += 1
        head = COUNTER.pack(self.sent)
        mac = hmac.new(self.seal_key, head + body, hashlib.sha256).digest()
        return frame(head + mac + body)

    def open(self, sealed: bytes) -> bytes:
        """The body of a sealed frame; BadFrame if it is short, forged or replayed."""
        if len(sealed) < COUNTER.size + MAC_SIZE:
            raise BadFrame("truncated", f"a sealed frame of {len(sealed)} bytes")
        head, mac = sealed[:COUNTER.size], sealed[COUNTER.size:COUNTER.size + MAC_SIZE]
        body = sealed[COUNTER.size + MAC_SIZE:]
        want = hmac.new(self.open_key, head + body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, want):
            raise BadFrame("forged", "the frame's HMAC does not match")
        counter = COUNTER.unpack(head)[0]
        if counter != self.received + 1:
            raise BadFrame("replayed", f"counter {counter} after {self.received}")
        self.received = counter
        return body
