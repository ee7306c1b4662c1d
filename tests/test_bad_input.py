"""Bad input at every door of a running cluster: garbage on router links, packets
for nowhere, spoofed Raft messages, invalid client requests, console typos.

In each case the garbage is counted where it lands (router ``malformed`` /
``unroutable``, or the receiving worker's ``bad_packets``) and dropped, the
cluster keeps serving, and nothing acknowledged is lost.
"""

from __future__ import annotations

import pickle
import struct
import time
from multiprocessing.connection import Client as connect

import pytest
from conftest import WAIT, assert_readable, assert_same_state, put_all, wait_until

import raftmp
from raftmp.console import Console
from raftmp.core.messages import (
    INVALID,
    AppendEntries,
    AppendEntriesReply,
    ClientReply,
    ClientRequest,
    Command,
    Entry,
    RequestVote,
    RequestVoteReply,
    check_raft_message,
)
from raftmp.transports import wire


def raw_link(cluster, requested: int = wire.ANY, secret: bytes = b""):
    conn = connect(cluster.address, family="AF_UNIX")
    conn.send_bytes(wire.hello(requested, secret))
    assert conn.poll(WAIT), "the router did not answer the hello"
    return conn, wire.HELLO_ID.unpack(conn.recv_bytes())[0]


def router_total(cluster) -> dict:
    return cluster.stats()["router"]["total"]


def bad_packets(cluster) -> dict[int, int]:
    return {i: cluster.node_status(i)["bad_packets"] for i in cluster.alive()}


@pytest.fixture
def cluster(seed):
    with raftmp.Cluster(3, seed=seed) as c:
        yield c


@pytest.fixture
def data(cluster, seed):
    """Some acknowledged writes made before the garbage arrives."""
    kv = cluster.client()
    expected = {f"k{i}": str(i) for i in range(30)}
    put_all(kv, expected, seed)
    return kv, expected


def still_serving(cluster, kv, expected, seed) -> None:
    kv.put("after", "garbage")
    expected["after"] = "garbage"
    assert_readable(kv, expected, seed)
    assert_same_state(cluster, seed, expected=expected)
    assert len(cluster.alive()) == cluster.n
    assert all(s["alive"] for s in cluster.stats()["nodes"])


# --------------------------------------------------------------- router links


def test_garbage_frames_are_counted_and_dropped(cluster, data, seed):
    kv, expected = data
    before = router_total(cluster)
    bad_before = bad_packets(cluster)
    conn, eid = raw_link(cluster)
    try:
        # Frames shorter than a header: the router counts them.
        for frame in (b"", b"x", b"abc", b"\x00" * (wire.HEADER.size - 1)):
            conn.send_bytes(frame)
        wait_until(lambda: router_total(cluster)["malformed"] == before["malformed"] + 4, WAIT,
                   f"4 short frames counted as malformed (seed {seed})")
        # A good header for worker 0 with garbage payloads: forwarded (the router does
        # not look inside), then counted and dropped by the worker.
        garbage = [
            b"\x00garbage\xff" * 10,                           # not a pickle
            pickle.dumps({"not": "a list"}),                   # not a list
            pickle.dumps([1, 2]),                              # count says 1, list has 2
            pickle.dumps(["a str, not a message"]),            # not a message
            pickle.dumps([RequestVote("x", "y", None, [])]),   # a Raft message from a client
            pickle.dumps([ClientRequest(Command(eid, 1, 1, "put", "k", "v"))])[:-3],  # torn
            pickle.dumps(([ClientReply], [5])),                # fields not a sequence: this
            pickle.dumps(([[1]], [()])),                       # and this killed the worker
        ]
        for payload in garbage:
            conn.send_bytes(wire.HEADER.pack(eid, 0, 1) + payload)
        wait_until(lambda: bad_packets(cluster)[0] == bad_before[0] + len(garbage), WAIT,
                   f"node 0 to count {len(garbage)} bad packets (seed {seed}): "
                   f"{bad_packets(cluster)}")
        after = router_total(cluster)
        assert after["malformed"] == before["malformed"] + 4, after
        assert cluster.stats()["router"]["links"][(eid, 0)]["delivered"] == len(garbage)
        # The link still works after all that: a real request on it gets a real answer.
        cmd = Command(eid, 1, 1, "get", "k0")
        conn.send_bytes(wire.encode(eid, cluster.leader(), [ClientRequest(cmd)]))
        assert conn.poll(WAIT), f"seed {seed}: no answer on the raw link"
        _, dst, msgs = wire.decode(conn.recv_bytes())
        assert dst == eid and isinstance(msgs[0], ClientReply)
    finally:
        conn.close()
    still_serving(cluster, kv, expected, seed)


