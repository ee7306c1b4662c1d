"""Cluster membership (thesis chapter 4): configurations in the log, and
the set arithmetic of a change.

A configuration is a log entry carrying the whole set of servers, voters
and learners (``Configuration``), never a delta. Every server uses the
latest configuration in its log, committed or not (thesis §4.1), and falls
back to the one before when that entry is truncated; ``ConfigHistory``
keeps the configurations a log holds, so either costs nothing. A snapshot
carries the configuration as of its index (thesis §5.1).

Changes are one server at a time (thesis §4.1: any majority of the old set
and any majority of the new one share a server), and a leader starts one
only when its previous configuration is committed and an entry of its own
term is (the 2015 rule, Ongaro on raft-dev: else a configuration appended
by a deposed leader could be overwritten after a second change was counted
over it). Learners (etcd's, hashicorp's non-voters) receive the log and
snapshots but never count toward a quorum and never campaign: a new server
joins as one and is promoted once it has caught up (thesis §4.2.1).

``config_of`` is the one place that tells a configuration entry from the
others: a log that stores entries as bytes needs only to change it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

# The client operations that change the configuration (``Command.op``, the
# server's id in ``Command.key``): they go through the client's session and
# the log, exactly once, like writes (thesis §6.3).
ADD_VOTER, ADD_LEARNER, PROMOTE, REMOVE = "add_voter", "add_learner", "promote", "remove"
CONF_OPS = (ADD_VOTER, ADD_LEARNER, PROMOTE, REMOVE)


class Configuration(NamedTuple):
    """The command of a configuration entry (thesis §4.1): the whole new set.
    ``request`` is the client's ``Command`` that asked for it (its session
    records the answer when the entry is applied), None for the cluster's
    first configuration."""

    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    request: Any = None

    @property
    def members(self) -> frozenset[int]:
        return frozenset(self.voters) | frozenset(self.learners)

    def describe(self) -> str:
        learners = f" learners {list(self.learners)}" if self.learners else ""
        return f"voters {list(self.voters)}{learners}"


def config_of(entry: Any) -> Optional[Configuration]:
    """The configuration a log entry carries, or None (a write, a no-op...)."""
    cmd = entry.command
    return cmd if type(cmd) is Configuration else None


def majority_of(n: int) -> int:
    """The size of a majority of ``n`` servers (§5.2: a quorum)."""
    return n // 2 + 1


def change(conf: Configuration, op: str, server: int, request: Any = None
           ) -> tuple[Optional[Configuration], Optional[str]]:
    """``conf`` after ``op`` on ``server``, or why not (one server at a time:
    the voters change by at most one, thesis §4.1)."""
    voters, learners = list(conf.voters), list(conf.learners)
    if op in (ADD_VOTER, ADD_LEARNER):
        if server in conf.members:
            return None, f"server {server} is already a {role_in(conf, server)}"
        (voters if op == ADD_VOTER else learners).append(server)
    elif op == PROMOTE:
        if server not in learners:
            return None, f"server {server} is not a learner ({role_in(conf, server)})"
        learners.remove(server)
        voters.append(server)
    elif op == REMOVE:
        if server not in conf.members:
            return None, f"server {server} is not a member"
        if voters == [server]:
            return None, f"server {server} is the last voter"
        (voters if server in voters else learners).remove(server)
    else:
        raise ValueError(f"not a configuration change: {op!r}")
    return Configuration(tuple(sorted(voters)), tuple(sorted(learners)), request), None


def role_in(conf: Configuration, server: int) -> str:
    if server in conf.voters:
        return "voter"
    return "learner" if server in conf.learners else "non-member"


def one_at_a_time(old: Configuration, new: Configuration) -> bool:
    """Thesis §4.1: the voters of ``old`` and ``new`` differ by at most one server."""
    return len(set(old.voters) ^ set(new.voters)) <= 1


class ConfigHistory:
    """The configurations in a server's log: the one at or below the log's
    base (from the snapshot, or the cluster's first), and one per
    configuration entry after it. Invariant: indexes increase; the first is
    at or below the log's base."""

    __slots__ = ("history",)

    def __init__(self, first: Configuration, index: int = 0) -> None:
        self.history: list[tuple[int, Configuration]] = [(index, first)]

    @property
    def latest(self) -> Configuration:
        """The configuration in use (thesis §4.1: committed or not)."""
        return self.history[-1][1]

    @property
    def latest_index(self) -> int:
        return self.history[-1][0]

    def at(self, index: int) -> tuple[int, Configuration]:
        """(its index, the configuration) in force at log index ``index``."""
        for at, conf in reversed(self.history):
            if at <= index:
                return at, conf
        return self.history[0]

    def find(self, client_id: int, seq: int) -> Optional[int]:
        """The index of the configuration entry that request (client_id, seq) made."""
        for at, conf in self.history:
            r = conf.request
            if r is not None and (r.client_id, r.seq) == (client_id, seq):
                return at
        return None

    def appended(self, entries: Any) -> bool:
        """Entries were appended to the log; whether one was a configuration."""
        found = False
        for e in entries:
            conf = config_of(e)
            if conf is not None:
                self.history.append((e.index, conf))
                found = True
        return found

    def truncated(self, index: int) -> bool:
        """The log lost its entries from ``index`` on: fall back to the
        configuration before them. Whether one was dropped."""
        n = len(self.history)
        while len(self.history) > 1 and self.history[-1][0] >= index:
            self.history.pop()
        return len(self.history) != n

    def compacted(self, base: int) -> None:
        """Entries up to ``base`` went into a snapshot: keep the configuration
        in force there and the ones after it."""
        at, _ = self.at(base)
        self.history = [h for h in self.history if h[0] >= at]

    def installed(self, index: int, conf: Optional[Configuration], conf_index: int,
                  kept: bool) -> None:
        """A snapshot of entries up to ``index``, whose configuration is ``conf``
        (as of ``conf_index``), replaced them; ``kept``: the entries after it stay."""
        after = [h for h in self.history if h[0] > index] if kept else []
        if conf is None:   # a snapshot made before configurations were recorded
            conf_index, conf = self.at(index)
        self.history = [(conf_index, conf)] + after
