"""The RESP2 front end (``transports/resp.py``) without sockets: parsing, a
connection's order, retries under one session, and what each refusal becomes."""

from __future__ import annotations

from typing import Optional

import pytest

from raftmp.core.messages import EXPIRED, OK, REDIRECT, RETRY, ClientReply
from raftmp.transports.resp import GIVE_UP, PARK_LIMIT, RESEND, Parser, ProtocolError, RespConn


class FakeLink:
    def resp_address(self, node: Optional[int]) -> Optional[str]:
        return None if node is None else f"10.0.0.{node}:6379"

    def status(self) -> dict:
        return {"node": 1, "role": "leader", "term": 3}


def command(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode())
                                              for a in args)


def conn() -> RespConn:
    return RespConn(FakeLink(), 7)


def ok(c: RespConn, cmd, result=None) -> None:
    c.answer(ClientReply(cmd.client_id, cmd.seq, OK, result), 0.0)


def test_the_parser_takes_arrays_split_anywhere_and_inline_commands() -> None:
    data = command("SET", "k", "a b\r\nc") + b"PING hello\r\n" + command("GET", "")
    for cut in range(len(data)):
        p = Parser()
        got = p.feed(data[:cut]) + p.feed(data[cut:])
        assert got == [[b"SET", b"k", b"a b\r\nc"], [b"PING", b"hello"], [b"GET", b""]], cut


@pytest.mark.parametrize("bad", [b"*1\r\n:5\r\n", b"*x\r\n", b"*1\r\n$-5\r\n",
                                 b"*1\r\n$99999999999\r\n", b"x" * 70000])
def test_the_parser_refuses_what_is_not_resp(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        Parser().feed(bad)


def test_a_protocol_error_is_answered_and_closes() -> None:
    c = conn()
    c.feed(b"*1\r\n$-5\r\n", 0.0)
    assert c.take_output().startswith(b"-ERR Protocol error") and c.closed


def test_reads_wait_for_the_writes_before_them_and_replies_keep_order() -> None:
    c = conn()
    c.feed(command("SET", "a", "1") + command("SET", "b", "2") + command("GET", "a")
           + b"PING\r\n" + command("SET", "a", "3"), 0.0)
    first = c.due(0.0)
    assert [(m.op, m.key) for m in first] == [("put", "a"), ("put", "b")]   # writes together
    assert c.take_output() == b""              # PING's answer waits its turn
    ok(c, first[1])
    assert c.due(0.0) == []                    # the GET waits for both writes
    ok(c, first[0])
    (get,) = c.due(0.0)
    assert get.op == "get"
    assert c.take_output() == b"+OK\r\n+OK\r\n"
    ok(c, get, "1")
    (put,) = c.due(0.0)
    assert (put.op, put.value) == ("put", "3")
    ok(c, put)
    assert c.take_output() == b"$1\r\n1\r\n+PONG\r\n+OK\r\n"


def test_one_session_acked_stays_1_until_a_write_is_applied() -> None:
    c = conn()
    c.feed(command("GET", "x") + command("SET", "x", "1") + command("SET", "y", "1"), 0.0)
    (get,) = c.due(0.0)
    assert get.acked == 1
    ok(c, get)
    w1, w2 = c.due(0.0)
    assert w1.client_id == w2.client_id == get.client_id and (w1.seq, w2.seq) == (2, 3)
    assert w1.acked == w2.acked == 1
    ok(c, w1)
    c.feed(command("SET", "z", "1"), 0.0)
    (w3,) = c.due(0.0)
    assert w3.acked == 3                        # seq 3 is still waiting


def test_a_follower_redirect_is_moved_and_no_leader_is_clusterdown() -> None:
    c = conn()
    c.feed(command("GET", "x"), 0.0)
    (get,) = c.due(0.0)
    c.answer(ClientReply(get.client_id, get.seq, REDIRECT, None, 2), 0.0)
    assert c.take_output() == b"-MOVED 0 10.0.0.2:6379\r\n"
    c.feed(command("SET", "x", "1"), 0.0)
    (put,) = c.due(0.0)
    t, out = 0.0, b""
    for _ in range(100):
        c.answer(ClientReply(put.client_id, put.seq, REDIRECT, None, None), t)
        out = c.take_output()
        if out:
            break
        t = c.next_deadline()                   # offered again, the same request
        (again,) = c.due(t)
        assert again.seq == put.seq
    assert out == b"-CLUSTERDOWN no leader\r\n" and t >= PARK_LIMIT


def test_a_write_sent_again_after_retry_is_the_same_request_and_ends_tryagain_not_moved():
    c = conn()
    c.feed(command("INCR", "n"), 0.0)
    (incr,) = c.due(0.0)
    c.answer(ClientReply(incr.client_id, incr.seq, RETRY, None, None), 0.0)
    (again,) = c.due(c.next_deadline())
    assert (again.client_id, again.seq, again.op) == (incr.client_id, incr.seq, "incr")
    c.answer(ClientReply(incr.client_id, incr.seq, REDIRECT, None, 2), 0.1)
    out = c.take_output()
    assert out.startswith(b"-TRYAGAIN") and b"10.0.0.2:6379" in out   # not -MOVED: may be applied


def test_an_unanswered_request_is_sent_again_then_given_up() -> None:
    c = conn()
    c.feed(command("SET", "x", "1"), 0.0)
    (put,) = c.due(0.0)
    assert c.next_deadline() == RESEND
    (again,) = c.due(RESEND)
    assert again.seq == put.seq
    t, out = RESEND, b""
    while not out:
        t = c.next_deadline()
        assert t <= GIVE_UP + RESEND
        c.due(t)
        out = c.take_output()
    assert t >= GIVE_UP and out.startswith(b"-TRYAGAIN")


def test_an_expired_session_fails_every_waiting_command_and_starts_another() -> None:
    c = conn()
    c.feed(command("SET", "x", "1") + command("SET", "y", "1"), 0.0)
    a, b = c.due(0.0)
    c.answer(ClientReply(a.client_id, a.seq, EXPIRED, "session expired"), 0.0)
    assert c.take_output() == b"-ERR session expired\r\n" * 2
    c.feed(command("SET", "x", "1"), 0.0)
    (fresh,) = c.due(0.0)
    assert fresh.client_id != a.client_id and fresh.acked == 1
