"""Targeted cases for the Raft core: stale leaders, divergent logs, a hostile
network (duplicates, reordering, loss), batching, pipelining, check-quorum."""

from __future__ import annotations

import random

import pytest
from raftnet import Network, make_log

from raftmp.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    RequestVote,
    RequestVoteReply,
)
from raftmp.core.raft import FOLLOWER, LEADER, Config


def appends(net: Network, src: int, dst: int) -> list[AppendEntries]:
    return [m for s, d, m in net.queue if s == src and d == dst and type(m) is AppendEntries]


# ------------------------------------------------------------- stale leader


def test_stale_leader_in_minority_cannot_commit_and_is_repaired():
    """A leader cut off in a minority keeps accepting proposals but commits none;
    after the partition heals it steps down and its uncommitted entries are replaced
    by the new leader's log."""
    net = Network(5)
    net.elect(0)
    net.heartbeat()
    net.partition([0, 1], [2, 3, 4])
    net.propose(0, "lost-1", "lost-2")
    net.heartbeat(5, nodes=[0, 1])
    assert net[0].role == LEADER and net[0].commit == 1
    assert net[1].log.last_index == 3                      # replicated to the minority ...
    assert all(net[i].commit == 1 for i in net.ids)        # ... but committed nowhere
    net.now += 1.0
    net.elect(2)
    net.propose(2, "kept")
    net.heartbeat(2, nodes=[2, 3, 4])
    assert net[2].commit == 3
    net.recover()
    net.heartbeat(5)
    assert net[0].role == FOLLOWER and net[0].term == net[2].term
    assert net.converged()
    for i in net.ids:
        commands = [e.command for e in net[i].log.entries]
        assert commands == [None, None, "kept"]
        assert not any(e.command and e.command.startswith("lost") for e in net.applied[i])
    net.check_safety()


# -------------------------------------------------------- divergent logs


# Figure 7: the leader of term 8 and six possible followers (a)-(f).
FIGURE7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE7 = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def test_figure7_divergent_logs_converge_with_fast_backtracking():
    """§5.3 / Figure 7: every follower log, missing entries, with extra uncommitted
    entries, or both, converges to the leader's log; fast backtracking (conflict
    term and index) needs at most two rejections per follower, where backing up
    one entry at a time would take up to seven for (f)."""
    states = {0: (7, None, make_log(FIGURE7_LEADER))}
    for i, name in enumerate(sorted(FIGURE7), 1):
        states[i] = (7, None, make_log(FIGURE7[name]))
    net = Network(7, states=states)
    leader = net.elect(0)
    assert leader.term == 8
    net.heartbeat(2, nodes=[0])
    expected = make_log(FIGURE7_LEADER) + [Entry(8, 11, None)]
    for i in net.ids:
        assert net[i].log.entries == expected, f"follower {sorted(FIGURE7)[i - 1]}"
        assert net.storage[i].entries == expected
    assert leader.commit == 11
    rejections = {sorted(FIGURE7)[i - 1]: sum(1 for s, d, m in net.sent if s == i and
                                                 type(m) is AppendEntriesReply and not m.success)
                  for i in range(1, 7)}
    assert rejections == {"a": 1, "b": 1, "c": 0, "d": 0, "e": 2, "f": 2}
    net.check_safety()


@pytest.mark.parametrize("seed", range(30))
def test_random_divergent_logs_converge(seed):
    """Random divergent histories converge to the leader's log, with a number of
    rejections bounded by the number of conflicting terms, not entries.

    The logs are valid Raft histories: a common prefix, then a follower may share
    part of the leader's tail and continue with terms of its own (term 5k+i for
    follower i, the leader's are 5k), so equal (index, term) means equal prefix."""
    rng = random.Random(seed)
    base = sorted(rng.randint(1, 3) for _ in range(rng.randint(0, 5)))
    # The leader's last term (35) is the highest, so it wins its election.
    leader_tail = sorted(5 * rng.randint(1, 6) for _ in range(rng.randint(0, 7))) + [35]
    leader_log = base + leader_tail
    states = {0: (100, None, make_log(leader_log))}
    bound = 0
    for i in range(1, 5):
        shared = leader_tail[:rng.randint(0, len(leader_tail))]
        low = shared[-1] // 5 if shared else 0
        own = sorted(5 * rng.randint(low, 6) + i for _ in range(rng.randint(0, 8) * (low < 7)))
        states[i] = (100, None, make_log(base + shared + own))
        bound += len(set(own)) + 2
    net = Network(5, seed=seed, states=states)
    net.elect(0)
    net.heartbeat(4, nodes=[0])
    for i in net.ids:
        assert net[i].log.entries == net[0].log.entries
    rejections = sum(1 for s, d, m in net.sent if type(m) is AppendEntriesReply and not m.success)
    assert rejections <= bound
    net.check_safety()


