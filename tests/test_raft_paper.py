"""The Raft core against the rules of the paper, one test per rule.

Each docstring cites the section of the Raft paper (Ongaro & Ousterhout 2014)
or of the thesis (Ongaro 2014) that it checks, as in etcd's raft_paper_test.go.
Everything runs on the in-memory network of ``raftnet``: no sockets, no
sleeps, a virtual clock moved by hand.
"""

from __future__ import annotations

import random

import pytest
from raftnet import Network, make_log, terms_of

from raftmp.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    RequestVote,
    RequestVoteReply,
)
from raftmp.core.raft import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, Config, Raft


def msgs_to(net: Network, dst: int, t: type) -> list:
    return [m for s, d, m in net.queue if d == dst and type(m) is t]


def replies(net: Network, src: int, t: type) -> list:
    return [m for s, d, m in net.queue if s == src and type(m) is t]


# ---------------------------------------------------------------------- §5.1


@pytest.mark.parametrize("msg", [
    AppendEntries(5, 1, 0, 0, (), 0, 1),
    AppendEntriesReply(5, 1, False, 0, 0, 0, 1),
    RequestVoteReply(5, 1, False),
])
def test_5_1_leader_steps_down_on_newer_term(msg):
    """§5.1: "If a candidate or leader discovers that its term is out of date, it
    immediately reverts to follower state" — on any message of a newer term."""
    net = Network(3)
    net.elect(0)
    assert net[0].term == 1
    net.step(1, 0, msg)
    assert net[0].role == FOLLOWER
    assert net[0].term == 5
    assert net.storage[0].term == 5 and net.storage[0].vote is None  # persisted, no vote
    assert net[0].leader == (1 if type(msg) is AppendEntries else None)


def test_5_1_candidate_steps_down_on_newer_term():
    """§5.1: a candidate that sees a newer term reverts to follower of that term."""
    net = Network(3)
    net.ignore(RequestVoteReply)
    net.timeout(0)
    net.settle()                  # pre-vote replies lost: still a pre-candidate
    assert net[0].role == PRE_CANDIDATE
    net.recover()
    net.settle()
    net[0].step(1, RequestVoteReply(1, 1, True, pre=True), net.now)
    net.flush(0)
    assert net[0].role == CANDIDATE and net[0].term == 1
    net.queue.clear()
    net.step(2, 0, RequestVoteReply(7, 2, False))
    assert net[0].role == FOLLOWER and net[0].term == 7 and net[0].vote is None


@pytest.mark.parametrize("kind", ["append", "vote", "prevote"])
def test_5_1_stale_term_requests_rejected_with_current_term(kind):
    """§5.1: "If a server receives a request with a stale term number, it rejects
    the request" — and the reply carries the current term so the sender steps down."""
    net = Network(3, states={1: (5, None, make_log([1, 3]))})
    before = list(net[1].log.entries)
    if kind == "append":
        m = AppendEntries(3, 0, 2, 3, (Entry(3, 3, "x"),), 3, 1)
    else:
        m = RequestVote(3, 0, 10, 3, pre=kind == "prevote")
    net.step(0, 1, m)
    (reply,) = [m for s, d, m in net.queue if s == 1 and d == 0]
    assert reply.term == 5
    if kind == "append":
        assert type(reply) is AppendEntriesReply and not reply.success
    else:
        assert type(reply) is RequestVoteReply and not reply.granted
    assert net[1].log.entries == before and net[1].term == 5 and net[1].vote is None
    assert net[1].commit == 0


def test_5_1_stale_reply_deposes_sender():
    """§5.1: the sender of a stale request learns the newer term from the reply."""
    net = Network(3, states={1: (5, None, [])})
    net.timeout(0)         # 0 pre-votes for term 1; node 1 refuses, in term 5
    net.settle()
    assert (net[0].term, net[0].role, net[0].vote) == (5, FOLLOWER, None)
    assert net.storage[0].term == 5


# ---------------------------------------------------------------------- §5.2


