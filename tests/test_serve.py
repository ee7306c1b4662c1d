"""``raftmp serve`` nodes, one process each, on loopback addresses 127.0.0.2, 127.0.0.3, ...

The RESP front end (commands, -MOVED from a follower, a connection's order),
``raftmp.connect``, the metrics page, bad options, and a linearizability-
checked workload under kills, restarts, SIGSTOP pauses and frames dropped and
delayed by the transport's test-only fault layer.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import gone, wait_until

import raftmp
from raftmp.checker import check_outcomes
from raftmp.core.session import DONE, Timing
from raftmp.serve_local import LocalServe
from raftmp.workload import Workload, drive

pytestmark = pytest.mark.timeout(90)


def resp(addr: str, *commands: list[str], timeout: float = 5.0) -> list[bytes]:
    """Send ``commands`` pipelined on one connection; their replies, one raw line each
    (a bulk or array reply joined with its lines)."""
    host, port = addr.rsplit(":", 1)
    payload = b"".join(b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode())
                                                        for a in c) for c in commands)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        buf = b""
        replies: list[bytes] = []
        while len(replies) < len(commands):
            chunk = s.recv(65536)
            assert chunk, f"closed after {replies}"
            buf += chunk
            replies, _ = parse(buf, len(commands))
    return replies


def parse(buf: bytes, n: int) -> tuple[list[bytes], int]:
    out, pos = [], 0
    while len(out) < n:
        end = _reply_end(buf, pos)
        if end is None:
            break
        out.append(buf[pos:end])
        pos = end
    return out, pos


def _reply_end(buf: bytes, pos: int):
    line = buf.find(b"\r\n", pos)
    if line < 0:
        return None
    kind = buf[pos:pos + 1]
    if kind == b"$":
        size = int(buf[pos + 1:line])
        end = line + 2 + (size + 2 if size >= 0 else 0)
        return end if len(buf) >= end else None
    if kind == b"*":
        end = line + 2
        for _ in range(int(buf[pos + 1:line])):
            end = _reply_end(buf, end)
            if end is None:
                return None
        return end
    return line + 2


@pytest.fixture(scope="module")
def three():
    with LocalServe(3) as c:
        c.wait_for_leader()
        yield c


def test_redis_commands_on_the_leader(three: LocalServe) -> None:
    leader = three.wait_for_leader()
    r = resp(three.address(leader, "resp"),
             ["PING"], ["ECHO", "hi"], ["SET", "x", "1"], ["GET", "x"], ["GET", "nope"],
             ["SET", "x", "2", "EX", "10"], ["INCR", "n"], ["INCRBY", "n", "41"], ["DECR", "n"],
             ["INCR", "x"], ["SET", "s", "abc"], ["INCR", "s"], ["MGET", "x", "nope", "n"],
             ["EXISTS", "x", "nope", "n"], ["CAS", "x", "1", "3"], ["CAS", "x", "1", "4"],
             ["SETNX", "x", "5"], ["SETNX", "fresh", "5"], ["DEL", "x", "nope", "fresh"],
             ["GET", "x"], ["CONFIG", "GET", "save"], ["CLIENT", "SETINFO", "LIB-NAME", "t"],
             ["COMMAND", "DOCS"], ["NOSUCH"], ["GET"])
    assert r[:5] == [b"+PONG\r\n", b"$2\r\nhi\r\n", b"+OK\r\n", b"$1\r\n1\r\n", b"$-1\r\n"]
    assert r[5].startswith(b"-ERR SET options")
    assert r[6:9] == [b":1\r\n", b":42\r\n", b":41\r\n"]
    assert r[9] == b":2\r\n"                        # "1" is an integer
    assert r[10] == b"+OK\r\n" and r[11].startswith(b"-ERR")
    assert r[12] == b"*3\r\n$1\r\n2\r\n$-1\r\n$2\r\n41\r\n"
    assert r[13] == b":2\r\n"
    assert r[14:16] == [b":0\r\n", b":0\r\n"]        # x is "2", not "1"
    assert r[16:18] == [b":0\r\n", b":1\r\n"]
    assert r[18] == b":2\r\n" and r[19] == b"$-1\r\n"
    assert r[20] == b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    assert r[21] == b"+OK\r\n" and r[22] == b"*0\r\n"
    assert r[23].startswith(b"-ERR unknown command") and r[24].startswith(b"-ERR wrong number")
    info = resp(three.address(leader, "resp"), ["INFO"])[0].decode()
    assert "# Raft" in info and "raft_role:leader" in info and f"raft_node:{leader}" in info


def test_a_connection_sees_its_own_writes_in_order(three: LocalServe) -> None:
    """Pipelined: each GET follows the SET before it, whatever the batching."""
    leader = three.wait_for_leader()
    cmds = [c for i in range(50) for c in (["SET", "seq", str(i)], ["GET", "seq"])]
    r = resp(three.address(leader, "resp"), *cmds)
    assert r[1::2] == [b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(50)]


def test_a_follower_answers_moved_to_the_leader_and_never_reads_its_own_state(
        three: LocalServe) -> None:
    leader = three.wait_for_leader()
    follower = next(i for i in three.ids if i != leader)
    moved = f"-MOVED 0 {three.address(leader, 'resp')}\r\n".encode()
    assert resp(three.address(follower, "resp"), ["GET", "x"], ["SET", "y", "1"],
                ["PING"]) == [moved, moved, b"+PONG\r\n"]


def test_connect_gives_the_same_client_over_tcp(three: LocalServe) -> None:
    with raftmp.connect(list(reversed(three.addresses("client")))) as kv:
        kv.put("c", "1")
        assert kv.get("c") == "1"
        assert kv.cas("c", "1", "2") is True and kv.cas("c", "1", "3") is False
        assert kv.delete("c") is True and kv.get("c") is None
        with pytest.raises(raftmp.InvalidRequest):
            kv.put("k" * 5000, "v")
    with pytest.raises(raftmp.ConfigError):
        raftmp.connect(["no-port"])


def test_the_metrics_page_and_status_show_the_same_figures(three: LocalServe) -> None:
    leader = three.wait_for_leader()
    with raftmp.connect(three.addresses("client")) as kv:
        for i in range(5):
            kv.put(f"m{i}", "v")
        kv.get("m0")
    page = three.metrics(leader)
    for name in ("raftmp_has_leader", "raftmp_term", "raftmp_commit", "raftmp_applied",
                 "raftmp_leader_changes_total", "raftmp_proposals_committed_total",
                 "raftmp_proposals_failed_total", "raftmp_proposals_pending",
                 "raftmp_fsync_seconds_bucket", "raftmp_commit_latency_seconds_count",
                 "raftmp_peer_bytes_sent_total", "raftmp_peer_bytes_received_total",
                 "raftmp_snapshots_sent_total", "raftmp_snapshots_installed_total",
                 "raftmp_reads_lease_total", "raftmp_reads_index_total"):
        assert f"\n{name}{{" in page or page.startswith(f"{name}{{"), name
    assert three.figure(leader, "raftmp_has_leader") == 1
    assert three.figure(leader, "raftmp_proposals_committed_total") >= 5
    assert three.figure(leader, "raftmp_reads_lease_total") >= 1
    assert int(three.figure(leader, "raftmp_term")) == int(three.info(leader, "raft_term"))


@pytest.mark.parametrize("args,why", [
    (["--id", "4"], "is not in --peers"),
    (["--id", "1", "--peers", "1=10.1.2.3:7000,2=10.1.2.4:7000"], "without a secret"),
    (["--id", "1", "--peers", "1=127.0.0.1"], "is not host:port"),
    (["--id", "1", "--secret-file", "/nonexistent"], "--secret-file"),
    (["--id", "1", "--election-timeout", "0.5"], "is not MIN,MAX"),
    (["--id", "1", "--election-timeout", "0.05,0.1"], "election_timeout must be a pair"),
])
def test_bad_options_are_one_line_without_a_traceback(args: list[str], why: str,
                                                      tmp_path) -> None:
    base = {"--peers": "1=127.0.0.1:1,2=127.0.0.1:2", "--data-dir": str(tmp_path)}
    for k, v in base.items():
        if k not in args:
            args = args + [k, v]
    p = subprocess.run([sys.executable, "-m", "raftmp", "serve", *args], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and why in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize("n", [3, 5])
def test_linearizable_under_kills_restarts_pauses_and_lossy_frames(n: int, seed: int) -> None:
    rng = random.Random(seed)
    env = {"RAFTMP_TEST_FAULTS": "drop=0.05,delay=0.01"}
    with LocalServe(n, env=env) as c:
        c.wait_for_leader()
        kv = raftmp.connect(c.addresses("client"), timing=Timing(op_timeout=3.0), seed=seed)
        events: list[str] = []
        state = {"step": 0}

        def on_tick(elapsed: float) -> None:
            # 1.0 s: kill the leader; 2.5 s: restart it; 3.5 s: SIGSTOP the new
            # leader; 5.0 s: SIGCONT it; 5.5 s: kill a follower and restart it at once.
            step, leader = state["step"], c.leader()
            if step == 0 and elapsed >= 1.0 and leader is not None:
                c.kill(leader)
                state.update(step=1, killed=leader)
            elif step == 1 and elapsed >= 2.5:
                c.restart(state["killed"])
                state["step"] = 2
            elif step == 2 and elapsed >= 3.5 and leader is not None:
                c.pause(leader)
                state.update(step=3, paused=leader)
            elif step == 3 and elapsed >= 5.0:
                c.resume(state["paused"])
                state["step"] = 4
            elif step == 4 and elapsed >= 5.5 and leader is not None:
                victim = rng.choice([i for i in c.ids if i != leader])
                c.kill(victim)
                c.restart(victim)
                state["step"] = 5
            else:
                return
            events.append(f"{elapsed:.1f}s step {state['step']} (leader {leader})")

        workload = Workload(keys=8, read_fraction=0.5, concurrency=8)
        outcomes = drive(kv, workload, 7.0, rng, on_tick=on_tick, tick=0.1)
        # Afterwards every key is read: an acknowledged write that was lost shows as
        # a read the checker cannot place.
        wait_until(c.leader, what="a leader after the faults")
        for k in range(workload.keys):
            kv.submit("get", f"k{k}")
        while kv.in_flight:
            outcomes += kv.poll(1.0)
        kv.close()
        pages = []
        for i in c.procs:      # (the follower restarted last may not listen yet)
            try:
                pages.append(c.metrics(i))
            except OSError:
                pass
        assert any('raftmp_frames_dropped_total{node' in page and 'kind="fault"' in page
                   for page in pages), "the fault layer dropped nothing"
        print(f"seed {seed}: {events}; {sum(o.outcome == DONE for o in outcomes)} ops done")
        assert state["step"] == 5, events
        verdict = check_outcomes(outcomes)
        done = sum(o.outcome == DONE for o in outcomes)
        assert verdict.ok, (seed, events, verdict.explanation, c.logs())
        assert done > 100, (seed, events, done)
        assert all(o.outcome == DONE for o in outcomes[-workload.keys:]), outcomes[-8:]
        pids = [p.pid for p in c.procs.values()]
    for pid in pids:
        wait_until(lambda pid=pid: gone(pid), what=f"pid {pid} gone")


def make_certificates(d) -> tuple[str, str, str]:
    """A CA and one node certificate it signed (shared by every node of the test)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=raftmp test CA")
    run("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=raftmp node")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.pem", "-days", "1")
    return str(d / "node.pem"), str(d / "node.key"), str(d / "ca.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make certificates")
