"""Message types: what the Raft core, the nodes and the clients say to each other.

Every message is a small immutable ``NamedTuple``: cheap to build, cheap to
pickle (one packet carries a list of them), typed, and readable in a repr.
Only the worker, the client and the router turn them into bytes.

Raft messages follow Figure 2 of the paper (Ongaro & Ousterhout 2014) with
the usual engineering additions, each marked where it is declared.
"""

from __future__ import annotations

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
    round: int


class Snapshot(NamedTuple):
    """The state machine as of log entry ``index`` (of ``term``): the key-value
    data and the session table, pickled (``KVStore.snapshot_data``)."""

    index: int
    term: int
    data: bytes


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


class InstallSnapshotReply(NamedTuple):
    """``offset``: how many bytes of snapshot ``index`` the follower holds in
    order (the next chunk it wants: a lost chunk is resent from there, not the
    whole snapshot); ``done``: it has installed it (or holds a newer state)."""

    term: int
    follower: int
    index: int
    offset: int
    done: bool


RAFT_MESSAGES = (RequestVote, RequestVoteReply, AppendEntries, AppendEntriesReply,
                 InstallSnapshot, InstallSnapshotReply)


# --- Clients ------------------------------------------------------------------

# Operations a client may ask for. ``get`` is served by ReadIndex without a
# log entry; the others go through the log.
OPS = ("get", "put", "delete", "cas")


class Command(NamedTuple):
    """A client operation, as proposed to the log and applied by the store.

    ``(client_id, seq)`` names the request for exactly-once application;
    ``acked`` is the lowest seq the client still waits for, so every seq
    below it may be forgotten by the session table (thesis §6.3).
    """

    client_id: int
    seq: int
    acked: int
    op: str
    key: str
    value: Optional[str] = None
    expected: Optional[str] = None


class SessionClock(NamedTuple):
    """A log entry written by the leader (thesis §6.3): the time on its clock, and
    how long a session may stay idle. Every replica expires the same sessions
    at the same index, because the time comes from the log, not its own clock."""

    time: float
    timeout: float


class ClientRequest(NamedTuple):
    """Client -> node. The node replies to the endpoint that sent it."""

    command: Command


# ClientReply.status values
OK = "ok"                # result is the operation's result
REDIRECT = "redirect"    # not the leader; ``leader`` is a hint (or None)
RETRY = "retry"          # leader lost before the outcome was known; retry anywhere
INVALID = "invalid"      # the request is malformed; ``result`` says why
EXPIRED = "expired"      # the client's session expired; nothing was applied


class ClientReply(NamedTuple):
    client_id: int
    seq: int
    status: str
    result: Any = None
    leader: Optional[int] = None
