"""Typed errors. Expected refusals are values of these types, never error codes.

Every error raftmp raises on purpose is a ``RaftmpError``; the ones that
reject a bad argument are also ``ValueError``s, so code that already catches
``ValueError`` keeps working.
"""

import math
from typing import Any


class RaftmpError(Exception):
    """Base of every error raftmp raises on purpose."""


class InvalidRequest(RaftmpError, ValueError):
    """The request is malformed (wrong type, over a size limit); nothing was sent or applied."""


class Unavailable(RaftmpError):
    """No leader could be reached; the operation was not applied."""


class Timeout(RaftmpError):
    """The client gave up waiting: the operation may or may not have been applied."""


class ConfigError(RaftmpError, ValueError):
    """A setting is out of range or malformed (a config, faults, a scenario file);
    the message names the setting and the value."""


class PeerMisbehaved(RaftmpError):
    """A peer's message contradicts what an honest Raft peer can send: an
    AppendEntries from a second leader of our term, an entry replacing one we
    know is committed. Raised before anything changes; a worker drops the
    message and counts it (the network, or whatever can write to it, is not
    trusted), while the simulator, whose peers are all honest, reports it as
    the broken invariant it is there."""


class CorruptStorage(RaftmpError):
    """The data dir holds something that cannot be a crash's leftover.

    Raised, never repaired: resetting the hard state could make the node vote
    twice in a term, and dropping CRC-valid log entries could lose entries a
    quorum was counted on.
    """


def check_positive(settings: Any, *names: str, integer: bool = False) -> None:
    """ConfigError naming the first field of ``settings`` among ``names`` that is
    not a positive finite number (an int, with ``integer``)."""
    for name in names:
        value = getattr(settings, name)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value < math.inf:
            raise ConfigError(f"{type(settings).__name__}.{name} must be a positive "
                              f"{'int' if integer else 'number'}, not {value!r}")


class SessionExpired(RaftmpError):
    """The client's session expired (no leader heard from it for the cluster's
    session timeout, thesis §6.3) while a write it gave up on (``Timeout``) may
    have been applied in it; the operation was not applied. Start a new client.
    (With no write in doubt, the client opens a new session by itself.)"""


class ConfigChangeRefused(RaftmpError):
    """The leader refused a configuration change (one server at a time, the
    previous change not committed yet, not a member...); nothing was applied.
    The message says why."""
