"""Where a node's Raft state survives a crash.

The core never touches storage: it takes the loaded state when it is built
and hands out what must be made durable in each ``Ready``. A worker calls
``save`` once per loop turn, before it sends anything but a leader's
appends (see ``Ready``).

Interface (MemoryStorage, DiskImage, FileStorage):
    load() -> (term, vote, entries)         # entries are Entry(term, index, command),
                                            #   from load_snapshot().index + 1 (or 1) on
    load_snapshot() -> Snapshot or None     # the newest snapshot saved
    save_snapshot(snapshot) -> None         # durable when it returns; the log is unchanged
    compact(index, term) -> None            # drop the log up to (index, term), which a
                                            #   saved snapshot covers: entries after it are
                                            #   kept if the log holds that very entry, else
                                            #   the whole log goes (thesis §5.3)
    save(hard_state, entries, pickled=None) -> None   # durable when it returns
        hard_state: (term, vote) or None when unchanged
        entries:    [] or contiguous entries; entries[0].index may be <= the
                    last stored index, and then every stored entry from
                    entries[0].index on is replaced (Raft's truncation, §5.3).
        pickled:    optionally, pickles of entry sequences that concatenate to
                    exactly ``entries`` (as they arrived on the wire): written
                    as they are, so a follower does not pickle what it received.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import random
import struct
import zlib
from typing import Optional, Sequence

from .core.errors import CorruptStorage, RaftmpError
from .core.messages import Entry, Snapshot
from .logformat import (
    HEADER,
    SECTOR,
    LogBase,
    Replayed,
    apply_record,
    encode_record,
    entries_after,
    frame,
    holds,
    replay,
    segment_header,
)


class NewestSnapshot:
    """The simulator's storages keep the newest snapshot saved, in memory."""

    snapshot: Optional[Snapshot] = None

    def load_snapshot(self) -> Optional[Snapshot]:
        return self.snapshot

    def save_snapshot(self, snap: Snapshot) -> None:
        if self.snapshot is None or snap.index > self.snapshot.index:
            self.snapshot = snap


class MemoryStorage(NewestSnapshot):
    """Storage for the simulator: survives a simulated crash, not a real one."""

    def __init__(self) -> None:
        self.term = 0
        self.vote: Optional[int] = None
        self.base = LogBase(0, 0)
        self.entries: list[Entry] = []     # from base.index + 1 on
        self.snapshot: Optional[Snapshot] = None

    def load(self) -> tuple[int, Optional[int], list[Entry]]:
        snap = self.snapshot
        if snap is not None and snap.index > self.base.index:
            self.compact(snap.index, snap.term)   # a restart compacts, as FileStorage's does
        return self.term, self.vote, entries_after(snap, self.base, self.entries)

    def compact(self, index: int, term: int) -> None:
        if index > self.base.index:
            self.entries = entries_after(Snapshot(index, term, b""), self.base, self.entries)
            self.base = LogBase(index, term)

    def save(self, hard_state: Optional[tuple[int, Optional[int]]], entries: Sequence[Entry],
             pickled: Optional[list[bytes]] = None) -> None:
        if hard_state is not None:
            self.term, self.vote = hard_state
        if entries:
            first = entries[0].index - self.base.index
            assert 1 <= first <= len(self.entries) + 1, "entries must continue the stored log"
            del self.entries[first - 1:]
            self.entries.extend(entries)


