"""The quiet-when-idle options of the core (``Config.eager_followers`` and
``quiet_heartbeats``, the CS3700 profile): fewer messages, the same Raft.
New entries go at once to the eager followers only and commit with their
acknowledgements; the others catch up on their heartbeat; a follower that got
something within a heartbeat interval gets no heartbeat; a dead eager
follower is replaced; a ReadIndex round asks only the quorum it needs."""

from __future__ import annotations

import pytest
from raftnet import Network

from raftmp.core.messages import AppendEntries, AppendEntriesReply, RequestVote, RequestVoteReply
from raftmp.core.raft import LEADER, LOSS_MEMORY, Config
from raftmp.cs3700 import course_config
from raftmp.sim import FAULTS, SimConfig, Simulation

HB = 0.5
QUIET = Config(heartbeat_interval=HB, election_timeout=(2.0, 3.0), min_rto=0.01, max_rto=0.5,
               eager_followers=3, quiet_heartbeats=True, read_mode="index")


def appends_to(net: Network, since: int, dst: int, entries: bool | None = None) -> int:
    return sum(1 for s, d, m in net.sent[since:]
               if s == 0 and d == dst and type(m) is AppendEntries
               and (entries is None or bool(m.entries) == entries))


def quiet_cluster() -> Network:
    net = Network(5, config=QUIET)
    net.elect(0)
    net.heartbeat()
    assert net.converged()
    return net


def test_new_entries_go_at_once_to_the_eager_followers_and_commit_with_them():
    net = quiet_cluster()
    mark = len(net.sent)
    [index] = net.propose(0, "x")
    eager = [d for d in range(1, 5) if appends_to(net, mark, d, entries=True)]
    assert len(eager) == 3
    net.settle()
    assert net[0].commit == index                      # two of three acknowledged
    [lazy] = set(range(1, 5)) - set(eager)
    assert net[lazy].log.last_index < index
    start = net.now
    while net[lazy].log.last_index < index and net.now - start < 2 * HB:
        net.advance(0.05)
        net.settle()
    assert net.now - start <= HB + 0.05                # on its next heartbeat
    assert net.converged()
    net.check_safety()


def test_a_busy_follower_gets_no_heartbeat_and_an_idle_one_one_per_interval():
    net = quiet_cluster()
    mark = len(net.sent)
    proposals = 0
    for _ in range(32):                                # 4 s, a write every 0.125 s
        net.advance(0.125)
        net.propose(0, f"w{proposals}")
        proposals += 1
        net.settle()
    sent = {d: appends_to(net, mark, d) for d in range(1, 5)}
    busy = [d for d in sent if sent[d] == proposals]
    assert len(busy) == 3, sent                        # one append per write, nothing else
    [idle] = set(sent) - set(busy)
    assert sent[idle] == 4 / HB, sent                  # one heartbeat (with entries) per interval
    assert net[0].role == LEADER and all(net[i].leader == 0 for i in range(1, 5))
    net.check_safety()


def test_an_idle_cluster_sends_one_heartbeat_per_follower_per_interval():
    net = quiet_cluster()
    mark = len(net.sent)
    for _ in range(20):                                # 5 s
        net.advance(HB / 2)
        net.settle()
    assert {d: appends_to(net, mark, d) for d in range(1, 5)} == {d: 5 / HB for d in range(1, 5)}


def test_dead_eager_followers_are_replaced_by_a_lagging_one():
    net = quiet_cluster()
    mark = len(net.sent)
    [first] = net.propose(0, "a")
    eager = [d for d in range(1, 5) if appends_to(net, mark, d, entries=True)]
    net.crash(eager[0])
    net.settle()
    assert net[0].commit == first                      # the third eager follower's ack did it
    net.crash(eager[1])
    [index] = net.propose(0, "b")                      # only one eager follower can answer now
    net.settle()
    assert net[0].commit < index
    for _ in range(20):                                # bounded: the retransmit timeout is <= 0.5 s
        net.advance(0.05)
        net.settle()
        if net[0].commit == index:
            break
    assert net[0].commit == index, "the lagging follower was not brought in"
    net.check_safety()


