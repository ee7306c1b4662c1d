"""``Config.fan_out`` "quorum" (the default): a leader sends new entries at
once only to the followers a commit needs, the most up to date first; the
others get them with their heartbeat, or as soon as a full batch waits for
them. Raft leaves the order to the leader; these check that the order never
costs a commit: a leader outside its configuration asks a whole quorum, a
dead eager follower is replaced, a learner is never counted on, under loss
every follower gets entries at once, and under load nobody falls behind."""

from __future__ import annotations

from raftnet import Network

from raftmp.core.config import Config
from raftmp.core.membership import ADD_LEARNER, REMOVE
from raftmp.core.messages import AppendEntries, RequestVote
from raftmp.core.raft import LEADER, LOSS_MEMORY


def with_entries(net: Network, since: int, src: int = 0) -> list[tuple[int, AppendEntries]]:
    return [(d, m) for s, d, m in net.sent[since:]
            if s == src and type(m) is AppendEntries and m.entries]


def cluster(n: int, **config) -> Network:
    net = Network(n, config=Config(**config))
    net.elect(0)
    net.heartbeat()
    assert net.converged()
    return net


def test_new_entries_go_first_to_the_followers_a_commit_needs():
    net = cluster(5)
    mark = len(net.sent)
    [index] = net.propose(0, "x")
    first = {d for d, _ in with_entries(net, mark)}
    assert len(first) == 2                       # quorum 3: the leader and two followers
    net.settle()
    assert net[0].commit == index                # their acknowledgements committed it
    others = set(range(1, 5)) - first
    assert all(net[d].log.last_index < index for d in others)
    net.heartbeat()                              # the others get it with their heartbeat
    assert net.converged()
    net.check_safety()


def test_the_others_get_entries_as_soon_as_a_full_batch_waits():
    net = cluster(3, max_batch_entries=4)
    mark = len(net.sent)
    net.propose(0, "a", "b", "c")                # less than a batch: one follower
    [(eager, _)] = with_entries(net, mark)
    net.settle()
    mark = len(net.sent)
    net.propose(0, "d")                          # four wait for the other: a full batch
    assert {d for d, _ in with_entries(net, mark)} == {1, 2}
    [m] = [m for d, m in with_entries(net, mark) if d != eager]
    assert [e.command for e in m.entries] == ["a", "b", "c", "d"]


def test_every_follower_at_once_with_fan_out_all():
    net = cluster(5, fan_out="all")
    mark = len(net.sent)
    net.propose(0, "x")
    assert {d for d, _ in with_entries(net, mark)} == {1, 2, 3, 4}


def test_a_leader_outside_its_configuration_sends_to_a_whole_quorum():
    """Thesis §4.2.2: a leader removing itself does not count itself, so a
    commit needs a quorum of the others (two of {1, 2}), not a quorum less one."""
    net = cluster(3)
    mark = len(net.sent)
    net.propose(0, "x")
    assert len(with_entries(net, mark)) == 1
    net.settle()
    net.isolate(1)
    net.isolate(2)
    net.change(0, REMOVE, 0)
    assert not net[0].is_voter and net[0].role == LEADER
    net.recover()
    mark = len(net.sent)
    [index] = net.propose(0, "y")
    assert {d for d, _ in with_entries(net, mark)} == {1, 2}
    net.settle()
    net.heartbeat()                              # (the lost config entry goes again)
    assert net[0].commit >= index
    net.check_safety()


def test_a_dead_eager_follower_is_replaced_within_a_retransmission_timeout():
    """The retransmission timeout (here first_rto: every message arrives at
    once, so no round trip is measured) is far shorter than the heartbeat
    that would bring the others in anyway."""
    net = cluster(5, heartbeat_interval=0.5, election_timeout=(1.0, 2.0), first_rto=0.02)
    mark = len(net.sent)
    [index] = net.propose(0, "x")
    first = sorted({d for d, _ in with_entries(net, mark)})
    net.crash(first[0])
    net.settle()
    assert net[0].commit < index                 # one eager follower left, none other asked
    start = net.now
    while net[0].commit < index and net.now - start < 1.0:
        net.advance(0.005)
        net.settle()
    assert net[0].commit == index
    assert net.now - start <= 0.1, "waited for the heartbeat, not the retransmission timeout"
    net.check_safety()


def test_the_ranking_passes_over_learners_and_silent_or_probing_followers():
    """eager_peers: only voters, the silent ones (an append timed out, no
    answer since) last, then the probing ones, then by match."""
    net = cluster(5)
    net.add(5)
    net.change(0, ADD_LEARNER, 5)
    net.heartbeat(LOSS_MEMORY + 2)
    leader, last = net[0], net[0].log.last_index
    progress = leader.progress
    progress[5].match = last                     # the learner: as up to date as can be
    progress[1].match, progress[1].silent = last, True
    progress[2].match, progress[2].probing = last, True
    progress[3].match, progress[4].match = last - 1, last - 2
    assert leader.eager_peers(4) == [3, 4, 2, 1]
    eager, later = leader.fan_out(net.now)
    assert eager == [3, 4] and sorted(later) == [1, 2, 5]


def test_a_removed_follower_gets_its_removal_and_stays_quiet():
    """Thesis §4.2.2: the leader keeps replicating to a server it removes
    until the change commits; then it stops. So the removal goes to it at
    once, or it would never hold it (and would campaign forever, refused by
    the others only thanks to §4.2.3)."""
    net = cluster(3)
    index = net.change(0, REMOVE, 2)
    net.settle()
    assert net[0].commit >= index and 2 not in net[0].progress
    assert net[2].log.last_index >= index and not net[2].is_voter
    mark = len(net.sent)
    for _ in range(30):                          # 3 s: well past its election timeout
        net.advance(0.1)
        net.settle()
    assert not [m for s, d, m in net.sent[mark:] if s == 2 and type(m) is RequestVote]
    net.check_safety()


def test_a_learner_is_never_counted_on():
    net = cluster(3)
    net.add(3)
    net.change(0, ADD_LEARNER, 3)
    net.heartbeat(LOSS_MEMORY + 2)               # (its first probe timed out: a "loss")
    for k in range(5):
        mark = len(net.sent)
        [index] = net.propose(0, f"x{k}")
        first = {d for d, _ in with_entries(net, mark)}
        assert first and 3 not in first
        net.settle()
        assert net[0].commit == index
    net.heartbeat()
    assert net[3].log.last_index == index


def test_under_loss_every_follower_gets_entries_at_once():
    net = cluster(5, min_rto=0.01)
    net.isolate(4)
    net.propose(0, "lost")
    net.settle()
    for _ in range(4):                           # its heartbeat's append times out: a loss
        net.advance(0.1)
        net.settle()
    net.settle()
    net.recover()
    mark = len(net.sent)
    net.propose(0, "x")
    assert {d for d, _ in with_entries(net, mark)} == {1, 2, 3, 4}
    net.settle()
    net.heartbeat(2)
    assert net.converged()


def test_a_transfer_to_a_follower_that_lags_does_not_wait_for_its_heartbeat():
    """Thesis §3.10: the target is brought up to date at once."""
    net = cluster(3)
    mark = len(net.sent)
    net.propose(0, "x")
    [(eager, _)] = with_entries(net, mark)
    lagging = 3 - eager
    net.settle()
    assert net[lagging].log.last_index < net[0].log.last_index
    assert net[0].transfer_leader(lagging, net.now) is None
    net.flush(0)
    net.settle()
    assert net[lagging].role == LEADER and net[0].role != LEADER
    net.check_safety()
