"""Who a data directory belongs to: a cluster id, and each node's incarnation.

A node whose data directory was lost must not rejoin as if it were new: it
would vote again in terms where it already voted and forget entries it
acknowledged, which a quorum may have counted on (Raft's safety assumes
stable storage, Figure 2). So the launcher writes, when it creates a
cluster's data directory, ``cluster.json`` (a random cluster id) and in each
node's directory an ``identity`` file (the cluster id, the node, its
incarnation); ``cluster.json`` last, so that it marks a complete set. A
worker then starts only if its identity is there and names the same cluster,
and counts one more incarnation. A lost node is replaced by membership
changes (thesis chapter 4): removed, and a new server added under a fresh
id (``add_node``), which joins knowing nothing and promises nothing.

``cluster.json`` also records the node list, and a start with another list is
refused: the quorum is counted over the list, so restarting 5 nodes' data as 3
lets 2 of them elect a leader without the 3 that hold the newest committed
entries. The list is the cluster's first configuration; later members come
and go by membership changes, recorded here too (``add_node``, ``remove_node``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from typing import Optional

from .core.errors import ConfigError, RaftmpError

CLUSTER_FILE = "cluster.json"
IDENTITY_FILE = "identity"


class LostState(RaftmpError):
    """A node's data directory does not hold its state: it refuses to take part."""


class OtherNodes(ConfigError):
    """The data directory belongs to a cluster of other nodes than the ones asked for."""


def node_dir(data_dir: str, node: int) -> str:
    return os.path.join(data_dir, f"node{node}")


def init_cluster(data_dir: str, nodes: list[int]) -> str:
    """The cluster id of ``data_dir``, created with every node's identity if new.
    Raises ``OtherNodes`` when ``data_dir`` holds a cluster of other nodes."""
    existing = _read(os.path.join(data_dir, CLUSTER_FILE))
    if existing is not None:
        recorded = existing.get("first", existing.get("nodes", nodes))
        if recorded != nodes:
            raise OtherNodes(
                f"{data_dir} holds a cluster of {_describe(recorded)}, not {_describe(nodes)}: "
                f"start it with its {len(recorded)} nodes (--nodes {len(recorded)}), or use a "
                "fresh data directory (members are added and removed with add_node and "
                "remove_node)")
        return existing["cluster"]
    cluster = secrets.token_hex(8)
    for i in nodes:
        os.makedirs(node_dir(data_dir, i), exist_ok=True)
        if _read(os.path.join(node_dir(data_dir, i), IDENTITY_FILE)) is None:
            _write(os.path.join(node_dir(data_dir, i), IDENTITY_FILE),
                   {"cluster": cluster, "node": i, "incarnation": 0})
    _write(os.path.join(data_dir, CLUSTER_FILE), {"cluster": cluster, "nodes": nodes})
    return cluster


def _describe(nodes: list[int]) -> str:
    if nodes == list(range(len(nodes))):
        return f"{len(nodes)} nodes (0-{len(nodes) - 1})" if len(nodes) > 1 else "1 node (0)"
    return f"nodes {nodes}"


def members(data_dir: str) -> tuple[list[int], list[int], list[int]]:
    """(the first configuration, every node id ever given, the removed ones)."""
    cluster = _read(os.path.join(data_dir, CLUSTER_FILE))
    assert cluster is not None, f"{data_dir} holds no cluster"
    return (cluster.get("first", cluster["nodes"]), cluster["nodes"],
            cluster.get("removed", []))


def add_node(data_dir: str, node: int) -> None:
    """Give a new server ``node`` (an id never used in this cluster) its identity."""
    cluster = _read(os.path.join(data_dir, CLUSTER_FILE))
    assert cluster is not None and node not in cluster["nodes"], f"node {node} is not new"
    os.makedirs(node_dir(data_dir, node), exist_ok=True)
    _write(os.path.join(node_dir(data_dir, node), IDENTITY_FILE),
           {"cluster": cluster["cluster"], "node": node, "incarnation": 0})
    cluster.setdefault("first", list(cluster["nodes"]))
    cluster["nodes"].append(node)
    _write(os.path.join(data_dir, CLUSTER_FILE), cluster)


def remove_node(data_dir: str, node: int) -> None:
    """Node ``node`` left the configuration for good: record it, delete its data."""
    path = os.path.join(data_dir, CLUSTER_FILE)
    cluster = _read(path)
    assert cluster is not None, f"{data_dir} holds no cluster"
    cluster.setdefault("first", list(cluster["nodes"]))
    cluster["removed"] = sorted(set(cluster.get("removed", [])) | {node})
    _write(path, cluster)
    shutil.rmtree(node_dir(data_dir, node), ignore_errors=True)


def start_node(data_dir: str, node: int) -> Optional[int]:
    """Check that node ``node`` may start from its directory, and count one more
    incarnation: the new one (None when ``data_dir`` has no cluster file, as
    for a worker started outside a launcher)."""
    cluster = _read(os.path.join(data_dir, CLUSTER_FILE))
    if cluster is None:
        return None
    path = os.path.join(node_dir(data_dir, node), IDENTITY_FILE)
    me = _read(path)
    if me is None or me.get("cluster") != cluster["cluster"] or me.get("node") != node:
        found = "nothing" if me is None else f"{me!r}"
        raise LostState(
            f"node {node}: {os.path.dirname(path)} holds {found} where cluster "
            f"{cluster['cluster']} keeps this node's identity: its data is lost or not its "
            "own, so it refuses to take part (it could vote and acknowledge as if new). "
            f"Replace it: remove_node({node}), then add_node() (a new server, a fresh id)")
    me["incarnation"] += 1
    _write(path, me)
    return me["incarnation"]


def _read(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise LostState(f"{path} is unreadable ({e})") from e


def _write(path: str, value: dict) -> None:
    """Atomically: write a temporary file, fsync, rename, fsync the directory."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
