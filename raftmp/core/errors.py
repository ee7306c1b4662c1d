"""Typed errors. Expected refusals are values of these types, never error codes."""


class RaftmpError(Exception):
    """Base of every error raftmp raises on purpose."""


class InvalidRequest(RaftmpError, ValueError):
    """The request is malformed (wrong type, over a size limit); nothing was sent or applied."""


class Unavailable(RaftmpError):
    """No leader could be reached; the operation was not applied."""


class Timeout(RaftmpError):
    """The client gave up waiting: the operation may or may not have been applied."""


class SessionExpired(RaftmpError):
    """The client's session expired (idle past the cluster's session timeout,
    thesis §6.3); the operation was not applied. Start a new client."""
