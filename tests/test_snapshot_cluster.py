"""Snapshots in the multiprocess cluster: nodes compact on their own (a forked
writer, reaped), a follower that was down while the others compacted catches
up by InstallSnapshot through a lossy router, a restarted leader loads its
snapshot, a node without its data refuses to start, and an idle client's
session expires with a typed error."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import assert_readable, assert_same_state, proc_state, put_all, wait_until

import raftmp
from raftmp.core.raft import Config
from raftmp.worker import LOST_STATE_EXIT

SMALL = Config(snapshot_entries=300, snapshot_keep=50, snapshot_chunk=2048)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (zombies included)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(name))
    return out


def test_lagging_follower_catches_up_by_install_snapshot_under_drops(tmp_path, seed):
    with raftmp.Cluster(3, drop=0.3, seed=seed, config=SMALL, data_dir=str(tmp_path)) as cluster:
        kv = cluster.client()
        leader = cluster.wait_for_leader()
        lagging = (leader + 1) % 3
        cluster.kill(lagging)
        items = {f"k{i}": f"v{i}" for i in range(1500)}
        put_all(kv, items, seed)
        s = cluster.node_status(leader)
        assert s["snapshot"] > 600 and s["log_entries"] < 2 * SMALL.snapshot_entries, s
        cluster.restart(lagging)
        ss = assert_same_state(cluster, seed, timeout=60)
        back = next(x for x in ss if x["node"] == lagging)
        # It got a snapshot (it never applied most of those entries itself) and
        # keeps a short log, like the others.
        assert back["installs"] >= 1
        assert back["snapshot"] > 600 and back["log_entries"] < 2 * SMALL.snapshot_entries
        names = os.listdir(tmp_path / f"node{lagging}")
        assert any(n.startswith("snapshot-") and not n.endswith(".tmp") for n in names), names
        assert_readable(kv, items, seed)
        # Every forked snapshot writer was reaped: no zombie children, none left running
        # for long (a new one may be at work right now).
        for node, pid in cluster.pids["workers"].items():
            wait_until(lambda pid=pid: not [c for c in children(pid) if proc_state(c) == "Z"], 5,
                       f"node {node}'s snapshot writers reaped (seed {seed})")


def test_restarted_leader_loads_its_snapshot_not_its_history(tmp_path, seed):
    with raftmp.Cluster(3, seed=seed, config=SMALL, data_dir=str(tmp_path)) as cluster:
        kv = cluster.client()
        items = {f"k{i}": f"v{i}" for i in range(1200)}
        put_all(kv, items, seed)
        leader = cluster.wait_for_leader()
        # Snapshots are written by a forked child, so they trail the writes: wait
        # (bounded) for one past the first half of the history before the kill.
        before = wait_until(lambda: (st := cluster.node_status(leader))["snapshot"] > 600
                            and st, 20, "a snapshot past index 600")
        cluster.kill(leader)
        cluster.restart(leader)
        s = wait_until(lambda: cluster.node_status(leader).get("alive") and
                       cluster.node_status(leader), 10, "the old leader back")
        # Right after the restart its log holds only what follows its snapshot
        # (under 600 entries), not the 1200 writes.
        assert s["snapshot"] >= before["snapshot"], (before, s)
        assert s["log_entries"] < 600, (before, s)
        assert_same_state(cluster, seed, timeout=30)
        assert_readable(kv, items, seed)


def test_node_with_an_empty_data_dir_refuses_to_take_part(tmp_path, seed):
    with raftmp.Cluster(3, seed=seed, data_dir=str(tmp_path)) as cluster:
        cluster.client().put("x", "1")
    shutil.rmtree(tmp_path / "node2")
    with raftmp.Cluster(3, seed=seed, data_dir=str(tmp_path)) as cluster:
        s = wait_until(lambda: cluster.node_status(2).get("exitcode") is not None
                       and cluster.node_status(2), 10, "node 2 to refuse")
        assert s == {"node": 2, "alive": False, "exitcode": LOST_STATE_EXIT}
        assert cluster.client().get("x") == "1"       # the other two carry on
        assert not list(tmp_path.glob("node2/log-*"))


def test_idle_sessions_expire_and_their_clients_register_new_ones(seed):
    """Thesis §6.3 end to end: idle sessions expire; their clients register new
    ones by themselves, even one that gave up on a write (no copy of it can be
    applied in the new session), and the caller sees no error."""
    config = Config(session_timeout=2.0, client_op_timeout=1.0)
    timing = raftmp.Timing(op_timeout=1.0)
    with raftmp.Cluster(3, seed=seed, config=config, timing=timing) as cluster:
        idle, doubtful, busy = cluster.client(), cluster.client(), cluster.client()
        idle.put("a", "1")
        doubtful.put("d", "1")
        busy.put("b", "1")
        cluster.set_faults(client_drop=1.0)
        with pytest.raises(raftmp.Timeout):
            doubtful.put("d", "2")   # never arrives, but the client cannot know that
        cluster.set_faults(client_drop=0.0)

        def expired():
            busy.put("b", "2")        # keeps its own session alive
            leader = cluster.leader()
            return leader is not None and cluster.node_status(leader).get("sessions") == 1

        wait_until(expired, 15, f"the idle sessions to expire (seed {seed})", interval=0.2)
        idle.put("a", "2")            # a new session, no error
        doubtful.put("d", "3")
        assert busy.get("a") == "2" and busy.get("d") == "3"
        assert idle.session.new_sessions == doubtful.session.new_sessions == 1
