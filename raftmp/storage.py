"""Where a node's Raft state survives a crash.

The core never touches storage: it takes the loaded state when it is built
and hands out what must be made durable in each ``Ready``. A worker calls
``save`` once per loop turn, before it sends anything but a leader's
appends (see ``Ready``).

Interface (MemoryStorage, DiskImage, FileStorage):
    load() -> (term, vote, entries)         # entries are Entry(term, index, command), index 1..
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
import io
import json
import logging
import os
import pickle
import random
import struct
import zlib
from typing import Optional, Sequence

from .core.errors import CorruptStorage, RaftmpError
from .core.messages import Entry


class MemoryStorage:
    """Storage for the simulator: survives a simulated crash, not a real one."""

    def __init__(self) -> None:
        self.term = 0
        self.vote: Optional[int] = None
        self.entries: list[Entry] = []

    def load(self) -> tuple[int, Optional[int], list[Entry]]:
        return self.term, self.vote, list(self.entries)

    def save(self, hard_state: Optional[tuple[int, Optional[int]]], entries: Sequence[Entry],
             pickled: Optional[list[bytes]] = None) -> None:
        if hard_state is not None:
            self.term, self.vote = hard_state
        if entries:
            first = entries[0].index
            assert first <= len(self.entries) + 1, "entries must continue the stored log"
            del self.entries[first - 1:]
            self.entries.extend(entries)


class DiskImage:
    """FileStorage's log format, held in memory, for the simulator: the same
    framed records, recovered by the same ``decode_log``, so a simulated crash
    can tear the last write and a fault can flip a bit, and recovery is the
    real one. The hard state is replaced atomically, after the log write, as
    FileStorage does."""

    def __init__(self) -> None:
        self.log = bytearray()
        self.hard: tuple[int, Optional[int]] = (0, None)

    def load(self) -> tuple[int, Optional[int], list[Entry]]:
        """Recover (raises ``CorruptStorage`` as FileStorage would); a torn tail is cut off."""
        records, torn = decode_log(bytes(self.log))
        if torn is not None:
            del self.log[sum(size for _, size in records):]
        mem = MemoryStorage()
        for entries, _ in records:
            mem.save(None, entries)
        return (*self.hard, mem.entries)

    def save(self, hard_state: Optional[tuple[int, Optional[int]]], entries: Sequence[Entry],
             pickled: Optional[list[bytes]] = None) -> None:
        if entries:
            self.log += encode_record(entries)
        if hard_state is not None:
            self.hard = hard_state

    def save_torn(self, entries: Sequence[Entry], rng: random.Random) -> None:
        """A crash inside ``save``, before its fsync returned: a random prefix of the
        log write reached the disk (the rest is cut off, or left as unwritten,
        zeroed sectors), and the hard state, replaced after it, was not written."""
        if not entries:
            return
        start = len(self.log)
        self.log += encode_record(entries)
        cut = rng.randrange(start, len(self.log) + 1)
        if cut == len(self.log) or rng.random() < 0.5:
            del self.log[cut:]
        else:
            zero = max(start, cut - cut % _SECTOR)
            self.log[zero:] = bytes(len(self.log) - zero)

    def flip_bit(self, rng: random.Random) -> bool:
        """Corrupt one stored bit (False if there is nothing stored)."""
        if not self.log:
            return False
        self.log[rng.randrange(len(self.log))] ^= 1 << rng.randrange(8)
        return True


# --- FileStorage ----------------------------------------------------------------

_log = logging.getLogger(__name__)

# Record frame: length of the body (uint32), CRC32 of the body (uint32), body.
_HEADER = struct.Struct("<II")
_MAX_BODY = 0xFFFFFFFF
# Entries per record when the log is rewritten by compaction.
_COMPACT_CHUNK = 1024
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


def _load_all(body: memoryview) -> list[Entry]:
    """The entries of a record body: one or more pickled sequences, back to back."""
    f = io.BytesIO(body)
    entries: list[Entry] = []
    while f.tell() < len(body):
        part = pickle.load(f)
        if not isinstance(part, (list, tuple)):
            raise ValueError(f"a record holds a {type(part).__name__}, not entries")
        entries.extend(part)
    return entries


_SECTOR = 512


def _valid_record_at(view: memoryview, pos: int) -> bool:
    if len(view) - pos < _HEADER.size:
        return False
    length, crc = _HEADER.unpack_from(view, pos)
    start = pos + _HEADER.size
    return 0 < length <= len(view) - start and zlib.crc32(view[start:start + length]) == crc


def _zeros(view: memoryview) -> bool:
    return view.tobytes() == bytes(len(view))


def _torn(view: memoryview, pos: int) -> Optional[str]:
    """Why the bad record at ``pos`` can be the leftover of a crash (a write
    that was never fsynced, so never acknowledged), or None if it cannot.

    A crash tears only the last write: nothing valid may follow it, and the
    record must be short, or unwritten (zeros), or hold an unwritten sector,
    as etcd's WAL decoder judges (``isTornEntry``). Anything else is corruption:
    truncating there could drop acknowledged entries."""
    if any(_valid_record_at(view, p) for p in range(pos + 1, len(view) - _HEADER.size)):
        return None
    if len(view) - pos < _HEADER.size:
        return "short header"
    length, crc = _HEADER.unpack_from(view, pos)
    start, end = pos + _HEADER.size, pos + _HEADER.size + length
    if length == 0:
        return "zero-filled tail" if _zeros(view[pos:]) else None
    if end > len(view):
        # Cut short, unless the body is all there under a flipped length.
        return "short body" if zlib.crc32(view[start:]) != crc else None
    sectors = range(pos - pos % _SECTOR, end, _SECTOR)
    if any(_zeros(view[max(o, pos):min(o + _SECTOR, end)]) for o in sectors):
        return "unwritten sector"
    return None


def decode_log(data: bytes) -> tuple[list[tuple[list[Entry], int]], Optional[str]]:
    """Parse a log file: its records as (entries, framed size), in order, and why
    the bytes after them were dropped (None if nothing was). A torn last write
    is dropped (see ``_torn``); anything else that is not a valid record raises
    ``CorruptStorage``. The records' entries are not checked to continue each other."""
    view = memoryview(data)
    records: list[tuple[list[Entry], int]] = []
    pos = 0
    while pos < len(data):
        if not _valid_record_at(view, pos):
            why = _torn(view, pos)
            if why is None:
                raise CorruptStorage(f"bad record at offset {pos} of {len(data)} bytes, and it "
                                     "is not a torn last write: refusing to drop what follows")
            return records, f"{why} at offset {pos}"
        length, _ = _HEADER.unpack_from(view, pos)
        try:
            entries = _load_all(view[pos + _HEADER.size:pos + _HEADER.size + length])
        except Exception as e:  # noqa: BLE001 — any unpickling failure means a bad record
            raise CorruptStorage(f"CRC-valid record at offset {pos} is unreadable ({e!r})") from e
        records.append((entries, _HEADER.size + length))
        pos += _HEADER.size + length
    return records, None


