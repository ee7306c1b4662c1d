"""Log compaction and InstallSnapshot: the Raft core's rules for snapshots.

Mixed into ``raft.Raft`` (which owns the state these methods use). Section
numbers refer to the Raft paper (§7) and Ongaro's thesis (chapter 5).

Taking a snapshot (thesis §5.1): each node decides on its own, when the log
applied since its last snapshot passes ``Config.snapshot_entries`` entries or
``Config.snapshot_bytes`` bytes (``wants_snapshot``). The state machine
serializes itself (``Node.make_snapshot``), the driver makes it durable, and
only then ``snapshot_saved`` drops the log's prefix — keeping the last
``snapshot_keep`` entries, so a follower that is a little behind still gets
AppendEntries instead of the whole snapshot (etcd's catch-up entries).

Sending one (thesis §5.3): a follower whose next entry the leader no longer
holds gets the leader's snapshot in chunks of ``snapshot_chunk`` bytes,
pipelined up to ``max_inflight`` chunks. The follower takes chunks only in
order and acknowledges each with the number of bytes it holds, so a lost
chunk is resent from there (go-back-N on the leader's retransmission timer),
never the whole snapshot. A chunk at offset 0 of another snapshot discards a
partial one. Once complete, the follower installs it atomically in its Ready
(persist, then replace the state machine) and only then says so. Everything
else (heartbeats, appends to other followers) keeps flowing meanwhile: a
follower in snapshot mode is one more Progress state.
"""

from __future__ import annotations

from typing import Any, Optional

from .messages import InstallSnapshot, InstallSnapshotReply, Snapshot
from .progress import Segment
from .roles import LEADER

CHECK_EVERY = 256   # applied entries between two measures of the log's bytes


