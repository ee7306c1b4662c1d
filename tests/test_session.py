"""The client session while no leader is known: one probe at a time, exponential
backoff with jitter (capped, reset by a successful answer), the window waits.

Pure: a ``ClientSession`` on a virtual clock, the test playing the nodes."""

from __future__ import annotations

import random
from itertools import pairwise

from raftmp.core.errors import SessionExpired, Timeout
from raftmp.core.messages import OK, REDIRECT, ClientReply, ClientRequest, Command
from raftmp.core.session import DONE, FAILED, UNKNOWN, ClientSession, Timing

NODES = [0, 1, 2, 3, 4]
STEP = 0.001


def registered(*args, **kwargs) -> ClientSession:
    """A client session that holds a session (registration has its own tests below)."""
    s = ClientSession(*args, **kwargs)
    s.session, s.session_heard = 1, float("inf")
    return s


def run(session: ClientSession, until: float, now: float, answer=None) -> tuple[float, list]:
    """Tick the session every STEP up to ``until``; ``answer(dst, request, t)`` returns
    a reply (delivered at once) or None. Returns the clock and every (t, dst, request)."""
    sent = []
    while now < until:
        now += STEP
        session.tick(now)
        out = session.take_messages()
        while out:
            nxt = []
            for dst, req in out:
                sent.append((now, dst, req))
                reply = answer(dst, req, now) if answer else None
                if reply is not None:
                    session.step(dst, reply, now)
                    nxt += session.take_messages()
            out = nxt
    return now, sent


def test_without_a_leader_one_probe_is_in_flight_whatever_the_window():
    """200 operations pending, no node answers: after the first attempt times out,
    requests leave one at a time (never two unanswered at once), node after node."""
    timing = Timing()
    s = registered(7, NODES, random.Random(1), timing)
    for i in range(200):
        s.submit("put", f"k{i}", "v", None, 0.0)
    first = s.take_messages()
    assert len(first) == 200 and len({dst for dst, _ in first}) == 1   # one guessed node
    _, sent = run(s, 3.0, 0.0)
    # Nobody answers, so each probe waits out its attempt timeout: one at a time.
    assert 3.0 / timing.attempt_timeout - 2 <= len(sent) <= 3.0 / timing.attempt_timeout + 1
    times = [t for t, _, _ in sent]
    assert all(b - a >= timing.attempt_timeout - STEP for a, b in pairwise(times))
    targets = [dst for _, dst, _ in sent]
    assert all(b != a for a, b in pairwise(targets))       # node after node
    assert len({req.command.seq for _, _, req in sent}) == 1         # the same operation


def test_backoff_is_exponential_jittered_capped_and_reset_by_an_answer():
    """Every node says it knows no leader: the pauses between probes double (times
    a jitter factor in [0.5, 1)) up to max_backoff. Once a node answers, all the
    waiting operations go to it at once, and the next search starts from the base."""
    timing = Timing(backoff=0.02, max_backoff=0.2)
    s = registered(7, NODES, random.Random(2), timing)
    for i in range(50):
        s.submit("put", f"k{i}", "v", None, 0.0)
    leader = {"node": None}

    def answer(dst, req, t):
        c = req.command
        if dst == leader["node"]:
            return ClientReply(c.client_id, c.seq, OK, None, dst)
        return ClientReply(c.client_id, c.seq, REDIRECT, None, None)

    now, sent = run(s, 3.0, 0.0, answer)
    times = [t for t, _, _ in sent[50:]]       # after the first burst: the probes
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) >= 10
    for k, gap in enumerate(gaps):
        nominal = min(timing.max_backoff, timing.backoff * 2 ** k)
        assert 0.5 * nominal - STEP <= gap <= nominal + STEP, (k, gap, nominal)
    assert len({round(g, 4) for g in gaps[-5:]}) > 1                # jittered
    assert len(s.pending) == 50
    # Node 3 becomes leader: the next probe that reaches it is answered, and the
    # other 49 operations go to it together, right away.
    leader["node"] = 3
    now, sent = run(s, now + 1.5, now, answer)
    assert not s.pending and not s.searching and s.leader == 3
    done = s.take_finished()
    assert len(done) == 50 and {o.outcome for o in done} == {DONE}
    # Leadership lost again: the search starts over from the base backoff.
    leader["node"] = None
    s.submit("put", "again", "v", None, now)
    s.submit("put", "again2", "v", None, now)
    now, sent = run(s, now + 0.1, now, answer)
    # Both go to node 3 and are refused; one probes the next node at once, and
    # after that refusal waits the base backoff.
    assert [dst for _, dst, _ in sent[:3]] == [3, 3, 4]
    assert 0.5 * timing.backoff - STEP <= sent[3][0] - sent[2][0] <= timing.backoff + STEP