def test_at_the_quorums_edge_the_eager_followers_are_the_ones_that_answer():
    """7 nodes, the CS3700 profile: three up-to-date followers die, so exactly a
    majority is left. Once their silence is known, new entries go at once to
    the three live followers only and commit in one round trip each, with no
    heartbeat to wait for. (Ranked by match alone, the dead ones stayed eager;
    and their endless retransmissions kept every follower eager, dead ones
    included, as if appends were being lost.)"""
    net = Network(7, config=course_config(7))
    net.elect(0)
    net.heartbeat()
    mark = len(net.sent)
    net.propose(0, "x")
    eager = [d for d in range(1, 7) if appends_to(net, mark, d, entries=True)]
    assert len(eager) == 3
    for d in eager:
        net.crash(d)
    live = sorted(set(range(1, 7)) - set(eager))
    for _ in range(int(LOSS_MEMORY * HB / 0.05) + 20):   # the loss is forgotten
        net.advance(0.05)
        net.settle()
    assert net[0].commit == net[0].log.last_index
    for k in range(5):
        mark = len(net.sent)
        [index] = net.propose(0, f"y{k}")
        assert [d for d in range(1, 7) if appends_to(net, mark, d, entries=True)] == live
        net.settle()
        assert net[0].commit == index
        net.advance(0.05)
        net.settle()
    net.check_safety()


def test_after_a_lost_append_every_follower_is_eager_for_a_while():
    net = Network(5, config=Config(**{**QUIET.__dict__, "eager_followers": 2}))
    net.elect(0)
    net.heartbeat()
    net.propose(0, "x")
    net.settle()                                       # round trips measured: rto = min_rto
    mark = len(net.sent)
    net.propose(0, "a")
    eager = [d for d in range(1, 5) if appends_to(net, mark, d, entries=True)]
    assert len(eager) == 2
    net.take(lambda s, d, m: d == eager[0])            # lost
    net.settle()
    net.advance(net[0].progress[eager[0]].rto, nodes=[0])   # its retransmission
    net.settle()
    net.advance(QUIET.min_rto, nodes=[])
    mark = len(net.sent)
    net.propose(0, "b")
    assert len([d for d in range(1, 5) if appends_to(net, mark, d, entries=True)]) == 4
    net.settle()
    net.advance(LOSS_MEMORY * HB, nodes=[])            # then no more losses for a while
    mark = len(net.sent)
    net.propose(0, "c")
    assert len([d for d in range(1, 5) if appends_to(net, mark, d, entries=True)]) == 2
    net.settle()
    assert net.converged() or net[0].commit == net[0].log.last_index
    net.check_safety()


def test_a_read_round_asks_only_the_quorum_it_needs():
    net = quiet_cluster()
    mark = len(net.sent)
    assert net[0].read_index("r")
    net.flush(0)
    asked = [d for d in range(1, 5) if appends_to(net, mark, d)]
    assert len(asked) == 2
    net.settle()
    assert net.reads[0] == [("r", net[0].commit)]


def test_a_later_read_asks_only_the_quorum_too():
    """The retry timer of an answered round is gone: a later read, ticked
    before its turn ends (as the worker does), still asks only a quorum."""
    net = quiet_cluster()
    net.propose(0, "x")                                # round trips measured: a short retry time
    net.settle()
    assert net[0].read_index("r1")
    net.flush(0)
    net.settle()
    net.advance(0.2, nodes=[])                         # after that round's retry time
    mark = len(net.sent)
    assert net[0].read_index("r2")
    net.tick(0)
    assert len({d for s, d, m in net.sent[mark:] if s == 0}) == 2


