"""The in-memory Raft log: entries base+1..last, with the lookups the core needs.

Entries up to ``base`` were compacted into a snapshot (§7); only the term of
entry ``base`` is kept (``base_term``), for the consistency check of the
entry after it. Invariant: ``entries[i].index == base + i + 1`` for every i
(no gaps). Terms never decrease along the log, which lets the term lookups
bisect. ``ends[i]`` is a running sum of the approximate byte sizes of the
entries up to base+i+1 (extended lazily when a leader batches or the node
measures the log for a snapshot; ``base_end`` is the sum up to ``base``), so
batching by bytes is a bisection, and a compaction keeps the sums of the
entries it keeps: each entry is measured once.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate, islice
from operator import attrgetter, itemgetter
from typing import Any, Iterable, Optional, Sequence

from .messages import Command, Entry

_term = attrgetter("term")
_new = tuple.__new__
_command = itemgetter(2)


def approx_size(command: Any) -> int:
    """A cheap size estimate of a command, for batching (its strings dominate)."""
    if command.__class__ is Command:    # the common case, without a loop
        op, key, value, expected = command[3:7]
        return (48 + (len(op) if op.__class__ is str else 0)
                + (len(key) if key.__class__ is str else 0)
                + (len(value) if value.__class__ is str else 0)
                + (len(expected) if expected.__class__ is str else 0))
    if command is None:
        return 16
    n = 48
    for f in command:
        if f.__class__ is str:
            n += len(f)
    return n


class RaftLog:
    def __init__(self, entries: Iterable[Entry] = (), base: int = 0, base_term: int = 0) -> None:
        self.base = base
        self.base_term = base_term
        self.entries: list[Entry] = list(entries)
        self.ends: list[int] = []
        self.base_end = 0
        # Storage hands over a contiguous log (it checks on load); a restart of a
        # long log should not pay a Python-level check per entry.
        assert not self.entries or (self.entries[0].index == base + 1
                                    and self.entries[-1].index == base + len(self.entries))

    @property
    def last_index(self) -> int:
        return self.base + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    def term(self, index: int) -> Optional[int]:
        """Term of the entry at ``index``: -1 past the end, None if compacted
        (below ``base``; the term of ``base`` itself is kept, 0 for index 0)."""
        base = self.base
        if index <= base:
            return self.base_term if index == base else None
        if index > base + len(self.entries):
            return -1
        return self.entries[index - base - 1].term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi (lo above ``base``)."""
        base = self.base
        assert lo > base, f"slice from {lo}: compacted up to {base}"
        return self.entries[lo - base - 1:hi - base - 1]

    def append(self, entry: Entry) -> None:
        assert entry.index == self.last_index + 1, f"log entry {entry} after {self.last_index}"
        self.entries.append(entry)

    def add(self, term: int, command: Any) -> int:
        """Append a new entry of ``term`` holding ``command`` (a leader's
        proposal); its index. (Built with tuple.__new__: an Entry's own __new__
        is a Python call, and a leader adds one per write.)"""
        entries = self.entries
        index = self.base + len(entries) + 1
        entries.append(_new(Entry, (term, index, command)))
        return index

    def extend(self, entries: Sequence[Entry]) -> None:
        """Append a contiguous run of entries (one check, not one per entry)."""
        assert entries[0].index == self.last_index + 1 and \
            entries[-1].index == self.last_index + len(entries), \
            f"log entries {entries[0].index}..{entries[-1].index} after {self.last_index}"
        self.entries.extend(entries)

    def truncate(self, index: int) -> None:
        """Drop every entry from ``index`` on (§5.3: a conflicting suffix)."""
        assert index > self.base, "truncating a compacted entry"
        del self.entries[index - self.base - 1:]
        del self.ends[index - self.base - 1:]

    def compact(self, index: int) -> None:
        """Drop entries up to ``index``, which a snapshot now covers (§7)."""
        assert self.base <= index <= self.last_index, f"compact to {index} of {self}"
        self.base_term = self.term(index)
        k = index - self.base
        if k:
            self.base_end = self._extend(index)[k - 1]
            del self.ends[:k]
        del self.entries[:k]
        self.base = index

    def install(self, index: int, term: int) -> bool:
        """A snapshot of entries up to (index, term) replaces them (thesis §5.3):
        if the log holds that entry, keep what follows it, else drop everything.
        Whether the suffix was kept."""
        if self.term(index) == term and index >= self.base:
            self.compact(index)
            return True
        self.entries, self.ends, self.base_end = [], [], 0
        self.base, self.base_term = index, term
        return False

    def size(self, lo: int, hi: int) -> int:
        """About how many bytes entries lo..hi (inclusive, above ``base``) take."""
        if hi < lo:
            return 0
        ends = self._extend(hi)
        below = ends[lo - self.base - 2] if lo > self.base + 1 else self.base_end
        return ends[hi - self.base - 1] - below

    def _extend(self, hi: int) -> list[int]:
        ends, n = self.ends, hi - self.base
        if len(ends) < n:
            total = ends[-1] if ends else self.base_end
            sizes = map(approx_size, map(_command, self.entries[len(ends):n]))
            ends += islice(accumulate(sizes, initial=total), 1, None)
        return ends

    def batch(self, lo: int, max_entries: int, max_bytes: int) -> tuple:
        """Entries from ``lo`` (above ``base``) on, at most ``max_entries`` of
        them and about ``max_bytes`` (always at least one, however large)."""
        base = self.base
        hi = min(lo - 1 + max_entries, self.last_index)
        if hi < lo:
            return ()
        ends = self._extend(hi)
        start = lo - base - 1                # position of entry lo
        below = ends[start - 1] if start > 0 else self.base_end
        fit = bisect_right(ends, below + max_bytes, start, hi - base)
        return tuple(self.entries[start:max(fit, start + 1)])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log ending in (last_term, last_index) is at least as up to date as ours."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def first_index_of_term(self, term: int) -> int:
        """Index of the first kept entry with ``term`` (or where it would be)."""
        return self.base + bisect_left(self.entries, term, key=_term) + 1

    def last_index_of_term(self, term: int, upto: int) -> int:
        """Index of the last entry at or before ``upto`` with ``term`` (``base``
        included); 0 if there is none."""
        base = self.base
        i = bisect_right(self.entries, term, hi=max(0, min(upto - base, len(self.entries))),
                         key=_term)
        if i > 0 and self.entries[i - 1].term == term:
            return base + i
        return base if base and self.base_term == term and upto >= base else 0

    def __repr__(self) -> str:
        return f"RaftLog(base={self.base}/{self.base_term}, last={self.last_index})"