def test_an_operation_that_never_left_fails_and_one_that_did_is_unknown():
    """Given up while waiting for a leader: a write never sent certainly did not
    happen (failed); the probe, which was sent, may have (unknown)."""
    timing = Timing(op_timeout=1.0)
    s = registered(7, NODES, random.Random(3), timing)
    s.searching = True              # as if the leader was just lost
    s.submit("put", "probe", "v", None, 0.0)
    s.submit("put", "waits", "v", None, 0.0)
    run(s, 1.5, 0.0)
    outcomes = {o.command.key: o.outcome for o in s.take_finished()}
    assert outcomes == {"probe": UNKNOWN, "waits": FAILED}


def test_the_search_does_not_go_back_to_the_leader_that_went_silent():
    """The leader (node 0) dies; the others know no leader until one of them wins
    (node 3, at 0.4 s). After the attempt at 0 times out, the search probes the
    others and must not spend another attempt timeout on the dead node: it
    reaches the new leader soon after it wins."""
    timing = Timing()
    s = registered(7, NODES, random.Random(1), timing)
    s.leader = 0
    s.submit("put", "k", "v", None, 0.0)
    elected = 0.4

    def answer(dst, req, t):
        c = req.command
        if dst == 0:
            return None                                      # dead
        if t < elected:
            return ClientReply(c.client_id, c.seq, REDIRECT, None, None)   # no leader known
        if dst == 3:
            return ClientReply(c.client_id, c.seq, OK, None, 3)
        return ClientReply(c.client_id, c.seq, REDIRECT, None, 3)

    _, sent = run(s, 1.0, 0.0, answer)
    done = s.take_finished()
    assert [o.outcome for o in done] == [DONE]
    assert [dst for _, dst, _ in sent].count(0) == 1, "went back to the dead leader"
    assert done[0].complete < elected + timing.max_backoff + 0.01


def test_a_node_that_went_silent_is_probed_again_once_its_silence_is_old():
    """Passing over a silent node lasts a while, not forever: node 0 timed out on
    us, restarted and won, and nobody else knows it yet; the search gets to it."""
    s = registered(7, NODES, random.Random(1), Timing())
    s.leader = 0
    s.submit("put", "k", "v", None, 0.0)

    def answer(dst, req, t):
        c = req.command
        if dst == 0:
            return ClientReply(c.client_id, c.seq, OK, None, 0) if t > 1.0 else None
        return ClientReply(c.client_id, c.seq, REDIRECT, None, None)

    run(s, 3.0, 0.0, answer)
    assert [o.outcome for o in s.take_finished()] == [DONE]


def test_a_follower_names_only_a_leader_it_heard_from_lately():
    """The nodes' side of the search: a follower redirects to its leader while
    the leader's heartbeats arrive; once they stop for two heartbeat intervals
    (the leader may be dead) it names nobody, so no client is sent back to it."""
    from raftmp.core.messages import AppendEntries, ClientRequest, Command
    from raftmp.core.node import Node
    from raftmp.core.raft import Config

    cfg = Config()
    node = Node(1, [0, 1, 2], (1, None, []), random.Random(1), 0.0, cfg)
    node.step(0, AppendEntries(1, 0, 0, 0, (), 0, 1), 0.0)       # leader 0's heartbeat

    def hint(now):
        node.step(9, ClientRequest(Command(9, 1, 1, "get", "k")), now)
        [(_, reply)] = [(d, m) for d, m in node.ready(now).persisted_messages if d == 9]
        assert reply.status == REDIRECT
        return reply.leader

    assert hint(1.5 * cfg.heartbeat_interval) == 0
    assert hint(2.5 * cfg.heartbeat_interval) is None
    assert node.leader == 0                     # it still follows 0: only the hint is withheld