def test_a_lost_read_round_asks_everyone():
    net = quiet_cluster()
    assert net[0].read_index("r")
    net.flush(0)
    net.take()                                         # the round is lost
    mark = len(net.sent)
    for _ in range(20):
        net.advance(0.05, nodes=[0])
        if len(net.sent) > mark:
            break
    assert sorted({d for s, d, m in net.sent[mark:] if s == 0}) == [1, 2, 3, 4]
    net.settle()
    assert net.reads[0] == [("r", net[0].commit)]


# ---------------------------------------------------------- thesis §6.4.1

LEASE = Config(**{**QUIET.__dict__, "read_mode": "lease"})


def lease_cluster() -> Network:
    net = Network(5, config=LEASE)
    net.elect(0)
    net.heartbeat()
    return net


def test_thesis_6_4_1_a_read_under_the_lease_costs_no_message():
    net = lease_cluster()
    mark = len(net.sent)
    assert net[0].read_index("r")
    net.flush(0)
    assert net.sent[mark:] == [] and net.reads[0] == [("r", net[0].commit)]


def test_thesis_6_4_1_no_lease_read_after_a_new_leader_could_commit():
    """A leader cut off from the rest serves lease reads only until its lease
    runs out, and that is before any other server can be elected."""
    net = lease_cluster()
    net.isolate(0)
    served, new_leader_at, step = [], None, 0.05
    while new_leader_at is None:
        assert net.now < 20, "the others never elected a leader"
        net.advance(step)
        net.settle()
        before = len(net.reads[0])
        if net[0].role == LEADER and net[0].read_index(f"r{net.now}"):
            net.flush(0)
            if len(net.reads[0]) > before:
                served.append(net.now)
        if any(net[i].role == LEADER for i in range(1, 5)):
            new_leader_at = net.now
    assert served, "the lease served nothing"
    assert max(served) < new_leader_at - step
    lease = LEASE.election_timeout[0]
    assert max(served) - served[0] < lease                  # it ran out by itself
    net.check_safety()


def test_thesis_6_4_1_a_restarted_server_grants_no_vote_inside_a_lease():
    net = lease_cluster()
    net.crash(3)
    net.restart(3)
    net.take()
    # A candidate of a later term (say, cut off until now) asks at once.
    vote = RequestVote(net[3].term + 5, 4, 100, net[3].term + 4)
    net.step(4, 3, vote)
    assert net.take() == [] and net[3].term < vote.term
    net.advance(LEASE.election_timeout[0], nodes=[])
    net.step(4, 3, vote)
    assert [m.granted for s, d, m in net.take() if type(m) is RequestVoteReply] == [True]


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_the_course_profile_stays_safe_and_linearizable_under_faults(drop):
    """Seeded fault schedules (crashes, restarts, partitions, duplicates,
    delays) in the deterministic simulator, with the CS3700 timing profile:
    every safety check and the linearizability of the history hold."""
    cfg = SimConfig(nodes=5, drop=drop, faults=FAULTS, ops=150, fault_period=20.0,
                    read_mode="lease", clock_drift=0.05)   # as course_config serves reads
    for seed in range(30):
        result = Simulation(seed, cfg, course_config(5)).run()
        assert not result.violations, f"seed {seed}: {result.violations[0]}"
        assert result.ops_ok > 0


# ------------------------------------------ answers to heartbeats (Config defaults)


def replies_from(net: Network, since: int, src: int) -> int:
    return sum(1 for s, d, m in net.sent[since:]
               if s == src and d == 0 and type(m) is AppendEntriesReply)


