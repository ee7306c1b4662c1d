"""The client session's bookkeeping under a full window: its timers come in the
order one heap would give them, stale ones do not pile up, and every request
carries the lowest seq still pending (``acked``).

Pure: a ``ClientSession`` on a virtual clock, the test playing the nodes."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from raftmp.core.messages import OK, ClientReply
from raftmp.core.session import ClientSession, Timers

# One step: push a timer (time offset from the last one, seq, which FIFO), take
# the earliest, or end a seq (its timers then do nothing: the session skips them).
_push = st.tuples(st.just("push"), st.floats(-1.0, 2.0), st.integers(0, 30), st.booleans())
_take = st.tuples(st.just("take"))
_end = st.tuples(st.just("end"), st.integers(0, 30))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_push, _take, _end), max_size=120))
def test_timers_come_in_the_order_of_one_heap(steps):
    """Timers set in and out of their FIFO's order (equal times included) are
    taken earliest first, ties by seq: the live ones exactly as one heap of
    every timer gives them."""
    timers, heap, live = Timers(), [], dict.fromkeys(range(31))
    t = 0.0
    for step in steps:
        if step[0] == "push":
            _, dt, seq, expiry = step
            t = round(t + dt, 1)   # coarse: equal times happen
            timers.push(t, seq, timers.expiries if expiry else timers.deadlines)
            heapq.heappush(heap, (t, seq))
        elif step[0] == "end":
            live.pop(step[1], None)
        else:
            while heap and heap[0][1] not in live:
                heapq.heappop(heap)
            timer, queue = timers.first(live)
            assert timer == (heap[0] if heap else None)
            if timer is not None:
                timers.pop(queue)
                heapq.heappop(heap)
    assert len(timers) <= len(heap)


def _full_window(s: ClientSession, rounds: int, window: int, rng: random.Random) -> None:
    """Keep ``window`` puts in flight for ``rounds`` rounds of 1 ms, the leader
    answering a random half of them each round (out of order)."""
    now, held = 0.0, []
    for _ in range(rounds):
        while len(s.pending) < window:
            s.submit("put", f"k{s.next_seq}", "v", None, now)
        held += [req.command for _, req in s.take_messages()]
        rng.shuffle(held)
        answered, held = held[:len(held) // 2], held[len(held) // 2:]
        now += 0.001
        for c in answered:
            s.step(0, ClientReply(c.client_id, c.seq, OK, None, 0), now)
        s.tick(now)
        s.next_deadline()
        s.take_finished()


def test_timers_of_answered_operations_do_not_pile_up():
    """Thousands of puts answered within their op timeout: the session keeps
    timers for about the window in flight, not for every operation of the last
    op timeout (one heap of them all was the client's largest cost)."""
    window = 50
    s = ClientSession(7, [0], random.Random(1))
    s.session, s.session_heard = 1, float("inf")
    _full_window(s, 200, window, random.Random(2))
    assert s.next_seq > 5000 and s.timing.op_timeout > 0.2   # all within one op timeout
    assert len(s.timers) <= 4 * window


def test_every_request_carries_the_lowest_pending_seq():
    """Answers out of order: each request's ``acked`` is the lowest seq still
    pending when it left (every seq below it may be forgotten by the cluster)."""
    s = ClientSession(7, [0], random.Random(1))
    s.session, s.session_heard = 1, float("inf")
    rng, now, seen = random.Random(3), 0.0, 0
    held: list = []
    for _ in range(300):
        for _ in range(rng.randrange(4)):
            s.submit("put", "k", "v", None, now)
        for _, req in s.take_messages():
            c = req.command
            assert c.acked == min(s.pending) <= c.seq and c.session == 1
            held.append(c)
            seen += 1
        rng.shuffle(held)
        now += 0.001
        for c in held[:rng.randrange(len(held) + 1)]:
            held.remove(c)
            s.step(0, ClientReply(c.client_id, c.seq, OK, None, 0), now)
    assert seen > 300
