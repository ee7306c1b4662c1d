"""Lease reads (thesis §6.4.1, core/lease.py): answered without messages while a
quorum's acknowledgements hold the lease, shortened by the clock-drift bound;
ReadIndex past it; a node that just booted grants no vote within the lease; and
the simulator, with drifting clocks, catches a lease that is too long."""

from __future__ import annotations

import random

import pytest
from raftnet import Network

from raftmp.core.lease import lease_duration
from raftmp.core.messages import AppendEntries, RequestVote
from raftmp.core.raft import FOLLOWER, LEADER, Config, Raft
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
# search of 2000 seeds at drop 0.1 found these 3 that elect a leader inside it
# when the lease is not shortened. Deterministic, like any seed; but schedules
# move with any change to the core or the client: then search again with the
# mutant below (seeds 0-1999; the test needs at least one).
NO_MARGIN_SIM = SimConfig(ops=200, drop=0.1, faults=("crash", "restart", "partition"),
                          read_mode="lease", clock_drift=0.05, check_history=False)
NO_MARGIN_SEEDS = [76, 679, 684]


def test_a_lease_without_the_drift_margin_is_caught(monkeypatch):
    monkeypatch.setattr(Raft, "lease_duration", lambda self: self.config.election_timeout[0])
    results = run_many(NO_MARGIN_SEEDS, NO_MARGIN_SIM, jobs=2)
    bad = [r for r in results if r.violations]
    assert bad and all("lease" in r.violations[0] for r in bad)


def test_the_same_seeds_are_clean_with_the_margin():
    results = run_many(NO_MARGIN_SEEDS, NO_MARGIN_SIM, jobs=2)
    assert not [(r.seed, r.violations) for r in results if r.violations]
