"""The TCP transport refuses bad frames between nodes, counts them, and applies nothing they carry.

A ``TcpLink`` for node 1 runs in this process; the test plays node 0 (the
lower id dials) on a raw socket: a real hello, then frames that are good,
oversized, truncated, forged, replayed, or sealed under a wrong secret.
``test_each_check_is_what_refuses`` runs the same cases against a transport
without the checks and shows they would then pass the bad message on.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from raftmp.core.messages import InstallSnapshot, RequestVote
from raftmp.serve_local import free_port
from raftmp.transports import frames, jsonwire
from raftmp.transports.frames import Channel
from raftmp.transports.tcp_link import MAX_BACKOFF, MIN_BACKOFF, TcpLink

pytestmark = pytest.mark.timeout(30)

SECRET = b"s" * 32
GOOD = RequestVote(5, 0, 0, 0, False)
BAD = RequestVote(99, 0, 0, 0, False)    # what a bad frame carries: must never come out
CAP = 4096


def body(m: RequestVote, pad: int = 0) -> bytes:
    return json.dumps(["msgs", [jsonwire.encode(m)] * (1 + pad)], separators=(",", ":")).encode()


class Peer:
    """Node 0 on a raw socket, talking to a TcpLink for node 1."""

    def __init__(self, secret: bytes = SECRET) -> None:
        port = free_port("127.0.0.1")
        self.link = TcpLink(1, {0: ("127.0.0.1", 1), 1: ("127.0.0.1", port)}, SECRET, cap=CAP)
        self.got: list = []
        self.rejected: list[str] = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)   # reads never wait: the link runs in this thread
        nonce = frames.new_nonce()
        self.sock.sendall(frames.frame_json({"hello": 1, "from": 0, "to": 1, "nonce": nonce}))
        reply = self.read_frame()
        theirs = json.loads(reply)
        assert theirs["mac"] == frames.hello_mac(SECRET, nonce, theirs["nonce"], 0, 1)
        self.channel = Channel(*frames.channel_keys(secret, nonce, theirs["nonce"], 0, 1))

    def pump(self, until, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "timed out"
            self.got += self.link.receive(time.monotonic(), True, self.rejected.append)
            time.sleep(0.005)

    def read_frame(self) -> bytes:
        reader = frames.FrameReader()
        while True:
            self.link.receive(time.monotonic(), True, lambda why: None)
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            out = reader.feed(data)
            if out:
                return out[0]

    def closed(self) -> bool:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
        self.link.close()


def run(case: str) -> Peer:
    """Send one good frame, then the bad frame of ``case``; wait until the link closed us."""
    p = Peer(b"w" * 32 if case == "wrong secret" else SECRET)
    first = p.channel.seal(body(GOOD))
    if case != "wrong secret":
        p.sock.sendall(first)
        p.pump(lambda: p.got)
    if case == "oversized":
        p.sock.sendall(p.channel.seal(body(BAD, pad=CAP // 20)))
    elif case == "truncated":
        sealed = p.channel.seal(body(BAD))
        p.sock.sendall(sealed[:-5])
        p.sock.shutdown(socket.SHUT_WR)
    elif case == "short":
        p.sock.sendall(frames.frame(b"x" * 20))
    elif case == "forged":
        p.sock.sendall(forge(p.channel.seal(body(GOOD))))
    elif case == "replayed":
        p.sock.sendall(first)
    elif case == "wrong secret":
        p.sock.sendall(p.channel.seal(body(BAD)))
    p.pump(lambda: p.link.bad_frames or p.closed())
    p.pump(p.closed)
    return p


def forge(sealed: bytes) -> bytes:
    """``sealed`` with its message's term changed to 99, the MAC left as it was."""
    return frames.frame(sealed[frames.LENGTH.size:].replace(b'["rv",5,', b'["rv",99,'))


KIND = {"oversized": "oversized", "truncated": "truncated", "short": "truncated",
        "forged": "forged", "replayed": "replayed", "wrong secret": "forged"}


def test_a_good_frame_is_delivered_after_a_real_hello() -> None:
    p = Peer()
    try:
        p.sock.sendall(p.channel.seal(body(GOOD)) + p.channel.seal(body(GOOD)))
        p.pump(lambda: len(p.got) == 2)
        assert p.got == [(0, GOOD), (0, GOOD)] and not p.link.bad_frames
        assert p.link.up.keys() == {0} and p.link.bytes_received[0] > 0
    finally:
        p.close()


@pytest.mark.parametrize("case", sorted(KIND))
def test_a_bad_frame_is_refused_counted_and_nothing_it_carries_applied(case: str) -> None:
    p = run(case)
    try:
        good = [] if case == "wrong secret" else [(0, GOOD)]
        assert [m for m in p.got if m != (0, GOOD)] == [], f"{case}: a bad frame was delivered"
        assert p.got == good
        assert dict(p.link.bad_frames) == {KIND[case]: 1}
        assert p.link.up == {}     # the connection is closed: node 0 must dial again
    finally:
        p.close()