def test_a_retried_read_still_waiting_is_answered_once():
    """A client that retries a get (same seq) while the leader still holds the
    first attempt gets one answer, not two (the course counts the second as a
    duplicate); it goes to the latest attempt's sender."""
    from raftmp.core.messages import OK, ClientRequest, Command
    from raftmp.core.node import Node
    from raftmp.core.raft import LEADER, Config

    node = Node(0, [0], (0, None, []), random.Random(1), 0.0, Config(read_mode="index"))
    t = 0.0
    while node.role != LEADER:
        t += 0.1
        node.tick(t)
        node.ready(t)
    get = ClientRequest(Command(9, 1, 1, "get", "k"))
    node.step(9, get, t)
    node.step(10, get, t)                # the retry, from another endpoint of the client
    answers = [(d, m.status) for d, m in node.ready(t).persisted_messages if m.seq == 1]
    assert answers == [(10, OK)]


def _slow_leader(s: ClientSession, commit_at: float, holds: bool, until: float) -> list:
    """Play a cluster whose leader, node 0, holds every write it gets until it
    commits them at ``commit_at`` (partition healed, a slow commit) and then
    answers them in one batch, the request that found it first; a copy arriving
    later is answered from the session table. The other nodes know no leader
    before ``commit_at`` and name node 0 after it. ``holds=False``: node 0 lost
    what it held (deposed and re-elected), and answers only what reaches it
    after ``commit_at``. Returns the (seq, status) of every answer, in order."""
    held: list[int] = []
    applied: set[int] = set()
    answers: list[tuple[int, str]] = []
    now, out = 0.0, s.take_messages()
    while now < until:
        for dst, req in out:
            seq = req.command.seq
            if dst != 0:
                replies = [(seq, REDIRECT, 0 if now >= commit_at else None)]
            elif now < commit_at:
                held.append(seq)
                replies = []
            else:
                batch = [seq] + [x for x in held if x != seq and x not in applied] if holds \
                    else [seq]
                applied.update(batch)
                held = []
                replies = [(x, OK, 0) for x in batch]
            for x, status, leader in replies:
                answers.append((x, status))
                s.step(dst, ClientReply(s.client_id, x, status, None, leader), now)
        now += STEP
        s.tick(now)
        out = s.take_messages()
    return [a for a in answers if a[1] == OK]


def test_writes_held_by_a_slow_leader_are_not_sent_again_when_the_search_finds_it():
    """Five writes wait at the leader longer than an attempt timeout (a slow
    commit: no answer, so the client searches). When the search's probe finds
    the leader again, its answer travels with the answers to the other four: a
    copy of those sent on finding it would cross them and be answered a second
    time from the session table (a CS3700 duplicate). Each is answered once."""
    s = registered(7, NODES, random.Random(1), Timing())
    s.leader = 0
    for i in range(5):
        s.submit("put", f"k{i}", "v", None, 0.0)
    answers = _slow_leader(s, commit_at=1.0, holds=True, until=2.0)
    assert sorted(answers) == [(seq, OK) for seq in range(1, 6)]
    assert s.duplicates == 0
    assert [o.outcome for o in s.take_finished()] == [DONE] * 5


def test_writes_the_found_leader_no_longer_holds_are_sent_again_after_one_patience():
    """The same, but the leader lost what it held: the writes not sent again on
    finding it are sent after one more attempt timeout, and complete."""
    timing = Timing()
    s = registered(7, NODES, random.Random(1), timing)
    s.leader = 0
    for i in range(5):
        s.submit("put", f"k{i}", "v", None, 0.0)
    _slow_leader(s, commit_at=1.0, holds=False, until=3.0)
    done = s.take_finished()
    assert [o.outcome for o in done] == [DONE] * 5 and s.duplicates == 0
    assert max(o.complete for o in done) < 1.0 + timing.max_backoff + 2 * timing.attempt_timeout


def test_an_answer_to_a_given_up_operation_is_late_and_a_second_one_a_duplicate():
    """CS3700 counts as duplicates the answers to a request already answered. The
    first answer to a write the client gave up on (op_timeout) is late, not a
    duplicate; a second answer to it is."""
    s = registered(7, NODES, random.Random(1), Timing(op_timeout=1.0))
    seq = s.submit("put", "k", "v", None, 0.0)
    run(s, 1.1, 0.0)
    assert [o.outcome for o in s.take_finished()] == [UNKNOWN]
    s.step(0, ClientReply(7, seq, OK, None, 0), 1.2)
    assert (s.late, s.duplicates) == (1, 0)
    s.step(0, ClientReply(7, seq, OK, None, 0), 1.3)
    assert (s.late, s.duplicates) == (1, 1)