# --------------------------------------------- hostile network: dup/reorder


def test_duplicated_and_reordered_appends_never_truncate():
    """A delayed, shorter AppendEntries (a duplicate or a reordered one) arriving
    after a longer one must not truncate entries the follower already holds: the
    leader may already count them toward commitment."""
    net = Network(3, config=Config(max_inflight=8))
    net.elect(0)
    net.heartbeat()
    net.propose(0, "a")
    first = appends(net, 0, 1)
    net.propose(0, "b", "c")
    second = appends(net, 0, 1)[len(first):]
    assert len(first) == 1 and len(second) == 1
    net.take()
    net.step(0, 1, second[0])             # arrives first: prev mismatch (index 2 missing)
    net.step(0, 1, first[0])              # then the older, shorter one
    net.step(0, 1, first[0])              # duplicated
    net.step(0, 1, second[0])
    net.step(0, 1, first[0])              # and again, after the longer one
    assert [e.command for e in net[1].log.entries] == [None, "a", "b", "c"]
    assert net.storage[1].entries == net[1].log.entries
    net.settle()
    net.heartbeat(2)
    assert net.converged()
    net.check_safety()


@pytest.mark.parametrize("seed", range(10))
def test_random_duplication_and_reordering_keeps_logs_consistent(seed):
    """Every message may be delivered late, out of order, and twice: the follower's
    log only ever grows along the leader's, and everything converges."""
    rng = random.Random(seed)
    net = Network(3, seed=seed)
    net.elect(0)
    net.heartbeat()
    lengths = {1: 1, 2: 1}
    for step in range(200):
        if rng.random() < 0.3:
            net.propose(0, f"c{step}")
        if rng.random() < 0.1:
            net.advance(net.config.heartbeat_interval / 2, nodes=[0])
        for _ in range(rng.randint(0, 3)):
            if not net.queue:
                break
            src, dst, m = net.queue[rng.randrange(len(net.queue))]
            if rng.random() < 0.7:
                net.queue.remove((src, dst, m))
            net.step(src, dst, m)              # a copy stays queued 30% of the time
        for i in (1, 2):
            log = net[i].log.entries
            assert log == net[0].log.entries[:len(log)]       # a prefix of the leader's
            assert len(log) >= lengths[i], "follower log shrank"
            lengths[i] = len(log)
        assert net[0].role == LEADER
    net.settle()
    net.heartbeat(3)
    assert net.converged()
    net.check_safety()


def test_vote_request_from_stale_term_rejected_and_candidate_steps_down():
    """A candidate that was partitioned, restarted at an old term, asks for votes:
    everybody refuses with the current term and the candidate adopts it."""
    net = Network(3)
    net.elect(0)
    net.heartbeat()
    net.crash(0)
    net.now += 1.0
    net.elect(1)                       # term 2
    net.heartbeat()
    net.step(0, 2, RequestVote(1, 0, 5, 1))
    (reply,) = [m for s, d, m in net.queue if s == 2]
    assert reply == RequestVoteReply(2, 2, False)
    assert net[2].vote == 1
    net.queue.clear()
    core = net.restart(0)
    assert core.term == 1
    net.heartbeat()                    # the leader's appends reach it
    assert core.term == 2 and core.leader == 1


# ------------------------------------------------------------ lost messages


def test_replication_completes_with_every_other_packet_dropped():
    """Nothing may depend on a single packet arriving: with exactly every second
    message lost, heartbeat retransmission (go-back-N) still replicates and commits
    everything."""
    net = Network(3)
    net.elect(0)
    net.heartbeat()
    net.drop_every(2)
    for k in range(20):
        leader = net.leader()
        if leader is not None:
            net.propose(leader, f"c{k}")
        net.heartbeat()
    for _ in range(200):
        if net.converged():
            break
        net.heartbeat()
    assert len(net.dropped) > 50
    net.recover()
    net.heartbeat(3)
    assert net.converged()
    commands = [e.command for e in net[0].log.entries if e.command]
    assert len(commands) >= 15 and len(set(commands)) == len(commands)
    net.check_safety()


