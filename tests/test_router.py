"""The router process: forwarding, src stamping, the fault model, counters, robustness.

Every test talks to a real router process through fake endpoints made with
``multiprocessing.connection.Client``. Every wait polls with a deadline.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import struct
import time
from multiprocessing.connection import Client

import pytest
from conftest import wait_until

import raftmp
from raftmp.core.messages import ClientReply, ClientRequest, Command, RequestVote
from raftmp.faults import Faults
from raftmp.launcher import start_router
from raftmp.transports import wire

CTX = multiprocessing.get_context("fork")
WAIT = 5.0  # seconds: the bound of every wait


class Endpoint:
    """A fake worker or client: one link to the router."""

    def __init__(self, address: str, requested: int = wire.ANY, secret: bytes = b"") -> None:
        self.conn = Client(address, family="AF_UNIX")
        self.conn.send_bytes(wire.hello(requested, secret))
        assert self.conn.poll(WAIT), "no hello answer"
        (self.id,) = wire.HELLO_ID.unpack(self.conn.recv_bytes())

    def send(self, dst: int, payload: bytes = b"", count: int = 1, src: int | None = None) -> None:
        src = self.id if src is None else src
        self.conn.send_bytes(wire.HEADER.pack(src, dst, count) + payload)

    def recv(self, timeout: float = WAIT) -> bytes:
        assert self.conn.poll(timeout), f"endpoint {self.id}: nothing arrived within {timeout} s"
        return self.conn.recv_bytes()

    def recv_n(self, n: int, timeout: float = WAIT) -> list[bytes]:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            left = deadline - time.monotonic()
            assert left > 0 and self.conn.poll(left), f"got {len(got)} of {n} packets"
            got.append(self.conn.recv_bytes())
        return got

    def nothing_pending(self) -> bool:
        return not self.conn.poll(0)

    def close(self) -> None:
        self.conn.close()


def header(packet: bytes) -> tuple[int, int, int]:
    return wire.HEADER.unpack_from(packet)


def link_stats(router, src: int, dst: int, **expected: int) -> dict:
    """Wait until the counters of (src, dst) include ``expected``; return them."""
    def check():
        row = router.stats()["links"].get((src, dst), {})
        return row if all(row.get(k) == v for k, v in expected.items()) else None
    return wait_until(check, what=f"link ({src}, {dst}) counters {expected}")


@pytest.fixture
def address(tmp_path):
    path = str(tmp_path / "r.sock")
    assert len(path) < 100, "AF_UNIX paths are limited to 107 bytes"
    return path


@pytest.fixture
def endpoints():
    made: list[Endpoint] = []
    yield made
    for ep in made:
        ep.close()


@pytest.fixture
def router(address):
    handle = start_router(CTX, address, seed=1234)
    try:
        yield handle
    finally:
        handle.stop()
        assert handle.process.exitcode is not None, "router process left behind"
    assert not os.path.exists(address)


@pytest.fixture
def connect(router, address, endpoints):
    """A replica endpoint (with the router's secret) for an id, else a client."""
    def make(requested: int = wire.ANY) -> Endpoint:
        ep = Endpoint(address, requested, router.secret if requested != wire.ANY else b"")
        endpoints.append(ep)
        return ep
    return make


def refused(address: str, hello: bytes) -> bool:
    """Whether the router closes a link whose first frame is ``hello`` unanswered."""
    conn = Client(address, family="AF_UNIX")
    try:
        conn.send_bytes(hello)
        assert conn.poll(WAIT), "the router neither answered nor closed the link"
        try:
            conn.recv_bytes()
        except EOFError:
            return True
        return False
    finally:
        conn.close()


def test_hello_assigns_ids(router, connect):
    w0, w3 = connect(0), connect(3)
    c1, c2 = connect(), connect()
    assert (w0.id, w3.id) == (0, 3)
    assert c1.id >= wire.FIRST_CLIENT_ID and c2.id >= wire.FIRST_CLIENT_ID and c1.id != c2.id
    stats = router.stats()
    assert stats["endpoints"] == sorted([0, 3, c1.id, c2.id])
    assert stats["seed"] == 1234


def test_delivery_stamps_src_and_decodes(router, connect):
    w0, w1 = connect(0), connect(1)
    vote = RequestVote(term=3, candidate=0, last_index=7, last_term=2)
    packet = wire.encode(0, 1, [vote, vote])
    w0.conn.send_bytes(packet)
    assert w1.recv() == packet
    # A spoofed source is rewritten with the link's own id.
    w0.send(1, b"payload", src=1)
    got = w1.recv()
    assert header(got) == (0, 1, 1) and got[wire.HEADER.size:] == b"payload"
    assert wire.decode(packet) == (0, 1, [vote, vote])
    # A client's spoof of a worker id is rewritten too.
    client = connect()
    client.send(1, b"from a client", src=0)
    assert header(w1.recv()) == (client.id, 1, 1)


def test_never_unpickles_payload(router, connect):
    w0, w1 = connect(0), connect(1)
    junk = b"\x80garbage" + bytes(range(256))
    w0.send(1, junk, count=9)
    got = w1.recv()
    assert header(got) == (0, 1, 9)
    assert got[wire.HEADER.size:] == junk


def test_drop_all_worker_links_clients_still_deliver(router, connect):
    w0, w1 = connect(0), connect(1)
    client = connect()
    faults = router.set_faults(drop=1.0)
    assert faults == Faults(drop=1.0)
    for i in range(20):
        w0.send(1, b"x" * i)
    for _ in range(5):
        client.send(0, b"req")
        w1.send(client.id, b"reply")
    assert len(w0.recv_n(5)) == 5
    assert len(client.recv_n(5)) == 5
    row = link_stats(router, 0, 1, packets=20)
    assert row == {"packets": 20, "bytes": 20 * wire.HEADER.size + sum(range(20)),
                   "messages": 20, "delivered": 0, "dropped": 20, "duplicated": 0}
    assert link_stats(router, client.id, 0, packets=5)["delivered"] == 5
    assert link_stats(router, 1, client.id, packets=5)["delivered"] == 5
    total = router.stats()["total"]
    assert (total["packets"], total["delivered"], total["dropped"]) == (30, 10, 20)
    assert total["dropped_fault"] == 20
    assert w1.nothing_pending()


def test_client_drop(router, connect):
    w0, w1 = connect(0), connect(1)
    client = connect()
    router.set_faults(client_drop=1.0)
    for _ in range(10):
        client.send(0)
        w0.send(client.id)
        w0.send(1, b"ok")
    assert len(w1.recv_n(10)) == 10
    link_stats(router, client.id, 0, packets=10, dropped=10, delivered=0)
    link_stats(router, 0, client.id, packets=10, dropped=10, delivered=0)
    assert w0.nothing_pending() and client.nothing_pending()


def test_duplicate_delivers_two_copies(router, connect):
    w0, w1 = connect(0), connect(1)
    router.set_faults(duplicate=1.0)
    for i in range(10):
        w0.send(1, bytes([i]))
    got = w1.recv_n(20)
    assert sorted(p[-1] for p in got) == sorted(list(range(10)) * 2)
    link_stats(router, 0, 1, packets=10, duplicated=10, delivered=20, dropped=0)


def test_delay_holds_then_delivers(router, connect):
    w0, w1 = connect(0), connect(1)
    router.set_faults(delay=(0.3, 0.3))
    sent = time.monotonic()
    w0.send(1, b"late")
    link_stats(router, 0, 1, packets=1)
    stats = router.stats()
    if time.monotonic() - sent < 0.25:  # still inside the delay: held, not delivered
        assert stats["total"]["in_flight"] == 1
        assert stats["links"][(0, 1)]["delivered"] == 0
    assert w1.recv()[wire.HEADER.size:] == b"late"
    assert time.monotonic() - sent >= 0.29
    assert router.stats()["total"]["in_flight"] == 0


def test_delay_reorders(router, connect):
    w0, w1 = connect(0), connect(1)
    router.set_faults(delay=(0.0, 0.05))
    for i in range(60):
        w0.send(1, struct.pack("!i", i))
    order = [struct.unpack("!i", p[wire.HEADER.size:])[0] for p in w1.recv_n(60)]
    assert sorted(order) == list(range(60))
    assert order != list(range(60))
    link_stats(router, 0, 1, packets=60, delivered=60)


def test_partition_cut_and_heal(router, connect):
    w0, w1, w2 = connect(0), connect(1), connect(2)
    client = connect()
    router.partition([0, 1], [2])
    w0.send(2, b"blocked")
    w2.send(0, b"blocked")
    w0.send(1, b"same side")
    client.send(2, b"clients reach everyone")
    w2.send(client.id, b"and back")
    assert w1.recv()[wire.HEADER.size:] == b"same side"
    assert w2.recv()[wire.HEADER.size:] == b"clients reach everyone"
    assert client.recv()[wire.HEADER.size:] == b"and back"
    link_stats(router, 0, 2, packets=1, dropped=1)
    link_stats(router, 2, 0, packets=1, dropped=1)
    assert router.stats()["partitions"] == [[0, 1], [2]]

    router.heal()
    w0.send(2, b"healed")
    assert w2.recv()[wire.HEADER.size:] == b"healed"

    router.cut(0, 1)  # one way
    w0.send(1, b"cut")
    w1.send(0, b"other way works")
    assert w0.recv()[wire.HEADER.size:] == b"other way works"
    link_stats(router, 0, 1, packets=2, dropped=1, delivered=1)
    assert w1.nothing_pending()
    router.heal()
    w0.send(1, b"after heal")
    assert w1.recv()[wire.HEADER.size:] == b"after heal"
    stats = router.stats()
    assert stats["total"]["dropped_partition"] == 3
    assert stats["partitions"] == [] and stats["cuts"] == []


def test_control_rejects_bad_arguments(router):
    with pytest.raises(ValueError):
        router.set_faults(drop=1.5)
    with pytest.raises(ValueError):
        router.set_faults(delay=(0.2, 0.1))
    with pytest.raises(ValueError):
        router.set_faults(delay=(-1, 0))
    with pytest.raises(ValueError):
        router.set_faults(duplicate=float("nan"))
    with pytest.raises(ValueError):
        router.set_faults(loss=0.1)
    with pytest.raises(ValueError):
        router.partition([0, 1], [1, 2])
    with pytest.raises(ValueError):
        router.cut(-1, 2)
    # A rejected change changes nothing; a subset changes only itself.
    assert router.set_faults(drop=0.25) == Faults(drop=0.25)
    assert router.set_faults(delay=[0, 0.01]).delay == (0.0, 0.01)
    assert router.stats()["faults"].drop == 0.25


def test_malformed_and_unroutable_are_counted(router, connect, address):
    w0, w1 = connect(0), connect(1)
    w0.conn.send_bytes(b"abc")  # shorter than a header
    w0.conn.send_bytes(b"")
    w0.send(-3, b"nowhere")
    w0.send(wire.FIRST_CLIENT_ID + 5000, b"never assigned")
    w0.send(1, b"still served")
    assert w1.recv()[wire.HEADER.size:] == b"still served"
    total = wait_until(lambda: (t := router.stats()["total"])["unroutable"] == 2 and t,
                     what="unroutable == 2")
    assert total["malformed"] == 2
    assert total["packets"] == 1  # unroutable packets belong to no link

    # A first frame that is not a hello closes that link only.
    bad = Client(address, family="AF_UNIX")
    try:
        bad.send_bytes(wire.HEADER.pack(0, 1, 1) + b"no hello")
        assert bad.poll(WAIT)
        with pytest.raises(EOFError):
            bad.recv_bytes()
    finally:
        bad.close()
    wait_until(lambda: router.stats()["total"]["malformed"] == 3, what="malformed == 3")
    w1.send(0, b"alive")
    assert w0.recv()[wire.HEADER.size:] == b"alive"
    assert router.stats()["endpoints"] == [0, 1]


def raw_endpoint(address: str, requested: int, secret: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(address)
    hello = wire.hello(requested, secret)
    sock.sendall(struct.pack("!i", len(hello)) + hello)
    answer = b""
    while len(answer) < 8:
        answer += sock.recv(8 - len(answer))
    assert struct.unpack("!ii", answer) == (4, requested)
    return sock


@pytest.mark.parametrize("length_prefix", [
    struct.pack("!i", 300 * 1024 * 1024),
    struct.pack("!iQ", -1, 1 << 40),
    struct.pack("!i", -7),
])
def test_absurd_frame_length_closes_only_that_link(router, connect, address, length_prefix):
    w0 = connect(0)
    sock = raw_endpoint(address, 5, router.secret)
    try:
        sock.sendall(length_prefix)
        assert sock.recv(1) == b""  # EOF: the router closed this link
    finally:
        sock.close()
    wait_until(lambda: router.stats()["endpoints"] == [0], what="link 5 gone")
    assert router.stats()["total"]["malformed"] == 1
    w1 = connect(1)
    w1.send(0, b"fine")
    assert w0.recv()[wire.HEADER.size:] == b"fine"


def test_long_form_length_and_split_writes_are_parsed(router, connect, address):
    """Frames may arrive byte by byte; the '-1 + !Q' length form is accepted too."""
    w1 = connect(1)
    sock = raw_endpoint(address, 0, router.secret)
    try:
        packet = wire.HEADER.pack(0, 1, 2) + b"split"
        for byte in struct.pack("!i", len(packet)) + packet:
            sock.sendall(bytes([byte]))
        sock.sendall(struct.pack("!iQ", -1, len(packet)) + packet)
        assert w1.recv_n(2) == [packet, packet]
    finally:
        sock.close()


def test_replica_hello_needs_the_cluster_secret(router, connect, address):
    connect(0)
    assert refused(address, wire.hello(1))                                  # no secret
    assert refused(address, wire.hello(1, b"x" * wire.SECRET_SIZE))         # a wrong one
    assert refused(address, wire.hello(wire.ANY, router.secret))            # not a replica
    wait_until(lambda: router.stats()["total"]["malformed"] == 3, what="3 refused hellos")
    assert router.stats()["endpoints"] == [0]
    assert connect(1).id == 1


def test_a_client_is_only_handed_a_fresh_id(router, connect, address):
    c = connect()
    assert c.id >= wire.FIRST_CLIENT_ID
    for asked in (c.id, c.id + 1, wire.FIRST_CLIENT_ID + 500, -2):
        assert refused(address, wire.hello(asked)), asked
        assert refused(address, wire.hello(asked, router.secret)), asked
    assert connect().id == c.id + 1
    assert router.stats()["endpoints"] == [c.id, c.id + 1]


def test_second_hello_cannot_knock_a_live_node_off(router, connect, address):
    w0, w1 = connect(0), connect(1)
    assert refused(address, wire.hello(1, router.secret))
    w0.send(1, b"still to the first link")
    assert w1.recv()[wire.HEADER.size:] == b"still to the first link"
    assert router.stats()["endpoints"] == [0, 1]


def test_a_dead_nodes_id_is_free_at_once(router, connect):
    """A restarted worker says hello before the router has read its old link's
    EOF: the router notices the old link is dead and hands the id over."""
    w0 = connect(0)
    for _ in range(20):
        old = connect(1)
        old.close()
        new = connect(1)
        w0.send(1, b"to the new link")
        assert new.recv()[wire.HEADER.size:] == b"to the new link"
        new.close()
    assert connect(1).id == 1


def test_a_late_control_answer_is_not_taken_for_the_next(router):
    os.kill(router.pid, signal.SIGSTOP)
    try:
        with pytest.raises(raftmp.Timeout):
            router._call("stats", timeout=0.2)
    finally:
        os.kill(router.pid, signal.SIGCONT)
    # The late answer to "stats" arrives first; it must not pass for this one's.
    assert router.set_faults(drop=0.25) == Faults(drop=0.25)


def test_eof_drops_link_and_reconnect_works(router, connect):
    w0 = connect(0)
    w1 = connect(1)
    w1.close()
    wait_until(lambda: router.stats()["endpoints"] == [0], what="link 1 gone")
    w0.send(1, b"vanishes")
    link_stats(router, 0, 1, packets=1, dropped=1)
    assert router.stats()["total"]["dropped_no_link"] == 1
    again = connect(1)
    w0.send(1, b"arrives")
    assert again.recv()[wire.HEADER.size:] == b"arrives"


def test_stats_counts_bytes_and_messages(router, connect):
    w0, w1 = connect(0), connect(1)
    vote = RequestVote(1, 0, 0, 0)
    p1 = wire.encode(0, 1, [vote] * 3)
    p2 = wire.encode(0, 1, [vote] * 4)
    w0.conn.send_bytes(p1)
    w0.conn.send_bytes(p2)
    w1.recv_n(2)
    row = link_stats(router, 0, 1, packets=2)
    assert row == {"packets": 2, "bytes": len(p1) + len(p2), "messages": 7,
                   "delivered": 2, "dropped": 0, "duplicated": 0}
    assert (1, 0) not in router.stats()["links"]


def test_faults_invariant_holds(router, connect):
    """packets + duplicated == delivered + dropped once nothing is in flight."""
    w0, w1 = connect(0), connect(1)
    router.set_faults(drop=0.3, duplicate=0.3, delay=(0.0, 0.01))
    for _ in range(300):
        w0.send(1, b"p")
    link_stats(router, 0, 1, packets=300)
    stats = wait_until(lambda: (s := router.stats())["total"]["in_flight"] == 0 and s)
    row = stats["links"][(0, 1)]
    assert row["packets"] + row["duplicated"] == row["delivered"] + row["dropped"]
    assert 0 < row["dropped"] < 300 and 0 < row["duplicated"] < 300
    assert len(w1.recv_n(row["delivered"])) == row["delivered"]
    assert w1.nothing_pending()


def test_slow_reader_does_not_stall_others(address, endpoints):
    handle = start_router(CTX, address, seed=5, out_cap=1024 * 1024)
    try:
        sender, stuck, other = (Endpoint(address, i, handle.secret) for i in (0, 1, 2))
        endpoints.extend([sender, stuck, other])
        big = b"\0" * (512 * 1024)
        for i in range(48):  # 24 MiB for an endpoint that never reads
            sender.send(1, big)
            sender.send(2, struct.pack("!i", i))
        got = other.recv_n(48)
        assert [struct.unpack("!i", p[wire.HEADER.size:])[0] for p in got] == list(range(48))
        row = link_stats(handle, 0, 1, packets=48)
        assert row["dropped"] > 0 and row["delivered"] + row["dropped"] == 48
        assert handle.stats()["total"]["overflow"] == row["dropped"]
    finally:
        handle.stop()
    assert handle.process.exitcode is not None


def test_router_ignores_sigint(router, connect):
    w0, w1 = connect(0), connect(1)
    os.kill(router.pid, signal.SIGINT)
    w0.send(1, b"still here")
    assert w1.recv()[wire.HEADER.size:] == b"still here"
    assert router.process.is_alive()


def test_control_eof_exits_and_cleans_up(tmp_path):
    cleanup = tmp_path / "cluster-data"
    (cleanup / "node0").mkdir(parents=True)
    (cleanup / "node0" / "wal").write_bytes(b"x")
    address = str(tmp_path / "r.sock")
    handle = start_router(CTX, address, seed=0, cleanup_dir=str(cleanup))
    try:
        assert os.path.exists(address)
        handle.control.close()  # as if the launcher died
        handle.process.join(WAIT)
        assert handle.process.exitcode == 0
        assert not cleanup.exists()
        assert not os.path.exists(address)
    finally:
        if handle.process.is_alive():
            handle.process.kill()
            handle.process.join(WAIT)


def test_stop_is_idempotent_and_keeps_cleanup_dir(tmp_path):
    cleanup = tmp_path / "keep"
    cleanup.mkdir()
    address = str(tmp_path / "r.sock")
    handle = start_router(CTX, address, seed=0, cleanup_dir=str(cleanup))
    handle.stop()
    handle.stop()
    assert handle.process.exitcode == 0
    assert cleanup.exists() and not os.path.exists(address)
    with pytest.raises(raftmp.Unavailable):
        handle.stats()


def test_address_in_use_is_reported(router, address):
    with pytest.raises(OSError):
        start_router(CTX, address, seed=0)


# --- the packet encoding ----------------------------------------------------------


def test_packets_round_trip_in_each_payload_form():
    from raftmp.core.messages import AppendEntriesReply, ClientReply, ClientRequest, Command

    cmd = Command(1001, 2, 1, "put", "k", "v")
    for messages in ([ClientRequest(cmd)] * 3,                                # wrapped
                     [ClientReply(1001, 2, "ok"), AppendEntriesReply(1, 2, True, 3, 0, 0, 1)],
                     [ClientRequest(cmd), ClientRequest(("not", "a", "command"))],
                     [1, "not a message"]):                                   # a plain list
        src, dst, got = wire.decode(wire.encode(3, 4, messages))
        assert (src, dst, got) == (3, 4, messages)
        assert list(map(type, got)) == list(map(type, messages))
        assert [type(m[0]) for m in got if type(m) is ClientRequest] == \
            [type(m[0]) for m in messages if type(m) is ClientRequest]


@pytest.mark.parametrize("payload", [
    ([ClientReply], [(1, 2)]),                       # too few fields for the class
    ([ClientReply, ClientReply], [(1, 2, "ok")]),    # columns of different lengths
    ([dict], [()]),                                  # not a NamedTuple class
    (ClientRequest, Command, [(1, 2)]),              # inner fields too few
    (ClientReply, Command, [(1, 2, 3, "put", "k", "v", None)]),   # wrapper of 5 fields
    ([ClientReply], [5]),                            # fields that are not a sequence
    (ClientRequest, Command, [5]),                   # the same, wrapped
    ([[1]], [()]),                                   # an unhashable "class"
])
def test_malformed_payload_forms_are_refused(payload):
    import pickle

    packet = wire.HEADER.pack(3, 4, 1) + pickle.dumps(payload)
    with pytest.raises(ValueError):
        wire.decode(packet)


def test_entry_columns_round_trip_and_refuse_malformed():
    import pickle

    from raftmp.core.messages import Command, Entry, SessionClock
    from raftmp.logformat import pack_entries, unpack_entries

    run = (Entry(2, 5, Command(1, 1, 1, "put", "k", "v")), Entry(2, 6, SessionClock(1.0, 9.0)))
    for entries in (run, (Entry(2, 4, None),) + run):   # columns; a no-op: plain
        got = unpack_entries(pickle.loads(pack_entries(entries)))
        assert got == entries and list(map(type, got)) == [Entry] * len(entries)
        assert [type(e.command) for e in got] == [type(e.command) for e in entries]
    for bad in [(5, [2], Command, [(1,), (2,)]), (5, [2, 2], [Command], [(1,), (2,)]),
                (5, [2], dict, [()]), {"not": "entries"}]:
        with pytest.raises(ValueError):
            unpack_entries(bad)


def test_any_payload_decodes_or_raises_value_error():
    """Whatever a link's far end pickles, ``wire.decode`` hands back messages or
    raises ValueError, the one error its callers catch (a TypeError from a
    field row that was not a sequence killed the worker that read it)."""
    import pickle

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from raftmp.core.messages import AppendEntriesReply, ClientReply, ClientRequest, Command

    atoms = st.one_of(st.integers(-2, 2), st.text(max_size=2), st.none(),
                      st.sampled_from([ClientReply, ClientRequest, Command,
                                       AppendEntriesReply, dict, int]))
    shapes = st.recursive(atoms, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.tuples(inner, inner),
                                                         st.tuples(inner, inner, inner)),
                          max_leaves=6)
    column = st.lists(shapes, min_size=1, max_size=2)
    forms = st.one_of(st.tuples(column, column),            # (classes, rows)
                      st.tuples(atoms, atoms, column),      # (wrapper, inner class, rows)
                      shapes)

    @settings(max_examples=500, deadline=None)
    @given(forms, st.integers(0, 3))
    def check(payload, count):
        packet = wire.HEADER.pack(1000, 0, count) + pickle.dumps(payload)
        try:
            wire.decode(packet)
        except ValueError:
            pass

    check()
