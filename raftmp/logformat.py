"""The log's format on disk, shared by ``FileStorage`` and the simulator's
``DiskImage``: segments of framed records, how they replay into a log, and
the rule that tells a torn last write (a crash's leftover, cut off) from
corruption (refused).

The log is a sequence of *segments* (as etcd's WAL): a new one is started
when the last passes a size, and compaction deletes whole segments below a
snapshot, so entries are written once and never re-encoded. A record is
``length:uint32 | crc32(body):uint32 | body``; the first record of every
segment is a ``LogBase``, the entry (index, term) the segment continues
after; each later record's ``body`` is one or more pickles, back to back, of
sequences of ``Entry`` that together are contiguous. Replay (``replay``) is
``MemoryStorage.save`` applied to every record in order: a record whose first
index is <= the last stored one replaces the stored suffix from there (§5.3).
The first segment's ``LogBase`` is the log's base; a later segment's is
either held by the log replayed so far (the segment just continues it) or
not, and then it resets the log: compaction writes such a segment when a
snapshot from the leader does not match the log (thesis §5.3), before it
deletes the older segments.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, Optional, Sequence

from .core.errors import CorruptStorage
from .core.messages import Entry, Snapshot

# Record frame: length of the body (uint32), CRC32 of the body (uint32), body.
HEADER = struct.Struct("<II")
MAX_BODY = 0xFFFFFFFF


class LogBase(NamedTuple):
    """The entry a segment continues after (its first record)."""

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


# --- entries, encoded once -------------------------------------------------------
#
# A run of entries is pickled once, by the leader, for its log and for every
# follower (``RouterLink.pickle_batch``); a follower writes the bytes it got.
# Pickling a NamedTuple calls Python code per object (``__getnewargs__``),
# and unpickling calls its Python ``__new__``: for a batch of puts that was
# most of a leader's CPU. So a run whose commands are all NamedTuples is
# pickled by columns of plain values (its first index, the terms, the
# commands' classes and fields), taken apart and put back together by C-level
# ``map`` calls: no Python call per entry either way. Any other run (one with
# the leader's no-op, whose command is None, or a command kind that is no
# tuple) is pickled as the tuple of entries it is.

_new = tuple.__new__
_term_of, _command_of = attrgetter("term"), itemgetter(2)


def pack_entries(entries: Sequence[Entry]) -> bytes:
    """One pickle of a contiguous run of entries (``unpack_entries`` reads it)."""
    commands = list(map(_command_of, entries))
    kinds = list(map(type, commands))
    classes = set(kinds)
    if all(issubclass(k, tuple) for k in classes):
        kind = kinds[0] if len(classes) == 1 else kinds
        columns = (entries[0].index, list(map(_term_of, entries)), kind,
                   list(map(tuple, commands)))
        return pickle.dumps(columns, pickle.HIGHEST_PROTOCOL)
    return pickle.dumps(tuple(entries), pickle.HIGHEST_PROTOCOL)


def unpack_entries(part: Any) -> tuple:
    """The entries of one unpickled ``pack_entries`` part (a tuple of ``Entry``, or
    columns); ValueError if it is neither."""
    if type(part) is tuple and len(part) == 4 and type(part[0]) is int:
        first, terms, kind, fields = part
        n = len(fields)
        one = type(kind) is type
        if not (type(terms) is list and len(terms) == n and (one or (type(kind) is list
                                                                     and len(kind) == n))):
            raise ValueError("entry columns of different lengths")
        if not all(type(k) is type and issubclass(k, tuple) for k in ({kind} if one
                                                                      else set(kind))):
            raise ValueError("an entry's command kind is not a tuple type")
        kinds = repeat(kind, n) if one else kind
        commands = list(map(_new, kinds, fields))
        return tuple(map(_new, repeat(Entry, n), zip(terms, range(first, first + n), commands,
                                                     strict=True)))
    if type(part) in (list, tuple):
        return tuple(part)
    raise ValueError(f"a record holds a {type(part).__name__}, not entries")


def load_body(body: memoryview) -> "list[Entry] | LogBase":
    """The entries of a record body: one or more ``pack_entries`` pickles, back to
    back (or the LogBase that starts a segment)."""
    f = io.BytesIO(body)
    entries: list[Entry] = []
    while f.tell() < len(body):
        part = pickle.load(f)
        if type(part) is LogBase and not entries and f.tell() == len(body):
            return part
        entries.extend(unpack_entries(part))
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
    return frame(pack_entries(entries))


class Replayed(NamedTuple):
    """A log replayed from its segments (``replay``)."""

    base: LogBase              # the log holds the entries after it ...
    entries: list[Entry]       # ... these, from base.index + 1 on
    headers: list[LogBase]     # each segment's first record
    torn: Optional[tuple[int, str]]   # (bytes of the last segment to keep, why) or None


def holds(base: LogBase, entries: list[Entry], index: int, term: int) -> bool:
    """Whether a log of ``entries`` after ``base`` holds entry (index, term)."""
    at = index - base.index
    if at == 0:
        return base.term == term
    return 0 < at <= len(entries) and entries[at - 1].term == term


def apply_record(base: LogBase, entries: list[Entry], record: Sequence[Entry]) -> None:
    """Raft's overwrite rule (§5.3) for one record above ``base``: it replaces
    the stored suffix from its first index on."""
    del entries[record[0].index - base.index - 1:]
    entries.extend(record)


def replay(segments: Sequence[bytes]) -> Replayed:
    """The log that ``segments`` (in order) hold. Only the last segment may end
    in a torn write (each write is synced before the next one starts, and a new
    segment is started only after the last one's final write), and only it may
    hold no whole record (a crash while starting it): ``torn`` says how much of
    it to keep. Anything else that is not a valid log raises ``CorruptStorage``.

    A segment's base entry was the log's last but one when the segment began,
    not necessarily a committed one: a later record may replace it, or entries
    before it (§5.3). So the log is replayed from the base entry itself
    (``log[0]``), and the records are applied to it whole."""
    log: list[Entry] = []          # entries lo, lo + 1, ...: log[0] is the base entry
    lo = 0
    headers: list[LogBase] = []
    torn = None
    for k, data in enumerate(segments):
        last = k == len(segments) - 1
        records, why = decode_log(data)
        if why is not None:
            if not last:
                raise CorruptStorage(f"segment {k + 1} of {len(segments)} ends in a torn "
                                     f"write ({why}), but later segments follow it")
            torn = (sum(size for _, size in records), why)
        if not records:
            if last:
                torn = (0, torn[1] if torn else "empty segment")
                break
            raise CorruptStorage(f"segment {k + 1} of {len(segments)} is empty")
        header = records[0][0]
        if type(header) is not LogBase:
            raise CorruptStorage(f"segment {k + 1} does not start with its base entry")
        at = header.index - lo
        if not headers or not (0 <= at < len(log) and log[at].term == header.term):
            # The first segment, or a reset (see above; the segments before it
            # may be any suffix of the old log, compaction was deleting them).
            log, lo = [Entry(header.term, header.index)], header.index
        headers.append(header)
        for record, _ in records[1:]:
            # A CRC-valid record that breaks the log's shape was written by a
            # bug, not torn by a crash: stop, don't repair.
            if not (type(record) is list and record
                    and all(type(e) is Entry for e in record)
                    and 1 <= record[0].index <= lo + len(log)
                    and all(e.index == record[0].index + i for i, e in enumerate(record))):
                raise CorruptStorage(f"a record in segment {k + 1} does not continue the log")
            at = record[0].index - lo
            if at >= 0:
                del log[at:]
                log.extend(record)
            else:                 # it replaces the base entry too
                log = record[-at:]
    if not headers:
        return Replayed(LogBase(0, 0), [], [], torn)
    if not log:
        raise CorruptStorage("the log's last record ends below the base of its first segment")
    return Replayed(LogBase(lo, log[0].term), log[1:], headers, torn)


def segment_header(index: int, term: int) -> bytes:
    """The first record of a segment that continues the log after entry (index, term)."""
    return frame(pickle.dumps(LogBase(index, term), pickle.HIGHEST_PROTOCOL))
