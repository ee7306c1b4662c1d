"""A RESP2 (Redis protocol) front end: one connection is one client session.

``RespConn`` turns the commands on one connection into the node's
``ClientRequest``s, under one session (a random client id, seqs counting up),
and their ``ClientReply``s back into RESP replies, in order (a pipelined
connection gets its answers in the order it asked). Commands:

    PING ECHO GET SET DEL EXISTS MGET INCR INCRBY DECR DECRBY
    SETNX key value            set if absent: 1 or 0
    CAS key expected new       set if the value is ``expected``: 1 or 0
    INFO CONFIG GET, CLIENT SETINFO|SETNAME, COMMAND, SELECT 0, QUIT

Replies come in the order the commands were sent, and each command sees
the ones before it on its connection: writes may be pipelined together, and
reads together, but a read waits for the writes before it and a write for
the reads before it (otherwise a read could be answered before an earlier
write commits, or after a later one).

Reads go through the node like any request: the leader answers them by
lease or ReadIndex (``Config.read_mode``), never from a follower's state. A
follower answers ``-MOVED 0 host:port`` (the leader's RESP address) or,
with no leader known for ``PARK_LIMIT`` seconds, ``-CLUSTERDOWN``. A leader
that lost its term before a write's outcome was known answers RETRY: the
write is sent again with the same seq (the session table applies it once),
until ``RETRY_LIMIT``; so is a request left unanswered for ``RESEND``
seconds (a leader deposed in the meantime forgets it). A write that may
have been applied and cannot be finished (the node no longer leads, or
``GIVE_UP`` passed) is answered ``-TRYAGAIN``, not ``-MOVED``: its outcome
is unknown. A client that sends it again, on this connection or a new one,
sends a new request, which may be applied twice.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Optional

from ..core.kv import parse_int64
from ..core.messages import EXPIRED, INVALID, OK, REDIRECT, ClientReply, Command

INF = float("inf")
MAX_BULK = 1 << 20          # bytes of one argument
MAX_ARGS = 1 << 16          # arguments of one command
MAX_INLINE = 64 << 10       # bytes of an inline command line
PARK_RECHECK = 0.05         # s between offers of a command while no leader is known
PARK_LIMIT = 1.0            # s before such a command is answered -CLUSTERDOWN
RETRY_LIMIT = 5.0           # s a command told RETRY is sent again
RESEND = 1.0                # s without an answer before a request is sent again
GIVE_UP = 10.0              # s without an outcome before a command is answered with an error


class ProtocolError(ValueError):
    pass


def bulk(b: Optional[bytes]) -> bytes:
    return b"$-1\r\n" if b is None else b"$%d\r\n%s\r\n" % (len(b), b)


def array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def error(text: str) -> bytes:
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def raw(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode("utf-8", "surrogateescape")


class Parser:
    """RESP2 request parsing: arrays of bulk strings, or inline commands."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[list[bytes]]:
        self.buf += data
        out = []
        while True:
            cmd, used = self._one()
            if used == 0:
                return out
            del self.buf[:used]
            if cmd:
                out.append(cmd)

    def _one(self) -> tuple[list[bytes], int]:
        buf = self.buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > MAX_INLINE:
                raise ProtocolError("Protocol error: too big request")
            return [], 0
        if buf[:1] != b"*":
            return [bytes(a) for a in bytes(buf[:end]).split()], end + 2
        n = _number(buf[1:end], MAX_ARGS)
        pos, args = end + 2, []
        for _ in range(n):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return [], 0
            if buf[pos:pos + 1] != b"$":
                raise ProtocolError("Protocol error: expected '$'")
            size = _number(buf[pos + 1:end], MAX_BULK)
            if len(buf) < end + 2 + size + 2:
                return [], 0
            args.append(bytes(buf[end + 2:end + 2 + size]))
            pos = end + 2 + size + 2
        return args, pos


def _number(b: bytes, limit: int) -> int:
    if not b.isdigit() or int(b) > limit:
        raise ProtocolError(f"Protocol error: invalid length {bytes(b)[:20]!r}")
    return int(b)