def test_tls_between_nodes_and_a_plain_peer_refused(tmp_path) -> None:
    cert, key, ca = make_certificates(tmp_path)
    with LocalServe(3, args=("--tls-cert", cert, "--tls-key", key, "--tls-ca", ca)) as c:
        leader = c.wait_for_leader()
        with raftmp.connect(c.addresses("client")) as kv:
            kv.put("t", "1")
            assert kv.get("t") == "1"
        # A peer without TLS: its hello is not a TLS handshake, and it is refused.
        host, port = c.hosts[leader], c.ports[leader]["peer"]
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b'\x00\x00\x00\x10{"hello": 1.....}')
            s.settimeout(5)
            try:
                while s.recv(100):   # at most a TLS alert, then the end
                    pass
            except ConnectionResetError:
                pass
        wait_until(lambda: 'kind="tls"} 1' in c.metrics(leader), what="the refusal counted")
        assert c.figure(leader, "raftmp_peer_bytes_sent_total") > 0


def test_garbage_on_the_client_resp_and_metrics_ports(three: LocalServe) -> None:
    leader = three.wait_for_leader()
    host = three.hosts[leader]

    def exchange(kind: str, data: bytes) -> bytes:
        with socket.create_connection((host, three.ports[leader][kind]), timeout=5) as s:
            s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    return out
                if not chunk:
                    return out
                out += chunk
    assert exchange("resp", b"*1\r\n$99999999999\r\n").startswith(b"-ERR Protocol error")
    assert exchange("resp", b"*2\r\nGET\r\n") .startswith(b"-ERR Protocol error")
    hello = exchange("client", b"\x00\x00\x00\x05hello")        # not JSON: closed
    assert hello.startswith(b"\x00\x00\x00") and b'"node"' in hello
    assert exchange("metrics", b"GET /nope HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404")
    assert exchange("metrics", b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
    assert resp(three.address(leader, "resp"), ["PING"]) == [b"+PONG\r\n"]
    with raftmp.connect(three.addresses("client")) as kv:   # and the client port still serves
        kv.put("after", "garbage")
        assert kv.get("after") == "garbage"


class RespClient:
    """One RESP connection with one command in flight, for the history test: it
    follows -MOVED, and moves to another node on -CLUSTERDOWN or a lost connection."""

    def __init__(self, cluster: LocalServe, n: int, rng: random.Random) -> None:
        self.cluster, self.n, self.rng = cluster, n, rng
        self.sock: socket.socket | None = None
        self.addr = rng.choice(cluster.addresses("resp"))
        self.op: tuple | None = None
        self.invoke = 0.0
        self.buf = b""

    def connect(self) -> None:
        host, port = self.addr.rsplit(":", 1)
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=0.5)
            self.sock.setblocking(False)
        except OSError:
            self.sock = None
            self.addr = self.rng.choice(self.cluster.addresses("resp"))

    def send(self, op: tuple, now: float) -> None:
        self.op, self.invoke, self.buf = op, now, b""
        self.seen: list = []
        self._write()

    def _write(self) -> None:
        self.buf = b""
        kind, key, value, _ = self.op
        args = {"get": ["GET", key], "put": ["SET", key, value], "delete": ["DEL", key],
                "cas": ["SETNX", key, value]}[kind]
        if self.sock is None:
            self.connect()
        if self.sock is not None:
            try:
                self.sock.sendall(b"*%d\r\n" % len(args) + b"".join(
                    b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))
            except OSError:
                self._lost()

    def _lost(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.addr = self.rng.choice(self.cluster.addresses("resp"))

    def poll(self, now: float) -> dict | None:
        """The finished operation's history record, or None (still waiting, or resent)."""
        if self.sock is None:
            self._write()       # a refused or lost attempt: certainly not applied, again
            return None
        try:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError
        except BlockingIOError:
            if now - self.invoke > 15:
                raise AssertionError(f"client {self.n}: no answer to {self.op} from {self.addr}"
                                     f" {self.cluster.paused} {self.seen[-10:]}") from None
            return None
        except OSError:
            return self._record(now, "unknown", None) if self.op[0] != "get" else self._retry()
        self.buf += data
        replies, _ = parse(self.buf, 1)
        if not replies:
            return None
        r = replies[0]
        self.seen.append((round(now - self.invoke, 3), self.addr, r[:40]))
        if r.startswith(b"-MOVED"):
            self._lost()
            self.addr = r.split()[2].decode()
            return self._retry()
        if r.startswith((b"-CLUSTERDOWN", b"-TRYAGAIN")):
            outcome = "unknown" if r.startswith(b"-TRYAGAIN") else None
            self._lost()
            return self._record(now, outcome, None) if outcome else self._retry()
        kind = self.op[0]
        if kind == "get":
            result = None if r == b"$-1\r\n" else r.split(b"\r\n")[1].decode()
        elif kind == "put":
            assert r == b"+OK\r\n", r
            result = None
        else:
            result = r == b":1\r\n"
        return self._record(now, "ok", result)

    def _retry(self) -> None:
        self._write()
        return None

    def _record(self, now: float, outcome: str, result) -> dict:
        kind, key, value, expected = self.op
        self.op = None
        return {"client": self.n, "op": kind, "key": key, "value": value, "expected": expected,
                "invoke": self.invoke, "complete": None if outcome == "unknown" else now,
                "outcome": outcome, "result": result}


def test_resp_clients_stay_linearizable_under_kills_and_pauses(seed: int) -> None:
    """Redis clients, each command one request of its connection's session, through a
    leader kill and a leader pause: the history is linearizable."""
    from raftmp.checker import check
    from raftmp.history import Op
    rng = random.Random(seed)
    with LocalServe(3, env={"RAFTMP_TEST_FAULTS": "drop=0.02,delay=0.005"}) as c:
        c.wait_for_leader()
        clients = [RespClient(c, n, rng) for n in range(6)]
        workload = Workload(keys=6, read_fraction=0.5)
        records, n, start, events = [], 0, time.monotonic(), []
        while True:
            now = time.monotonic()
            elapsed = now - start
            if not events and elapsed > 1.0 and c.leader() is not None:
                events.append(("killed", c.leader()))
                c.kill(events[-1][1])
            elif len(events) == 1 and elapsed > 2.5:
                c.restart(events[0][1])
                events.append(("restarted", events[0][1]))
            elif len(events) == 2 and elapsed > 3.5 and c.leader() is not None:
                events.append(("paused", c.leader()))
                c.pause(events[-1][1])
            elif len(events) == 3 and elapsed > 5.0:
                c.resume(events[2][1])
                events.append(("resumed", events[2][1]))
            busy = False
            for cl in clients:
                if cl.op is None and elapsed < 6.5:
                    cl.send(workload.op(rng, n), now)
                    n += 1
                if cl.op is not None:
                    busy = True
                    record = cl.poll(now)
                    if record is not None:
                        records.append(record)
            if not busy:
                break
            time.sleep(0.001)
        for cl in clients:
            if cl.sock is not None:
                cl.sock.close()
    ops = [Op(**r) for r in records]
    verdict = check(ops)
    done = sum(r["outcome"] == "ok" for r in records)
    print(f"seed {seed}: {events}; {done} ok, {len(records) - done} unknown")
    assert len(events) == 4, events
    assert done > 200, (done, events)
    assert verdict.ok, (seed, events, verdict.explanation)


def test_a_node_that_fell_behind_gets_a_snapshot_over_tcp() -> None:
    """InstallSnapshot in base64 JSON frames: a follower down while the leader
    compacted its log catches up from the snapshot, and the metrics count it."""
    with LocalServe(3, args=("--snapshot-entries", "40")) as c:
        leader = c.wait_for_leader()
        behind = next(i for i in c.ids if i != leader)
        c.kill(behind)
        with raftmp.connect(c.addresses("client")) as kv:
            for i in range(300):
                kv.put(f"s{i % 50}", f"v{i}" * 50)
            c.restart(behind)
            wait_until(lambda: (c.figure(behind, "raftmp_applied") or 0)
                       >= c.figure(leader, "raftmp_commit") - 5, what="the node caught up")
        assert c.figure(behind, "raftmp_snapshots_installed_total") >= 1
        assert c.figure(leader, "raftmp_snapshots_sent_total") >= 1


def test_the_local_cluster_reports_the_same_figures() -> None:
    """Cluster.stats() (and so the console's status) carries the figures /metrics shows."""
    from raftmp.metrics import prometheus
    with raftmp.Cluster(3, seed=1) as cluster:
        kv = cluster.client()
        for i in range(3):
            kv.put(f"f{i}", "v")
        assert kv.get("f0") == "v"
        leader = cluster.wait_for_leader()
        status = cluster.stats()["nodes"][leader]
        kv.close()
    assert status["has_leader"] == 1 and status["leader_changes"] >= 1
    # 3 puts and the client's registration (thesis §6.3)
    assert status["proposals_committed"] == 4 and status["proposals_pending"] == 0
    assert status["reads_lease"] + status["reads_index"] == 1
    assert status["fsync_seconds"]["count"] > 0
    assert status["commit_latency_seconds"]["count"] == 4
    page = prometheus(status)
    assert f'raftmp_proposals_committed_total{{node="{leader}"}} 4' in page