class DiskImage(NewestSnapshot):
    """FileStorage's log format, held in memory, for the simulator: the same
    segments of framed records, recovered by the same ``replay``, so a
    simulated crash can tear the last write and a fault can flip a bit, and
    recovery is the real one. The hard state is replaced atomically, after the
    log write, as FileStorage does; compaction deletes whole segments, or
    starts a segment that resets the log, as FileStorage's does. Segments are
    small here, so that a simulated run starts and deletes many."""

    def __init__(self, segment_bytes: int = 4096) -> None:
        self.segments: list[bytearray] = []
        self.segment_bytes = segment_bytes
        self.hard: tuple[int, Optional[int]] = (0, None)
        self.snapshot: Optional[Snapshot] = None

    def load(self) -> tuple[int, Optional[int], list[Entry]]:
        """Recover (raises ``CorruptStorage`` as FileStorage would); a torn tail is
        cut off, and a log older than the snapshot is compacted."""
        log = self._recover()
        snap = self.snapshot
        if snap is not None and snap.index > log.base.index:
            self.compact(snap.index, snap.term)   # a restart compacts, as FileStorage's does
        return (*self.hard, entries_after(snap, log.base, log.entries))

    def compact(self, index: int, term: int) -> None:
        log = self._recover()
        if index <= log.base.index:
            return
        if holds(log.base, log.entries, index, term):
            while len(self.segments) > 1 and log.headers[1].index <= index:
                del self.segments[0]
                del log.headers[0]
        else:
            self.segments = [bytearray(segment_header(index, term))]

    def holds(self, index: int, term: int) -> bool:
        """Whether a restart would find entry ``(index, term)``, in the log or under
        a snapshot. A disk that fails its checks holds everything: its node refuses
        to start, so it never votes again and cannot help elect a leader without it."""
        if self.snapshot is not None and self.snapshot.index >= index:
            return True
        try:
            log = self._recover(repair=False)
        except CorruptStorage:
            return True
        return index > log.base.index and holds(log.base, log.entries, index, term)

    def _recover(self, repair: bool = True) -> Replayed:
        log = replay(self.segments)
        if log.torn is not None and repair:
            keep = log.torn[0]
            if keep:
                del self.segments[-1][keep:]
            else:
                del self.segments[-1]
        return log

    def _write(self, entries: Sequence[Entry]) -> int:
        """Append ``entries`` (starting a segment if the last is full); where the write began."""
        if not self.segments or len(self.segments[-1]) >= self.segment_bytes:
            log = self._recover(repair=False)
            first = entries[0].index
            term = log.base.term if first - 1 == log.base.index else (
                log.entries[first - 2 - log.base.index].term)
            self.segments.append(bytearray(segment_header(first - 1, term)))
            start = 0
        else:
            start = len(self.segments[-1])
        self.segments[-1] += encode_record(entries)
        return start

    def save(self, hard_state: Optional[tuple[int, Optional[int]]], entries: Sequence[Entry],
             pickled: Optional[list[bytes]] = None) -> None:
        if entries:
            self._write(entries)
        if hard_state is not None:
            self.hard = hard_state

    def save_torn(self, entries: Sequence[Entry], rng: random.Random) -> None:
        """A crash inside ``save``, before its fsync returned: a random prefix of the
        log write reached the disk (the rest is cut off, or left as unwritten,
        zeroed sectors), and the hard state, replaced after it, was not written."""
        if not entries:
            return
        start = self._write(entries)
        seg = self.segments[-1]
        cut = rng.randrange(start, len(seg) + 1)
        if cut == len(seg) or rng.random() < 0.5:
            del seg[cut:]
        else:
            zero = max(start, cut - cut % SECTOR)
            seg[zero:] = bytes(len(seg) - zero)

    def flip_bit(self, rng: random.Random) -> bool:
        """Corrupt one stored bit (False if there is nothing stored)."""
        total = sum(map(len, self.segments))
        if not total:
            return False
        pos = rng.randrange(total)
        for seg in self.segments:
            if pos < len(seg):
                seg[pos] ^= 1 << rng.randrange(8)
                return True
            pos -= len(seg)
        raise AssertionError("unreachable")


# --- FileStorage ----------------------------------------------------------------

_log = logging.getLogger(__name__)

SEGMENT_BYTES = 256 << 10  # a save starts a new log segment once the last one holds this
_SEGMENT = "log-"         # segment file names: this + a sequence number, 20 digits
_SNAPSHOT = "snapshot-"   # snapshot file names: this + the index, 20 digits
# Where os.fdatasync exists (Linux) it is enough for an append: it flushes the
# data and the new file size, skipping the mtime update that fsync also writes.
def _datasync(fd: int) -> None:
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


