"""Membership changes, learners and leadership transfer in the pure core
(thesis chapter 4 and §3.10), on hand-driven cores (``raftnet``).

Named after the tests they mirror: etcd's raft_test.go (TestAddNode,
TestRemoveNode, TestCommitAfterRemoveNode, TestLearnerPromotion,
TestLearnerCanVote, TestLeaderTransferToSlowFollower,
TestLeaderTransferTimeout) and hashicorp's raft_test.go
(TestRaft_RemoveLeader,
TestRaft_ClusterCanRegainStability_WhenNonVoterWithHigherTermJoin).
"""

from __future__ import annotations

import random

import pytest
from raftnet import Network

from raftmp.core.config import Config
from raftmp.core.errors import ConfigChangeRefused
from raftmp.core.membership import (
    ADD_LEARNER,
    ADD_VOTER,
    PROMOTE,
    REMOVE,
    ConfigHistory,
    Configuration,
    change,
)
from raftmp.core.messages import (
    OK,
    RETRY,
    AppendEntries,
    AppendEntriesReply,
    ClientReply,
    ClientRequest,
    Command,
    Entry,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmp.core.node import Node
from raftmp.core.raft import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, Raft
from raftmp.core.session import FAILED, ClientSession


def voters(core) -> tuple[int, ...]:
    return core.configs.latest.voters


def sent(net: Network, kind: type, src: int | None = None) -> list:
    return [(s, d, m) for s, d, m in net.sent if type(m) is kind and src in (None, s)]


# ---------------------------------------------------------------- the arithmetic


def test_one_server_at_a_time_and_no_empty_cluster() -> None:
    conf = Configuration((0, 1, 2), (3,))
    assert change(conf, ADD_VOTER, 4)[0].voters == (0, 1, 2, 4)
    assert change(conf, PROMOTE, 3)[0] == Configuration((0, 1, 2, 3), ())
    assert change(conf, REMOVE, 3)[0] == Configuration((0, 1, 2), ())
    assert change(conf, ADD_LEARNER, 2) == (None, "server 2 is already a voter")
    assert change(conf, PROMOTE, 1) == (None, "server 1 is not a learner (voter)")
    assert change(conf, REMOVE, 9) == (None, "server 9 is not a member")
    assert change(Configuration((5,)), REMOVE, 5) == (None, "server 5 is the last voter")


def test_history_falls_back_when_truncated_and_keeps_the_base_one_when_compacted() -> None:
    h = ConfigHistory(Configuration((0, 1, 2)))
    h.appended([Entry(1, 3, Configuration((0, 1))), Entry(1, 4, "x"),
                Entry(1, 5, Configuration((0,)))])
    assert h.latest.voters == (0,) and h.latest_index == 5
    assert h.truncated(5) and h.latest.voters == (0, 1)
    assert not h.truncated(4)
    h.compacted(4)
    assert h.history == [(3, Configuration((0, 1)))]
    assert h.at(3) == (3, Configuration((0, 1)))


# -------------------------------------------------------------------- adding


def test_add_node() -> None:
    """etcd TestAddNode: an added voter counts at once (thesis §4.1: in use
    when appended), so the change itself commits only with the new server."""
    net = Network(1)
    net.elect(0)
    net.add(1)
    net.cut(0, 1)
    index = net.change(0, ADD_VOTER, 1)
    assert voters(net[0]) == (0, 1) and net[0].quorum == 2
    net.heartbeat(3)
    assert net[0].commit < index, "committed without the new voter"
    net.recover()
    net.heartbeat(3)
    assert net[0].commit == net[1].commit == index
    assert voters(net[1]) == (0, 1) and net[1].is_voter
    net.check_safety()


def test_learner_gets_the_log_and_never_counts() -> None:
    """A learner receives every entry, but a commit never waits for it nor
    is made by it (etcd TestLearnerLogReplication)."""
    net = Network(2)
    net.elect(0)
    net.add(2)
    net.change(0, ADD_LEARNER, 2)
    net.heartbeat(2)
    assert net[2].configs.latest == Configuration((0, 1), (2,))
    assert net[0].quorum == 2
    net.isolate(1)
    (index,) = net.propose(0, "x")
    net.heartbeat(3)
    assert net[2].log.last_index == index, "the learner did not get the entry"
    assert net[0].commit < index, "a learner's acknowledgement was counted"
    net.recover()
    net.heartbeat(2)
    assert net[0].commit == net[2].commit == index


def test_learner_promotion() -> None:
    """etcd TestLearnerPromotion: a learner never campaigns; promoted, it can
    win an election."""
    net = Network(2)
    net.elect(0)
    net.add(2)
    net.change(0, ADD_LEARNER, 2)
    net.heartbeat(2)
    before = len(net.sent)
    net.timeout(2)
    net.timeout(2)
    assert net[2].role == FOLLOWER
    assert not [m for s, _, m in net.sent[before:] if s == 2 and type(m) is RequestVote]
    net.change(0, PROMOTE, 2)
    net.heartbeat(2)
    assert voters(net[2]) == (0, 1, 2)
    net.crash(0)
    net.elect(2)
    assert net[2].term == 2
    net.check_safety()


def test_learner_can_vote() -> None:
    """etcd TestLearnerCanVote: a server whose own log still says learner
    answers a vote request (the candidate's log may make it a voter)."""
    net = Network(2)
    net.elect(0)
    net.add(2)
    net.change(0, ADD_LEARNER, 2)
    net.heartbeat(2)
    learner = net[2]
    assert learner.configs.latest.learners == (2,)
    net.now += 10   # long past any lease
    learner.step(1, RequestVote(learner.term + 1, 1, learner.log.last_index,
                                learner.log.last_term), net.now)
    reply = net.flush(2).persisted_messages
    assert [(d, m.granted) for d, m in reply] == [(1, True)]


# ------------------------------------------------------------------ removing


def test_remove_node() -> None:
    """etcd TestRemoveNode: the removed server leaves the quorum at once; the
    last voter cannot be removed."""
    net = Network(2)
    net.elect(0)
    net.change(0, REMOVE, 1)
    assert voters(net[0]) == (0,) and net[0].peers == [] and net[0].quorum == 1
    assert net[0].propose_config(REMOVE, 0) == (None, "server 0 is the last voter")


def test_commit_after_remove_node() -> None:
    """etcd TestCommitAfterRemoveNode: an entry waiting for a removed server's
    acknowledgement commits once the smaller configuration is in use."""
    net = Network(2)
    net.elect(0)
    net.isolate(1)
    (x,) = net.propose(0, "x")
    net.heartbeat(2)
    assert net[0].commit < x
    index = net.change(0, REMOVE, 1)
    assert net[0].commit == index > x
    net.flush(0)
    assert [e.command for e in net.applied[0]][-2] == "x"


def test_remove_leader() -> None:
    """hashicorp TestRaft_RemoveLeader; thesis §4.2.2: the leader manages the
    configuration without itself, without counting itself, steps down when it
    commits (telling an up-to-date voter to campaign), and never campaigns
    again."""
    net = Network(3)
    net.elect(0)
    net.isolate(1)
    net.isolate(2)
    index = net.change(0, REMOVE, 0)
    assert voters(net[0]) == (1, 2) and net[0].role == LEADER
    net.heartbeat(2, nodes=[0])
    assert net[0].commit < index and net[0].role == LEADER, "the leader counted itself"
    net.recover()
    net.heartbeat(2, nodes=[0])
    assert net[0].role == FOLLOWER and net[0].commit >= index
    assert sent(net, TimeoutNow, 0), "no voter was told to take over"
    assert net.leader() in (1, 2) and net[net.leader()].term == 2
    net.settle()
    before = len(net.sent)
    for _ in range(5):
        net.timeout(0)
    assert not [m for s, _, m in net.sent[before:] if s == 0 and type(m) is RequestVote]
    net.check_safety()


def test_two_server_removal() -> None:
    """Thesis §4.2.2's two-server case: removing the leader of {0, 1} commits
    only once 1 holds it (0 does not count itself); then 1 leads alone."""
    net = Network(2)
    net.elect(0)
    net.cut(0, 1)
    index = net.change(0, REMOVE, 0)
    net.heartbeat(3, nodes=[0])
    assert net[0].commit < index and net[0].role == LEADER
    net.recover()
    net.heartbeat(1, nodes=[0])
    assert net[0].role == FOLLOWER
    assert net[1].role == LEADER and voters(net[1]) == (1,)
    (y,) = net.propose(1, "y")
    assert net[1].commit == y, "a single voter commits alone"


def test_removed_server_stops_campaigning_and_cannot_disrupt() -> None:
    """A server that holds a configuration without itself never campaigns;
    one that never learned of its removal campaigns, but a higher term from
    it is ignored while the members hear their leader (thesis §4.2.3)."""
    net = Network(3)
    net.elect(0)
    net.isolate(2)
    net.change(0, REMOVE, 2)
    net.heartbeat(2)
    term = net[0].term
    for _ in range(5):                 # 2 campaigns in its corner (pre-vote: no new term)
        net.timeout(2)
    assert net[2].role == PRE_CANDIDATE and net[2].term == term
    net.recover()
    for _ in range(10):
        net.timeout(2)                 # its pre-votes are ignored: 0 and 1 hear 0
        net.heartbeat(1, nodes=[0, 1])
    # a real vote request with a higher term, as if it had raised one
    net[2].term += 5
    msg = RequestVote(net[2].term, 2, net[2].log.last_index + 10, net[2].term)
    for dst in (0, 1):
        net.step(2, dst, msg)
    net.settle()
    assert net[0].role == LEADER and net[0].term == term and net[1].term == term


def test_a_server_that_knows_it_was_removed_does_not_campaign() -> None:
    net = Network(3)
    net.elect(0)
    net.change(0, REMOVE, 2)
    net.heartbeat(2)
    assert voters(net[2]) == (0, 1) and not net[2].is_voter
    net.isolate(2)
    before = len(net.sent)
    for _ in range(5):
        net.timeout(2)
    assert net[2].role == FOLLOWER
    assert not [m for s, _, m in net.sent[before:] if s == 2]


# --------------------------------------------------------------- the rules


def test_change_refused_before_the_new_leaders_noop_commits() -> None:
    """The 2015 rule: a new leader may not change the configuration before an
    entry of its own term is committed."""
    net = Network(3)
    net.timeout(0)
    while net[0].role != LEADER:   # the votes, not the no-op's appends
        assert net.deliver(pred=lambda s, d, m: type(m) is not AppendEntries)
    assert net[0].role == LEADER and net[0].commit == 0
    assert net[0].propose_config(ADD_LEARNER, 3) == \
        (None, "this leader has not committed an entry of its term yet")
    net.settle()
    assert net[0].commit == 1
    assert net[0].propose_config(ADD_LEARNER, 3)[1] is None


def test_change_refused_while_the_previous_one_is_uncommitted() -> None:
    net = Network(3)
    net.elect(0)
    net.isolate(0)
    net.change(0, ADD_LEARNER, 3)
    assert net[0].propose_config(ADD_LEARNER, 4) == \
        (None, "the previous configuration change is not committed yet")
    assert net[1].propose_config(ADD_LEARNER, 4) == (None, "not the leader")


def test_truncated_configuration_entry_is_reverted() -> None:
    """Thesis §4.1: a configuration is in use as soon as it is in the log, and
    the one before it again once that entry is truncated."""
    old = [Entry(1, 1, None), Entry(1, 2, Configuration((0, 1)))]
    new = [Entry(1, 1, None), Entry(2, 2, "x")]
    net = Network(3, states={0: (2, None, new), 1: (1, None, old), 2: (2, None, new)})
    assert voters(net[1]) == (0, 1) and net[1].quorum == 2
    assert voters(net[0]) == (0, 1, 2)
    net.elect(0)
    net.heartbeat(1)
    assert net[1].log.term(2) == 2
    assert voters(net[1]) == (0, 1, 2) and net[1].quorum == 2 and net[1].peers == [0, 2]
    net.check_safety()


def test_non_voter_with_higher_term_joins() -> None:
    """hashicorp TestRaft_ClusterCanRegainStability_WhenNonVoterWithHigherTermJoin:
    a learner that comes with a higher term deposes the leader once (its
    answer carries the term), cannot campaign itself, and the voters elect a
    leader of a higher term that brings it in."""
    net = Network(3)
    net.elect(0)
    net.add(3, state=(10, None, []))
    net.change(0, ADD_LEARNER, 3)
    net.settle()
    for _ in range(40):
        if net.leader() is not None and net[net.leader()].term > 10:
            break
        net.heartbeat(1)
    leader = net.leader()
    assert leader in (0, 1, 2) and net[leader].term > 10
    (x,) = net.propose(leader, "x")
    net.heartbeat(2)
    assert net[3].commit >= x and net[3].role == FOLLOWER
    assert net[3].configs.latest.learners == (3,)
    net.check_safety()


# ------------------------------------------------------- leadership transfer


def test_leader_transfer_to_slow_follower() -> None:
    """etcd TestLeaderTransferToSlowFollower: the leader brings the target up
    to date, then sends TimeoutNow; the target wins at once, inside the
    others' hold on votes (RequestVote.transfer)."""
    net = Network(3)
    net.elect(0)
    net.isolate(2)
    net.propose(0, "a", "b")
    net.heartbeat(1)
    net.recover()
    assert net[2].log.last_index < net[0].log.last_index
    assert net[0].transfer_leader(2, net.now) is None
    assert net[0].propose("c") is None, "a write accepted during a transfer"
    net.settle()
    net.heartbeat(1, nodes=[0])
    assert net[2].role == LEADER and net[2].term == 2
    assert all(m.transfer for _, _, m in sent(net, RequestVote, 2))
    assert not [m for _, _, m in sent(net, RequestVote, 2) if m.pre], "it pre-voted"
    net.check_safety()


def test_leader_transfer_timeout() -> None:
    """etcd TestLeaderTransferTimeout: a target that never catches up; after an
    election timeout the transfer is abandoned and writes resume."""
    net = Network(3)
    net.elect(0)
    net.isolate(2)
    net.propose(0, "a")
    assert net[0].transfer_leader(2, net.now) is None
    assert net[0].transfer_leader(1, net.now) == "a leadership transfer to 2 is under way"
    deadline = net.now + net.config.election_timeout[1]
    while net.now < deadline:
        assert net[0].propose("b") is None
        net.heartbeat(1, nodes=[0, 1])
    net.heartbeat(1, nodes=[0, 1])
    assert net[0].transfer_to is None and net[0].role == LEADER
    assert net[0].next_deadline() > net.now, "an abandoned transfer's timer stays due"
    assert not sent(net, TimeoutNow)
    assert net[0].propose("b") is not None


def test_transfer_abandoned_when_the_target_is_removed() -> None:
    net = Network(3)
    net.elect(0)
    net.isolate(2)
    net.propose(0, "a")
    net.heartbeat(1)
    assert net[0].transfer_leader(2, net.now) is None
    assert net[0].propose_config(ADD_LEARNER, 3)[1] == "a leadership transfer to 2 is under way"
    net.change(0, REMOVE, 2)
    assert net[0].transfer_to is None and net[0].next_deadline() > net.now
    assert net[0].propose("b") is not None


def test_transfer_ends_the_lease_before_timeout_now() -> None:
    """Thesis §6.4.1: voters grant the transfer's vote inside the lease, so the
    lease ends before TimeoutNow leaves, and stays ended for the term (a
    TimeoutNow delayed past an abort could still start the campaign)."""
    net = Network(3, config=Config(read_mode="lease"))
    net.now = 1.0   # past the boot hold on votes
    net.elect(0)
    net.answered_heartbeat(0)
    assert net[0].lease_until() > net.now
    net.isolate(2)
    assert net[0].transfer_leader(2, net.now) is None
    assert net[0].lease_until() == float("-inf")
    net.heartbeat(int(net.config.election_timeout[1] / net.config.heartbeat_interval) + 2)
    assert net[0].transfer_to is None and net[0].role == LEADER
    net.answered_heartbeat(0)
    assert net[0].lease_until() == float("-inf")


@pytest.mark.parametrize("target_alive", [True, False])
def test_timeout_now_is_only_for_voters_of_the_term(target_alive: bool) -> None:
    net = Network(3)
    net.elect(0)
    net.heartbeat(1)
    core = net[1]
    core.step(0, TimeoutNow(core.term - 1 if target_alive else core.term, 0), net.now)
    assert core.role == (FOLLOWER if target_alive else CANDIDATE)


# ------------------------------------------------------ through a client session


def test_a_change_goes_through_the_session_exactly_once_and_a_refusal_says_why() -> None:
    """A change is a client request like a write: answered once whatever the
    retries, from the session table once applied; a refused one fails with
    ConfigChangeRefused and the leader's reason; writes during a transfer are
    told to retry."""
    node = Node(0, [0, 1], (1, 0, []), random.Random(1), 0.0, Config(read_mode="index"))
    t = 0.0
    while node.role != LEADER:     # 1 votes as soon as asked
        t += 0.1
        node.tick(t)
        for _, m in node.ready(t).persisted_messages:
            node.step(1, RequestVoteReply(m.term, 1, True, m.pre), t)
    rd = node.ready(t)
    noop = [m for _, m in rd.messages if type(m) is AppendEntries][0]
    ack = AppendEntriesReply(node.term, 1, True, noop.prev_index + 1, 0, 0, noop.round)
    node.step(1, ack, t)
    node.ready(t)
    assert node.commit == 1

    add = ClientRequest(Command(7, 1, 1, "add_learner", "2"))
    node.step(7, add, t)
    node.step(8, add, t)        # a retry from another endpoint, while in the log
    rd = node.ready(t)
    app = [m for _, m in rd.messages if type(m) is AppendEntries and m.entries][0]
    assert node.configuration[1].learners == (2,)
    assert not [m for _, m in rd.persisted_messages if m.seq == 1]
    node.step(1, ack._replace(index=app.entries[-1].index, round=app.round), t)
    answers = [(d, m.status) for d, m in node.ready(t).persisted_messages if m.seq == 1]
    assert answers == [(8, OK)]
    node.step(9, add, t)        # a retry after it was applied: its first result, not again
    assert [(d, m.status) for d, m in node.ready(t).persisted_messages] == [(9, OK)]
    assert node.configuration[1].learners == (2,)

    s = ClientSession(17, [0, 1], random.Random(2))
    s.submit("remove", "9", None, None, t)
    finished = []
    for _ in range(10):   # (a new session registers first: its entry needs 1's ack)
        for _, req in s.take_messages():
            node.step(17, req, t)
        rd = node.ready(t)
        for _, m in rd.messages:
            if type(m) is AppendEntries and m.entries:
                node.step(1, ack._replace(index=m.entries[-1].index, round=m.round), t)
        for _, reply in rd.persisted_messages + node.ready(t).persisted_messages:
            if type(reply) is ClientReply:
                s.step(0, reply, t)
        finished += s.take_finished()
        if finished:
            break
    (outcome,) = finished
    assert outcome.outcome == FAILED and outcome.error is ConfigChangeRefused
    assert outcome.result == "refused: server 9 is not a member"

    assert node.raft.transfer_leader(1, t) is None
    node.step(7, ClientRequest(Command(7, 3, 1, "put", "k", "v")), t)
    replies = node.ready(t).persisted_messages
    assert [m.status for _, m in replies if type(m) is ClientReply] == [RETRY]


# ------------------------------------------------------------- persistence


def test_configurations_survive_a_restart_from_the_log_and_from_a_snapshot(tmp_path) -> None:
    """Configuration entries are log entries (FileStorage keeps them like any
    other); a snapshot carries the configuration in force at its index, and a
    restarted server uses the latest of the two (thesis §5.1)."""
    from raftmp.storage import FileStorage

    net = Network(3, config=Config(read_mode="index", snapshot_keep=0))
    net.elect(0)
    net.add(3)
    index = net.change(0, ADD_LEARNER, 3)
    net.heartbeat(2)
    net.change(0, PROMOTE, 3)
    net.heartbeat(2)
    net.crash(1)
    net.restart(1)
    assert net[1].configs.latest == net[0].configs.latest and net[1].is_voter
    assert net[1].configs.history[0][0] == 0     # the cluster's first, then two entries
    net.snapshot(0)
    assert net.storage[0].load_snapshot().config == Configuration((0, 1, 2, 3))
    net.crash(0)
    net.restart(0)
    assert net[0].configs.latest == Configuration((0, 1, 2, 3)) and net[0].quorum == 3
    # a new server gets the configuration with the snapshot (thesis §5.3)
    net.add(4)
    net.elect(1)
    net.isolate(4)
    net.change(1, ADD_LEARNER, 4)
    net.heartbeat(1)
    snap = net.snapshot(1)
    assert net[1].log.base == snap.index and snap.config.learners == (4,)
    net.recover()
    net.heartbeat(3)
    assert net[4].installs == 1 and net[4].configs.latest.learners == (4,)
    # the same on disk
    with FileStorage(tmp_path) as s:
        s.save((2, 0), net[2].log.entries)
    with FileStorage(tmp_path) as s:
        assert s.load()[2][index - 1].command.learners == (3,)
        s.save_snapshot(snap)
    with FileStorage(tmp_path) as s:
        assert s.load_snapshot() == snap
        core = Raft(2, [0, 1, 2], s.load(), random.Random(0), 0.0, net.config, snap)
        assert core.configs.latest == net[2].configs.latest == snap.config


def test_the_json_wire_carries_a_snapshot_chunk_without_its_configuration() -> None:
    """The JSON wire (fixed memberships: CS3700, raftmp serve) leaves a chunk's
    configuration home; the chunk itself crosses intact (its encoding once
    took the last field for the data, and the configuration fields moved it)."""
    import json

    from raftmp.core.messages import InstallSnapshot
    from raftmp.transports import jsonwire

    m = InstallSnapshot(3, 0, 9, 2, 5, 0, b"state", Configuration((0, 1, 2)), 4)
    back = jsonwire.decode(json.loads(json.dumps(jsonwire.encode(m))))
    assert back == m._replace(config=None, config_index=0)