class SnapshotRules:
    """The snapshot half of the Raft core (state lives on ``Raft``)."""

    # -- taking a snapshot (thesis §5.1) ---------------------------------------

    def wants_snapshot(self) -> bool:
        """Whether the applied log since the last snapshot passed a threshold."""
        cfg = self.config
        done = self.snapshot.index if self.snapshot is not None else 0
        since = self.applied - done
        if since <= 0:
            return False
        if since >= cfg.snapshot_entries:
            return True
        if self.applied < self.size_check_at:
            return False
        self.size_check_at = self.applied + CHECK_EVERY
        lo = max(done, self.log.base) + 1
        return self.log.size(lo, self.applied) >= cfg.snapshot_bytes

    def snapshot_of(self, data: bytes) -> Snapshot:
        """A snapshot of the applied state ``data``, with the configuration in
        force at the applied index (thesis §5.1)."""
        at, conf = self.configs.at(self.applied)
        return Snapshot(self.applied, self.log.term(self.applied), data, conf, at)

    def snapshot_saved(self, snap: Snapshot) -> Optional[tuple[int, int]]:
        """``snap`` (of this node's applied state, index <= applied) is durable:
        drop the log up to ``snapshot_keep`` entries before it (§7). The new
        log base ``(index, term)`` for storage to compact to, or None if
        ``snap`` is older than what we have."""
        if self.snapshot is not None and snap.index <= self.snapshot.index:
            return None
        assert snap.index <= self.applied <= self.commit, "snapshot of unapplied entries"
        self.snapshot = snap
        keep_from = max(self.log.base, snap.index - self.config.snapshot_keep)
        self.log.compact(keep_from)
        self.configs.compacted(keep_from)
        return keep_from, self.log.base_term

    # -- leader: sending (thesis §5.3) -----------------------------------------

    def send_snapshot(self, peer: int, pr: Any, now: float) -> None:
        """Put ``peer`` in snapshot mode if it is not, and send the chunks the
        window allows from the first one not sent."""
        if pr.snap is None:
            assert self.snapshot is not None, "log compacted without a snapshot"
            pr.snap = self.snapshot
            pr.snap_acked = pr.snap_sent = 0
            pr.probing = True
            pr.inflight.clear()
        snap = pr.snap
        pr.next = snap.index + 1
        chunk, size = self.config.snapshot_chunk, len(snap.data)
        while pr.snap_sent < size and len(pr.inflight) < self.config.max_inflight:
            lo = pr.snap_sent
            data = snap.data[lo:lo + chunk]
            self._send(peer, InstallSnapshot(self.term, self.id, snap.index, snap.term, size,
                                             lo, data, snap.config, snap.config_index))
            pr.snap_sent = lo + len(data)
            pr.inflight.append(Segment(lo, pr.snap_sent, now, self.round))
            pr.sent_at = now

    def go_back_snapshot(self, pr: Any) -> None:
        """The oldest chunk timed out: resend from the last acknowledged byte."""
        pr.snap_sent = pr.snap_acked
        pr.inflight.clear()

    def handle_snapshot_reply(self, src: int, m: InstallSnapshotReply, now: float) -> None:
        if self.role != LEADER or m.index == 0:
            # Index 0 answers a chunk from an earlier term of ours (see ``step``):
            # it proves nothing about this term, not even for check-quorum (§6.2).
            return
        pr = self.progress.get(src)
        if pr is None:
            return   # no longer a member
        pr.active = True
        pr.silent = False
        snap = pr.snap
        if snap is None or m.index != snap.index:
            return   # an answer about a transfer that is over
        if m.done:
            # The follower's log now matches ours through snap.index.
            pr.snap = None
            pr.inflight.clear()
            pr.probing = False
            pr.match = max(pr.match, snap.index)
            pr.next = pr.match + 1
            self.maybe_commit()
            self.maybe_send_append(src, pr, now)
            return
        if m.offset < pr.snap_acked:
            # The follower lost its partial copy (it restarted, or took
            # another snapshot's first chunk): start again from what it holds.
            pr.snap_acked = m.offset
            self.go_back_snapshot(pr)
        elif m.offset > pr.snap_acked:
            pr.snap_acked = m.offset
            while pr.inflight and pr.inflight[0].last <= m.offset:
                pr.inflight.popleft()
        self.send_snapshot(src, pr, now)

    # -- follower: receiving (thesis §5.3) -------------------------------------

    def handle_install_snapshot(self, src: int, m: InstallSnapshot, now: float) -> None:
        self.follow(m, now)
        if m.index <= self.commit:
            # We already hold (and have committed) everything it covers.
            self._send(src, InstallSnapshotReply(self.term, self.id, m.index, m.size, True))
            return
        inc = self.incoming
        if inc is None or inc[:2] != (m.index, m.last_term):
            if m.offset != 0:
                # A chunk of a snapshot we have not started: ask for the start.
                self._send(src, InstallSnapshotReply(self.term, self.id, m.index, 0, False))
                return
            inc = self.incoming = (m.index, m.last_term, bytearray())  # a partial one is dropped
        buf = inc[2]
        if m.offset == len(buf):
            buf += m.data
        if len(buf) < m.size:
            self._send(src, InstallSnapshotReply(self.term, self.id, m.index, len(buf), False))
            return
        self.incoming = None
        self.install_snapshot(Snapshot(m.index, m.last_term, bytes(buf), m.config,
                                       m.config_index))
        # Sent after the Ready that persists the snapshot (like every reply).
        self._send(src, InstallSnapshotReply(self.term, self.id, m.index, m.size, True))

    def install_snapshot(self, snap: Snapshot) -> None:
        """Replace the log up to ``snap`` and the state machine (in this turn's
        Ready) by ``snap``: thesis §5.3 steps 6-8."""
        kept = self.log.install(snap.index, snap.term)
        # Thesis §5.1: the snapshot carries the configuration as of its index.
        self.configs.installed(snap.index, snap.config, snap.config_index, kept)
        self.use_latest_config()
        # Storage keeps its own entries after snap.index only if it holds the
        # same entry at snap.index, i.e. if it was persisted (below
        # unstable_from): otherwise every kept entry must be written again.
        self.unstable_from = max(self.unstable_from, snap.index + 1) if kept else snap.index + 1
        self.snapshot = self.installed = snap
        self.installs += 1
        # The log now matches the leader's through snap.index (a committed
        # prefix); appends held past the old gap are dropped, as if lost.
        term, proven = self.matched
        self.matched = (self.term, max(snap.index, proven if term == self.term else 0))
        self.held.clear()
        self.commit = max(self.commit, snap.index)
        self.applied = snap.index