def test_bad_hello_and_absurd_lengths_close_only_that_link(cluster, data, seed):
    kv, expected = data
    before = router_total(cluster)["malformed"]
    # Not a hello as the first frame.
    c1 = connect(cluster.address, family="AF_UNIX")
    c1.send_bytes(b"GET / HTTP/1.0\r\n\r\n")
    # A hello asking for an invalid id.
    c2 = connect(cluster.address, family="AF_UNIX")
    c2.send_bytes(wire.HELLO + wire.HELLO_ID.pack(-7))
    # A valid hello, then a negative frame length.
    c3, _ = raw_link(cluster)
    c3._send(struct.pack("!i", -5) + b"junk")  # raw bytes under the framing
    # A valid hello, then a frame announcing 2 GiB (long form).
    c4, _ = raw_link(cluster)
    c4._send(struct.pack("!iQ", -1, 2**31) + b"junk")
    try:
        wait_until(lambda: router_total(cluster)["malformed"] == before + 4, WAIT,
                   f"4 malformed links counted (seed {seed})")
        for c in (c1, c2, c3, c4):   # the router closed each of them
            assert c.poll(WAIT)
            with pytest.raises(EOFError):
                c.recv_bytes()
    finally:
        for c in (c1, c2, c3, c4):
            c.close()
    still_serving(cluster, kv, expected, seed)


def test_nobody_outside_the_launcher_speaks_as_a_replica(cluster, data, seed):
    """A hello for a node's id without the cluster's secret (or with a wrong
    one) is refused: it can neither take the id nor knock the node off."""
    kv, expected = data
    before = router_total(cluster)["malformed"]
    hellos = [wire.hello(i, secret) for i in cluster.ids
              for secret in (b"", bytes(wire.SECRET_SIZE))]
    for hello in hellos:
        c = connect(cluster.address, family="AF_UNIX")
        try:
            c.send_bytes(hello)
            assert c.poll(WAIT)
            with pytest.raises(EOFError):
                c.recv_bytes()
        finally:
            c.close()
    wait_until(lambda: router_total(cluster)["malformed"] == before + len(hellos), WAIT,
               f"{len(hellos)} refused hellos counted (seed {seed})")
    assert sorted(cluster.stats()["router"]["endpoints"])[:cluster.n] == cluster.ids
    still_serving(cluster, kv, expected, seed)


def test_unknown_destinations_are_counted(cluster, data, seed):
    kv, expected = data
    before = router_total(cluster)
    conn, eid = raw_link(cluster)
    try:
        payload = pickle.dumps([ClientRequest(Command(eid, 1, 1, "get", "k"))])
        for dst in (-5, 999_999, wire.FIRST_CLIENT_ID + 10_000):   # can never exist
            conn.send_bytes(wire.HEADER.pack(eid, dst, 1) + payload)
        conn.send_bytes(wire.HEADER.pack(eid, 7, 1) + payload)      # no such worker (yet)
        wait_until(lambda: router_total(cluster)["unroutable"] == before["unroutable"] + 3,
                   WAIT, f"3 unroutable packets counted (seed {seed})")
        wait_until(lambda: router_total(cluster)["dropped_no_link"]
                   == before["dropped_no_link"] + 1, WAIT, f"the packet to node 7 dropped "
                   f"(seed {seed})")
        assert not conn.poll(0.2), "nobody may answer a packet that went nowhere"
    finally:
        conn.close()
    still_serving(cluster, kv, expected, seed)


def test_spoofed_raft_messages_from_a_client_are_rejected(cluster, data, seed):
    """A client endpoint cannot speak for a node: the router stamps src with the link's
    id, so a RequestVote with a huge term (claiming src 1 in its header) is dropped
    by the worker, and no term moves."""
    kv, expected = data
    terms = {i: cluster.node_status(i)["term"] for i in cluster.ids}
    bad_before = bad_packets(cluster)
    conn, _ = raw_link(cluster)
    try:
        for dst in cluster.ids:
            rv = RequestVote(terms[dst] + 100, 1, 10**6, terms[dst] + 99)
            ae = AppendEntries(terms[dst] + 100, 1, 0, 0, (), 10**6, 1)
            conn.send_bytes(wire.HEADER.pack(1, dst, 2) + pickle.dumps([rv, ae]))
        wait_until(lambda: all(bad_packets(cluster)[i] == bad_before[i] + 2
                               for i in cluster.ids), WAIT,
                   f"every node to reject 2 spoofed messages (seed {seed})")
    finally:
        conn.close()
    for i in cluster.ids:
        assert cluster.node_status(i)["term"] < terms[i] + 100, f"seed {seed}: node {i}"
    still_serving(cluster, kv, expected, seed)


