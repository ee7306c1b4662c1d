"""The log's format on disk, shared by ``FileStorage`` and the simulator's
``DiskImage``: framed records, and the rule that tells a torn last write (a
crash's leftover, cut off) from corruption (refused).

A record is ``length:uint32 | crc32(body):uint32 | body``; ``body`` is one or
more pickles, back to back, of sequences of ``Entry`` that together are
contiguous, or a single ``LogBase`` that starts a compacted log.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from typing import NamedTuple, Optional, Sequence

from .core.errors import CorruptStorage
from .core.messages import Entry, Snapshot

# Record frame: length of the body (uint32), CRC32 of the body (uint32), body.
HEADER = struct.Struct("<II")
MAX_BODY = 0xFFFFFFFF


class LogBase(NamedTuple):
    """The log was compacted up to this entry (the first record of a compacted log file)."""

    index: int
    term: int


def entries_after(snap: Optional[Snapshot], base: LogBase, entries: list[Entry]) -> list[Entry]:
    """The stored entries that follow snapshot ``snap``, from a log that starts
    after ``base``: those after the snapshot's own entry if the log holds it,
    else none (the log predates a snapshot received from the leader, or a
    crash came between saving a snapshot and compacting the log)."""
    if snap is None:
        if base.index:
            raise CorruptStorage(f"the log was compacted up to {base.index}, but no snapshot "
                                 "is left to cover it")
        return list(entries)
    if snap.index < base.index:
        raise CorruptStorage(f"the newest snapshot ({snap.index}) is older than the log's "
                             f"start ({base.index}): entries in between are lost")
    at = snap.index - base.index
    term = base.term if at == 0 else entries[at - 1].term if at <= len(entries) else None
    return entries[at:] if term == snap.term else []


def load_body(body: memoryview) -> "list[Entry] | LogBase":
    """The entries of a record body: one or more pickled sequences, back to back
    (or the LogBase that starts a compacted log)."""
    f = io.BytesIO(body)
    entries: list[Entry] = []
    while f.tell() < len(body):
        part = pickle.load(f)
        if type(part) is LogBase and not entries and f.tell() == len(body):
            return part
        if not isinstance(part, (list, tuple)):
            raise ValueError(f"a record holds a {type(part).__name__}, not entries")
        entries.extend(part)
    return entries


SECTOR = 512


def _valid_record_at(view: memoryview, pos: int) -> bool:
    if len(view) - pos < HEADER.size:
        return False
    length, crc = HEADER.unpack_from(view, pos)
    start = pos + HEADER.size
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
    if any(_valid_record_at(view, p) for p in range(pos + 1, len(view) - HEADER.size)):
        return None
    if len(view) - pos < HEADER.size:
        return "short header"
    length, crc = HEADER.unpack_from(view, pos)
    start, end = pos + HEADER.size, pos + HEADER.size + length
    if length == 0:
        return "zero-filled tail" if _zeros(view[pos:]) else None
    if end > len(view):
        # Cut short, unless the body is all there under a flipped length.
        return "short body" if zlib.crc32(view[start:]) != crc else None
    sectors = range(pos - pos % SECTOR, end, SECTOR)
    if any(_zeros(view[max(o, pos):min(o + SECTOR, end)]) for o in sectors):
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
        length, _ = HEADER.unpack_from(view, pos)
        try:
            entries = load_body(view[pos + HEADER.size:pos + HEADER.size + length])
        except Exception as e:  # noqa: BLE001 — any unpickling failure means a bad record
            raise CorruptStorage(f"CRC-valid record at offset {pos} is unreadable ({e!r})") from e
        records.append((entries, HEADER.size + length))
        pos += HEADER.size + length
    return records, None


def frame(body: bytes) -> bytes:
    assert 0 < len(body) <= MAX_BODY, "record body empty or over 4 GiB"
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def encode_record(entries: Sequence[Entry]) -> bytes:
    """One framed log record holding ``entries`` (what ``decode_log`` reads back)."""
    return frame(pickle.dumps(tuple(entries), pickle.HIGHEST_PROTOCOL))