def test_the_answered_operation_is_not_sent_again_when_its_answer_ends_the_search():
    """Put a waits at node 0 (a slow commit) while the client, sent elsewhere by
    a hint, searches; node 0's answer to a ends the search. The answered
    operation itself is not sent anywhere (its copy would be answered again)."""
    s = registered(7, [0, 1, 2], random.Random(1), Timing())
    s.leader = 0
    a = s.submit("put", "a", "v", None, 0.0)       # held by node 0
    s.leader = 1                                   # a hint moved the client on
    s.submit("put", "b", "v", None, 0.0)
    s.take_messages()
    s.tick(0.25)       # both time out: a goes to node 1, b probes node 2
    s.tick(0.50)       # a waits for the search; b probes on
    s.take_messages()
    s.step(0, ClientReply(7, a, OK, None, 0), 0.55)
    assert a not in [r.command.seq for _, r in s.take_messages()]
    assert a not in s.pending and s.duplicates == 0


def test_an_operation_sent_as_its_target_answered_is_not_kept_at_a_dead_leader():
    """The next operation leaves at the very instant the leader's last answer
    arrives (a closed loop), then the leader dies: after one attempt timeout
    the operation goes to another node, not to the dead one again."""
    s = registered(7, [0, 1, 2], random.Random(1), Timing())
    s.leader = 0
    a = s.submit("put", "a", "v", None, 0.0)
    s.take_messages()
    s.step(0, ClientReply(7, a, OK, None, 0), 0.1)
    s.submit("put", "b", "v", None, 0.1)          # same instant as the answer
    s.take_messages()
    _, sent = run(s, 1.0, 0.1)
    assert sent and sent[0][1] != 0, sent[:1]


def test_an_operation_refused_by_a_node_that_then_leads_goes_to_it_at_once():
    """Node 3 said it knows no leader; the search then finds node 3 leading: the
    operations it refused do not wait out a patience (it holds none of them)."""
    s = registered(7, NODES, random.Random(1), Timing())
    s.leader = 3
    for i in range(3):
        s.submit("put", f"k{i}", "v", None, 0.0)
    state = {"leads": False}

    def answer(dst, req, t):
        c = req.command
        if dst == 3 and state["leads"]:
            return ClientReply(c.client_id, c.seq, OK, None, 3)
        return ClientReply(c.client_id, c.seq, REDIRECT, None, 3 if state["leads"] else None)

    s.take_messages()
    for _, req in [(3, ClientRequest(p.command)) for p in s.pending.values()]:
        s.step(3, answer(3, req, 0.0), 0.0)       # all three refused by node 3
    state["leads"] = True
    now, _ = run(s, 0.1, 0.0, answer)
    done = s.take_finished()
    assert [o.outcome for o in done] == [DONE] * 3
    assert max(o.complete for o in done) < 0.1


def test_a_late_refusal_of_a_given_up_operation_is_neither_late_nor_a_duplicate():
    """Only a result makes the first late answer; a refusal before it counts for nothing."""
    s = registered(7, NODES, random.Random(1), Timing(op_timeout=1.0))
    seq = s.submit("put", "k", "v", None, 0.0)
    run(s, 1.1, 0.0)
    s.step(1, ClientReply(7, seq, REDIRECT, None, None), 1.2)
    s.step(0, ClientReply(7, seq, OK, None, 0), 1.3)
    assert (s.late, s.duplicates) == (1, 0)


def test_a_cut_off_leader_and_its_follower_do_not_hold_the_search():
    """A partition leaves the old leader (node 0) with one follower (node 1) that
    still names it; nodes 2-4 elect node 4. The search must leave the pair:
    node 0 never answers, node 1 keeps sending the probe back to it."""
    timing = Timing(attempt_timeout=1.0)
    s = registered(7, NODES, random.Random(1), timing)
    s.leader = 0
    s.submit("put", "k", "v", None, 0.0)

    def answer(dst, req, t):
        c = req.command
        if dst == 0:
            return None                                           # cut off, holds it
        if dst == 1:
            return ClientReply(c.client_id, c.seq, REDIRECT, None, 0)
        if dst == 4:
            return ClientReply(c.client_id, c.seq, OK, None, 4)
        return ClientReply(c.client_id, c.seq, REDIRECT, None, 4)

    run(s, 5.0, 0.0, answer)
    done = s.take_finished()
    assert [o.outcome for o in done] == [DONE]
    assert done[0].complete < 3 * timing.attempt_timeout


# ------------------------------------------------ session expiry (thesis §6.3)

CLIENT = 1000


