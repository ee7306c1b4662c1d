"""Taking a snapshot without stalling the worker's loop: a forked child writes it.

Why ``fork()`` (as PySyncObj does) and not an incremental writer: the state
machine is a plain dict (and a session table) that the loop keeps changing.
A child forked between two loop turns holds a copy-on-write image of it at
exactly the applied index, for the price of copying the page tables (about
a millisecond per 100 MB); the pickling, the write and the fsyncs — the
part that grows with the data — run in the child, on the other core, while
the parent goes on serving. An incremental writer would need a versioned
store (or a pause) to write a consistent state while writes keep landing.
The cost is memory: pages the parent writes meanwhile, and objects whose
reference counts the child's pickling touches, are copied (bounded by the
data size, for the child's short life).

The child never returns into the worker's code: it writes, then
``os._exit``; it gets SIGKILL if the worker dies. The worker polls
(``poll``, a non-blocking ``waitpid`` each loop turn), so the child is
reaped as soon as the loop wakes after it exits, and ``close`` kills and
reaps one still running (no zombies, no orphans; its ``.tmp`` file is
removed at the next start).
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Optional

from .core.messages import Snapshot
from .core.node import Node
from .procs import die_with_parent
from .storage import FileStorage

log = logging.getLogger("raftmp.snapshots")


class SnapshotWriter:
    def __init__(self, storage: FileStorage) -> None:
        self.storage = storage
        self.pid: Optional[int] = None
        self.index = 0          # of the snapshot being written

    @property
    def busy(self) -> bool:
        return self.pid is not None

    def start(self, node: Node) -> None:
        """Fork a child that writes ``node``'s state as of its applied index."""
        assert self.pid is None, "one snapshot at a time"
        parent = os.getpid()
        self.index = node.applied
        pid = os.fork()
        if pid == 0:   # the child: write, and leave without running any of the parent's code
            code = 1
            try:
                die_with_parent(parent)
                self.storage.write_snapshot(node.make_snapshot())
                code = 0
            except BaseException:  # noqa: BLE001 — reported by the exit status
                log.exception("snapshot %d: the writer failed", self.index)
            finally:
                os._exit(code)
        self.pid = pid

    def poll(self) -> Optional[Snapshot]:
        """The snapshot, once the child has written it (None while it runs, if
        it failed, or if a newer one was saved meanwhile)."""
        if self.pid is None:
            return None
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.pid = None
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.warning("snapshot %d: the writer exited with %d", self.index, code)
            return None
        saved = self.storage.snapshot
        if saved is not None and saved.index >= self.index:
            return None   # one received from the leader overtook it
        return self.storage.read_snapshot(self.index)

    def close(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = None