def _frame(body: bytes) -> bytes:
    assert 0 < len(body) <= _MAX_BODY, "record body empty or over 4 GiB"
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def encode_record(entries: Sequence[Entry]) -> bytes:
    """One framed log record holding ``entries`` (what ``decode_log`` reads back)."""
    return _frame(pickle.dumps(tuple(entries), pickle.HIGHEST_PROTOCOL))


class FileStorage:
    """Durable storage for a real worker: an append-only log plus an atomically replaced hard state.

    Layout of the directory ``path`` (created if missing, durably: its parent is
    fsynced):

    ``log``
        Records ``length:uint32 | crc32(body):uint32 | body``, one per ``save``
        that had entries; ``body`` is one or more pickles, back to back, of
        sequences of ``Entry`` that together are contiguous. A record whose
        first index is <= the last stored index replaces the stored suffix
        from that index on (§5.3), so replay is ``MemoryStorage.save``
        applied to each record in order. A torn last write (a crash's
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

    Costs: ``save(None, [])``, or a ``hard_state`` equal to the stored one,
    makes no system call. Otherwise one ``write`` + one fdatasync of the log
    when there are entries, and the replace sequence above when the hard state
    changed.

    ``sync=False`` skips every fsync: only for benchmarks that compare the cost
    of the rest. It is not durable across a power loss or a kernel crash.

    When the log holds ``compact_ratio`` times more superseded bytes than live
    ones (and at least ``compact_min_bytes``), ``save`` rewrites it (to
    ``log.tmp``, fsync, replace, fsync the directory). Superseded bytes come only
    from truncations, so this is rare; dropping a snapshotted prefix would need
    a new method in the interface and is not done here.

    The body is a pickle: the data dir must be as trusted as the code.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sync: bool = True,
        compact_ratio: float = 4.0,
        compact_min_bytes: int = 1 << 20,
    ) -> None:
        self.path = os.fspath(path)
        self.sync = sync
        self.compact_ratio = compact_ratio
        self.compact_min_bytes = compact_min_bytes
        _makedirs_durably(self.path, sync)
        self._log_path = os.path.join(self.path, "log")
        self._state_path = os.path.join(self.path, "state")
        self._log_fd: Optional[int] = None
        self._dir_fd = os.open(self.path, os.O_RDONLY)
        self._lock_fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RaftmpError(f"{self.path} is in use by another process") from None
            self._open()
        except BaseException:
            os.close(self._lock_fd)  # releases the flock
            os.close(self._dir_fd)
            raise

    def _open(self) -> None:
        """Recover term, vote and log from the files; runs holding the lock."""
        # Leftovers of a crash in the middle of a replace: the old file is intact.
        for leftover in ("state.tmp", "log.tmp"):
            try:
                os.unlink(os.path.join(self.path, leftover))
            except FileNotFoundError:
                pass

        self.term, self.vote = self._read_state()
        # Invariant: self.entries[i].index == i + 1, and it equals what replay
        # of the log file yields. The Entry objects are the caller's, shared,
        # so this costs a pointer per entry.
        self.entries: list[Entry] = []
        # One (first_index, size) per record still holding live entries; a
        # record that truncation made wholly dead moves to self._dead_bytes.
        self._records: list[tuple[int, int]] = []
        self._dead_bytes = 0
        self._size = 0
        created = not os.path.exists(self._log_path)
        self._replay()
        self._log_fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            self._fsync_dir()

    # -- interface ------------------------------------------------------------

    def load(self) -> tuple[int, Optional[int], list[Entry]]:
        return self.term, self.vote, list(self.entries)

    def save(self, hard_state: Optional[tuple[int, Optional[int]]], entries: Sequence[Entry],
             pickled: Optional[list[bytes]] = None) -> None:
        if entries:
            self._append(entries, pickled)
        if hard_state is not None and hard_state != (self.term, self.vote):
            self._write_state(*hard_state)

    def close(self) -> None:
        """Release the files. Everything saved is already durable."""
        if self._log_fd is None:
            return
        os.close(self._log_fd)
        os.close(self._lock_fd)  # releases the flock
        os.close(self._dir_fd)
        self._log_fd = None

    def __enter__(self) -> "FileStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- log ------------------------------------------------------------------

    def _append(self, entries: Sequence[Entry], pickled: Optional[list[bytes]] = None) -> None:
        assert self._log_fd is not None, "save after close"
        first = entries[0].index
        # A bug must stop loudly: a hole in the log would be replayed as data.
        assert 1 <= first <= len(self.entries) + 1, (
            f"entries start at {first}, the stored log ends at {len(self.entries)}"
        )
        assert entries[-1].index == first + len(entries) - 1, "entries not contiguous"
        record = _frame(b"".join(pickled)) if pickled else encode_record(entries)
        self._write_all(self._log_fd, record)
        if self.sync:
            _datasync(self._log_fd)
        self._size += len(record)
        self._apply(entries, len(record))
        if self._dead_bytes >= max(self.compact_min_bytes,
                                   self.compact_ratio * (self._size - self._dead_bytes)):
            self._compact()

    def _apply(self, entries: list[Entry], size: int) -> None:
        """MemoryStorage's overwrite rule, plus the live/dead byte accounting."""
        first = entries[0].index
        if first <= len(self.entries):
            del self.entries[first - 1:]
            while self._records and self._records[-1][0] >= first:
                self._dead_bytes += self._records.pop()[1]
        self.entries.extend(entries)
        self._records.append((first, size))

    def _replay(self) -> None:
        try:
            with open(self._log_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        try:
            records, torn = decode_log(data)
        except CorruptStorage as e:
            raise CorruptStorage(f"{self._log_path}: {e}") from None
        pos = 0
        for entries, size in records:
            # A CRC-valid record that breaks the log's shape was written by a
            # bug, not torn by a crash: stop, don't repair.
            if not (entries
                    and all(isinstance(e, Entry) for e in entries)
                    and 1 <= entries[0].index <= len(self.entries) + 1
                    and all(e.index == entries[0].index + i for i, e in enumerate(entries))):
                raise CorruptStorage(f"{self._log_path}: record at offset {pos} does not "
                                     "continue the log")
            self._apply(entries, size)
            pos += size
        self._size = pos
        if torn is not None:
            _log.warning("%s: torn last write (%s); truncating %d bytes (index %d is the last "
                         "kept)", self._log_path, torn, len(data) - pos, len(self.entries))
            fd = os.open(self._log_path, os.O_WRONLY)
            try:
                os.ftruncate(fd, pos)
                if self.sync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def _compact(self) -> None:
        """Rewrite the log with only its live entries; atomic by replace."""
        tmp = os.path.join(self.path, "log.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        records: list[tuple[int, int]] = []
        size = 0
        try:
            for i in range(0, len(self.entries), _COMPACT_CHUNK):
                chunk = self.entries[i:i + _COMPACT_CHUNK]
                record = encode_record(chunk)
                self._write_all(fd, record)
                records.append((chunk[0].index, len(record)))
                size += len(record)
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._log_path)
        self._fsync_dir()
        _log.info("%s: compacted %d bytes to %d", self._log_path, self._size, size)
        os.close(self._log_fd)
        self._log_fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND)
        self._records, self._size, self._dead_bytes = records, size, 0

    # -- hard state -----------------------------------------------------------

    def _write_state(self, term: int, vote: Optional[int]) -> None:
        assert self._log_fd is not None, "save after close"
        # Forgetting or changing a vote within a term could grant two votes (§5.2).
        assert term > self.term or (term == self.term and self.vote in (None, vote)), (
            f"hard state ({self.term}, {self.vote}) -> ({term}, {vote}) goes backwards"
        )
        tmp = os.path.join(self.path, "state.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_all(fd, _frame(json.dumps([term, vote]).encode()))
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._state_path)
        self._fsync_dir()
        self.term, self.vote = term, vote

    def _read_state(self) -> tuple[int, Optional[int]]:
        try:
            with open(self._state_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return 0, None
        try:
            length, crc = _HEADER.unpack_from(data)
            body = data[_HEADER.size:]
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