def test_5_2_follower_timeout_starts_prevote_then_election():
    """§5.2 + thesis §9.6: a follower that hears nothing within its election timeout
    first asks for pre-votes (term unchanged), then starts a real election: term+1,
    a vote for itself (persisted before the RequestVote leaves), RequestVote to all."""
    net = Network(3)
    core = net[0]
    net.now = core.election_deadline - 1e-6
    net.tick(0)
    assert core.role == FOLLOWER and not net.queue          # not yet
    net.timeout(0)
    assert core.role == PRE_CANDIDATE and core.term == 0 and core.vote is None
    pre = msgs_to(net, 1, RequestVote) + msgs_to(net, 2, RequestVote)
    assert len(pre) == 2 and all(m.pre and m.term == 1 and m.candidate == 0 for m in pre)
    net.deliver(pred=lambda s, d, m: d != 0)                  # the peers answer
    assert [type(m) for _, _, m in net.queue] == [RequestVoteReply, RequestVoteReply]
    assert net[1].term == 0 and net[1].vote is None          # a pre-vote binds nothing
    net.deliver(1)                                             # one grant = a majority of 3
    assert core.role == CANDIDATE and core.term == 1 and core.vote == 0
    assert (net.storage[0].term, net.storage[0].vote) == (1, 0)
    real = [m for _, _, m in net.queue if type(m) is RequestVote]
    assert {d for _, d, m in net.queue if type(m) is RequestVote} == {1, 2}
    assert all(not m.pre and m.term == 1 for m in real)


@pytest.mark.parametrize("down,wins", [((), True), ((3,), True), ((3, 4), True),
                                       ((2, 3, 4), False)])
def test_5_2_candidate_with_majority_becomes_leader(down, wins):
    """§5.2: "A candidate wins an election if it receives votes from a majority of
    the servers in the full cluster for the same term" — and only then."""
    net = Network(5)
    for i in down:
        net.crash(i)
    net.timeout(0)
    net.settle()
    for _ in range(10):                       # retries of the vote requests
        net.advance(net.config.heartbeat_interval / 2, nodes=[0])
        net.settle()
    assert (net[0].role == LEADER) == wins
    if wins:
        assert net[0].term == 1
        assert all(net[i].term == 1 and net[i].leader == 0 for i in net.live)
    else:
        assert net[0].role in (PRE_CANDIDATE, CANDIDATE)


def test_5_2_one_vote_per_term():
    """§5.2: "each server will vote for at most one candidate in a given term"."""
    net = Network(3, states={i: (1, None, []) for i in range(3)})
    net.step(0, 2, RequestVote(2, 0, 0, 0))
    net.step(1, 2, RequestVote(2, 1, 0, 0))
    net.step(0, 2, RequestVote(2, 0, 0, 0))        # a retransmission is granted again
    grants = [(d, m.granted) for s, d, m in net.queue]
    assert grants == [(0, True), (1, False), (0, True)]
    assert net[2].vote == 0 and net.storage[2].vote == 0


def test_5_2_at_most_one_leader_per_term():
    """§5.2 Election Safety: "at most one leader can be elected in a given term" —
    under many seeded schedules of lossy, concurrent elections."""
    for seed in range(30):
        net = Network(5, seed=seed)
        rng = random.Random(seed)
        for i in net.ids:
            for j in net.ids:
                if i != j:
                    net.drop(i, j, 0.3)
        for _ in range(200):
            net.advance(rng.uniform(0.0, 0.1))
            while net.queue and rng.random() < 0.9:      # deliver in random order
                k = rng.randrange(len(net.queue))
                src, dst, m = net.queue.pop(k)
                net.step(src, dst, m)
            if rng.random() < 0.05:
                victim = rng.choice(net.ids)
                if victim in net.cores:
                    net.crash(victim)
                else:
                    net.restart(victim)
        net.check_safety()
        assert len(net.leaders) >= 1, f"seed {seed}: nobody was ever elected"


def test_5_2_timeouts_come_from_injected_rng():
    """§5.2: election timeouts are "chosen randomly from a fixed interval" — here
    drawn from the injected random.Random only (never the global one), so equal
    seeds give equal timeouts and the core can be replayed."""
    cfg = Config(election_timeout=(0.2, 0.4))
    state = random.getstate()

    def timeouts(seed):
        t = 10.0
        core = Raft(0, [0, 1, 2], (0, None, []), random.Random(seed), t, cfg)
        out = [core.election_deadline - t]
        for _ in range(20):
            t = core.election_deadline
            core.tick(t)                          # times out again: a fresh timeout
            assert core.role == PRE_CANDIDATE
            out.append(core.election_deadline - t)
        return out

    a, b, c = timeouts(1), timeouts(1), timeouts(2)
    assert random.getstate() == state, "the core drew from the global random"
    assert a == b
    assert a != c
    assert all(0.2 <= g <= 0.4 for g in a + c)
    assert len({round(g, 9) for g in a}) > 10     # actually randomized


