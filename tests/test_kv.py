"""The key-value state machine: semantics, exactly-once sessions, validation, and
a model check against a plain dict."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmp.core.kv import KVStore, Limits, check_command, check_fields
from raftmp.core.messages import EXPIRED, INVALID, OK, Command, SessionClock


def cmd(op, key, value=None, expected=None, client=1, seq=1, acked=None):
    return Command(client, seq, seq if acked is None else acked, op, key, value, expected)


class Seq:
    """A client issuing one command after another (acked = its own seq)."""

    def __init__(self, kv: KVStore, client: int = 1) -> None:
        self.kv, self.client, self.seq = kv, client, 0

    def __call__(self, op, key, value=None, expected=None):
        self.seq += 1
        status, result = self.kv.apply(cmd(op, key, value, expected, self.client, self.seq))
        assert status == OK, result
        return result


# ------------------------------------------------------------------ semantics


def test_get_put_delete():
    kv = KVStore()
    c = Seq(kv)
    assert c("get", "x") is None
    assert c("put", "x", "1") is None
    assert c("get", "x") == "1"
    assert kv.get("x") == "1"
    assert c("put", "x", "2") is None
    assert c("get", "x") == "2"
    assert c("delete", "x") is True          # existed
    assert c("delete", "x") is False         # did not
    assert c("get", "x") is None
    assert kv.data == {}


def test_cas():
    kv = KVStore()
    c = Seq(kv)
    assert c("cas", "x", "1", None) is True          # expected None: only if absent
    assert kv.data == {"x": "1"}
    assert c("cas", "x", "2", None) is False         # present: no swap
    assert c("cas", "x", "2", "0") is False          # wrong expectation
    assert kv.data == {"x": "1"}
    assert c("cas", "x", "2", "1") is True
    assert kv.data == {"x": "2"}
    assert c("cas", "y", "1", "2") is False          # absent key, non-None expectation
    assert "y" not in kv.data
    assert c("put", "e", "") is None                  # the empty string is a value
    assert c("cas", "e", "z", None) is False
    assert c("cas", "e", "z", "") is True


def test_empty_and_unicode_keys():
    kv = KVStore()
    c = Seq(kv)
    c("put", "", "empty key")
    c("put", "ключ", "значение")
    assert c("get", "") == "empty key" and c("get", "ключ") == "значение"


# --------------------------------------------------------------- exactly-once


def test_same_request_applied_twice_returns_first_result_and_changes_nothing():
    kv = KVStore()
    first = kv.apply(cmd("delete", "x", client=7, seq=1))
    kv.apply(cmd("put", "x", "1", client=8, seq=1))
    assert first == (OK, False)
    # The retry of (7, 1) must not delete the key 8 wrote; it answers False again.
    assert kv.apply(cmd("delete", "x", client=7, seq=1, acked=1)) == (OK, False)
    assert kv.data == {"x": "1"}

    put = cmd("put", "n", "a", client=7, seq=2, acked=1)
    assert kv.apply(put) == (OK, None)
    kv.apply(cmd("put", "n", "b", client=8, seq=2))
    assert kv.apply(put) == (OK, None)
    assert kv.data["n"] == "b"                      # the retry did not re-put "a"

    swap = cmd("cas", "c", "1", None, client=9, seq=1)
    assert kv.apply(swap) == (OK, True)
    assert kv.apply(swap) == (OK, True)             # the first result, not a fresh False
    assert kv.cached(9, 1) == (True, True)
    assert kv.cached(9, 2) == (False, None)


def test_results_below_acked_are_forgotten_and_stale_commands_ignored():
    kv = KVStore()
    for seq in (1, 2, 3):
        kv.apply(cmd("put", "k", f"v{seq}", client=1, seq=seq, acked=1))
    assert all(kv.cached(1, s)[0] for s in (1, 2, 3))
    kv.apply(cmd("put", "j", "x", client=1, seq=4, acked=3))   # 1 and 2 acknowledged
    assert kv.cached(1, 1) == (False, None) and kv.cached(1, 2) == (False, None)
    assert kv.cached(1, 3) == (True, None) and kv.cached(1, 4) == (True, None)
    before = copy.deepcopy(kv.data)
    # A very late duplicate of seq 1 (acknowledged, forgotten) is not applied again.
    assert kv.apply(cmd("put", "k", "v1", client=1, seq=1, acked=1)) == (None, None)
    assert kv.apply(cmd("delete", "j", client=1, seq=2, acked=1)) == (None, None)
    assert kv.data == before
    # Sessions are per client: client 2's seq 1 is new.
    assert kv.apply(cmd("put", "k", "other", client=2, seq=1)) == (OK, None)
    assert kv.data["k"] == "other"


def test_acked_never_moves_the_floor_backwards():
    kv = KVStore()
    kv.apply(cmd("put", "a", "0", client=1, seq=1, acked=1))   # opens the session
    kv.apply(cmd("put", "a", "1", client=1, seq=5, acked=5))
    kv.apply(cmd("put", "a", "2", client=1, seq=6, acked=2))   # an older acked value
    assert kv.apply(cmd("put", "a", "3", client=1, seq=4, acked=2)) == (None, None)
    assert kv.data["a"] == "2"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 45)), max_size=60))
def test_the_session_table_keeps_exactly_the_results_at_or_above_the_floor(script):
    """Whatever order seqs arrive in and however far acked jumps (by one, past
    gaps, past more seqs than are kept): every seq below the floor is
    forgotten, every applied one at or above it keeps its first result."""
    kv = KVStore()
    kv.apply(cmd("put", "a", "0", client=1, seq=1, acked=1))   # opens the session
    applied, floor = {1}, 1
    for seq, acked in script:
        status, _ = kv.apply(cmd("put", "a", str(seq), client=1, seq=seq, acked=acked))
        s = kv.sessions[(1, 0)]
        if seq >= floor:
            assert status == OK
            if seq not in applied:   # (a retry is answered from the table, nothing moves)
                applied.add(seq)
                floor = max(floor, acked)
        else:
            assert status is None
        assert s.floor == floor
        assert set(s.results) == {q for q in applied if q >= floor}


# ----------------------------------------------------------------- validation


LIMITS = Limits(max_key_bytes=8, max_value_bytes=16)


@pytest.mark.parametrize("bad,why", [
    ("not a command", "not a Command"),
    (("put", "x", "1"), "not a Command"),
    (None, "not a Command"),
    (Command("1", 1, 1, "put", "x", "1"), "int"),
    (Command(1, 1.0, 1, "put", "x", "1"), "int"),
    (Command(1, 1, None, "put", "x", "1"), "int"),
    (Command(True, 1, 1, "put", "x", "1"), "int"),
    (Command(1, 1, 1, "append", "x"), "unknown operation"),
    (Command(1, 1, 1, "PUT", "x", "1"), "unknown operation"),
    (Command(1, 1, 1, "put", 5, "1"), "key must be str"),
    (Command(1, 1, 1, "put", b"x", "1"), "key must be str"),
    (Command(1, 1, 1, "put", "x", 1), "value must be str"),
    (Command(1, 1, 1, "cas", "x", "1", 0), "expected must be str"),
    (Command(1, 1, 1, "put", "x"), "needs a value"),
    (Command(1, 1, 1, "cas", "x", None, "1"), "needs a value"),
    (Command(1, 1, 1, "put", "k" * 9, "1"), "key longer than 8 bytes"),
    (Command(1, 1, 1, "put", "é" * 5, "1"), "key longer than 8 bytes"),      # 10 bytes
    (Command(1, 1, 1, "put", "😀" * 3, "1"), "key longer than 8 bytes"),      # 12 bytes
    (Command(1, 1, 1, "put", "x", "v" * 17), "value longer than 16 bytes"),
    (Command(1, 1, 1, "put", "x", "ж" * 9), "value longer than 16 bytes"),    # 18 bytes
    (Command(1, 1, 1, "cas", "x", "1", "v" * 17), "expected longer than 16 bytes"),
])
def test_invalid_commands_rejected_without_effect(bad, why):
    kv = KVStore(LIMITS)
    kv.apply(Command(1, 1, 1, "put", "x", "orig"))
    before = (copy.deepcopy(kv.data), copy.deepcopy(kv.sessions))
    err = check_command(bad, LIMITS)
    assert err is not None and why in err
    if "longer than" in why:
        # Sizes are the admitting leader's limits: a committed command applies
        # on every node alike, whatever this node's own limits say.
        assert check_command(bad, None) is None
        return
    status, result = kv.apply(bad)
    assert status == INVALID and result == err
    assert (kv.data, kv.sessions) == before


@pytest.mark.parametrize("good", [
    Command(1, 1, 1, "put", "k" * 8, "v" * 16),                # exactly at the limits
    Command(1, 1, 1, "put", "é" * 4, "ж" * 8),                 # 8 and 16 bytes
    Command(1, 1, 1, "get", "x"),
    Command(1, 1, 1, "delete", "x"),
    Command(1, 1, 1, "cas", "x", "1", None),
])
def test_valid_commands_at_the_limits_accepted(good):
    assert check_command(good, LIMITS) is None
    assert KVStore(LIMITS).apply(good)[0] == OK


def test_default_limits_are_generous_but_finite():
    assert check_command(cmd("put", "k" * 1024, "v"), Limits()) is None
    assert "key longer" in check_command(cmd("put", "k" * 1025, "v"), Limits())
    assert check_command(cmd("put", "k", "v" * 65536), Limits()) is None
    assert "value longer" in check_command(cmd("put", "k", "v" * 65537), Limits())


# ---------------------------------------------------------------- model check


ops = st.one_of(
    st.tuples(st.just("get"), st.sampled_from("abc"), st.none(), st.none()),
    st.tuples(st.just("put"), st.sampled_from("abc"), st.sampled_from(["1", "2", ""]), st.none()),
    st.tuples(st.just("delete"), st.sampled_from("abc"), st.none(), st.none()),
    st.tuples(st.just("cas"), st.sampled_from("abc"), st.sampled_from(["1", "2", ""]),
              st.sampled_from([None, "1", "2", ""])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), ops, st.integers(0, 3)), max_size=60))
def test_kvstore_matches_dict_model_with_retries(script):
    """Random commands from three clients, each retried 0-3 times (interleaved
    with other clients' commands, as a client resends after a timeout): the store
    behaves like a dict where every (client, seq) takes effect once and every
    retry returns the first answer."""
    kv = KVStore()
    model: dict[str, str] = {}
    answers: dict[tuple[int, int], object] = {}
    next_seq = {1: 1, 2: 1, 3: 1}
    outstanding: list[tuple[Command, int]] = []
    for client, (op, key, value, expected), retries in script:
        seq = next_seq[client]
        next_seq[client] += 1
        # acked: the lowest seq this client may still retry.
        acked = min([o.seq for o, n in outstanding if o.client_id == client and n] + [seq])
        c = Command(client, seq, acked, op, key, value, expected)
        # The model.
        if op == "get":
            want = model.get(key)
        elif op == "put":
            model[key] = value
            want = None
        elif op == "delete":
            want = model.pop(key, None) is not None
        else:
            want = model.get(key) == expected
            if want:
                model[key] = value
        answers[(client, seq)] = want
        assert kv.apply(c) == (OK, want)
        outstanding.append((c, retries))
        # Replay a pending retry of some earlier command (same seq: exactly-once).
        for old, n in list(outstanding):
            if n and old.client_id != client:
                outstanding.remove((old, n))
                outstanding.append((old, n - 1))
                status, result = kv.apply(old)
                assert (status, result) == (OK, answers[(old.client_id, old.seq)])
                break
        # A retry that arrives after the client moved on is never applied.
        for o, _ in outstanding:
            if o.seq < kv.sessions[(o.client_id, 0)].floor:
                assert kv.apply(o) == (None, None)
        assert kv.data == model


# ------------------------------------------------- snapshots and session expiry


def test_snapshot_restores_data_and_sessions_exactly_once():
    kv = KVStore()
    kv.apply(cmd("put", "x", "1", client=1, seq=1))
    kv.apply(cmd("delete", "x", client=1, seq=2, acked=1))
    restored = KVStore()
    restored.restore(kv.snapshot_data())
    assert restored.data == kv.data == {}
    # A retry of seq 2 after the snapshot is answered from the session table, not re-applied.
    assert restored.apply(cmd("delete", "x", client=1, seq=2, acked=1)) == (OK, True)
    assert restored.apply(cmd("put", "x", "1", client=1, seq=1, acked=1)) == (OK, None)
    assert restored.data == {}


def register(kv, client, index):
    """``client`` registers at log index ``index``: its session's name (thesis §6.3)."""
    assert kv.apply(Command(client, 1, 1, "register", ""), index) == (OK, index)
    return index


def test_sessions_expire_by_the_clock_in_the_log():
    kv = KVStore()
    s1, s2 = register(kv, 1, 1), register(kv, 2, 2)
    kv.apply(cmd("put", "a", "1", client=1, seq=2)._replace(session=s1))
    kv.apply(SessionClock(100.0, 10.0))         # first clock: both count as active now
    kv.apply(cmd("put", "b", "1", client=2, seq=2)._replace(session=s2))
    kv.apply(SessionClock(105.0, 10.0))
    kv.apply(cmd("put", "b", "2", client=2, seq=3)._replace(session=s2))
    assert set(kv.sessions) == {(1, s1), (2, s2)}
    kv.apply(SessionClock(111.0, 10.0))         # client 1 idle since 100
    assert set(kv.sessions) == {(2, s2)}
    kv.apply(SessionClock(50.0, 10.0))          # a clock never goes back
    assert kv.clock == 111.0
    # Client 1 comes back: refused (whatever its acked), not applied, no session opened.
    for acked in (1, 3):
        assert kv.apply(cmd("put", "a", "2", client=1, seq=3, acked=acked)._replace(
            session=s1)) == (EXPIRED, s1)
    assert kv.data["a"] == "1" and set(kv.sessions) == {(2, s2)}
    # It registers again: a new name, in which the old command is still refused.
    s1b = register(kv, 1, 9)
    assert kv.apply(cmd("put", "a", "2", client=1, seq=3)._replace(session=s1)) == (EXPIRED, s1)
    assert kv.apply(cmd("put", "a", "3", client=1, seq=4)._replace(session=s1b)) == (OK, None)
    assert kv.data["a"] == "3"


def test_a_registration_is_not_a_users_operation():
    assert "unknown operation" in check_command(Command(1, 1, 1, "register", ""), Limits())


def test_a_clock_keeps_the_sessions_it_lists_alive():
    """A SessionClock lists the clients the leader heard from since its previous
    one (reads, retries answered from the table): their sessions are dated by
    it, as an applied command's would be by the next clock."""
    kv = KVStore()
    kv.apply(cmd("put", "a", "1", client=1, seq=1))
    kv.apply(cmd("put", "b", "1", client=2, seq=1))
    kv.apply(SessionClock(100.0, 10.0))                  # both dated 100
    kv.apply(SessionClock(108.0, 10.0, ((1, 0), (99, 0))))   # 1 read; 99 has no session
    kv.apply(SessionClock(111.0, 10.0))
    assert set(kv.sessions) == {(1, 0)} and kv.sessions[(1, 0)].active == 108.0
    kv.apply(cmd("get", "a", client=1, seq=2, acked=2))  # applied after 111: dated by the next
    kv.apply(SessionClock(120.0, 10.0))
    kv.apply(SessionClock(129.0, 10.0))
    assert set(kv.sessions) == {(1, 0)}
    restored = KVStore()
    restored.restore(kv.snapshot_data())
    assert restored.sessions == kv.sessions and restored.clock == kv.clock
    kv.apply(SessionClock(131.0, 10.0))
    assert kv.sessions == {}


def test_a_snapshot_from_before_registration_loads_its_sessions_as_session_0():
    import pickle
    old = pickle.dumps(({"x": "1"}, {7: (2, {3: None}, 5.0, False)}, 5.0))
    kv = KVStore()
    kv.restore(old)
    assert kv.data == {"x": "1"} and kv.cached(7, 3) == (True, None) and kv.clock == 5.0


def test_incr_adds_to_a_64_bit_integer_value_or_changes_nothing() -> None:
    kv = KVStore()
    assert kv.apply(Command(1, 1, 1, "incr", "n", "5")) == (OK, 5)       # absent counts as 0
    assert kv.apply(Command(1, 2, 1, "incr", "n", "-7")) == (OK, -2)
    assert kv.data["n"] == "-2"
    kv.apply(Command(1, 3, 1, "put", "s", "x1"))
    assert kv.apply(Command(1, 4, 1, "incr", "s", "1")) == (OK, None)    # not an integer
    kv.apply(Command(1, 5, 1, "put", "big", str((1 << 63) - 1)))
    assert kv.apply(Command(1, 6, 1, "incr", "big", "1")) == (OK, None)  # would overflow
    assert kv.data["s"] == "x1" and kv.data["big"] == str((1 << 63) - 1)
    assert kv.apply(Command(1, 2, 1, "incr", "n", "-7")) == (OK, -2)     # a retry: applied once
    assert kv.data["n"] == "-2"


@pytest.mark.parametrize("delta", ["", "1.5", "+1", "01", "-", "--1", "9223372036854775808",
                                   "١"])
def test_incr_refuses_a_delta_that_is_not_a_64_bit_decimal(delta: str) -> None:
    assert "incr needs" in check_command(Command(1, 1, 1, "incr", "n", delta), None)



BAD_FIELD = [True, "1", 2.0, None, -1, b"x", "get", "cas", "incr", "é" * 3, "xyz"]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=4), st.text(max_size=4), st.integers(-1, 7), st.sampled_from(BAD_FIELD),
       st.sampled_from([None, Limits(max_key_bytes=4, max_value_bytes=8), Limits()]))
def test_the_plain_put_shortcut_agrees_with_the_general_check(key, value, at, bad, limits):
    """check_command decides a plain put before its general case: a put with
    any one field replaced (at: which one; -1: none) gets the general case's
    verdict alone."""
    fields = [1, 2, 1, "put", key, value, None, 0]
    if at >= 0:
        fields[at] = bad
    cmd = Command(*fields)
    assert check_command(cmd, limits) == check_fields(cmd, limits)