def _makedirs_durably(path: str, sync: bool) -> None:
    """``os.makedirs``, then fsync the parent of each directory it created: a
    new directory's name is data of its parent, lost in a crash until synced."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    os.makedirs(path, exist_ok=True)
    for d in missing if sync else ():
        fd = os.open(os.path.dirname(d), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class FileStorage:
    """Durable storage for a real worker: a segmented append-only log, an atomically
    replaced hard state, and snapshot files.

    Layout of the directory ``path`` (created if missing, durably: its parent is
    fsynced):

    ``log-<seq>``
        The log's segments, in the order of ``seq`` (20 digits), in the format
        of ``logformat.py``: a ``LogBase`` record, then one record per
        ``save`` that had entries. A ``save`` starts a new segment when the
        last one holds ``segment_bytes`` or more. A torn last write (a crash's
        leftover: nothing valid after it, short or partly unwritten) is cut
        off, with a warning; any other bad record (a flipped bit, a record
        that does not continue the log) raises ``CorruptStorage``: dropping
        the valid records after it could lose acknowledged entries.
    ``state``
        One record whose body is the JSON ``[term, vote]``, replaced atomically
        (write ``state.tmp``, fsync, ``os.replace``, fsync the directory). A
        missing file is ``(0, None)``; an unreadable one raises
        ``CorruptStorage``.
    ``LOCK``
        ``flock``-ed while open, so two processes never append to one log.
    ``snapshot-<index>``
        One record whose body is a pickled ``Snapshot``, written to a ``.tmp``
        name, fsynced, renamed, and the directory fsynced (``write_snapshot``;
        safe to call from a forked child). The newest valid one is loaded.

    Compaction (``compact``, after a snapshot is durable) costs nothing per
    entry kept: it deletes, oldest first, the segments whose every entry the
    snapshot covers (the next segment starts at or below the compaction
    point). When the log does not hold the compaction point (a snapshot from
    the leader that replaces a conflicting log, thesis §5.3) it first starts
    a segment whose base is that entry, durably, and then deletes all older
    ones. Then the older snapshot files go. A crash at any point restarts
    correctly: mid-write, a ``.tmp`` is removed at open and the old files are
    intact; after the rename, the new snapshot is loaded and the log's entries
    after it are kept (``entries_after``), and the log is compacted at open;
    mid-deletion, what is left replays to the same log after the snapshot
    (a suffix of the segments, or older ones followed by the resetting one).

    In memory the log is kept as replayed (the ``Entry`` objects are the
    caller's, shared: a pointer per entry), from ``base``, the last
    compaction point; the first segment may start a little below it.

    Costs: ``save(None, [])``, or a ``hard_state`` equal to the stored one,
    makes no system call. Otherwise one ``write`` + one fdatasync of the log
    when there are entries (plus a directory fsync when a segment starts), and
    the replace sequence above when the hard state changed.

    ``sync=False`` skips every fsync: only for benchmarks that compare the cost
    of the rest. It is not durable across a power loss or a kernel crash.

    Superseded bytes (entries a truncation replaced, §5.3) stay in their
    segment until compaction deletes it: truncation is rare, and rewriting
    entries to reclaim them is what this layout avoids.

    The body is a pickle: the data dir must be as trusted as the code.
    """

    def __init__(self, path: str | os.PathLike[str], sync: bool = True,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.path = os.fspath(path)
        self.sync = sync
        self.segment_bytes = segment_bytes
        _makedirs_durably(self.path, sync)
        self._state_path = os.path.join(self.path, "state")
        self._log_fd: Optional[int] = None      # the last segment's, open for appends
        self._dir_fd = os.open(self.path, os.O_RDONLY)
        self._lock_fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RaftmpError(f"{self.path} is in use by another process") from None
            self._open()
        except BaseException:
            if self._log_fd is not None:
                os.close(self._log_fd)
            os.close(self._lock_fd)  # releases the flock
            os.close(self._dir_fd)
            raise

    def _open(self) -> None:
        """Recover term, vote and log from the files; runs holding the lock."""
        # Leftovers of a crash in the middle of a replace: the old file is intact.
        for leftover in ["state.tmp"] + [
                name for name in os.listdir(self.path)
                if name.startswith(_SNAPSHOT) and name.endswith(".tmp")]:
            try:
                os.unlink(os.path.join(self.path, leftover))
            except FileNotFoundError:
                pass
        self.term, self.vote = self._read_state()
        # One (file name, its LogBase, size) per segment, in order.
        self._segments: list[list] = []
        self._replay()
        self.snapshot = self._read_snapshot()
        entries_after(self.snapshot, self.base, self.entries)   # raises if they do not fit
        if self.snapshot is not None and self.snapshot.index > self.base.index:
            # A crash came after a snapshot was saved, before the log shrank.
            self.compact(self.snapshot.index, self.snapshot.term)

    # -- interface ------------------------------------------------------------

    def load(self) -> tuple[int, Optional[int], list[Entry]]:
        return self.term, self.vote, entries_after(self.snapshot, self.base, self.entries)

    def load_snapshot(self) -> Optional[Snapshot]:
        return self.snapshot

    def save_snapshot(self, snap: Snapshot, written: bool = False) -> None:
        """Make ``snap`` durable (``written``: a forked child already wrote its file)."""
        if self.snapshot is not None and snap.index <= self.snapshot.index:
            return
        if not written:
            self.write_snapshot(snap)
        self.snapshot = snap

    def write_snapshot(self, snap: Snapshot) -> None:
        """Write ``snap``'s file durably; touches no other state (a forked child calls it)."""
        name = os.path.join(self.path, f"{_SNAPSHOT}{snap.index:020d}")
        fd = os.open(name + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_all(fd, frame(pickle.dumps(snap, pickle.HIGHEST_PROTOCOL)))
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(name + ".tmp", name)
        self._fsync_dir()

    def read_snapshot(self, index: int) -> Snapshot:
        """The snapshot file of ``index`` (written by a forked child)."""
        snap = self._read_snapshot_file(f"{_SNAPSHOT}{index:020d}")
        if snap is None or snap.index != index:
            raise CorruptStorage(f"{self.path}: snapshot {index} is unreadable")
        return snap

    def compact(self, index: int, term: int) -> None:
        """Drop the log up to (index, term): a saved snapshot covers it. Then
        the snapshot files older than the newest go."""
        assert self.snapshot is not None and index <= self.snapshot.index, "compact past a snapshot"
        if index <= self.base.index:
            return
        if holds(self.base, self.entries, index, term):
            del self.entries[:index - self.base.index]
            drop = 0
            while drop + 1 < len(self._segments) and self._segments[drop + 1][1].index <= index:
                drop += 1
        else:                     # thesis §5.3: the whole log goes
            self.entries = []
            self._start_segment(LogBase(index, term), b"")
            drop = len(self._segments) - 1
        self.base = LogBase(index, term)
        for name, _, _ in self._segments[:drop]:   # oldest first: a suffix is always left
            os.unlink(os.path.join(self.path, name))
        del self._segments[:drop]
        for name in os.listdir(self.path):
            if (name.startswith(_SNAPSHOT) and not name.endswith(".tmp")
                    and name < f"{_SNAPSHOT}{self.snapshot.index:020d}"):
                os.unlink(os.path.join(self.path, name))

    def disk_usage(self) -> int:
        """Bytes in the data dir's files."""
        return sum(e.stat().st_size for e in os.scandir(self.path) if e.is_file())

    def save(self, hard_state: Optional[tuple[int, Optional[int]]], entries: Sequence[Entry],
             pickled: Optional[list[bytes]] = None) -> None:
        if entries:
            self._append(entries, pickled)
        if hard_state is not None and hard_state != (self.term, self.vote):
            self._write_state(*hard_state)

    def close(self) -> None:
        """Release the files. Everything saved is already durable."""
        if self._lock_fd is None:
            return
        if self._log_fd is not None:
            os.close(self._log_fd)
        os.close(self._lock_fd)  # releases the flock
        os.close(self._dir_fd)
        self._log_fd = self._lock_fd = None

    def __enter__(self) -> "FileStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- log ------------------------------------------------------------------

    def _append(self, entries: Sequence[Entry], pickled: Optional[list[bytes]] = None) -> None:
        assert self._lock_fd is not None, "save after close"
        first = entries[0].index
        # A bug must stop loudly: a hole in the log would be replayed as data.
        last = self.base.index + len(self.entries)
        assert self.base.index < first <= last + 1, (
            f"entries start at {first}, the stored log is {self.base.index + 1}..{last}"
        )
        assert entries[-1].index == first + len(entries) - 1, "entries not contiguous"
        record = frame(b"".join(pickled)) if pickled else encode_record(entries)
        if self._log_fd is None or self._segments[-1][2] >= self.segment_bytes:
            at = first - 1 - self.base.index
            self._start_segment(LogBase(first - 1, self.entries[at - 1].term if at else
                                        self.base.term), record)
        else:
            self._write_all(self._log_fd, record)
            if self.sync:
                _datasync(self._log_fd)
            self._segments[-1][2] += len(record)
        apply_record(self.base, self.entries, entries)

    def _start_segment(self, base: LogBase, record: bytes) -> None:
        """A new last segment continuing after ``base``, holding ``record``; durable."""
        seq = int(self._segments[-1][0][len(_SEGMENT):]) + 1 if self._segments else 1
        name = f"{_SEGMENT}{seq:020d}"
        data = segment_header(*base) + record
        fd = os.open(os.path.join(self.path, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT
                     | os.O_EXCL, 0o644)
        try:
            self._write_all(fd, data)
            if self.sync:
                _datasync(fd)
            self._fsync_dir()
        except BaseException:
            os.close(fd)
            raise
        if self._log_fd is not None:
            os.close(self._log_fd)
        self._log_fd = fd
        self._segments.append([name, base, len(data)])

    def _replay(self) -> None:
        names = sorted(n for n in os.listdir(self.path)
                       if n.startswith(_SEGMENT) and n[len(_SEGMENT):].isdigit())
        datas = []
        for name in names:
            with open(os.path.join(self.path, name), "rb") as f:
                datas.append(f.read())
        try:
            log = replay(datas)
        except CorruptStorage as e:
            raise CorruptStorage(f"{self.path}: {e}") from None
        self.base, self.entries = log.base, log.entries
        # (a torn last segment with no whole record has no header: it is dropped below)
        self._segments = [[n, h, len(d)]
                          for n, h, d in zip(names, log.headers, datas, strict=False)]
        if log.torn is not None:
            keep, why = log.torn
            path = os.path.join(self.path, names[-1])
            _log.warning("%s: torn last write (%s); truncating %d bytes (index %d is the last "
                         "kept)", path, why, len(datas[-1]) - keep,
                         self.base.index + len(self.entries))
            if keep:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, keep)
                    if self.sync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                self._segments[-1][2] = keep
            else:
                os.unlink(path)
                self._fsync_dir()
        if self._segments:
            self._log_fd = os.open(os.path.join(self.path, self._segments[-1][0]),
                                   os.O_WRONLY | os.O_APPEND)

    # -- hard state -----------------------------------------------------------

    def _write_state(self, term: int, vote: Optional[int]) -> None:
        assert self._lock_fd is not None, "save after close"
        # Forgetting or changing a vote within a term could grant two votes (§5.2).
        assert term > self.term or (term == self.term and self.vote in (None, vote)), (
            f"hard state ({self.term}, {self.vote}) -> ({term}, {vote}) goes backwards"
        )
        tmp = os.path.join(self.path, "state.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_all(fd, frame(json.dumps([term, vote]).encode()))
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._state_path)
        self._fsync_dir()
        self.term, self.vote = term, vote

    def _read_snapshot(self) -> Optional[Snapshot]:
        """The newest valid snapshot file (a corrupt one is skipped, with a warning:
        ``entries_after`` then refuses a log that it leaves uncovered)."""
        names = sorted((n for n in os.listdir(self.path)
                        if n.startswith(_SNAPSHOT) and not n.endswith(".tmp")), reverse=True)
        for name in names:
            snap = self._read_snapshot_file(name)
            if snap is not None:
                return snap
            _log.warning("%s: snapshot file %s is unreadable; skipped", self.path, name)
        return None

    def _read_snapshot_file(self, name: str) -> Optional[Snapshot]:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                data = f.read()
            length, crc = HEADER.unpack_from(data)
            body = memoryview(data)[HEADER.size:]
            if len(body) != length or zlib.crc32(body) != crc:
                return None
            snap = pickle.loads(body)
        except Exception:  # noqa: BLE001 — unreadable for any reason: not a snapshot
            return None
        return snap if type(snap) is Snapshot and name.endswith(f"{snap.index:020d}") else None

    def _read_state(self) -> tuple[int, Optional[int]]:
        try:
            with open(self._state_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return 0, None
        try:
            length, crc = HEADER.unpack_from(data)
            body = data[HEADER.size:]
            if len(body) != length or zlib.crc32(body) != crc:
                raise ValueError("bad length or CRC")
            term, vote = json.loads(body)
            if not (type(term) is int and term >= 0 and (vote is None or type(vote) is int)):
                raise ValueError(f"bad values {term!r}, {vote!r}")
        except (struct.error, ValueError) as e:
            raise CorruptStorage(f"{self._state_path} is unreadable ({e}): refusing to "
                                 "forget the term and vote") from e
        return term, vote

    # -- helpers --------------------------------------------------------------

    def _fsync_dir(self) -> None:
        if self.sync:
            os.fsync(self._dir_fd)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