class OneNode:
    """A single-node cluster (it elects itself) serving one client at once,
    on a virtual clock: requests and replies are delivered immediately."""

    def __init__(self, session_timeout: float = 20.0) -> None:
        from raftmp.core.node import Node
        from raftmp.core.raft import LEADER, Config
        self.node = Node(0, [0], (0, None, []), random.Random(0), 0.0,
                         Config(session_timeout=session_timeout))
        self.now = self.node.raft.election_deadline
        self.node.tick(self.now)
        self.node.ready(self.now)
        assert self.node.role == LEADER
        self.client = ClientSession(CLIENT, [0], random.Random(0),
                                    Timing(op_timeout=session_timeout / 4))
        self.client.leader = 0
        self.requests = 0            # every request the node got

    def do(self, op: str, key: str, value: str | None = None, lost: bool = False):
        """One operation, run to its end (every request ``lost`` on the way); its Outcome."""
        self.client.submit(op, key, value, None, self.now)
        while True:
            self.now += 0.01
            for _, req in self.client.take_messages():
                self.requests += 1
                if not lost:
                    self.node.step(CLIENT, req, self.now)
            self.node.tick(self.now)
            rd = self.node.ready(self.now)
            for _, m in rd.persisted_messages:
                self.client.step(0, m, self.now)
            self.client.tick(self.now)
            done = self.client.take_finished()
            if done:
                (o,) = done
                return o

    def idle(self, dt: float) -> None:
        """Time passes; the node writes its clock into the log when due."""
        end = self.now + dt
        while self.now < end:
            self.now = min(end, self.node.next_deadline())
            self.node.tick(self.now)
            self.node.ready(self.now)


def test_a_session_that_only_reads_stays_alive():
    """Reads (no log entry) keep a client's session as alive as writes do: a
    client that wrote once and then only read for longer than the session
    timeout still writes (review finding, issue 18)."""
    one = OneNode(session_timeout=20.0)
    assert one.do("put", "k", "1").outcome == DONE
    for _ in range(12):                     # 12 x 4 s of reads: past 2 session timeouts
        assert one.do("get", "k").result == "1"
        one.idle(4.0)
    o = one.do("put", "k", "2")
    assert (o.outcome, o.result) == (DONE, None), o
    assert one.node.sessions == 1 and one.client.new_sessions == 0


def test_retries_answered_from_the_session_table_keep_the_session_alive():
    one = OneNode(session_timeout=20.0)
    assert one.do("put", "k", "1").outcome == DONE
    (key, first), = one.node.kv.sessions.items()
    retry = ClientRequest(Command(CLIENT, 2, 2, "put", "k", "1", None, one.client.session))
    for _ in range(12):
        one.node.step(CLIENT, retry, one.now)      # answered from the table: no log entry
        assert one.node.ready(one.now).persisted_messages[0][1].status == OK
        one.idle(4.0)
    assert one.node.kv.sessions[key] is first      # 48 s: past two session timeouts


def test_a_client_registers_once_and_its_session_is_named_by_the_log_index():
    """Thesis §6.3: only a registration opens a session; its name is the index of
    the registration entry; the writes wait for it, reads do not need it."""
    one = OneNode(session_timeout=20.0)
    assert one.do("get", "k").result is None and one.node.sessions == 0
    assert one.do("put", "k", "1").outcome == DONE
    assert one.do("put", "k", "2").outcome == DONE
    (cid, session), = one.node.kv.sessions
    assert cid == CLIENT and session == one.client.session
    (entry,) = one.node.raft.log.slice(session, session + 1)
    assert entry.command.op == "register"
    assert one.do("put", "k", "3").command.session == session


def _hold_first_attempt(one: OneNode, key: str, value: str):
    """Run one write to its end, keeping a copy of its first request (as a
    network that duplicates and delays may); the write's Outcome and the copy."""
    one.client.submit("put", key, value, None, one.now)
    copy = None
    while True:
        one.now += 0.01
        for _, req in one.client.take_messages():
            if copy is None and req.command.op == "put":
                copy = req
            one.node.step(CLIENT, req, one.now)
        one.node.tick(one.now)
        for _, m in one.node.ready(one.now).persisted_messages:
            one.client.step(0, m, one.now)
        done = one.client.take_finished()
        if done:
            return done[0], copy


def _deliver(one: OneNode, req: ClientRequest) -> list:
    one.node.step(CLIENT, req, one.now)
    replies = [m for _, m in one.node.ready(one.now).persisted_messages]
    one.idle(0.5)
    return replies