MALFORMED = [
    AppendEntries(1, 2, 3, 1, (Entry(1, 5, "x"),), 0, 1),          # not at prev_index + 1
    AppendEntries(1, 2, 0, 0, (Entry(1, 1, "x"), Entry(1, 3, "y")), 0, 1),   # a gap
    AppendEntries(1, 2, 0, 0, (Entry(2, 1, "x"),), 0, 1),           # entry after its term
    AppendEntries(2, 2, 1, 1, (Entry(1, 2, "x"), Entry(0, 3, "y")), 0, 1),   # terms go back
    AppendEntries("1", 2, 0, 0, (), 0, 1),                          # wrong types
    AppendEntries(1, 2, 0, 0, [Entry(1, 1, "x")], 0, 1),
    AppendEntries(1, 2, 0, 0, ("not an entry",), 0, 1),
    AppendEntries(1, 2, -1, 0, (), 0, 1),
    AppendEntriesReply(1, 2, "yes", 0, 0, 0, 1),
    RequestVote(None, 2, 0, 0),
    RequestVoteReply(1, 2, 1),
    AppendEntries(1, 0, 0, 0, (), 0, 1),                            # not its sender (2)
]


@pytest.mark.parametrize("m", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_raft_message_is_named(m):
    assert check_raft_message(m, 2)


def test_well_formed_raft_messages_pass():
    for m in [AppendEntries(3, 2, 4, 1, (Entry(1, 5, "x"), Entry(3, 6, None)), 5, 7),
              AppendEntries(3, 2, 0, 0, (), 0, 1), AppendEntriesReply(3, 2, False, 4, 2, 3, 0),
              RequestVote(4, 2, 10, 3, True), RequestVoteReply(4, 2, True)]:
        assert check_raft_message(m, 2) is None, m


def test_malformed_messages_from_a_replica_id_are_counted_and_dropped(cluster, data, seed):
    """A broken replica (it holds the cluster's secret) on a dead node's id sends
    inconsistent, ill-typed and undecodable Raft messages: each live
    worker drops and counts every one, and keeps serving (before issue 8
    an AppendEntries whose entries did not follow prev_index tripped an
    assertion and killed the worker)."""
    kv, expected = data
    cluster.kill(2)
    bad_before = bad_packets(cluster)
    conn, eid = raw_link(cluster, 2, cluster.secret)
    assert eid == 2
    try:
        blob = pickle.dumps((Entry(1, 9, "x"),))             # the worker's wire form
        undecodable = AppendEntries(1, 2, 0, 0, b"\x80garbage", 0, 1)
        sent = MALFORMED + [AppendEntries(1, 2, 3, 1, blob, 0, 1), undecodable]
        for dst in (0, 1):
            conn.send_bytes(wire.HEADER.pack(2, dst, len(sent)) + pickle.dumps(sent))
        wait_until(lambda: all(bad_packets(cluster)[i] == bad_before[i] + len(sent)
                               for i in (0, 1)), WAIT,
                   f"nodes 0 and 1 to drop {len(sent)} messages each (seed {seed}): "
                   f"{bad_packets(cluster)}")
    finally:
        conn.close()
    assert cluster.alive() == [0, 1]
    kv.put("during", "kill")
    expected["during"] = "kill"
    cluster.restart(2)
    still_serving(cluster, kv, expected, seed)


def test_ill_typed_client_request_gets_an_invalid_reply(cluster, data, seed):
    """A request that bypasses the client's checks is refused by the node, not applied."""
    kv, expected = data
    conn, eid = raw_link(cluster)
    try:
        leader = cluster.leader()
        bad = [Command(eid, 1, 1, "put", 42, "v"), Command(eid, 2, 1, "explode", "k", "v"),
               Command(eid, 3, 1, "put", "k0", "x" * (cluster.limits.max_value_bytes + 1))]
        conn.send_bytes(wire.encode(eid, leader, [ClientRequest(c) for c in bad]))
        replies = []
        deadline = time.monotonic() + WAIT
        while len(replies) < len(bad) and conn.poll(max(0.0, deadline - time.monotonic())):
            replies += wire.decode(conn.recv_bytes())[2]
        assert sorted((r.seq, r.status) for r in replies) == [(1, INVALID), (2, INVALID),
                                                              (3, INVALID)], replies
        assert all(isinstance(r.result, str) and r.result for r in replies), replies
    finally:
        conn.close()
    still_serving(cluster, kv, expected, seed)


# ------------------------------------------------------------ client requests


def client_packets(cluster, endpoint: int) -> int:
    links = cluster.stats()["router"]["links"]
    return sum(c["packets"] for (src, _), c in links.items() if src == endpoint)


def test_invalid_requests_raise_before_sending(seed):
    limits = raftmp.Limits(max_key_bytes=16, max_value_bytes=100)
    with raftmp.Cluster(3, seed=seed, limits=limits) as cluster:
        kv = cluster.client()
        kv.put("k", "v")
        sent = client_packets(cluster, kv.endpoint)
        assert sent >= 1
        cases = [
            (lambda: kv.put("k", "x" * 101), "value longer than 100 bytes"),
            (lambda: kv.put("k", "é" * 51), "value longer than 100 bytes"),   # bytes, not chars
            (lambda: kv.put("k" * 17, "v"), "key longer than 16 bytes"),
            (lambda: kv.put(5, "v"), "key must be str, not int"),
            (lambda: kv.get(b"k"), "key must be str, not bytes"),
            (lambda: kv.get(None), "key must be str, not NoneType"),
            (lambda: kv.put("k", 1), "value must be str, not int"),
            (lambda: kv.put("k", None), "put needs a value"),
            (lambda: kv.cas("k", 1, "v"), "expected must be str, not int"),
            (lambda: kv.cas("k", "v", "x" * 101), "value longer than 100 bytes"),
            (lambda: kv.delete(["k"]), "key must be str, not list"),
        ]
        for call, message in cases:
            with pytest.raises(raftmp.InvalidRequest, match=message):
                call()
        # Nothing left the client, and nothing is pending.
        # The client has no thread: what it sends it writes in poll(), from its outbox.
        assert kv.in_flight == 0 and kv.session.outbox == []
        assert client_packets(cluster, kv.endpoint) == sent, f"seed {seed}"
        # Within the limits it works, and the refused operations changed nothing.
        assert isinstance(raftmp.InvalidRequest("x"), (ValueError, raftmp.RaftmpError))
        kv.put("k" * 16, "é" * 50)
        assert kv.get("k" * 16) == "é" * 50
        assert kv.get("k") == "v"


def test_console_reports_errors_and_keeps_going(cluster, data, seed):
    kv, expected = data
    lines: list[str] = []
    console = Console(cluster, out=lines.append)
    script = ["frobnicate", "put onlykey", "get a b c", "kill x", "kill 17", "restart 0",
              "partition 0", "faults drop", "faults nosuch=1", "faults delay=a,b",
              "put 'open", "put k" + "x" * 2000 + " v", "kill abc", "faults drop=2",
              "remove_node 17", "transfer_leader x", "add_node 3",
              "", "   ", "PUT upper case", "get upper"]
    for cmd in script:
        assert console.execute(cmd) is True, f"console stopped at {cmd!r}"
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 17, f"seed {seed}: {lines}"
    assert errors[0] == "error: unknown command 'frobnicate' (try 'help')"
    assert all("Traceback" not in ln and "Error:" not in ln for ln in lines), lines
    assert errors[1] == "error: usage: put KEY VALUE", errors
    assert errors[3].startswith("error: usage: kill N"), errors
    assert "longer than" in errors[11], errors[11]
    assert "quotation" in errors[10].lower(), errors[10]
    assert "running" in errors[5] and "no node 17" in errors[4], errors
    assert errors[12] == "error: usage: kill N  (N: a node, 0-2; not 'abc')", errors
    assert "drop" in errors[13] and "[0, 1]" in errors[13], errors
    assert "no node 17" in errors[14] and "usage: transfer_leader N" in errors[15], errors
    assert errors[16] == "error: usage: add_node", errors
    assert lines[-2:] == ["ok", "case"], lines      # commands are case-insensitive
    expected["upper"] = "case"
    # delay is in milliseconds, with a warning above a second.
    lines.clear()
    console.execute("faults delay=5,20")
    assert cluster.faults.delay == (0.005, 0.020) and lines[-1].endswith("delay=5,20 ms"), lines
    console.execute("faults delay=1500")
    assert lines[-1].startswith("warning: a delay above 1000 ms"), lines
    console.execute("faults delay=0")
    assert cluster.faults.delay == (0.0, 0.0)
    assert console.execute("quit") is False
    still_serving(cluster, kv, expected, seed)