@pytest.mark.parametrize("mode", ["index", "lease"])
def test_an_idle_follower_answers_one_heartbeat_per_check_quorum_period(mode):
    """Idle, the leader asks each follower for an answer only at the start of a
    check-quorum period (§6.2), and that keeps it leader: 4 heartbeats per
    interval, a few answers per period, not one per heartbeat."""
    cfg = Config(read_mode=mode)
    net = Network(5, config=cfg)
    net.elect(0)
    net.settle()
    mark, start = len(net.sent), net.now
    period = 2 * cfg.election_timeout[1]
    while net.now - start < 5 * period:
        net.heartbeat()
    heartbeats = appends_to(net, mark, 1)
    assert heartbeats >= 5 * period / cfg.heartbeat_interval - 1
    answers = [replies_from(net, mark, f) for f in range(1, 5)]
    assert len(set(answers)) == 1 and 4 <= answers[0] <= 5, answers   # one per period
    assert net[0].role == LEADER and all(net[i].leader == 0 for i in range(1, 5))


def test_a_follower_answers_an_unasked_heartbeat_only_when_the_leader_missed_its_ack():
    """An unasked heartbeat anchored at what the follower holds gets no answer; one
    anchored below it (the leader's match is behind: an acknowledgement was lost)
    gets one, which repairs it (cumulative acknowledgements)."""
    net = Network(3)
    net.elect(0)
    net.settle()
    [index] = net.propose(0, "x")
    net.settle()
    f, term = net[1], net[0].term

    def ping(anchor: int) -> list:
        mark = len(net.sent)
        f.step(0, AppendEntries(term, 0, anchor, f.log.term(anchor), (), index, 9, False),
               net.now)
        net.flush(1)
        return [m for s, d, m in net.sent[mark:] if s == 1]

    assert ping(index) == []
    [reply] = ping(index - 1)
    assert type(reply) is AppendEntriesReply and reply.success and reply.index == index


def test_thesis_6_4_1_steady_reads_keep_the_lease_without_a_round_per_read():
    """Lease mode with reads coming in: the heartbeats ask for answers often enough
    that the lease never lapses, so every read after the first is answered at
    once, with no message of its own."""
    net = Network(5, config=Config(read_mode="lease"))
    net.elect(0)
    net.settle()
    assert net[0].read_index("first")
    net.flush(0)
    net.settle()
    assert [c for c, _ in net.reads[0]] == ["first"]
    for k in range(60):                                # 3 s, a read every 50 ms
        net.advance(0.05)
        net.settle()
        assert net[0].read_index(k)
        net.flush(0)
        assert net.reads[0][-1][0] == k, f"read {k} waited for a round"


def test_a_new_leaders_first_probes_keep_the_first_rto_pace_for_a_heartbeat_interval():
    """At the quorum's edge (3 of 5 alive, the course profile) a new leader's
    first commit needs both survivors' acknowledgements. A survivor whose
    first four probes are lost is asked again every first_rto through the
    leader's first heartbeat interval (as vote requests are in a campaign's,
    elections.py), and the no-op commits within that interval. Before, the
    resends doubled (0.1, 0.2, 0.4 s): the fifth probe left 1.2 s after the
    election, and under 30% loss one failover in ten waited over a second
    for its first commit (issue 19, raftnet: p90 1.24 -> 0.44 s)."""
    cfg = course_config(5)
    net = Network(5, config=cfg)
    net.crash(3)
    net.crash(4)
    lost = []

    def first_four_to_2(src, dst, m):
        if src == 0 and dst == 2 and type(m) is AppendEntries and len(lost) < 4:
            lost.append(net.now)
            return True
        return False

    net.drop_if(first_four_to_2)
    leader = net.elect(0)
    elected, noop = net.now, leader.log.last_index
    while leader.commit < noop and net.now < elected + 5:
        net.advance(0.01, nodes=[0])
        net.settle()
    assert len(lost) == 4
    gaps = [b - a for a, b in zip(lost, lost[1:])]
    assert all(cfg.first_rto <= g < cfg.first_rto + 0.02 for g in gaps), gaps   # (0.01 s steps)
    assert leader.commit >= noop and net.now - elected < cfg.heartbeat_interval
