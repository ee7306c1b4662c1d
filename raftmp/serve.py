"""``raftmp serve``: one node of a cluster across machines, in its own process.

A person or a service manager starts each node; nothing forks them::

    raftmp serve --id 1 --peers 1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001 \\
        --data-dir /var/lib/raftmp --secret-file /etc/raftmp/secret \\
        --client-port 7101 --resp-port 6379 --metrics-port 9101

The node runs the same ``Worker`` loop and ``Node`` as a local cluster's
worker, over a ``TcpLink`` (``transports/tcp_link.py``): sealed frames to its
peers, ``raftmp.connect`` clients on the client port, the Redis protocol
on the RESP port, Prometheus text on the metrics port. Every port binds to
the host of this node's own ``--peers`` address (``--bind`` to change it);
a node refuses to listen on a non-loopback address without a secret.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import random
import socket
import sys
import time
from typing import Optional

from .cli import Parser
from .core.node import Node
from .core.raft import Config
from .metrics import prometheus
from .procs import exit_on_signals
from .storage import FileStorage
from .transports.tcp_link import (
    FIRST_ENDPOINT,
    TcpLink,
    parse_address,
    test_faults,
    tls_contexts,
)
from .worker import Worker

MIN_SECRET = 16      # bytes
# Longer than a local cluster's 0.2-0.4 s (Config's, for processes on one host):
# a node that misses heartbeats for a network hiccup or a loaded machine's
# stall of a few hundred ms should not depose a working leader (etcd: 1 s).
# Measured: at a load average of 13 on 2 cores, redis-benchmark against a
# 0.2-0.4 s cluster stopped at a leader change in both runs; at 1-2 s, none.
ELECTION_TIMEOUT = "1.0,2.0"
ID_FILE = "serve-node"


class BadOption(ValueError):
    pass


def parse_peers(text: str) -> dict[int, tuple[str, int]]:
    peers: dict[int, tuple[str, int]] = {}
    for part in filter(None, text.split(",")):
        name, sep, addr = part.partition("=")
        if not sep or not name.isdigit() or not 0 <= int(name) < FIRST_ENDPOINT:
            raise BadOption(f"--peers: {part!r} is not ID=HOST:PORT (ID a number below "
                            f"{FIRST_ENDPOINT})")
        if int(name) in peers:
            raise BadOption(f"--peers: node {name} appears twice")
        try:
            peers[int(name)] = parse_address(addr)
        except ValueError as exc:
            raise BadOption(f"--peers: {exc}") from None
    return peers


def is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def read_secret(path: Optional[str]) -> bytes:
    if path is None:
        return b""
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise BadOption(f"--secret-file: {exc.strerror}: {path}") from None
    if len(secret) < MIN_SECRET:
        raise BadOption(f"--secret-file: the secret must be at least {MIN_SECRET} bytes, "
                        f"{path} holds {len(secret)}")
    return secret


def claim_data_dir(path: str, node: int) -> None:
    """The data directory is this node's: marked on first use, checked after."""
    os.makedirs(path, exist_ok=True)
    mark = os.path.join(path, ID_FILE)
    if os.path.exists(mark):
        with open(mark) as f:
            owner = f.read().strip()
        if owner != str(node):
            raise BadOption(f"--data-dir: {path} belongs to node {owner}, not {node}")
    else:
        with open(mark, "w") as f:
            f.write(f"{node}\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="raftmp serve", description="Run one node of a raftmp cluster over TCP.")
    p.add_argument("--id", type=int, required=True, help="this node's id (in --peers)")
    p.add_argument("--peers", required=True,
                   help="every node's address for its peers, this one's included: "
                        "1=HOST:PORT,2=HOST:PORT,...")
    p.add_argument("--data-dir", required=True, help="this node's log and snapshots")
    p.add_argument("--secret-file", default=None,
                   help="the cluster's shared secret (>= 16 bytes); needed off loopback")
    p.add_argument("--bind", default=None,
                   help="host for the client, RESP and metrics ports (default: the host of "
                        "this node's --peers address)")
    p.add_argument("--client-port", type=int, default=None, help="for raftmp.connect clients")
    p.add_argument("--resp-port", type=int, default=None, help="for Redis clients (RESP2)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus text, /metrics")
    p.add_argument("--tls-cert", default=None, help="TLS between nodes: this node's certificate")
    p.add_argument("--tls-key", default=None, help="... its private key")
    p.add_argument("--tls-ca", default=None, help="... the CA that signed every node's certificate")
    p.add_argument("--read-mode", default="lease", choices=("lease", "index"),
                   help="linearizable reads by the leader's lease or by ReadIndex (lease)")
    p.add_argument("--heartbeat", type=float, default=Config.heartbeat_interval,
                   help="seconds between a leader's heartbeats (%(default)s)")
    p.add_argument("--election-timeout", default=ELECTION_TIMEOUT,
                   help="MIN,MAX seconds of a follower's randomised election timeout "
                        "(%(default)s: across machines, stalls of a few hundred ms are normal)")
    p.add_argument("--snapshot-entries", type=int, default=Config.snapshot_entries,
                   help="snapshot after this many applied entries (%(default)s); the last "
                        "half of them, at most 5000, stay in the log for slow followers")
    p.add_argument("--no-sync", action="store_true", help="skip fsync (tests only: unsafe)")
    p.add_argument("--verbose", action="store_true", help="log to stderr")
    return p


def check(a: argparse.Namespace) -> tuple[dict[int, tuple[str, int]], bytes, str]:
    peers = parse_peers(a.peers)
    if a.id not in peers:
        raise BadOption(f"--id {a.id} is not in --peers ({', '.join(map(str, sorted(peers)))})")
    host = a.bind if a.bind is not None else peers[a.id][0]
    for name in ("client_port", "resp_port", "metrics_port"):
        port = getattr(a, name)
        if port is not None and not 0 <= port < 65536:
            raise BadOption(f"--{name.replace('_', '-')} {port} is not a port number")
    try:
        low, high = (float(x) for x in a.election_timeout.split(","))
    except ValueError:
        raise BadOption(f"--election-timeout {a.election_timeout!r} is not MIN,MAX") from None
    a.config = Config(read_mode=a.read_mode, heartbeat_interval=a.heartbeat,
                      election_timeout=(low, high), snapshot_entries=max(2, a.snapshot_entries),
                      snapshot_keep=min(Config.snapshot_keep, a.snapshot_entries // 2))
    if a.snapshot_entries < 2:
        raise BadOption(f"--snapshot-entries {a.snapshot_entries}: at least 2")
    secret = read_secret(a.secret_file)
    if not secret:
        for h in {peers[a.id][0], host}:
            if not is_loopback(h):
                raise BadOption(f"refusing to listen on {h}, not a loopback address, without "
                                "a secret: pass --secret-file (the same on every node)")
    return peers, secret, host


def main(argv: Optional[list[str]] = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    try:
        peers, secret, host = check(a)
        claim_data_dir(a.data_dir, a.id)
        faults = test_faults()
        tls = None
        files = (a.tls_cert, a.tls_key, a.tls_ca)
        if any(files):
            if not all(files):
                raise BadOption("TLS needs all of --tls-cert, --tls-key and --tls-ca")
            tls = tls_contexts(*files)
    except (BadOption, ValueError, OSError) as exc:
        p.error(str(exc))
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        stream=sys.stderr, format=f"node {a.id} %(name)s: %(message)s")

    exit_on_signals()

    def at(port: Optional[int]) -> Optional[tuple[str, int]]:
        return None if port is None else (host, port)
    try:
        link = TcpLink(a.id, peers, secret, client=at(a.client_port), resp=at(a.resp_port),
                       metrics=at(a.metrics_port), faults=faults, tls=tls)
    except OSError as exc:
        p.error(f"cannot listen: {exc.strerror or exc}")
    storage = FileStorage(a.data_dir, sync=not a.no_sync)
    node = Node(a.id, sorted(peers), storage.load(), random.Random(), time.monotonic(),
                a.config, None, storage.load_snapshot())
    worker = Worker(node, link, storage, replicas=node.ids)   # membership fixed by --peers
    link.status = worker.status
    link.metrics_text = lambda: prometheus(worker.status())
    print(f"raftmp serve: node {a.id} of {sorted(peers)}, peers on {peers[a.id][0]}:"
          f"{peers[a.id][1]}, " + ", ".join(f"{k} on {v}" for k, v in link.own_info.items())
          + (f", metrics on {host}:{a.metrics_port}" if a.metrics_port is not None else ""),
          file=sys.stderr, flush=True)
    try:
        worker.run()
    finally:
        worker.close()
    return 0
