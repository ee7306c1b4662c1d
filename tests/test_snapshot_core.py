"""Log compaction and InstallSnapshot in the pure core (§7, thesis chapter 5),
on the in-memory network: exact chunk offsets, resends, discards, and the
log and commit state on both sides."""

from __future__ import annotations

from raftnet import Network

from raftmp.core.log import RaftLog
from raftmp.core.messages import (
    AppendEntries,
    Entry,
    InstallSnapshot,
    InstallSnapshotReply,
    Snapshot,
)
from raftmp.core.raft import Config

SMALL = Config(snapshot_entries=20, snapshot_keep=5, snapshot_chunk=100, max_inflight=2)


def chunks(net: Network, dst: int) -> list[tuple[int, int]]:
    """(snapshot index, offset) of every InstallSnapshot sent to ``dst`` so far."""
    return [(m.index, m.offset) for _, d, m in net.sent if d == dst and type(m) is InstallSnapshot]


def behind(net: Network, lagging: int = 2, n: int = 30) -> Snapshot:
    """Leader 0 commits ``n`` writes while ``lagging`` is down, then compacts
    past everything ``lagging`` has; ``lagging`` comes back."""
    net.elect(0)
    net.crash(lagging)
    net.propose(0, *[f"w{k}" for k in range(n)])
    net.settle()
    net.heartbeat()
    snap = net.snapshot(0)
    assert net[0].log.base == snap.index - SMALL.snapshot_keep > 1
    net.restart(lagging)
    return snap


def test_log_compaction_keeps_the_base_term_and_catch_up_entries():
    log = RaftLog([Entry(1, i) for i in range(1, 6)] + [Entry(2, i) for i in range(6, 11)])
    log.compact(7)
    assert (log.base, log.base_term, log.last_index, log.last_term) == (7, 2, 10, 2)
    assert log.term(7) == 2 and log.term(6) is None and log.term(11) == -1
    assert [e.index for e in log.slice(8, 11)] == [8, 9, 10]
    assert log.first_index_of_term(2) == 8 and log.last_index_of_term(2, 9) == 9
    assert log.last_index_of_term(2, 7) == 7 and log.last_index_of_term(1, 10) == 0
    assert [e.index for e in log.batch(8, 2, 1 << 20)] == [8, 9]
    assert log.install(9, 2) is True and [e.index for e in log.entries] == [10]
    assert log.install(12, 3) is False and (log.base, log.last_index, log.entries) == (12, 12, [])


def test_wants_snapshot_past_entry_or_byte_threshold():
    net = Network(3, config=Config(snapshot_entries=10, snapshot_bytes=1 << 30))
    net.elect(0)
    net.propose(0, *["x"] * 8)
    net.settle()
    assert not net[0].wants_snapshot()          # 9 entries applied (no-op included)
    net.propose(0, "x")
    net.settle()
    assert net[0].wants_snapshot()
    net.snapshot(0)
    assert not net[0].wants_snapshot()
    big = Network(3, config=Config(snapshot_entries=10_000, snapshot_bytes=2000))
    big.elect(0)
    big.propose(0, *[("put", "k", "v" * 100)] * 300)
    big.settle()
    assert big[0].wants_snapshot()              # about 300 x 150 bytes


def test_lagging_follower_gets_snapshot_in_chunks_then_appends():
    net = Network(3, config=SMALL)
    snap = behind(net)
    net.heartbeat(3)
    # Ten chunks of 100 bytes, each sent once, in order.
    assert chunks(net, 2) == [(snap.index, o) for o in range(0, 1000, 100)]
    f = net[2]
    assert f.snapshot == snap and f.log.base == snap.index and f.commit == net[0].commit
    assert f.log.entries == net[0].log.entries[-len(f.log.entries):] or not f.log.entries
    # ... and replicates by AppendEntries afterwards.
    net.propose(0, "after")
    net.settle()
    assert f.log.last_index == net[0].log.last_index and f.log.entries[-1].command == "after"
    assert len(chunks(net, 2)) == 10
    net.check_safety()


def test_lost_chunk_is_resent_from_the_acknowledged_offset():
    net = Network(3, config=SMALL)
    snap = behind(net)
    lost = []

    def lose_300_once(src, dst, m):
        if type(m) is InstallSnapshot and m.offset == 300 and not lost:
            lost.append(m)
            return True
        return False

    net.drop_if(lose_300_once)
    for _ in range(20):
        net.heartbeat()
    assert lost and net[2].snapshot == snap
    sent = [o for _, o in chunks(net, 2)]
    assert sent.count(0) == 1 and sent.count(100) == 1 and sent.count(200) == 1
    assert sent.count(300) == 2                        # the lost one, and its resend
    assert sent.index(300, sent.index(300) + 1) > sent.index(400)   # after the timeout
    net.check_safety()


def test_other_followers_keep_replicating_during_a_transfer():
    net = Network(3, config=SMALL)
    snap = behind(net)
    held = net.take(lambda s, d, m: type(m) is InstallSnapshotReply)
    net.drop_if(lambda s, d, m: type(m) is InstallSnapshotReply)   # the transfer stalls
    net.propose(0, "during")
    net.heartbeat(2)
    assert net[1].log.entries[-1].command == "during" and net[0].commit == net[0].log.last_index
    assert net[2].snapshot is None and held is not None
    net.recover()
    net.heartbeat(10)
    assert net[2].snapshot == snap and net[2].log.entries[-1].command == "during"


