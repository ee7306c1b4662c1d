"""Lease reads (thesis §6.4.1, core/lease.py): answered without messages while a
quorum's acknowledgements hold the lease, shortened by the clock-drift bound;
ReadIndex past it; a node that just booted grants no vote within the lease; and
the simulator, with drifting clocks, catches a lease that is too long."""

from __future__ import annotations

import random

import pytest
from raftnet import Network

from raftmp.core.lease import lease_duration
from raftmp.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
)
from raftmp.core.raft import CANDIDATE, FOLLOWER, LEADER, Config, Raft
from raftmp.sim import SimConfig, run_many

LEASE = Config(read_mode="lease", clock_drift=0.05)


def test_the_lease_is_shortened_by_the_drift_bound():
    e = LEASE.election_timeout[0]
    assert lease_duration(e, 0.0) == e
    assert lease_duration(e, 0.05) == pytest.approx(e * 0.95 / 1.05)
    net = Network(3, config=LEASE)
    net.elect(0)
    net.answered_heartbeat(0)
    start = net.now                          # the heartbeat round began now; both answered
    assert net[0].lease_until() == pytest.approx(start + e * 0.95 / 1.05)


def test_no_lease_in_index_mode():
    """ReadIndex mode keeps no lease (a node votes as soon as it boots there)."""
    net = Network(3, config=Config(read_mode="index"))
    net.elect(0)
    net.heartbeat()
    assert net[0].lease_until() == float("-inf")


def test_lease_reads_need_no_messages_within_the_lease():
    net = Network(3, config=LEASE)
    net.elect(0)
    net.heartbeat()
    sent = len(net.sent)
    assert net[0].read_index("r")
    net.flush(0)
    assert net.reads[0] == [("r", net[0].commit)]
    assert len(net.sent) == sent             # ReadIndex would have sent a round


def test_past_the_lease_a_read_waits_for_a_quorum_round():
    """Acknowledgements lost for longer than the lease: the read falls back to
    ReadIndex, and a leader cut off from its quorum never answers it."""
    net = Network(5, config=LEASE)
    net.elect(0)
    net.heartbeat()
    net.partition([0, 1], [2, 3, 4])
    net.now = net[0].lease_until()
    assert net[0].read_index("late")
    net.flush(0)
    assert net.reads[0] == []
    assert any(type(m) is AppendEntries for _, _, m in net.dropped[-4:])  # it asked
    for _ in range(40):
        net.heartbeat(nodes=[0, 1])
        assert net.reads[0] == []
    assert net[0].role != LEADER
    net.recover()
    net.elect(2)
    assert net[2].read_index("fresh")
    net.flush(2)
    net.settle()                                # the new leader's first round
    assert net.reads[2] == [("fresh", net[2].commit)]


@pytest.mark.parametrize("mode,grants", [("lease", False), ("index", True)])
def test_a_node_that_just_booted_grants_no_vote_in_lease_mode(mode, grants):
    """It cannot know whether it acknowledged a leader's lease before it crashed,
    so for an election timeout after boot it treats itself as having heard one."""
    cfg = Config(read_mode=mode)
    core = Raft(1, [0, 1, 2], (3, None, []), _rng(), now=10.0, config=cfg)
    core.step(2, RequestVote(4, 2, 0, 0), 10.0 + cfg.election_timeout[0] / 2)
    assert (core.vote == 2) is grants and core.role == FOLLOWER
    later = Raft(1, [0, 1, 2], (3, None, []), _rng(), now=10.0, config=cfg)
    later.step(2, RequestVote(4, 2, 0, 0), 10.0 + cfg.election_timeout[0])
    assert later.vote == 2


def test_read_mode_is_checked():
    with pytest.raises(ValueError, match="read_mode"):
        Raft(0, [0], (0, None, []), _rng(), 0.0, Config(read_mode="stale"))


# -------------------------------------------------------------------- simulator


SIM = SimConfig(ops=200, drop=0.2, faults=("crash", "restart", "partition"),
                read_mode="lease", clock_drift=0.05, check_history=True)


def test_lease_mode_sweep_with_drifting_clocks_is_clean():
    results = run_many(list(range(30)), SIM, jobs=2)
    assert not [(r.seed, r.violations) for r in results if r.violations]
    assert sum(r.ops_ok for r in results) > 0.8 * SIM.ops * 30


def test_a_lease_longer_than_the_election_timeout_is_caught(monkeypatch):
    """A mutant whose lease outlasts the followers' promise (1.5 x the minimum
    election timeout): a new leader is elected while the old one still holds it."""
    monkeypatch.setattr(Raft, "lease_duration",
                        lambda self: 1.5 * self.config.election_timeout[0])
    results = run_many(list(range(30)), SIM, jobs=2)
    bad = [r for r in results if r.violations]
    assert bad and all("lease" in r.violations[0] for r in bad)


def _rng() -> random.Random:
    return random.Random(0)


