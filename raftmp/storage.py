"""Where a node's Raft state survives a crash.

The core never touches storage: it takes the loaded state when it is built
and hands out what must be made durable in each ``Ready``. A worker calls
``save`` once per loop turn, before it sends anything.

Interface (both classes):
    load() -> (term, vote, entries)         # entries are Entry(term, index, command), index 1..
    save(hard_state, entries) -> None        # durable when it returns
        hard_state: (term, vote) or None when unchanged
        entries:    [] or contiguous entries; entries[0].index may be <= the
                    last stored index, and then every stored entry from
                    entries[0].index on is replaced (Raft's truncation, §5.3).
"""

from __future__ import annotations

from typing import Optional

from .messages import Entry


class MemoryStorage:
    """Storage for the simulator: survives a simulated crash, not a real one."""

    def __init__(self) -> None:
        self.term = 0
        self.vote: Optional[int] = None
        self.entries: list[Entry] = []

    def load(self) -> tuple[int, Optional[int], list[Entry]]:
        return self.term, self.vote, list(self.entries)

    def save(self, hard_state: Optional[tuple[int, Optional[int]]], entries: list[Entry]) -> None:
        if hard_state is not None:
            self.term, self.vote = hard_state
        if entries:
            first = entries[0].index
            assert first <= len(self.entries) + 1, "entries must continue the stored log"
            del self.entries[first - 1:]
            self.entries.extend(entries)