def test_5_2_candidate_steps_down_for_leader_of_its_term():
    """§5.2: "If the AppendEntries RPC is from another server claiming to be leader
    and its term is at least as large as the candidate's current term, the
    candidate recognizes the leader as legitimate and returns to follower state"."""
    net = Network(3)
    net.ignore(RequestVoteReply)
    net.timeout(0)
    net.settle()
    net[0].step(1, RequestVoteReply(1, 1, True, pre=True), net.now)
    net.flush(0)
    assert net[0].role == CANDIDATE and net[0].term == 1
    net.queue.clear()
    net.step(2, 0, AppendEntries(1, 2, 0, 0, (), 0, 1))
    assert net[0].role == FOLLOWER and net[0].term == 1 and net[0].leader == 2
    assert net[0].vote == 0                                   # its vote in term 1 stands
    (reply,) = replies(net, 0, AppendEntriesReply)
    assert reply.success and reply.term == 1


# ---------------------------------------------------------------------- §5.3


def test_5_3_leader_replicates_and_commits():
    """§5.3: the leader appends the command, sends AppendEntries to all, commits once a
    majority stored it, and every follower applies the same entries in order."""
    net = Network(5)
    net.elect(0)
    idx = net.propose(0, "a", "b", "c")
    assert idx == [2, 3, 4]
    net.settle()
    assert net[0].commit == 4
    net.heartbeat()                             # followers learn the commit index
    for i in net.ids:
        assert terms_of(net[i].log.entries) == [1, 1, 1, 1]
        assert [e.command for e in net.applied[i]] == [None, "a", "b", "c"]
    net.check_safety()


def test_5_3_follower_rejects_mismatching_prev():
    """§5.3 consistency check: "If the follower does not find an entry in its log
    with the same index and term, then it refuses the new entries"."""
    net = Network(3, states={1: (2, None, make_log([1, 1]))})
    before = list(net[1].log.entries)
    for prev_index, prev_term in ((2, 2), (3, 2), (5, 2)):
        net.step(0, 1, AppendEntries(2, 0, prev_index, prev_term, (Entry(2, prev_index + 1, "x"),),
                                     0, 1))
    rs = [m for _, _, m in net.queue]
    assert [r.success for r in rs] == [False, False, False]
    assert [r.index for r in rs] == [2, 3, 5]
    assert rs[0].conflict_term == 1 and rs[0].conflict_index == 1   # whole term 1 suspect
    assert rs[1].conflict_term == 0 and rs[1].conflict_index == 3   # log too short
    assert net[1].log.entries == before


def test_5_3_conflicting_suffix_truncated():
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it" — and persist that."""
    net = Network(3, states={1: (3, None, make_log([1, 1, 2, 2, 2]))})
    net.step(0, 1, AppendEntries(3, 0, 2, 1, (Entry(3, 3, "new"),), 0, 1))
    (r,) = [m for _, _, m in net.queue]
    assert r.success and r.index == 3
    assert net[1].log.entries == make_log([1, 1]) + [Entry(3, 3, "new")]
    assert net.storage[1].entries == net[1].log.entries


@pytest.mark.parametrize("entries,leader_commit,expect", [
    ((), 5, 1),                                  # nothing new: only prev is proven
    ((Entry(1, 2, "t1i2"),), 5, 2),              # min(5, last new 2)
    ((Entry(1, 2, "t1i2"), Entry(1, 3, "t1i3")), 2, 2),   # min(2, 3)
])
def test_5_3_follower_commit_is_min_of_leader_commit_and_last_new(entries, leader_commit, expect):
    """Figure 2 AppendEntries rule 5: "If leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry)" — a follower whose log runs past
    what the message proved must not commit its stale tail."""
    net = Network(3, states={1: (2, None, make_log([1, 1, 1, 1, 1]))})
    net.step(0, 1, AppendEntries(2, 0, 1, 1, entries, leader_commit, 1))
    assert net[1].commit == expect
    assert len(net.applied[1]) == expect
    assert net[1].log.last_index == 5                 # matching entries are kept


# -------------------------------------------------------------------- §5.4.1