# The drift margin matters in a window of about 2 x drift x E (20 ms here): a
# search of 1400 seeds at drop 0.1 found these 3 (issue 18) that elect a leader inside it
# when the lease is not shortened. Deterministic, like any seed; but schedules
# move with any change to the core, the client or the simulated disk's bytes
# (issue 20 changed those: 76, 679, 684 were the seeds before): then search
# again with the mutant below (seeds 0-1999; the test needs at least one).
NO_MARGIN_SIM = SimConfig(ops=200, drop=0.1, faults=("crash", "restart", "partition"),
                          read_mode="lease", clock_drift=0.05, check_history=False)
NO_MARGIN_SEEDS = [470]   # of 0-1199 after issue 19 (the client search moved schedules)


def test_a_lease_without_the_drift_margin_is_caught(monkeypatch):
    monkeypatch.setattr(Raft, "lease_duration", lambda self: self.config.election_timeout[0])
    results = run_many(NO_MARGIN_SEEDS, NO_MARGIN_SIM, jobs=2)
    bad = [r for r in results if r.violations]
    assert bad and all("lease" in r.violations[0] for r in bad)


def test_the_same_seeds_are_clean_with_the_margin():
    results = run_many(NO_MARGIN_SEEDS, NO_MARGIN_SIM, jobs=2)
    assert not [(r.seed, r.violations) for r in results if r.violations]


# ------------------------------------------- thesis §4.2.3, whatever the path


def _vote_requests(src, dst):
    return lambda s, d, m: (s, d) == (src, dst) and type(m) is RequestVote


def test_issue18_a_term_reached_by_a_pre_vote_refusal_does_not_release_the_vote_hold():
    """The sequence of issue 18, hand-driven, 3 nodes in lease mode: node 1
    acknowledges leader 0's lease, then reaches term 2 through a delayed pre-vote
    refusal (which names no leader), then gets candidate 2's delayed
    RequestVote(2). Granting it elected 2 inside 0's lease, and 0 answered a
    read without 2's committed write."""
    net = Network(3, config=LEASE)
    e = LEASE.election_timeout
    net.elect(0)
    net.propose(0, "old")
    net.heartbeat()
    assert net[0].commit == 2
    # 1. Node 0 is cut off. After an election timeout node 2 wins a pre-vote
    #    from node 1 and campaigns for term 2; its RequestVote to 1 is delayed.
    net.isolate(0)
    net.now += e[1]                  # every node is past the minimum timeout
    net.timeout(2)
    held = _vote_requests(2, 1)
    while net.deliver(pred=lambda s, d, m: not (held(s, d, m) and not m.pre)):
        pass
    assert net[2].term == 2 and net[2].role == CANDIDATE
    (vote_req,) = net.take(_vote_requests(2, 1))
    # 2. Node 1 times out; node 2's refusal of its pre-vote is delayed too.
    net.timeout(1)
    net.deliver(pred=lambda s, d, m: (s, d) == (1, 2))
    (refusal,) = net.take(lambda s, d, m: (s, d) == (2, 1))
    assert type(refusal[2]) is RequestVoteReply and refusal[2].pre and not refusal[2].granted
    assert refusal[2].term == 2
    # 3. Node 0 reaches node 1 again (not node 2): a read starts a round that
    #    node 1 answers, so node 0 holds a lease that node 1 is inside.
    net.recover()
    net.cut(0, 2)
    assert net[0].read_index("before")
    net.flush(0)
    net.settle()
    assert net.reads[0] == [("before", 2)]
    assert net[1].leader == 0 and net[0].lease_until() > net.now
    # 4. Both delayed messages reach node 1 (within its promise to node 0).
    net.now += e[0] / 4
    net.step(*refusal)
    assert net[1].term == 2 and net[1].leader is None     # a term moved by a reply
    net.step(*vote_req)
    assert net[1].vote is None, "node 1 voted inside the lease it acknowledged"
    net.settle()
    # 5. Node 2 (if it leads) commits a write; node 0, inside its lease, answers
    #    a read: it must not be answered without the write.
    net.propose(2, "new")
    net.settle()
    written = [e.index for e in net.applied_at.values() if e.command == "new"]
    assert net[0].lease_until() > net.now
    assert net[0].read_index("after")
    net.flush(0)
    (index,) = [i for ctx, i in net.reads[0] if ctx == "after"]
    assert not written or index >= written[0], "a stale read"
    assert net[2].role != LEADER and not written


def _in_lease() -> Network:
    """Node 1 has just acknowledged leader 0 of term 1."""
    net = Network(3, config=LEASE)
    net.elect(0)
    net.answered_heartbeat(0)
    assert net[1].leader == 0 and net[1].leader_seen == net.now
    return net


# Every message that can raise a follower's term, save a vote request (each
# carries term 5; the request that follows is of that term).
RAISERS = {
    "pre-vote refusal": RequestVoteReply(5, 2, False, True),
    "vote refusal": RequestVoteReply(5, 2, False),
    "append reply": AppendEntriesReply(5, 2, False, 0, 0, 0, 0),
    "snapshot reply": InstallSnapshotReply(5, 2, 0, 0, False),
}