class Slot:
    """One command's answer, made of its parts' results once all have come."""

    def __init__(self, name: str, parts: int, now: float) -> None:
        self.name = name
        self.results: list[Any] = [None] * parts
        self.waiting = parts
        self.out: Optional[bytes] = None
        self.since = now
        self.unsure = False         # a write of it may have been applied (sent again)


class RespConn:
    def __init__(self, link: Any, endpoint: int) -> None:
        self.link = link            # resp_address(node), status(), me
        self.endpoint = endpoint
        self.parser = Parser()
        self.client_id = int.from_bytes(os.urandom(8), "big") >> 1
        self.next_seq = 1
        self.has_session = False    # acked stays 1 until a write of ours was applied
        self.slots: deque[Slot] = deque()
        self.pending: dict[int, tuple[Slot, int, Command]] = {}  # seq -> (slot, part, command)
        self.retry: dict[int, float] = {}                        # seq -> when to send again
        self.sent_at: dict[int, float] = {}      # seq -> when last sent (oldest first)
        self.queued: deque[tuple[bool, Slot, list[tuple]]] = deque()   # (is a read, slot, ops)
        self.reading = False        # whether what is in flight (``pending``) are reads
        self.ready: list[Command] = []
        self.output = bytearray()
        self.closed = False

    # ------------------------------------------------------------- the link's side

    def feed(self, data: bytes, now: float) -> None:
        """Take the commands in ``data``; their requests come from ``due``."""
        try:
            commands = self.parser.feed(data)
        except ProtocolError as exc:
            self._immediate(error(f"ERR {exc}"), now)
            self.closed = True
            return
        for args in commands:
            if self.closed:
                break
            self._command(args, now)
        self._release(now)

    def answer(self, reply: ClientReply, now: float) -> None:
        entry = self.pending.get(reply.seq)
        if entry is None or reply.client_id != self.client_id or reply.seq in self.retry:
            return
        slot, part, cmd = entry
        if reply.status == OK:
            del self.pending[reply.seq]
            self.sent_at.pop(reply.seq, None)
            if cmd.op != "get":
                self.has_session = True
            slot.results[part] = reply.result
            slot.waiting -= 1
            if slot.waiting == 0 and slot.out is None:
                slot.out = self._result(slot)
            self._release(now)
            return
        if reply.status == EXPIRED:   # the cluster forgot this session: fail all, start another
            self.client_id = int.from_bytes(os.urandom(8), "big") >> 1
            self.has_session = False
            for s, _, _ in list(self.pending.values()):
                self._fail(s, error(f"ERR {reply.result}"), now)
        elif reply.status == INVALID:
            self._fail(slot, error(f"ERR {reply.result}"), now)
        elif slot.unsure and (reply.status == REDIRECT and reply.leader is not None
                              or now - slot.since >= RETRY_LIMIT):
            self._fail(slot, self._unknown(reply.leader), now)
        elif reply.status == REDIRECT and reply.leader is not None:
            where = self.link.resp_address(reply.leader)
            self._fail(slot, error(f"MOVED 0 {where}") if where is not None else
                       error("CLUSTERDOWN the leader's RESP address is not known yet"), now)
        elif now - slot.since < (PARK_LIMIT if reply.status == REDIRECT else RETRY_LIMIT):
            self.retry[reply.seq] = now + PARK_RECHECK   # no leader known, or RETRY: again
            slot.unsure |= reply.status != REDIRECT and cmd.op != "get"
        else:
            self._fail(slot, error("CLUSTERDOWN no leader"), now)

    def due(self, now: float) -> list[Command]:
        """The requests to send now: new ones, and ones to send again (told to
        retry, or unanswered for ``RESEND`` s; given up after ``GIVE_UP`` s)."""
        seqs = [seq for seq, at in self.retry.items() if at <= now]
        for seq, at in self.sent_at.items():
            if at + RESEND > now:
                break     # oldest first: the rest are younger
            if seq not in self.retry:
                seqs.append(seq)
        out, self.ready = self.ready, []
        for seq in seqs:
            self.retry.pop(seq, None)
            if seq not in self.pending:
                continue
            slot, _, cmd = self.pending[seq]
            if now - slot.since >= GIVE_UP:
                self._fail(slot, self._unknown(None) if slot.unsure or cmd.op != "get"
                           else error("CLUSTERDOWN no answer"), now)
                continue
            slot.unsure |= cmd.op != "get"
            self._sent(seq, now)
            out.append(cmd._replace(acked=self._acked()))
        out += self.ready     # released by a failure just above
        self.ready = []
        return out

    def next_deadline(self) -> float:
        if self.ready:
            return -INF
        oldest = next(iter(self.sent_at.values()), INF) + RESEND
        return min(oldest, min(self.retry.values(), default=INF))

    def take_output(self) -> bytes:
        while self.slots and self.slots[0].out is not None:
            self.output += self.slots.popleft().out
        out, self.output = bytes(self.output), bytearray()
        return out

    # ------------------------------------------------------------------ helpers

    def _acked(self) -> int:
        if not self.has_session:
            return 1
        return next(iter(self.pending), self.next_seq)   # seqs go in in order: the lowest

    def _sent(self, seq: int, now: float) -> None:
        self.sent_at.pop(seq, None)
        self.sent_at[seq] = now       # to the end: the dict stays oldest first

    def _request(self, slot: Slot, part: int, now: float, op: str, key: str,
                 value: Optional[str] = None, expected: Optional[str] = None) -> Command:
        seq = self.next_seq
        self.next_seq += 1
        cmd = Command(self.client_id, seq, 0, op, key, value, expected)
        self.pending[seq] = (slot, part, cmd)
        self._sent(seq, now)
        return cmd._replace(acked=self._acked())

    def _unknown(self, leader: Optional[int]) -> bytes:
        where = self.link.resp_address(leader)
        return error("TRYAGAIN the leader changed; the write may or may not have been applied"
                     + (f" (the leader is now {where})" if where else ""))

    def _fail(self, slot: Slot, out: bytes, now: float) -> None:
        for seq in [s for s, (sl, _, _) in self.pending.items() if sl is slot]:
            del self.pending[seq]
            self.retry.pop(seq, None)
            self.sent_at.pop(seq, None)
        if slot.out is None:
            slot.out = out
        self._release(now)

    def _release(self, now: float) -> None:
        """Send the queued commands that may go: the next ones of the kind in
        flight, or of the other kind once nothing is in flight."""
        while self.queued and (not self.pending or self.queued[0][0] == self.reading):
            self.reading, slot, ops = self.queued.popleft()
            self.ready += [self._request(slot, i, now, *op) for i, op in enumerate(ops)]

    def _immediate(self, out: bytes, now: float) -> None:
        slot = Slot("", 0, now)
        slot.out = out
        self.slots.append(slot)

    def _command(self, args: list[bytes], now: float) -> None:
        name = text(args[0]).upper()
        a = [text(x) for x in args[1:]]
        spec = _ARITY.get(name)
        if spec is None:
            return self._immediate(error(f"ERR unknown command '{name[:40]}'"), now)
        low, high = spec
        if not low <= len(a) <= high:
            return self._immediate(
                error(f"ERR wrong number of arguments for '{name.lower()}' command"), now)
        local = self._local(name, a, args)
        if local is not None:
            return self._immediate(local, now)
        if name == "SET" and len(a) > 2:
            return self._immediate(error("ERR SET options (expiry, NX, XX, GET) are not "
                                         "supported: raftmp keys do not expire"), now)
        if name in ("INCR", "DECR", "INCRBY", "DECRBY"):
            delta = a[1] if len(a) > 1 else "1"
            if delta is None or parse_int64(delta) is None:
                return self._immediate(error("ERR value is not an integer or out of range"), now)
            if name.startswith("DECR"):
                delta = delta[1:] if delta.startswith("-") else "-" + delta
                if delta == "-0":
                    delta = "0"
            ops = [("incr", a[0], delta, None)]
        else:
            ops = _OPS[name](a)
        slot = Slot(name, len(ops), now)
        self.slots.append(slot)
        self.queued.append((all(op[0] == "get" for op in ops), slot, ops))

    def _local(self, name: str, a: list[str], args: list[bytes]) -> Optional[bytes]:
        """The answer of a command the node need not see, or None."""
        if name == "PING":
            return b"+PONG\r\n" if not a else bulk(args[1])
        if name == "ECHO":
            return bulk(args[1])
        if name == "QUIT":
            self.closed = True
            return b"+OK\r\n"
        if name == "SELECT":
            return b"+OK\r\n" if a[0] == "0" else error("ERR DB index is out of range")
        if name == "COMMAND":
            return integer(0) if a and a[0].upper() == "COUNT" else array([])
        if name == "CLIENT":
            sub = a[0].upper()
            if sub in ("SETINFO", "SETNAME"):
                return b"+OK\r\n"
            if sub == "ID":
                return integer(self.endpoint)
            return error(f"ERR unknown subcommand '{a[0][:40]}' for 'client'")
        if name == "CONFIG":
            if a[0].upper() != "GET" or len(a) != 2:
                return error("ERR only CONFIG GET parameter is supported")
            known = {"save": "", "appendonly": "no", "databases": "1"}
            return array([bulk(x.encode()) for k, v in known.items()
                          if a[1].lower() in (k, "*") for x in (k, v)])
        if name == "INFO":
            return bulk(info(self.link.status()).encode())
        return None

    def _result(self, slot: Slot) -> bytes:
        r, name = slot.results, slot.name
        if name == "GET":
            return bulk(raw(r[0]))
        if name == "MGET":
            return array([bulk(raw(v)) for v in r])
        if name == "SET":
            return b"+OK\r\n"
        if name in ("DEL", "EXISTS"):
            return integer(sum(1 for v in r if (v is True if name == "DEL" else v is not None)))
        if name in ("SETNX", "CAS"):
            return integer(1 if r[0] else 0)
        if r[0] is None:      # INCR family
            return error("ERR increment or decrement would overflow, or the value is not "
                         "an integer")
        return integer(r[0])