def test_partial_snapshot_discarded_when_a_newer_one_starts():
    net = Network(3, config=SMALL)
    old = behind(net)
    net.drop_if(lambda s, d, m: type(m) is InstallSnapshot and m.offset >= 300)
    net.heartbeat(5)
    assert net[2].incoming is not None and len(net[2].incoming[2]) == 300
    # The leader moves on: a newer snapshot, and the transfer starts over with it.
    net.propose(0, *[f"v{k}" for k in range(30)])
    net.settle()
    new = net.snapshot(0)
    f = net[2]
    f.step(0, InstallSnapshot(net[0].term, 0, new.index, new.term, len(new.data), 0,
                              new.data[:100]), net.now)
    assert f.incoming[:2] == (new.index, new.term) and bytes(f.incoming[2]) == new.data[:100]
    # A late chunk of the old one is not mixed in: the follower asks for the start.
    f.step(0, InstallSnapshot(net[0].term, 0, old.index, old.term, 1000, 300,
                              old.data[300:400]), net.now)
    reply = net.flush(2).persisted_messages[-1][1]
    assert reply == InstallSnapshotReply(net[0].term, 2, old.index, 0, False)
    assert bytes(f.incoming[2]) == new.data[:100]


def test_follower_restart_mid_transfer_starts_again_from_zero():
    net = Network(3, config=SMALL)
    snap = behind(net)
    net.drop_if(lambda s, d, m: type(m) is InstallSnapshot and m.offset >= 500)
    net.heartbeat(5)
    assert len(net[2].incoming[2]) == 500
    net.crash(2)
    net.restart(2)
    net.recover()
    for _ in range(20):
        net.heartbeat()
    assert net[2].snapshot == snap
    offsets = [o for _, o in chunks(net, 2)]
    assert offsets.count(0) == 2 and offsets[-1] == 900


def test_install_keeps_the_suffix_after_a_matching_entry():
    """Thesis §5.3 step 6: the follower holds the snapshot's last entry, so it
    keeps what follows it, and the state it persisted survives a restart."""
    net = Network(3, config=SMALL)
    net.elect(0)
    net.propose(0, *[f"w{k}" for k in range(10)])
    net.heartbeat(2)
    f = net[1]
    last = f.log.last_index
    snap = Snapshot(5, f.log.term(5), b"state")
    f.step(0, InstallSnapshot(f.term, 0, 5, snap.term, 5, 0, b"state"), net.now)
    assert f.snapshot is None   # index 5 is committed here already: nothing to install
    f.commit = 3                # pretend it had committed less
    f.step(0, InstallSnapshot(f.term, 0, 5, snap.term, 5, 0, b"state"), net.now)
    net.flush(1)
    assert f.log.base == 5 and f.log.last_index == last and f.commit == 5
    net.crash(1)
    g = net.restart(1)
    assert g.snapshot == snap and g.log.base == 5 and g.log.last_index == last


def test_stale_leader_chunk_is_refused_with_the_term():
    net = Network(3, config=SMALL)
    net.elect(0)
    net[1].step(2, InstallSnapshot(0, 2, 9, 1, 10, 0, b"x" * 10), net.now)
    rd = net.flush(1)
    assert (2, InstallSnapshotReply(net[1].term, 1, 0, 0, False)) in rd.persisted_messages
    assert net[1].snapshot is None


def test_stale_term_chunk_refusal_proves_nothing_to_a_reelected_leader():
    """The InstallSnapshot twin of the stale ReadIndex round (issue 8): a refusal of
    an older term's chunk carries the follower's current term. If the old sender
    leads that term by the time it arrives, it must not take it as an answer of
    this term: not as progress of a transfer, not for check-quorum (§6.2)."""
    net = Network(3, config=SMALL)
    snap = behind(net)
    leader = net[0]
    leader.progress[2].active = False
    stale = InstallSnapshotReply(leader.term, 2, 0, 0, False)   # what step() now sends
    leader.step(2, stale, net.now)
    assert not leader.progress[2].active, "a stale refusal counted for check-quorum"
    old_echo = InstallSnapshotReply(leader.term, 2, snap.index, 0, False)  # the old reply
    leader.step(2, old_echo, net.now)
    assert leader.progress[2].active    # an answer of this term does count


def test_ping_below_the_leaders_base_passes_any_followers_check():
    """A heartbeat to a follower in snapshot mode is anchored at 0: every log matches there."""
    net = Network(3, config=SMALL)
    behind(net)
    net.drop_if(lambda s, d, m: type(m) is InstallSnapshot)
    net.heartbeat(5)
    pings = [m for _, d, m in net.sent if d == 2 and type(m) is AppendEntries]
    assert pings and all(m.prev_index == 0 and m.prev_term == 0 for m in pings[-2:])
    assert net[2].leader == 0


def test_log_sizes_survive_compaction_each_entry_measured_once(monkeypatch):
    """The byte sums that batching and the snapshot threshold use are kept across
    a compaction (they were recomputed from scratch after each one)."""
    from raftmp.core import log as log_module
    from raftmp.core.messages import Entry

    measured = []
    real = log_module.approx_size
    monkeypatch.setattr(log_module, "approx_size", lambda c: measured.append(c) or real(c))
    log = log_module.RaftLog([Entry(1, i, ("put", "k", "v" * i)) for i in range(1, 101)])
    total = log.size(1, 100)
    assert total == sum(real(("put", "k", "v" * i)) for i in range(1, 101))
    log.compact(40)
    assert log.size(41, 100) == total - sum(real(("put", "k", "v" * i)) for i in range(1, 41))
    assert [e.index for e in log.batch(41, 100, log.size(41, 50))] == list(range(41, 51))
    log.append(Entry(1, 101, ("put", "k", "v")))
    assert log.size(100, 101) == real(("put", "k", "v" * 100)) + real(("put", "k", "v"))
    assert len(measured) == 101