@pytest.mark.parametrize("raiser", sorted(RAISERS))
@pytest.mark.parametrize("pre", [False, True])
def test_no_path_to_a_vote_requests_term_releases_the_hold(raiser, pre):
    """Thesis §4.2.3: a vote request within the minimum election timeout of
    hearing a leader gets no vote, even when another message brought the node to
    its term first; once the timeout has passed it does."""
    net = _in_lease()
    net.step(2, 1, RAISERS[raiser])
    assert net[1].term == 5 and net[1].leader is None
    net.queue.clear()
    net.step(2, 1, RequestVote(5 + pre, 2, 10, 1, pre))
    assert net[1].vote is None and net.queue == []
    net.now += LEASE.election_timeout[0] * 1.01
    net.step(2, 1, RequestVote(5 + pre, 2, 10, 1, pre))
    assert [m.granted for _, _, m in net.queue] == [True]
    assert net[1].vote == (None if pre else 2)


def test_a_transfer_request_passes_the_hold():
    """The named exception (thesis §3.10): a leadership transfer's RequestVote."""
    net = _in_lease()
    net.step(2, 1, RequestVote(2, 2, 10, 1, transfer=True))
    assert net[1].vote == 2 and net[1].term == 2


@pytest.mark.parametrize("raiser", sorted(RAISERS))
def test_a_booted_node_holds_its_vote_in_its_own_term_too(raiser):
    """The boot hold (lease mode) covers a request of the term the node booted
    in, and of a term some other message (a reply to its previous life) brought
    it to."""
    core = Raft(1, [0, 1, 2], (5, None, []), _rng(), now=10.0, config=LEASE)
    core.step(2, RequestVote(5, 2, 0, 0), 10.0 + LEASE.election_timeout[0] / 4)
    assert core.vote is None
    core.step(2, RAISERS[raiser]._replace(term=6), 10.0 + LEASE.election_timeout[0] / 2)
    assert core.term == 6
    core.step(2, RequestVote(6, 2, 0, 0), 10.0 + LEASE.election_timeout[0] / 2)
    assert core.vote is None
    core.step(2, RequestVote(6, 2, 0, 0), 10.0 + LEASE.election_timeout[0])
    assert core.vote == 2


def _hold_vote_traffic(seed: int, steps: int = 3000) -> str | None:
    """A random schedule on 3 hand-driven cores in lease mode that holds vote
    traffic (requests and replies, pre-votes too) and lets it out at random
    later, across cuts and heals; the lease invariant after every step: no leader
    holds a lease while a leader of a later term exists. The violation, or None."""
    rng = random.Random(seed)
    net = Network(3, seed=seed, config=LEASE)
    held = []
    for step in range(steps):
        r = rng.random()
        if r < 0.3:
            net.advance(rng.uniform(0, 0.06), nodes=[i for i in net.live if rng.random() < 0.7])
        elif r < 0.75 and net.queue:
            src, dst, m = net.queue.pop(rng.randrange(len(net.queue)))
            if type(m) in (RequestVote, RequestVoteReply) and rng.random() < 0.5:
                held.append((src, dst, m))
            else:
                net.step(src, dst, m)
        elif r < 0.85 and held:
            net.step(*held.pop(rng.randrange(len(held))))
        elif r < 0.93:
            net.recover()
            if rng.random() < 0.7:
                a = rng.randrange(3)
                net.isolate(a) if rng.random() < 0.5 else net.cut(a, (a + 1) % 3)
        elif (leader := net.leader()) is not None:
            net[leader].read_index(step)
            net.flush(leader)
        leaders = [(c.term, i) for i, c in net.cores.items() if c.role == LEADER]
        for old, a in leaders:
            if net[a].lease_until() > net.now and any(t > old for t, _ in leaders):
                return f"seed {seed} step {step}: node {a} holds a term-{old} lease " \
                       f"under a later leader"
    return None


# Seeds (of 600) on which _hold_vote_traffic catches the vote hold of the code
# before issue 18 (higher-term requests only, and only with a leader named):
# the sequence of the issue, found at random. Schedules move with any change
# to the core: then search again with the mutant below.
HELD_VOTE_SEEDS = [184, 214, 228, 258, 461]


def _before_issue18(self, m, now):
    if m.term <= self.term:
        return False
    if self.role == LEADER or now < self.vote_hold_until:
        return True
    return self.leader is not None and now - self.leader_seen < self.config.election_timeout[0]


def test_held_vote_traffic_never_elects_a_leader_inside_a_lease():
    assert [v for v in map(_hold_vote_traffic, [*range(40), *HELD_VOTE_SEEDS]) if v] == []


def test_held_vote_traffic_catches_the_vote_hold_before_issue18(monkeypatch):
    monkeypatch.setattr(Raft, "holds_vote", _before_issue18)
    assert [v for v in map(_hold_vote_traffic, HELD_VOTE_SEEDS) if v]
