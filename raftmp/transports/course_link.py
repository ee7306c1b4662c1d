"""``CourseLink``: the CS3700 simulator's JSON over UDP, a transport for ``worker.Worker``.

What the course needs, and where it is done here:

* Only datagrams from the simulator's socket (the port we were given): the
  simulator sends everything from it, and anything else on this host could
  otherwise speak as a peer or a client (dropped and counted).
* A ``hello`` before any other datagram (the simulator learns our port from
  it): ``CourseLink.__init__`` sends it first thing; no peer hears from us
  before the first election timeout (2 s).
* Raft messages travel as ``jsonwire`` arrays, never pickles; all of a turn's
  messages to one peer go in one datagram (the judge counts datagrams), split
  below ``MAX_DATAGRAM`` bytes.
* Client ``get``/``put`` with a ``MID`` become ``ClientRequest``s of client
  ``int(src, 16)``, seq spelling the client's address and the MID
  (``request_seq``: each MID is one request, and any leader that applies a
  put can answer it, wherever it was taken). Each MID gets at most one
  answer: ``ok`` (with ``value`` for a get), ``redirect``, or ``fail`` (an
  invalid request); nothing after a non-ok one.
* A follower that heard from a leader within 1.5 heartbeat intervals
  redirects to it. With no such leader (an election is on) a request is held
  and offered to the node again every ``PARK_RECHECK`` s, for up to
  ``PARK_LIMIT`` s, then redirected to ``FFFF`` (any replica): no redirect
  ping-pong while nobody can answer. (Right after a leader is killed the
  others still name it for up to those 1.5 intervals, and the simulator sends
  the client to a random replica each time: a short ping-pong.)
* ``leader`` in every datagram is a replica id or ``FFFF``: the simulator
  reads it to pick whom ``kill_leader`` kills.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from ..core.kv import Limits
from ..core.messages import INVALID, OK, ClientReply, ClientRequest, Command, check_raft_message
from . import jsonwire

log = logging.getLogger("raftmp.cs3700")

INF = float("inf")
UNKNOWN = "FFFF"            # the course's "no leader" and "broadcast" address
MAX_DATAGRAM = 60_000       # bytes; the simulator reads 65535 at most
MAX_READS = 512             # datagrams read per turn (then the turn goes on)
PARK_RECHECK = 0.05         # s between offers of a held request to the node
PARK_LIMIT = 1.0            # s a request is held before it is redirected to FFFF
MAX_CARRIED = 64            # bytes of client address + MID a seq spells out (request_seq)
ANSWERED_KEPT = 4096        # requests taken elsewhere and answered here, remembered
# Course values are 32 characters; these bounds keep one entry, JSON-escaped,
# well inside a datagram (at most 6 bytes per character).
COURSE_LIMITS = Limits(max_key_bytes=1024, max_value_bytes=8 * 1024)


def is_address(s: Any) -> bool:
    """A course address: 4 hex digits."""
    if type(s) is not str or len(s) != 4:
        return False
    try:
        int(s, 16)
    except ValueError:
        return False
    return True


def request_seq(client: str, mid: str) -> int:
    """The seq standing for the request ``mid`` of ``client``: every MID is a new
    request. It spells the client's address and the MID (``request_of`` reads
    them back), so the entry in the log says whom to answer and under which
    MID: any replica that applies it as leader can answer it, even when the
    one that took it is gone. A MID too long to carry (the course's are 16
    characters) stands as a hash, answerable only where it was taken."""
    text = (client + mid).encode("utf-8", "surrogatepass")
    if len(text) > MAX_CARRIED:
        return int.from_bytes(b"\x02" + hashlib.blake2b(text, digest_size=8).digest(), "big")
    return int.from_bytes(b"\x01" + text, "big")


def request_of(seq: int) -> Optional[tuple[str, str]]:
    """(client address, MID) that ``request_seq`` spelled into ``seq``, or None."""
    raw = seq.to_bytes((seq.bit_length() + 7) // 8, "big")
    if raw[:1] != b"\x01":
        return None
    try:
        text = raw[1:].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    client = text[:4]
    return (client, text[4:]) if is_address(client) else None


@dataclass
class Waiting:
    """A client request this replica owes one answer."""

    mid: str
    client: str             # the client's address
    request: ClientRequest
    since: float            # when it arrived
    retry_at: float = INF   # while held: when to offer it to the node again


class CourseLink:
    """One UDP socket to the simulator; a transport for ``worker.Worker``."""

    def __init__(self, sim_port: int, me: str, others: list[str]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("localhost", 0))
        self.sim = ("localhost", sim_port)
        # The simulator sends every datagram from this one socket: whatever
        # comes from another address is not the course's (dropped, counted).
        self.sim_addresses = {info[4] for info in socket.getaddrinfo(
            "localhost", sim_port, socket.AF_INET, socket.SOCK_DGRAM)}
        self.me = me
        self.names = {int(name, 16): name for name in [me, *others]}
        self.peers = {name: int(name, 16) for name in others}
        self.sock.setblocking(False)
        self._sendto({"src": me, "dst": UNKNOWN, "leader": UNKNOWN, "type": "hello"})
        self.waiting: dict[tuple[int, int], Waiting] = {}
        self.held: set[tuple[int, int]] = set()
        # Requests answered here (the last ANSWERED_KEPT): a write another
        # replica took is answered here at most once.
        self.answered: dict[tuple[int, int], None] = {}
        # Set by whoever drives the node: the leader this replica would name now.
        self.known_leader: Callable[[float], Optional[int]] = lambda now: None

    def fileno(self) -> int:
        return self.sock.fileno()

    def next_deadline(self) -> float:
        return min((self.waiting[k].retry_at for k in self.held), default=INF)

    def pickled(self, entries: list) -> None:
        return None  # storage pickles them itself: nothing that arrived here was a pickle

    def close(self) -> None:
        self.sock.close()

    # ----------------------------------------------------------------- receive

    def receive(self, now: float, readable: bool,
                reject: Callable[[str], None]) -> list[tuple[int, Any]]:
        out: list[tuple[int, Any]] = []
        for _ in range(MAX_READS if readable else 0):
            try:
                data, sender = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:  # an earlier send found no simulator socket
                continue
            if sender not in self.sim_addresses:
                reject(f"a datagram from {sender}, not the simulator")
                continue
            out.extend(self.decode(data, now, reject))
        if self.held:
            due = [k for k in self.held if self.waiting[k].retry_at <= now]
            for k in due:
                self.held.discard(k)
                w = self.waiting[k]
                w.retry_at = INF
                out.append((k[0], w.request))
        return out

    def decode(self, data: bytes, now: float,
               reject: Callable[[str], None]) -> list[tuple[int, Any]]:
        """The messages in one datagram, as (src, message) for the node."""
        try:
            msg = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            reject(f"not JSON: {exc!r}")
            return []
        if type(msg) is not dict:
            reject("not a JSON object")
            return []
        src, kind = msg.get("src"), msg.get("type")
        if kind == "raft":
            peer = self.peers.get(src)
            batch = msg.get("msgs")
            if peer is None or type(batch) is not list:
                reject(f"raft datagram from {str(src)[:8]!r} without a peer source or msgs")
                return []
            out = []
            for raw in batch:
                try:
                    m = jsonwire.decode(raw)
                except (ValueError, RecursionError) as exc:
                    reject(f"from {src}: {exc!r}")
                    continue
                why = check_raft_message(m, peer)
                if why is not None:
                    reject(f"from {src}: {why}")
                    continue
                out.append((peer, m))
            return out
        if kind in ("get", "put") and is_address(src) and src not in self.peers \
                and src != self.me and type(msg.get("MID")) is str:
            return [self.request(src, kind, msg, now)]
        reject(f"unexpected datagram of type {str(kind)[:20]!r} from {str(src)[:8]!r}")
        return []

    def request(self, src: str, op: str, msg: dict, now: float) -> tuple[int, ClientRequest]:
        cid, seq = int(src, 16), request_seq(src, msg["MID"])
        # Malformed keys or values are the node's to refuse (INVALID: "fail").
        value = msg.get("value") if op == "put" else None
        request = ClientRequest(Command(cid, seq, 0, op, msg.get("key"), value))
        if (cid, seq) not in self.waiting:
            self.waiting[(cid, seq)] = Waiting(msg["MID"], src, request, now)
        return cid, request

    # -------------------------------------------------------------------- send

    def send(self, messages: list[tuple[int, Any]], now: float) -> None:
        leader = self.known_leader(now)
        leader_name = self.names.get(leader, UNKNOWN) if leader is not None else UNKNOWN
        by_dst: dict[int, list[str]] = defaultdict(list)
        for dst, m in messages:
            if type(m) is ClientReply:
                self.answer(m, now, leader)
            elif dst in self.names:
                by_dst[dst].append(jsonwire.dumps(m))
        for dst, parts in by_dst.items():
            self.send_raft(self.names[dst], parts, leader_name)

    def send_raft(self, dst: str, parts: list[str], leader: str) -> None:
        """``parts`` (encoded messages) to ``dst``, as few datagrams as fit."""
        head = json.dumps({"src": self.me, "dst": dst, "leader": leader, "type": "raft"})
        head = head[:-1] + ', "msgs": ['
        chunk: list[str] = []
        size = len(head) + 2
        for part in parts:
            if len(head) + len(part) + 2 > MAX_DATAGRAM:
                log.error("%s: a %d-byte message to %s does not fit a datagram", self.me,
                          len(part), dst)
                continue
            if chunk and size + len(part) + 1 > MAX_DATAGRAM:
                self._send_raw(head + ",".join(chunk) + "]}")
                chunk, size = [], len(head) + 2
            chunk.append(part)
            size += len(part) + 1
        if chunk:
            self._send_raw(head + ",".join(chunk) + "]}")

    def answer(self, reply: ClientReply, now: float, leader: Optional[int]) -> None:
        """Answer a MID once: ok / fail, a redirect to a live leader, or hold it."""
        key = (reply.client_id, reply.seq)
        w = self.waiting.get(key)
        named = self.names.get(leader, UNKNOWN) if leader is not None else UNKNOWN
        if w is None:
            # Not taken here: a write another replica took, applied by this one
            # as leader (Node keep_writes), answered once from what its seq spells.
            asker = request_of(reply.seq) if reply.status == OK else None
            if asker is None or key in self.answered or int(asker[0], 16) != reply.client_id:
                return  # answered already, or not ours: nothing after the first answer
            self._remember(key)
            self._sendto({"src": self.me, "dst": asker[0], "leader": named, "type": "ok",
                          "MID": asker[1]})
            return
        out = {"src": self.me, "dst": w.client, "leader": UNKNOWN, "MID": w.mid}
        if reply.status == OK:
            out["type"], out["leader"] = "ok", named
            if w.request.command.op == "get":
                out["value"] = reply.result if reply.result is not None else ""
        elif reply.status == INVALID:
            out["type"], out["leader"] = "fail", named
        elif key in self.held:
            return
        elif named not in (UNKNOWN, self.me):
            out["type"], out["leader"] = "redirect", named
        elif now - w.since < PARK_LIMIT:
            w.retry_at = now + PARK_RECHECK  # no leader to name: hold it
            self.held.add(key)
            return
        else:
            out["type"] = "redirect"  # to FFFF: the client picks any replica
        self.held.discard(key)
        del self.waiting[key]
        self._remember(key)
        self._sendto(out)

    def _remember(self, key: tuple[int, int]) -> None:
        self.answered[key] = None
        if len(self.answered) > ANSWERED_KEPT:
            del self.answered[next(iter(self.answered))]

    def _sendto(self, msg: dict) -> None:
        self._send_raw(json.dumps(msg))

    def _send_raw(self, text: str) -> None:
        try:
            self.sock.sendto(text.encode("ascii"), self.sim)
        except OSError as exc:  # the simulator closed our socket, or a full buffer: a loss
            log.info("%s: send failed: %r", self.me, exc)
