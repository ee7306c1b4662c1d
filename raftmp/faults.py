"""``Faults``: the network's misbehaviour, one type for every place that sets it.

The router applies it to real packets, the simulator to virtual ones;
``Cluster``, the console and the scenarios pass it along. Pure (no I/O), so
any of them can import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from .core.errors import ConfigError


@dataclass(frozen=True)
class Faults:
    """Per-packet faults. ``drop`` applies to links between replicas and
    ``client_drop`` to links with a client; ``duplicate`` sends a second copy
    and ``delay`` holds each copy for a time drawn uniformly from (min, max)
    seconds, which also reorders packets. Validated at construction."""

    drop: float = 0.0
    client_drop: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop", "client_drop", "duplicate"):
            object.__setattr__(self, name, _probability(name, getattr(self, name)))
        object.__setattr__(self, "delay", _delay(self.delay))

    def changed(self, **changes: Any) -> "Faults":
        """A copy with ``changes`` applied; ConfigError (naming the knob) if any is bad."""
        unknown = set(changes) - set(KNOBS)
        if unknown:
            raise ConfigError(f"unknown fault knob(s) {sorted(unknown)}; known: {list(KNOBS)}")
        return replace(self, **changes)

    @property
    def any(self) -> bool:
        """Whether any packet can be dropped, duplicated or delayed."""
        return bool(self.drop or self.client_drop or self.duplicate or self.delay[1] > 0)


KNOBS = tuple(f.name for f in fields(Faults))


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number in [0, 1], not {value!r}")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(f"{name} must be in [0, 1], not {value!r}")
    return float(value)


def _delay(delay: Any) -> tuple[float, float]:
    try:
        lo, hi = delay
    except (TypeError, ValueError):
        raise ConfigError(f"delay must be a pair (min, max) of seconds, not {delay!r}") from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"delay bounds must be finite numbers, not {delay!r}")
    if not 0.0 <= lo <= hi:
        raise ConfigError(f"delay must satisfy 0 <= min <= max, not {delay!r}")
    return (float(lo), float(hi))


class Cuts:
    """Which directed links are cut: partition groups (endpoints in different
    groups cannot reach each other; unlisted ones reach everyone) and one-way
    cuts. Changes are validated first: a rejected one changes nothing."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.group_of: dict[int, int] = {}
        self.one_way: set[tuple[int, int]] = set()

    def __bool__(self) -> bool:
        return bool(self.group_of or self.one_way)

    def blocks(self, src: int, dst: int) -> bool:
        group_of = self.group_of
        return (src, dst) in self.one_way or (
            src in group_of and dst in group_of and group_of[src] != group_of[dst])

    def partition(self, groups: Any) -> None:
        seen: set[int] = set()
        checked = []
        for group in groups:
            checked.append([_endpoint(eid) for eid in group])
            for eid in checked[-1]:
                if eid in seen:
                    raise ConfigError(f"endpoint {eid} is in more than one partition group")
                seen.add(eid)
        self.groups = checked
        self.group_of = {eid: i for i, group in enumerate(checked) for eid in group}

    def cut(self, src: Any, dst: Any) -> None:
        self.one_way.add((_endpoint(src), _endpoint(dst)))

    def heal(self) -> None:
        self.groups, self.group_of, self.one_way = [], {}, set()


def _endpoint(eid: Any) -> int:
    if isinstance(eid, bool) or not isinstance(eid, int) or eid < 0:
        raise ConfigError(f"endpoint ids are ints >= 0, not {eid!r}")
    return eid
