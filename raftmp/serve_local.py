"""``LocalServe``: a ``raftmp serve`` cluster on this machine, for tests and benchmarks.

Each node is its own ``python -m raftmp serve`` process on its own loopback
address (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to lo), with
free ports, a data directory under one temporary directory and a shared
secret file. ``kill``, ``restart``, ``pause`` (SIGSTOP) and ``resume``
act on one node; ``stop`` (also on leaving a ``with``) ends every process and
removes the directory. The processes are told to die with this one
(``PR_SET_PDEATHSIG``, through ``procs.die_with_parent``), so none outlives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from typing import Optional

from .core.errors import RaftmpError
from .procs import die_with_parent, poll

STOP_WAIT = 5.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalServe:
    def __init__(self, n: int, *, secret: bool = True, sync: bool = False,
                 env: Optional[dict[str, str]] = None, read_mode: str = "lease",
                 election_timeout: Optional[str] = "0.2,0.4", args: tuple[str, ...] = ()) -> None:
        """``election_timeout``: "MIN,MAX" for every node (default: a local
        cluster's, so tests fail over quickly); None: serve's own default."""
        self.ids = list(range(1, n + 1))
        self.hosts = {i: f"127.0.0.{i + 1}" for i in self.ids}
        self.ports = {i: {k: free_port(self.hosts[i]) for k in ("peer", "client", "resp",
                                                               "metrics")} for i in self.ids}
        self.dir = tempfile.mkdtemp(prefix="raftmp-serve-")
        self.secret_file: Optional[str] = None
        if secret:
            self.secret_file = os.path.join(self.dir, "secret")
            with open(self.secret_file, "w") as f:
                f.write(os.urandom(24).hex())
        self.sync = sync
        self.env = env or {}
        self.read_mode = read_mode
        self.args = list(args)      # more options for every node (--tls-cert ...)
        if election_timeout is not None:
            self.args += ["--election-timeout", election_timeout]
        self.procs: dict[int, subprocess.Popen] = {}
        self.paused: set[int] = set()

    def peers(self) -> str:
        return ",".join(f"{i}={self.hosts[i]}:{self.ports[i]['peer']}" for i in self.ids)

    def address(self, i: int, kind: str) -> str:
        return f"{self.hosts[i]}:{self.ports[i][kind]}"

    def addresses(self, kind: str) -> list[str]:
        return [self.address(i, kind) for i in self.ids]

    def command(self, i: int) -> list[str]:
        ports = self.ports[i]
        cmd = [sys.executable, "-m", "raftmp", "serve", "--id", str(i), "--peers", self.peers(),
               "--data-dir", os.path.join(self.dir, f"node{i}"),
               "--client-port", str(ports["client"]), "--resp-port", str(ports["resp"]),
               "--metrics-port", str(ports["metrics"]), "--read-mode", self.read_mode]
        if self.secret_file is not None:
            cmd += ["--secret-file", self.secret_file]
        return cmd + ([] if self.sync else ["--no-sync"]) + self.args

    def start(self) -> "LocalServe":
        for i in self.ids:
            self.restart(i)
        return self

    def restart(self, i: int) -> None:
        env = {**os.environ, **self.env}
        parent = os.getpid()
        log = open(os.path.join(self.dir, f"node{i}.log"), "ab")
        self.procs[i] = subprocess.Popen(self.command(i), env=env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=lambda: die_with_parent(parent))
        log.close()

    def kill(self, i: int) -> None:
        p = self.procs.pop(i)
        self.paused.discard(i)
        p.kill()
        p.wait(STOP_WAIT)

    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def metrics(self, i: int) -> str:
        url = f"http://{self.address(i, 'metrics')}/metrics"
        with urllib.request.urlopen(url, timeout=2.0) as r:
            return r.read().decode()

    def figure(self, i: int, name: str) -> Optional[float]:
        """One line's value of node ``i``'s metrics page (its first line named
        ``name``); None if there is none or the node does not answer."""
        try:
            page = self.metrics(i)
        except OSError:
            return None
        for line in page.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def leader(self) -> Optional[int]:
        """The node whose INFO says it leads (the newest term), or None."""
        best = None
        for i in self.procs:
            if i in self.paused:
                continue
            try:
                role, term = self.info(i, "raft_role"), int(self.info(i, "raft_term") or 0)
            except OSError:
                continue
            if role == "leader" and (best is None or term > best[0]):
                best = (term, i)
        return best[1] if best else None

    def info(self, i: int, field: str) -> Optional[str]:
        with socket.create_connection((self.hosts[i], self.ports[i]["resp"]), timeout=2.0) as s:
            s.sendall(b"INFO\r\n")
            data = b""
            while not data.endswith(b"\r\n\r\n") and data.count(b"\r\n") < 40:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1]
        return None

    def wait_for_leader(self, timeout: float = 15.0) -> int:
        leader = poll(self.leader, timeout, 0.05)
        if leader is None:
            raise RaftmpError(f"no leader within {timeout} s; logs in {self.dir}")
        return leader

    def stop(self) -> None:
        for i in list(self.procs):
            if i in self.paused:
                self.resume(i)
            self.procs[i].terminate()
        for i, p in list(self.procs.items()):
            try:
                p.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            del self.procs[i]
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        out = []
        for i in self.ids:
            try:
                with open(os.path.join(self.dir, f"node{i}.log")) as f:
                    out.append(f"--- node {i}\n{f.read()[-3000:]}")
            except OSError:
                pass
        return "\n".join(out)

    def __enter__(self) -> "LocalServe":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalServe", "free_port"]
