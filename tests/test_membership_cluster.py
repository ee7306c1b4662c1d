"""Membership changes on a real cluster (processes, the router): grow, move
the leader, remove it, replace a node whose data directory was lost. The
core's rules are tested in test_membership.py; here, that the launcher,
the workers and the clients follow the configuration."""

from __future__ import annotations

import shutil

from conftest import assert_readable, assert_same_state, put_all, wait_until

import raftmp
from raftmp.core.raft import LEADER
from raftmp.worker import LOST_STATE_EXIT


def test_grow_transfer_remove_the_leader_and_replace_a_lost_node(tmp_path, seed):
    with raftmp.Cluster(3, seed=seed, data_dir=str(tmp_path)) as cluster:
        kv = cluster.client()
        items = {f"k{i}": f"v{i}" for i in range(100)}
        put_all(kv, items, seed)

        new = cluster.add_node()
        assert new == 3 and cluster.ids == [0, 1, 2, 3]
        # (Promoted once a quorum holds the change; the new node itself may
        # learn it with its next heartbeat: Config.fan_out.)
        def new_is_a_voter() -> bool:
            s = cluster.node_status(new)
            return (s["member"], s["voters"], s["learners"]) == ("voter", [0, 1, 2, 3], [])
        wait_until(new_is_a_voter, 5, "the new node to see itself a voter")
        assert_same_state(cluster, seed, expected=items)

        leader = cluster.wait_for_leader()
        target = next(i for i in cluster.ids if i != leader)
        assert cluster.transfer_leader(target) >= 0
        assert cluster.leader() == target

        cluster.remove_node(target)                 # the leader: it hands over first
        assert target not in cluster.ids and target not in cluster.workers
        assert not (tmp_path / f"node{target}").exists()
        leader = cluster.wait_for_leader()
        assert leader != target
        assert cluster.stats()["members"] == cluster.ids
        # (Committed by a quorum; a follower outside it has the change with its
        # next heartbeat: Config.fan_out.)
        wait_until(lambda: all(n["voters"] == cluster.ids for n in cluster.stats()["nodes"]),
                   5, "every node to use the new configuration")
        put_all(kv, {"after": "removal"}, seed)
        items["after"] = "removal"

        # a node whose data directory was lost refuses to start, and says how to replace it
        lost = next(i for i in cluster.ids if i != leader)
        cluster.kill(lost)
        shutil.rmtree(tmp_path / f"node{lost}")
        cluster.restart(lost)
        s = wait_until(lambda: cluster.node_status(lost).get("exitcode") is not None
                       and cluster.node_status(lost), 10, "the node to refuse")
        assert s["exitcode"] == LOST_STATE_EXIT
        del cluster.workers[lost]
        fresh = cluster.replace_node(lost)
        assert fresh == 4 and lost not in cluster.ids and fresh in cluster.ids
        assert len(cluster.ids) == 3
        assert_same_state(cluster, seed, expected=items)
        assert_readable(kv, items, seed)
        roles = [cluster.node_status(i)["role"] for i in cluster.ids]
        assert roles.count(LEADER) == 1

    # the data dir remembers the members as the launcher left them
    with raftmp.Cluster(3, seed=seed, data_dir=str(tmp_path)) as cluster:
        assert cluster.ids == sorted(set(range(5)) - {target, lost})
        assert_readable(cluster.client(), items, seed)


def test_refusals_are_typed_and_say_why(seed):
    with raftmp.Cluster(3, seed=seed) as cluster:
        admin = cluster.client()
        try:
            admin.change_config("remove", 7)
        except raftmp.ConfigChangeRefused as e:
            assert str(e) == "remove '7': refused: server 7 is not a member"
        else:
            raise AssertionError("removing a non-member was accepted")


def test_a_server_that_never_catches_up_is_removed_again(seed):
    """Thesis §4.2.1: a learner that cannot catch up is not promoted; the
    launcher removes it and says so."""
    with raftmp.Cluster(3, seed=seed) as cluster:
        for i in cluster.ids:
            cluster.cut(i, 3)                      # the server to come hears nobody
        try:
            cluster.add_node(timeout=3.0)
        except raftmp.RaftmpError as e:
            assert "node 3 did not catch up" in str(e), e
        else:
            raise AssertionError("a server that never caught up was promoted")
        assert cluster.ids == [0, 1, 2] and 3 not in cluster.workers
        s = cluster.node_status(cluster.wait_for_leader())
        assert (s["voters"], s["learners"]) == ([0, 1, 2], [])