def test_garbage_before_the_hello_is_refused() -> None:
    port = free_port("127.0.0.1")
    link = TcpLink(1, {0: ("127.0.0.1", 1), 1: ("127.0.0.1", port)}, SECRET, cap=CAP)
    try:
        for garbage in (frames.frame(b"not json"), frames.frame_json({"hello": 1, "from": 2,
                                                                       "to": 1, "nonce": "0" * 32}),
                        b"\xff\xff\xff\xff"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(garbage)
                deadline = time.monotonic() + 5
                while sum(link.bad_frames.values()) == 0 or link.sel.get_map().__len__() > 1:
                    assert time.monotonic() < deadline
                    assert link.receive(time.monotonic(), True, lambda why: None) == []
                    time.sleep(0.005)
            link.bad_frames.clear()
    finally:
        link.close()


class Unchecked(Channel):
    """A channel without the checks: no MAC comparison, no counter."""

    def open(self, sealed: bytes) -> bytes:
        return sealed[frames.COUNTER.size + frames.MAC_SIZE:]


@pytest.mark.parametrize("case", ["forged", "replayed", "wrong secret", "oversized"])
def test_each_check_is_what_refuses(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its check, each bad frame's message comes out: the test above would fail."""
    import raftmp.transports.tcp_link as tcp
    monkeypatch.setattr(tcp, "Channel", Unchecked)
    if case == "oversized":
        monkeypatch.setattr(frames.FrameReader, "__init__",
                            lambda self, cap=0: (setattr(self, "cap", 1 << 30),
                                                 setattr(self, "buf", bytearray()))[0])
    p = Peer(b"w" * 32 if case == "wrong secret" else SECRET)
    try:
        if case == "replayed":
            p.sock.sendall(p.channel.seal(body(GOOD)) * 2)
            p.pump(lambda: len(p.got) == 2)        # the replay came out as a second message
        else:
            sealed = p.channel.seal(body(GOOD if case == "forged" else BAD,
                                         pad=CAP // 20 if case == "oversized" else 0))
            p.sock.sendall(forge(sealed) if case == "forged" else sealed)
            p.pump(lambda: (0, BAD) in p.got)
    finally:
        p.close()


def up_peer() -> Peer:
    """A Peer whose connection the link trusts (its first sealed frame arrived)."""
    p = Peer()
    p.sock.sendall(p.channel.seal(body(GOOD)))
    p.pump(lambda: p.got and 0 in p.link.up)
    return p


def chunk(i: int, size: int) -> InstallSnapshot:
    return InstallSnapshot(1, 1, 10, 1, 1 << 30, i * size, bytes([i % 256]) * size)


def test_a_turn_larger_than_the_cap_goes_in_several_frames() -> None:
    p = up_peer()
    try:
        sent = [(0, chunk(i, 600)) for i in range(20)]     # ~16 KB of base64: 4 KiB cap
        p.link.send(sent, time.monotonic())
        reader, got = frames.FrameReader(CAP), []
        deadline = time.monotonic() + 5
        while len(got) < 20:
            assert time.monotonic() < deadline
            try:
                data = p.sock.recv(1 << 16)
            except BlockingIOError:
                continue
            for sealed in reader.feed(data):
                tag, batch = json.loads(p.channel.open(sealed))
                if tag == "msgs":
                    got += [jsonwire.decode(m) for m in batch]
        assert got == [m for _, m in sent] and p.channel.received > 3   # several frames
    finally:
        p.close()


def test_a_full_send_queue_drops_what_does_not_fit_and_counts_it(monkeypatch) -> None:
    import raftmp.transports.tcp_link as tcp
    monkeypatch.setattr(tcp, "QUEUE_BYTES", 64 << 10)
    p = up_peer()        # and node 0 reads nothing from now on
    try:
        for _ in range(5000):
            p.link.send([(0, chunk(0, 2000))], time.monotonic())
            if p.link.dropped["queue_full"]:
                break
        assert p.link.dropped["queue_full"] == 1
        assert len(p.link.up[0].out) <= 64 << 10
    finally:
        p.close()


def test_redials_back_off_doubling_with_jitter_up_to_a_bound() -> None:
    dead = free_port("127.0.0.1")        # nothing listens there
    link = TcpLink(0, {0: ("127.0.0.1", free_port("127.0.0.1")), 1: ("127.0.0.1", dead)},
                   SECRET)
    try:
        now, waits = 1000.0, []
        for _ in range(9):
            deadline = time.monotonic() + 5
            link.receive(now, True, lambda why: None)      # dials
            while 1 not in link.redial:                   # until the refusal is seen
                assert time.monotonic() < deadline
                link.receive(now, True, lambda why: None)
            waits.append(link.redial[1] - now)
            now = link.redial[1]
        bounds = [min(MAX_BACKOFF, MIN_BACKOFF * 2 ** i) for i in range(9)]
        assert all(b / 2 <= w < b for w, b in zip(waits, bounds, strict=True)), (waits, bounds)
        assert len({round(w / b, 6) for w, b in zip(waits, bounds, strict=True)}) > 1   # jitter
    finally:
        link.close()


def test_connections_that_never_say_hello_are_bounded() -> None:
    from raftmp.transports.tcp_link import MAX_UNTRUSTED
    port = free_port("127.0.0.1")
    link = TcpLink(1, {0: ("127.0.0.1", 1), 1: ("127.0.0.1", port)}, SECRET)
    socks = []
    try:
        for _ in range(MAX_UNTRUSTED + 10):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            link.receive(time.monotonic(), True, lambda why: None)
        deadline = time.monotonic() + 5
        while len(link.sel.get_map()) != 1 + MAX_UNTRUSTED:    # the listener, and the newest
            assert time.monotonic() < deadline, len(link.sel.get_map())
            link.receive(time.monotonic(), True, lambda why: None)
    finally:
        for s in socks:
            s.close()
        link.close()