# name -> (fewest, most) arguments after the name
_ARITY = {"PING": (0, 1), "ECHO": (1, 1), "GET": (1, 1), "SET": (2, 10), "DEL": (1, MAX_ARGS),
          "EXISTS": (1, MAX_ARGS), "MGET": (1, MAX_ARGS), "INCR": (1, 1), "DECR": (1, 1),
          "INCRBY": (2, 2), "DECRBY": (2, 2), "SETNX": (2, 2), "CAS": (3, 3), "INFO": (0, 1),
          "CONFIG": (1, 3), "CLIENT": (1, 10), "COMMAND": (0, 10), "SELECT": (1, 1),
          "QUIT": (0, 0)}
# name -> the store operations (op, key, value, expected) of its arguments
_OPS = {
    "GET": lambda a: [("get", a[0])],
    "MGET": lambda a: [("get", k) for k in a],
    "EXISTS": lambda a: [("get", k) for k in a],
    "SET": lambda a: [("put", a[0], a[1])],
    "DEL": lambda a: [("delete", k) for k in a],
    "SETNX": lambda a: [("cas", a[0], a[1], None)],
    "CAS": lambda a: [("cas", a[0], a[2], a[1])],
}


def info(status: dict) -> str:
    """INFO's text: a server section and a raft section of ``status`` (``Worker.status``)."""
    lines = ["# Server", "redis_version:7.0.0", "raftmp:1", f"process_id:{os.getpid()}", "",
             "# Raft"]
    for k in ("node", "role", "term", "leader", "commit", "applied", "log", "keys",
              "snapshot", "sessions"):
        if k in status:
            lines.append(f"raft_{k}:{'' if status[k] is None else status[k]}")
    return "\r\n".join(lines) + "\r\n"
