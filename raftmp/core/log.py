"""The in-memory Raft log: entries 1..last, with the lookups the core needs.

Invariant: ``entries[i].index == i + 1`` for every i (no gaps, 1-based).
Terms never decrease along the log, which lets the term lookups bisect.
``ends[i]`` is the approximate byte size of entries 1..i+1 (a running sum,
extended only when a leader batches, so followers never pay for it), so
batching by bytes is a bisection.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, Iterable

from .messages import Entry


def _term(entry: Entry) -> int:
    return entry.term


def approx_size(command: Any) -> int:
    """A cheap size estimate of a command, for batching (its strings dominate)."""
    if command is None:
        return 16
    n = 48
    for f in command:
        if f.__class__ is str:
            n += len(f)
    return n


class RaftLog:
    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries: list[Entry] = list(entries)
        self.ends: list[int] = []
        # Storage hands over a contiguous log (it checks on load); a restart of a
        # long log should not pay a Python-level check per entry.
        assert not self.entries or (self.entries[0].index == 1
                                    and self.entries[-1].index == len(self.entries))

    @property
    def last_index(self) -> int:
        return len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else 0

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` (0 for index 0, -1 past the end)."""
        if index == 0:
            return 0
        if index > len(self.entries):
            return -1
        return self.entries[index - 1].term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi."""
        return self.entries[lo - 1:hi - 1]

    def append(self, entry: Entry) -> None:
        assert entry.index == len(self.entries) + 1, f"log entry {entry} after {len(self.entries)}"
        self.entries.append(entry)

    def truncate(self, index: int) -> None:
        """Drop every entry from ``index`` on (§5.3: a conflicting suffix)."""
        del self.entries[index - 1:]
        del self.ends[index - 1:]

    def batch(self, lo: int, max_entries: int, max_bytes: int) -> tuple:
        """Entries from ``lo`` on, at most ``max_entries`` of them and about
        ``max_bytes`` (always at least one, however large)."""
        hi = min(lo - 1 + max_entries, len(self.entries))
        if hi < lo:
            return ()
        ends = self.ends
        if len(ends) < hi:
            total = ends[-1] if ends else 0
            for e in self.entries[len(ends):hi]:
                total += approx_size(e.command)
                ends.append(total)
        base = self.ends[lo - 2] if lo > 1 else 0
        fit = bisect_right(self.ends, base + max_bytes, lo - 1, hi)
        return tuple(self.entries[lo - 1:max(fit, lo)])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log ending in (last_term, last_index) is at least as up to date as ours."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def first_index_of_term(self, term: int) -> int:
        """Index of the first entry with ``term`` (or where it would be)."""
        return bisect_left(self.entries, term, key=_term) + 1

    def last_index_of_term(self, term: int, upto: int) -> int:
        """Index of the last entry at or before ``upto`` with ``term``; 0 if there is none."""
        i = bisect_right(self.entries, term, hi=min(upto, len(self.entries)), key=_term)
        return i if i > 0 and self.entries[i - 1].term == term else 0