@pytest.mark.parametrize("pre", [False, True])
@pytest.mark.parametrize("cand_last,grant", [
    ((3, 1), False),      # longer log, older last term
    ((1, 2), False),      # same last term, shorter
    ((2, 2), True),       # identical
    ((3, 2), True),       # same last term, longer
    ((1, 3), True),       # newer last term, shorter
])
def test_5_4_1_vote_only_for_up_to_date_log(pre, cand_last, grant):
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that
    of the candidate" (compare last terms, then lengths). A pre-vote (thesis §9.6)
    applies the same check."""
    net = Network(3, states={1: (2, None, make_log([1, 2]))})
    last_index, last_term = cand_last
    net.step(0, 1, RequestVote(3, 0, last_index, last_term, pre=pre))
    (r,) = [m for _, _, m in net.queue]
    assert r.granted == grant and r.pre == pre
    if pre:
        assert net[1].term == 2 and net[1].vote is None      # binds nothing
    else:
        assert net[1].term == 3
        assert net[1].vote == (0 if grant else None)
        assert net.storage[1].vote == net[1].vote


def test_5_4_1_outdated_node_cannot_win():
    """§5.4.1 end to end: a node missing committed entries cannot be elected."""
    net = Network(3)
    net.elect(0)
    net.isolate(2)
    net.propose(0, "a", "b")
    net.settle()
    assert net[0].commit == 3
    net.recover()
    net.crash(0)
    net.now += 1.0                      # node 1's lease on the dead leader expires
    for _ in range(5):
        net.timeout(2)
        net.settle()
        assert net[2].role != LEADER
    assert net[2].term == 1             # its pre-votes failed: no term was burned
    net.timeout(1)
    net.settle()
    assert net[1].role == LEADER and [e.command for e in net[1].log.entries[:3]] == [None, "a", "b"]


# ------------------------------------------------------------ §5.4.2 Figure 8


def figure8() -> Network:
    """Figure 8 (c): S1..S5 are nodes 0..4. Index 1 (term 1) is everywhere; S1 led
    term 2 and put index 2 on S1, S2; S5 led term 3 and put its own index 2 on S5
    only. S1 then wins term 4 (votes of S2, S3, S4) and copies its term-2 entry to S3,
    so it sits on a majority — while S1's own term-4 no-op is kept from spreading."""
    states = {
        0: (3, None, make_log([1, 2])),
        1: (3, None, make_log([1, 2])),
        2: (3, 4, make_log([1])),
        3: (3, 4, make_log([1])),
        4: (3, 4, make_log([1, 3])),
    }
    # One entry per AppendEntries, so the term-2 entry travels without the no-op.
    net = Network(5, states=states, config=Config(max_batch_entries=1))
    # Nothing from term 4 reaches anybody (the no-op is cut off every AppendEntries,
    # as if the leader were slow to send it): only the term-2 entry spreads.
    net.rewrite(lambda s, d, m: m._replace(entries=tuple(e for e in m.entries if e.term != 4))
                if type(m) is AppendEntries else m)
    net.cut(0, 3)                        # S4 and S5 stay as in the figure
    net.cut(0, 4)
    net.timeout(0)
    net.settle()
    assert net[0].role == LEADER and net[0].term == 4
    return net


def test_5_4_2_figure8_old_term_entry_on_majority_is_not_committed():
    """§5.4.2 / Figure 8: "a leader cannot immediately conclude that an entry from a
    previous term is committed once it is stored on a majority of servers" — and
    the figure shows why: S5 can still be elected and overwrite it."""
    net = figure8()
    net.heartbeat(5, nodes=[0])
    on = [i for i in net.live if net[i].log.term(2) == 2]
    assert on == [0, 1, 2]                               # a majority holds (2, term 2)
    assert net[0].progress[1].match == 2 and net[0].progress[2].match == 2
    assert net[0].commit < 2, "committed a previous-term entry by counting replicas"
    assert all(net[i].commit < 2 for i in net.live)
    assert not any(e.index == 2 for i in net.ids for e in net.applied[i])
    # Figure 8 (d): S1 crashes; S5 (last term 3) is elected and overwrites index 2.
    net.crash(0)
    net.recover()
    net.now += 1.0
    for _ in range(3):                   # first try learns term 4 from S2/S3's refusals
        net.timeout(4)
        net.settle()
        if net[4].role == LEADER:
            break
    assert net[4].role == LEADER and net[4].term == 5
    net.heartbeat(3, nodes=[4])
    for i in net.live:
        assert terms_of(net[i].log.entries)[:2] == [1, 3]
        assert [e.term for e in net.applied[i] if e.index == 2] in ([], [3])
    net.check_safety()