@pytest.mark.parametrize("seed", range(5))
def test_replication_completes_with_half_the_packets_lost(seed):
    """Random 50% loss on every link: proposals made to whoever leads still end up
    committed everywhere once the network heals, with no safety violation."""
    net = Network(5, seed=seed)
    net.elect(0)
    for i in net.ids:
        for j in net.ids:
            if i != j:
                net.drop(i, j, 0.5)
    proposed = []
    for k in range(60):
        leader = net.leader()
        if leader is not None:
            net.propose(leader, f"c{k}")
            proposed.append(f"c{k}")
        net.heartbeat()
    net.recover()
    for _ in range(100):
        if net.converged() and net.leader() is not None:
            break
        net.heartbeat()
    assert net.converged()
    assert proposed
    net.check_safety()


# ---------------------------------------------------- batching, pipelining


def test_batching_one_append_per_follower_per_ready():
    """All entries proposed between two ready() calls leave in one AppendEntries
    per follower (every follower at once: ``fan_out`` "all")."""
    net = Network(3, config=Config(fan_out="all"))
    net.elect(0)
    net.heartbeat()
    net.queue.clear()
    net.propose(0, *[f"c{k}" for k in range(10)])
    for f in (1, 2):
        (m,) = appends(net, 0, f)
        assert [e.command for e in m.entries] == [f"c{k}" for k in range(10)]
        assert m.prev_index == 1
    assert len(net.queue) == 2


def test_batching_respects_the_entry_cap_and_pipelining_is_bounded():
    """max_batch_entries caps one AppendEntries; at most max_inflight unacknowledged
    AppendEntries are outstanding per follower; an acknowledgement opens the window."""
    net = Network(3, config=Config(max_batch_entries=4, max_inflight=2, fan_out="all"))
    net.elect(0)
    net.heartbeat()
    net.queue.clear()
    net.propose(0, *[f"c{k}" for k in range(13)])
    for f in (1, 2):
        ms = appends(net, 0, f)
        assert [len(m.entries) for m in ms] == [4, 4]           # window full: 2 in flight
        assert [m.prev_index for m in ms] == [1, 5]
    assert [(s.first, s.last) for s in net[0].progress[1].inflight] == [(2, 5), (6, 9)]
    net.propose(0, "more")
    assert appends(net, 0, 1) == appends(net, 0, 1)[:2]          # nothing new while full
    assert len(appends(net, 0, 1)) == 2
    net.deliver(1, pred=lambda s, d, m: d == 1)                  # first batch lands
    net.deliver(1, pred=lambda s, d, m: s == 1)                  # its ack opens one slot
    ms = appends(net, 0, 1)
    assert [(m.prev_index, len(m.entries)) for m in ms] == [(5, 4), (9, 4)]
    net.settle()
    assert net[0].commit == 15 and net[1].log.last_index == 15


def test_batching_respects_the_byte_cap():
    """max_batch_bytes splits large entries over several AppendEntries (but always
    sends at least one entry)."""
    net = Network(3, config=Config(max_batch_bytes=3000, max_inflight=16))
    net.elect(0)
    net.heartbeat()
    net.queue.clear()
    net.propose(0, *["x" * 1000 for _ in range(6)], "y" * 5000)
    ms = appends(net, 0, 1)
    sizes = [len(m.entries) for m in ms]
    assert sum(sizes) == 7 and len(ms) >= 3
    assert sizes[-1] == 1                       # the 5000-byte entry goes alone
    net.settle()
    assert net[1].log.last_index == 8


# ------------------------------------------------------------ check-quorum


def test_check_quorum_leader_cut_off_steps_down():
    """Thesis §6.2: a leader that has not heard from a majority for an election
    timeout steps down (while one that has, does not)."""
    net = Network(5)
    net.elect(0)
    net.heartbeat()
    net.partition([0, 1], [2, 3, 4])
    limit = 2 * 2 * net.config.election_timeout[1]
    steps = int(limit / net.config.heartbeat_interval) + 2
    for _ in range(steps):
        net.heartbeat(nodes=[0, 1])
        if net[0].role != LEADER:
            break
    assert net[0].role == FOLLOWER and net[0].leader is None
    assert net[0].term == 1                  # stepping down does not bump the term