def test_a_late_copy_of_an_answered_write_is_not_applied_in_the_next_session():
    """Review of issue 18: put k=A answered, a copy held in the network; the
    session expires; put k=B opens a new session and is answered; the held
    copy of put A arrives. It must be refused (its session is gone), not
    applied again over the acknowledged B."""
    one = OneNode(session_timeout=20.0)
    assert one.do("put", "k", "1").outcome == DONE
    o, copy = _hold_first_attempt(one, "k", "A")
    assert o.outcome == DONE
    one.idle(50.0)
    assert one.node.sessions == 0                   # expired
    o = one.do("put", "k", "B")
    assert (o.outcome, o.error) == (DONE, None), o    # a new session, by itself
    assert one.client.new_sessions == 1 and one.node.sessions == 1
    for _ in range(5):                              # reads: the new session's floor stays
        one.do("get", "k")
        one.idle(3.0)
    replies = _deliver(one, copy)
    assert [r.status for r in replies] == ["expired"]
    assert one.node.data() == {"k": "B"}


def test_a_late_copy_of_a_clients_first_write_does_not_open_a_session():
    """Before registration, a command with acked = 1 (a client's first, or any
    copy sent while its first was pending) opened a session wherever none was:
    a copy delayed past the session's expiry was applied again."""
    one = OneNode(session_timeout=20.0)
    o, copy = _hold_first_attempt(one, "k", "A")
    assert o.outcome == DONE and copy.command.acked == 1
    assert one.do("put", "k", "B").outcome == DONE
    one.idle(50.0)
    assert one.node.sessions == 0
    assert [r.status for r in _deliver(one, copy)] == ["expired"]
    assert one.node.data() == {"k": "B"} and one.node.sessions == 0


def test_writes_sent_in_an_expired_session_end_unknown_the_next_ones_reopen():
    """A write given up on (Timeout) may have been applied in the old session,
    and never will be in the new one: the client reopens at once anyway (the
    old code refused to while a write was in doubt, for good). A write pending
    when its session is found expired is unknown (SessionExpired): it may have
    been applied there."""
    one = OneNode(session_timeout=20.0)
    assert one.do("put", "k", "1").outcome == DONE
    o = one.do("put", "k", "lost", lost=True)
    assert (o.outcome, o.error) == (UNKNOWN, Timeout)
    one.idle(50.0)
    o = one.do("put", "k", "2")
    assert (o.outcome, o.error) == (DONE, None), o
    assert one.node.data() == {"k": "2"} and one.client.new_sessions == 1
    one.idle(50.0)
    old = one.client.session
    one.client.session_heard = one.now   # (else it would reopen at once, having idled)
    one.client.submit("put", "k", "3", None, one.now)
    (_, req), = one.client.take_messages()
    one.client.step(0, ClientReply(CLIENT, req.command.seq, "expired", old), one.now)
    (o,) = one.client.take_finished()
    assert (o.outcome, o.error) == (UNKNOWN, SessionExpired)
    assert one.client.session == 0 and one.client.new_sessions == 2


def test_a_stale_expired_answer_does_not_abandon_the_new_session():
    """An EXPIRED answering an attempt sent in an older session says nothing of
    the current one (review of issue 18)."""
    c = registered(CLIENT, [0], random.Random(0), Timing(op_timeout=1.0))
    c.leader, c.session = 0, 5
    c.submit("put", "k", "1", None, 0.0)
    c.take_messages()
    c.step(0, ClientReply(CLIENT, 1, "expired", 3), 0.1)    # session 3 is long gone
    assert c.session == 5 and 1 in c.pending and not c.take_finished()
    c.step(0, ClientReply(CLIENT, 1, OK, None), 0.2)
    assert [o.outcome for o in c.take_finished()] == [DONE]


def test_a_clock_lists_only_sessions_in_the_table():
    """A read-only client has no session: the clock does not name it."""
    one = OneNode(session_timeout=20.0)
    assert one.do("put", "k", "1").outcome == DONE
    reader = ClientRequest(Command(CLIENT + 1, 1, 1, "get", "k"))
    one.node.step(CLIENT + 1, reader, one.now)
    one.node.ready(one.now)
    one.idle(5.0)
    clocks = [e.command for e in one.node.raft.log.entries
              if type(e.command).__name__ == "SessionClock"]
    assert clocks and all(k in one.node.kv.sessions or not k
                          for c in clocks for k in c.seen)
    assert all(cid == CLIENT for c in clocks for cid, _ in c.seen)
