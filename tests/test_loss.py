"""Loss recovery in the Raft core (core/progress.py): a follower holds appends
past a gap and reports the hole, the leader resends only what was lost, at
once, and acknowledgements are cumulative."""

from __future__ import annotations

from raftnet import Network

from raftmp.core.messages import AppendEntries, AppendEntriesReply
from raftmp.core.raft import LEADER, Config


def appends_to(net: Network, dst: int, since: int = 0) -> list[AppendEntries]:
    return [m for s, d, m in net.sent[since:] if s == 0 and d == dst
            and type(m) is AppendEntries and m.entries]


def three_segments(config: Config) -> Network:
    """A 3-node cluster whose leader 0 has just sent entries 2..7 as three
    segments of two, each in its own turn (1 ms apart)."""
    net = Network(3, config=config)
    net.elect(0)
    net.heartbeat()
    for pair in (("a", "b"), ("c", "d"), ("e", "f")):
        net.propose(0, *pair)
        net.now += 0.001
    return net


def test_a_lost_segment_is_resent_alone_and_at_once():
    """The follower keeps segments 4..5 and 6..7 that arrive after 2..3 was lost
    and says what it lacks; the leader resends 2..3 only (not go-back-N), before
    any timer fires, and one acknowledgement then covers everything."""
    net = three_segments(Config(max_batch_entries=2, max_inflight=8))
    mark = len(net.sent)
    lost = net.take(lambda s, d, m: d == 1 and type(m) is AppendEntries and m.prev_index == 1)
    assert len(lost) == 1
    net.settle()                                   # no time passes: no timeout can fire
    assert net[1].log.last_index == 7 and net[0].progress[1].match == 7
    resent = appends_to(net, 1, mark)
    assert [(m.prev_index, len(m.entries)) for m in resent] == [(1, 2)]
    assert not net[0].progress[1].probing
    net.check_safety()


def test_a_lost_acknowledgement_is_repaired_by_a_heartbeat():
    """Acknowledgements are cumulative: the reply to a heartbeat tells the leader
    everything the follower holds of its log, so a lost ack costs no resend."""
    net = Network(3)
    net.elect(0)
    net.heartbeat()
    net.drop_if(lambda s, d, m: s == 1 and type(m) is AppendEntriesReply)
    net.propose(0, "a")
    net.settle()
    assert net[1].log.last_index == 2 and net[0].progress[1].match == 1
    net.recover()
    mark = len(net.sent)
    net[0].bcast_append(net.now, heartbeat=True)   # a heartbeat, before any timer
    net.flush(0)
    net.settle()
    assert net[0].progress[1].match == 2
    assert appends_to(net, 1, mark) == []          # nothing was resent
    assert not net[0].progress[1].inflight


def test_the_retransmission_timeout_resends_the_oldest_and_its_answer_the_rest():
    """When nothing later arrives to reveal a loss (the tail), the timeout resends
    the oldest segment only; its acknowledgement shows the others, sent before
    it, lost, and they go at once. The leader keeps pipelining (no probing)."""
    net = three_segments(Config(max_batch_entries=2, max_inflight=8))
    net.take(lambda s, d, m: d == 1)
    net.settle()
    pr = net[0].progress[1]
    assert [(s.first, s.last) for s in pr.inflight] == [(2, 3), (4, 5), (6, 7)]
    mark = len(net.sent)
    net.now = pr.inflight[-1].sent + pr.rto        # every segment's time is up
    net.tick(0)
    assert [(m.prev_index, len(m.entries)) for m in appends_to(net, 1, mark)] == [(1, 2)]
    net.settle()                                   # no time passes
    resent = appends_to(net, 1, mark)
    assert [(m.prev_index, len(m.entries)) for m in resent] == [(1, 2), (3, 2), (5, 2)]
    assert not pr.probing
    assert net[1].log.last_index == 7 and pr.match == 7 and not pr.inflight


def test_a_follower_that_lost_what_it_held_is_repaired():
    """The follower held 4..7 past a gap, then restarted (held data is volatile):
    the leader, which thought them delivered, finds out and resends them."""
    net = three_segments(Config(max_batch_entries=2, max_inflight=8))
    net.take(lambda s, d, m: d == 1 and type(m) is AppendEntries and m.prev_index == 1)
    net.drop_if(lambda s, d, m: d == 1 and type(m) is AppendEntries and m.prev_index == 1)
    net.settle()                                   # 4..7 held; the resend of 2..3 lost
    assert sorted(net[1].held) == [3, 5]
    assert [s.sacked for s in net[0].progress[1].inflight] == [False, True, True]
    net.crash(1)
    net.restart(1)
    net.recover()
    for _ in range(10):
        net.heartbeat(nodes=[0])
        if net[1].log.last_index == 7:
            break
    assert net[1].log.last_index == 7 and net[0].progress[1].match == 7
    assert net[0].role == LEADER
    net.check_safety()


def test_the_window_grows_with_measured_loss():
    """A follower whose link loses segments gets a wider window (more segments
    on their way), a clean one the configured window."""
    net = Network(3, config=Config(max_batch_entries=1, max_inflight=4))
    net.elect(0)
    net.heartbeat()
    assert net[0].progress[1].window(4) == 4
    net.drop(0, 1, 0.5)
    for k in range(200):
        net.propose(0, f"c{k}")
        net.now += 0.001
        net.settle()
        net.tick(0)
    assert net[0].progress[1].loss > 0.2
    assert net[0].progress[1].window(4) > 4 == net[0].progress[2].window(4)
    net.recover()
    net.heartbeat(20)
    assert net.converged()
    net.check_safety()


def test_a_silent_follower_costs_one_segment_per_timeout():
    """While a follower stays silent (dead, cut off) each timeout resends only
    the oldest segment, backing off; an answer ends the backoff."""
    # Long election timeouts: the backoffs below outlast the default ones.
    net = three_segments(Config(max_batch_entries=2, max_inflight=8, max_rto=0.4,
                                election_timeout=(1.0, 2.0)))
    net.cut(0, 1)
    net.settle()
    pr = net[0].progress[1]
    counts, rtos = [], []
    net.now = pr.inflight[-1].sent + pr.rto
    for _ in range(5):
        mark = len(net.sent)
        net.now = max(net.now, pr.retransmit_at())
        rtos.append(pr.rto)
        net.tick(0)
        counts.append(len(appends_to(net, 1, mark)))
    assert counts == [1, 1, 1, 1, 1]
    assert rtos == sorted(rtos) and rtos[-1] > rtos[0]
    net.recover()
    net.heartbeat()
    assert net[1].log.last_index == 7 == pr.match
    assert pr.rto < rtos[-1]