def test_5_4_2_figure8_old_term_entry_commits_with_current_term_entry():
    """§5.4.2 / Figure 8 (e): once an entry of the leader's own term is on a majority,
    it commits, and every entry before it (the term-2 one) commits indirectly.
    Then S5 can no longer win: the majority's logs are more up to date."""
    net = figure8()
    net.heartbeat(2, nodes=[0])
    assert net[0].commit < 2
    net.recover()
    net.cut(0, 3)
    net.cut(0, 4)
    net.heartbeat(3, nodes=[0])
    assert net[0].commit == 3                             # the term-4 no-op ...
    assert [e.term for e in net.applied[0]] == [1, 2, 4]  # ... carries index 2 with it
    net.crash(0)
    net.recover()
    net.now += 1.0
    for _ in range(5):
        net.timeout(4)
        net.settle()
        assert net[4].role != LEADER
    for i in (1, 2):
        assert net[i].log.term(2) == 2
    net.check_safety()


# ---------------------------------------------------------------------- §5.5


def test_5_5_restarted_follower_recovers_from_storage():
    """§5.5 / Figure 2 "persistent state": a crashed follower restarts with the term,
    vote and log it had stored, and catches up from the leader."""
    net = Network(3)
    net.elect(0)
    net.propose(0, "a")
    net.heartbeat()
    stored = (net[2].term, net[2].vote, list(net[2].log.entries))
    net.crash(2)
    net.propose(0, "b", "c")
    net.heartbeat()
    assert net[0].commit == 4                          # 2 of 3 suffice
    core = net.restart(2)
    assert (core.term, core.vote, core.log.entries) == stored
    assert core.commit == 0 and core.role == FOLLOWER  # volatile state starts over
    net.heartbeat(3)
    assert net.converged()
    assert [e.command for e in net[2].log.entries] == [None, "a", "b", "c"]


def test_5_5_restarted_leader_recovers_and_rejoins():
    """§5.5: a crashed leader restarts as a follower with its stored log; the
    cluster elects a new leader that keeps every committed entry, and the old
    leader converges to it."""
    net = Network(3)
    net.elect(0)
    net.propose(0, "a", "b")
    net.heartbeat()
    assert net[0].commit == 3
    net.crash(0)
    net.now += 1.0
    net.elect(1)
    net.propose(1, "c")
    net.settle()
    core = net.restart(0)
    assert core.role == FOLLOWER and core.term == 1 and len(core.log.entries) == 3
    net.heartbeat(3)
    assert net.converged()
    assert [e.command for e in net[0].log.entries] == [None, "a", "b", None, "c"]
    net.check_safety()


def test_5_5_votes_persist_across_restart():
    """Figure 2: votedFor is persistent — a node that voted in a term and restarts
    does not vote for someone else in that term."""
    net = Network(3)
    net.step(0, 2, RequestVote(1, 0, 0, 0))
    assert net.queue[-1][2].granted and net.storage[2].vote == 0
    net.crash(2)
    core = net.restart(2)
    assert (core.term, core.vote) == (1, 0)
    net.queue.clear()
    net.step(1, 2, RequestVote(1, 1, 5, 1))          # even a better log
    (r,) = [m for _, _, m in net.queue]
    assert not r.granted and net[2].vote == 0


def test_5_5_vote_is_persisted_before_it_is_sent():
    """Figure 2: "respond to RPCs" only after updating stable storage — the Ready
    that carries the grant carries the hard state with the vote."""
    core = Raft(2, [0, 1, 2], (0, None, []), random.Random(0), 0.0, Config(read_mode="index"))
    core.step(0, RequestVote(1, 0, 0, 0), 0.0)
    rd = core.ready(0.0)
    assert rd.hard_state == (1, 0)
    assert rd.messages == []
    assert [(d, m.granted) for d, m in rd.persisted_messages] == [(0, True)]