def test_check_quorum_connected_leader_stays():
    net = Network(5)
    net.elect(0)
    net.cut(0, 4)
    net.cut(0, 3)                             # 0, 1, 2 is still a majority
    for _ in range(60):
        net.heartbeat(nodes=[0, 1, 2])
        assert net[0].role == LEADER and net[0].term == 1


# ------------------------------------------------- old-term messages, send order


def test_thesis_6_4_stale_term_reject_confirms_no_round():
    """Thesis §6.4 with §5.1: a follower rejecting an AppendEntries from an older term
    must not echo its round. If the old sender leads again (its round counter restarts
    in each term), that echo would read as a current-term confirmation of a high round:
    a re-elected, then isolated, leader would release reads after a newer leader
    committed writes (a stale read; found by review, issue 8)."""
    net = Network(3)
    net.elect(0)
    net.heartbeat(20)                                   # term 1: round ~21
    net.advance(net.config.heartbeat_interval, nodes=[0])
    (held,) = net.take(lambda s, d, m: s == 0 and d == 2)   # a term-1 append, delayed
    high = held[2].round
    net.settle()
    net.now += 1.0                                      # leases expire
    net.isolate(0)
    net.elect(1)                                        # term 2
    net.recover()
    net.heartbeat(2)                                    # 0 steps down, catches up
    net.now += 1.0
    net.elect(0)                                        # term 3: round restarts
    assert net[0].term == 3 and net[0].round < high
    net[0].progress[2].active = False
    net.step(*held)                                     # the old append arrives at 2 ...
    net.settle()                                        # ... and its rejection at 0
    assert net[0].progress[2].round <= net[0].round
    assert not net[0].progress[2].active, "a stale rejection counted for check-quorum"
    net.isolate(0)
    net.now += 1.0
    net.elect(1)                                        # term 4, with node 2
    net.propose(1, "new")
    net.heartbeat(2, nodes=[1, 2])
    assert net[1].commit == net[1].log.last_index
    assert net[0].role == LEADER and net[0].read_index("stale")
    net.flush(0)
    for _ in range(10):
        net.heartbeat(nodes=[0])
        assert net.reads[0] == [], "an isolated leader released a read"


def test_thesis_6_4_a_reply_naming_a_round_never_sent_is_dropped_and_counted():
    """An AppendEntriesReply of the leader's term that confirms a round above any
    it sent cannot be honest: believed, it released an isolated leader's read
    (and kept later honest rounds from counting). Dropped, and counted."""
    net = Network(3)
    leader = net.elect(0)
    net.heartbeat(2)
    net.isolate(0)
    assert leader.read_index("r")
    net.flush(0)                                         # its round is lost
    sent = leader.round
    forged = AppendEntriesReply(leader.term, 1, True, leader.log.last_index, 0, 0, sent + 5)
    net.step(1, 0, forged)
    assert net.reads[0] == [], "a read released by a round never sent"
    assert leader.progress[1].round <= sent and leader.unsent_rounds == 1
    net.recover()
    net.heartbeat()                                      # an honest round still counts
    assert [ctx for ctx, _ in net.reads[0]] == ["r"] and leader.unsent_rounds == 1


def test_thesis_10_2_1_only_a_leaders_appends_leave_before_the_save():
    """Thesis §10.2.1: a leader may send AppendEntries before its own log write
    (``Ready.messages``); an acknowledgement, a vote, and anything sent in a turn
    that changed the term or vote wait for the save (``persisted_messages``)."""
    net = Network(3, config=Config(fan_out="all"))
    net.elect(0)
    net.heartbeat()
    net[0].propose("x")
    rd = net[0].ready(net.now)
    assert rd.entries and rd.hard_state is None
    assert {d for d, m in rd.messages} == {1, 2}
    assert all(type(m) is AppendEntries and m.entries for _, m in rd.messages)
    assert rd.persisted_messages == []
    net[1].step(0, rd.messages[0][1], net.now)
    ack = net[1].ready(net.now)
    assert ack.entries and ack.messages == []
    assert [type(m) for _, m in ack.persisted_messages] == [AppendEntriesReply]
    # A newer term arrives in the turn whose heartbeat went out: it all waits.
    net.now += net.config.heartbeat_interval
    net[0].tick(net.now)
    net[0].step(2, AppendEntriesReply(7, 2, False, 0, 0, 0, 0), net.now)
    rd = net[0].ready(net.now)
    assert rd.hard_state == (7, None) and rd.messages == []
    assert {type(m) for _, m in rd.persisted_messages} == {AppendEntries}

# ----------------------------------------------------------------------- §8
