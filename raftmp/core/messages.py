"""Message types: what the Raft core, the nodes and the clients say to each other.

Every message is a small immutable ``NamedTuple``: cheap to build, cheap to
pickle (one packet carries a list of them), typed, and readable in a repr.
Only the worker, the client and the router turn them into bytes.

Raft messages follow Figure 2 of the paper (Ongaro & Ousterhout 2014) with
the usual engineering additions, each marked where it is declared.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, NamedTuple, Optional


class Entry(NamedTuple):
    """One log entry. ``command`` is None for the leader's no-op (§8)."""

    term: int
    index: int
    command: Any = None


# --- Raft RPCs (Figure 2) ---------------------------------------------------


class RequestVote(NamedTuple):
    term: int
    candidate: int
    last_index: int
    last_term: int
    # Pre-vote (thesis §9.6): "would you vote for me in ``term``?" — asked
    # before a real election, so a server that was cut off cannot force its
    # inflated term on a working cluster. Changes nobody's term or vote.
    pre: bool = False
    # Leadership transfer (thesis §3.10): the leader asked for this election
    # (TimeoutNow), so voters disregard the vote hold of §4.2.3 (``holds_vote``).
    transfer: bool = False


class RequestVoteReply(NamedTuple):
    term: int
    voter: int
    granted: bool
    pre: bool = False


class AppendEntries(NamedTuple):
    term: int
    leader: int
    prev_index: int
    prev_term: int
    entries: tuple  # tuple[Entry, ...]
    commit: int
    # Leader-local counter echoed in the reply: a reply carrying round >= r
    # proves the follower still accepted this leader's term after round r
    # began. ReadIndex (thesis §6.4) waits for a quorum of such proofs.
    round: int
    # Quiet when idle: an append without entries is answered only if the
    # leader asks (or its anchor shows that it missed an answer, follower.py).
    # It asks while it needs to hear from that follower: check-quorum (§6.2),
    # a read round, a lease about to run out (reads.py ``wants_answers``).
    reply: bool = True


class AppendEntriesReply(NamedTuple):
    term: int
    follower: int
    success: bool
    # success: the follower's log matches the leader's through ``index``.
    # failure: ``index`` is the prev_index that was rejected, and the hint
    # (conflict_term, conflict_index) lets the leader skip a whole term of
    # mismatching entries at once (§5.3, "fast backtracking").
    index: int
    conflict_term: int
    conflict_index: int
    round: int      # the request's round; 0 when rejecting a request of an older term


class Snapshot(NamedTuple):
    """The state machine as of log entry ``index`` (of ``term``): the key-value
    data and the session table, pickled (``KVStore.snapshot_data``); and the
    configuration in force at ``index`` (``membership.Configuration``, entry
    ``config_index``), thesis §5.1 (None: the receiver's own first one)."""

    index: int
    term: int
    data: bytes
    config: Any = None
    config_index: int = 0


class InstallSnapshot(NamedTuple):
    """Thesis §5.3 (Figure 5.3), sent in chunks: ``data`` is bytes
    ``offset .. offset + len(data)`` of a snapshot of ``size`` bytes."""

    term: int
    leader: int
    index: int        # the snapshot's last included index ...
    last_term: int    # ... and its term
    size: int
    offset: int
    data: bytes
    config: Any = None      # the snapshot's configuration (Snapshot.config) ...
    config_index: int = 0   # ... and its index


class InstallSnapshotReply(NamedTuple):
    """``offset``: how many bytes of snapshot ``index`` the follower holds in
    order (the next chunk it wants: a lost chunk is resent from there, not the
    whole snapshot); ``done``: it has installed it (or holds a newer state)."""

    term: int
    follower: int
    index: int
    offset: int
    done: bool


class TimeoutNow(NamedTuple):
    """Leadership transfer (thesis §3.10): the leader of ``term`` tells an
    up-to-date voter to start an election at once (no pre-vote, no waiting
    for its timer), with ``RequestVote.transfer`` set."""

    term: int
    leader: int


RAFT_MESSAGES = (RequestVote, RequestVoteReply, AppendEntries, AppendEntriesReply,
                 InstallSnapshot, InstallSnapshotReply, TimeoutNow)

# The field kinds of each Raft message, for ``check_raft_message``.
_N, _B = "count", "flag"   # an int >= 0; a bool
_term, _index = itemgetter(0), itemgetter(1)   # of an Entry
_FIELDS = {
    RequestVote: (_N, _N, _N, _N, _B, _B),
    RequestVoteReply: (_N, _N, _B, _B),
    AppendEntries: (_N, _N, _N, _N, None, _N, _N, _B),
    AppendEntriesReply: (_N, _N, _B, _N, _N, _N, _N),
    InstallSnapshot: (_N, _N, _N, _N, _N, _N, None, None, _N),
    InstallSnapshotReply: (_N, _N, _N, _N, _B),
    TimeoutNow: (_N, _N),
}