def test_8_leader_appends_noop_at_start_of_term():
    """§8: "each leader commit a blank no-op entry into the log at the start of its
    term" — so it commits, and learns the commit index, without a client."""
    net = Network(3, states={i: (1, None, make_log([1, 1])) for i in range(3)})
    net.elect(0)
    assert net[0].log.entries[-1] == Entry(2, 3, None)
    assert net[0].commit == 3                         # and with it the term-1 entries
    net.heartbeat()
    for i in net.ids:
        assert [(e.term, e.command) for e in net.applied[i]] == [(1, "t1i1"), (1, "t1i2"),
                                                                 (2, None)]


# ------------------------------------------------------------- thesis §6.4


def test_thesis_6_4_read_index_waits_for_a_round_after_the_read():
    """Thesis §6.4 ReadIndex: the leader records its commit index, then must hear from
    a majority in a round that started after the read; an acknowledgement of an
    earlier round proves nothing about the present."""
    net = Network(3)
    net.elect(0)
    net.heartbeat()
    # A round before the read, in a new check-quorum period (§6.2), so it asks for answers.
    net.advance(2 * net.config.election_timeout[1], nodes=[0])
    assert net.deliver(2) == 2                               # the followers answer ...
    early = net.take()                                       # ... but the replies are held
    assert len(early) == 2 and all(type(m) is AppendEntriesReply for _, _, m in early)
    assert net[0].read_index("r1")
    net.flush(0)                                             # the read's own round goes out
    assert net.reads[0] == []
    for src, dst, m in early:                                # old proofs arrive
        net.step(src, dst, m)
    assert net.reads[0] == [], "released a read on replies to an earlier round"
    net.deliver(1, pred=lambda s, d, m: d == 1)              # follower 1 sees the new round
    net.deliver(1, pred=lambda s, d, m: s == 1)              # its reply: a quorum with us
    assert net.reads[0] == [("r1", net[0].commit)]


def test_thesis_6_4_read_waits_for_the_leaders_first_commit():
    """Thesis §6.4 step 1: a new leader answers no read before its no-op commits."""
    net = Network(3, states={i: (1, None, make_log([1, 1])) for i in range(3)})
    # The followers answer every round, but the no-op never reaches them.
    net.rewrite(lambda s, d, m: m._replace(entries=()) if type(m) is AppendEntries else m)
    net.elect(0)
    assert net[0].commit == 0 and net[1].log.last_index == 2
    assert net[0].read_index("r")
    net.flush(0)
    net.heartbeat(3, nodes=[0])
    assert net[0].progress[1].round >= net[0].round - 1     # rounds were confirmed ...
    assert net.reads[0] == [] and net[0].commit == 0      # ... yet no read is released
    net.recover()
    net.heartbeat(nodes=[0])
    assert net[0].commit == 3
    assert net.reads[0] == [("r", 3)]


def test_thesis_6_4_deposed_leader_in_minority_never_releases_read():
    """Thesis §6.4: a leader cut off in a minority, possibly already replaced, must
    never answer a read: a quorum of confirmations can't arrive."""
    net = Network(5)
    net.elect(0)
    net.heartbeat()
    net.partition([0, 1], [2, 3, 4])
    assert net[0].read_index("stale")
    net.flush(0)
    net.now += 1.0
    net.elect(2)
    net.propose(2, "newer write")
    net.heartbeat(2, nodes=[2])
    assert net[2].commit == 3
    for _ in range(40):                      # two seconds of heartbeats and retries
        net.heartbeat(nodes=[0, 1])
        assert net.reads[0] == []
    assert net[0].role != LEADER             # check-quorum deposed it eventually
    assert net.reads[0] == []



# ------------------------------------------------------------- thesis §9.6


def test_thesis_9_6_prevote_partitioned_node_does_not_disrupt():
    """Thesis §9.6: a server cut off from the cluster keeps timing out, but with
    pre-vote it never increments its term, so when it rejoins it neither bumps the
    cluster's term nor deposes the leader."""
    net = Network(3)
    net.elect(0)
    net.heartbeat()
    net.isolate(2)
    for _ in range(100):                         # 5 s: many election timeouts for node 2
        net.heartbeat()
    assert net[2].term == 1 and net[2].role == PRE_CANDIDATE
    assert net[0].role == LEADER and net[0].term == 1
    net.recover()
    for _ in range(10):
        net.heartbeat()
        assert net[0].role == LEADER and net[0].term == 1
    assert net[2].role == FOLLOWER and net[2].term == 1 and net[2].leader == 0
    assert set(net.leaders) == {1}