def check_raft_message(m: Any, src: int) -> Optional[str]:
    """Why ``m``, a Raft message off the wire from ``src``, is malformed or
    inconsistent, or None.

    The core trusts its peers' messages to be well formed (a broken one would
    trip an assertion, by design); the worker drops what fails here instead.
    Every message names its sender second (candidate, voter, leader, follower),
    and that must be ``src``. An AppendEntries must carry a run of entries right
    after ``prev_index`` (§5.3), with terms that never decrease and never pass
    the message's term."""
    kinds = _FIELDS.get(type(m))
    if kinds is None:
        return f"{type(m).__name__} is not a Raft message"
    if m[1] != src:
        return f"{type(m).__name__} names sender {m[1]!r}, but came from {src}"
    for name, kind, value in zip(m._fields, kinds, m, strict=True):
        if kind is _N and not (type(value) is int and value >= 0):
            return f"{type(m).__name__}.{name} = {value!r} is not a count"
        if kind is _B and type(value) is not bool:
            return f"{type(m).__name__}.{name} = {value!r} is not a bool"
    if type(m) is AppendEntries:
        entries = m.entries
        if type(entries) is not tuple or set(map(type, entries)) - {Entry}:
            return "AppendEntries.entries is not a tuple of Entry"
        # Whole-list comparisons, not a loop: this runs on every batch a follower gets.
        first = m.prev_index + 1
        if list(map(_index, entries)) != list(range(first, first + len(entries))):
            return f"AppendEntries entries do not run on from prev_index {m.prev_index}"
        terms = [m.prev_term, *map(_term, entries), m.term]
        if set(map(type, terms)) != {int} or terms != sorted(terms):
            return "AppendEntries terms out of order (prev_term <= entries <= term)"
    if type(m) is InstallSnapshot:
        if type(m.data) is not bytes or m.offset + len(m.data) > m.size:
            return "InstallSnapshot chunk is not bytes within the snapshot's size"
    return None


# --- Clients ------------------------------------------------------------------

# Operations a client may ask for. ``get`` is served by ReadIndex without a
# log entry; the others go through the log. ``incr`` adds ``value`` (a decimal
# integer) to the key's integer value (absent: 0): the new value, or None if
# the old one is not an integer or the sum leaves 64 bits (nothing changes).
OPS = ("get", "put", "delete", "cas", "incr")
# The client's own request for a new session (thesis §6.3, RegisterClient): a
# Command of this op, which the log applies by opening session ``(client_id,
# its log index)`` and answering that index. Never a user's operation.
REGISTER = "register"


class Command(NamedTuple):
    """A client operation, as proposed to the log and applied by the store.

    ``(client_id, seq)`` names the request for exactly-once application in
    session ``session``: the log index of the client's REGISTER entry (thesis
    §6.3), never reused, so no copy of a command can be applied in a later
    session of the same client. 0: no registered session (the course link,
    whose every request has a seq of its own). ``acked`` is the lowest seq the
    client still waits for, so every seq below it may be forgotten by the
    session table.
    """

    client_id: int
    seq: int
    acked: int
    op: str
    key: str
    value: Optional[str] = None
    expected: Optional[str] = None
    session: int = 0


class SessionClock(NamedTuple):
    """A log entry written by the leader (thesis §6.3): the time on its clock, how
    long a session may stay idle, and the clients the leader heard from since
    its previous clock (reads and retries answered from the session table
    leave no other trace in the log), as ``(client_id, session)`` pairs. Every
    replica expires the same sessions at the same index, because the time comes
    from the log, not its own clock."""

    time: float
    timeout: float
    seen: tuple = ()     # (client_id, session) pairs of the session table, ascending


class ClientRequest(NamedTuple):
    """Client -> node. The node replies to the endpoint that sent it."""

    command: Command


# ClientReply.status values
OK = "ok"                # result is the operation's result
REDIRECT = "redirect"    # not the leader; ``leader`` is a hint (or None)
RETRY = "retry"          # leader lost before the outcome was known; retry anywhere
INVALID = "invalid"      # the request is malformed; ``result`` says why
EXPIRED = "expired"      # no such session (expired): nothing applied; ``result`` = the session
REFUSED = "refused"      # a configuration change the leader refused; ``result`` says why


class ClientReply(NamedTuple):
    client_id: int
    seq: int
    status: str
    result: Any = None
    leader: Optional[int] = None
