"""Client workloads and their summaries: shared by the main job, scenarios and benchmarks."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .client import Client
from .core.errors import Unavailable
from .core.session import DONE, UNKNOWN, Outcome


@dataclass
class Workload:
    keys: int = 100
    read_fraction: float = 0.5
    value_size: int = 8
    concurrency: int = 16           # operations in flight per client

    def op(self, rng: random.Random, n: int) -> tuple[str, str, Optional[str], Optional[str]]:
        """The n-th operation: (op, key, value, expected). Writes are mostly puts,
        with some cas and deletes; values are unique so a history is checkable."""
        key = f"k{rng.randrange(self.keys)}"
        if rng.random() < self.read_fraction:
            return "get", key, None, None
        value = f"{n}".ljust(self.value_size, "x")
        r = rng.random()
        if r < 0.1:
            return "delete", key, None, None
        if r < 0.25:
            return "cas", key, value, None   # expected None: only if absent
        return "put", key, value, None


def drive(client: Client, workload: Workload, duration: float, rng: random.Random,
          on_tick: Optional[Callable[[float], None]] = None, tick: float = 0.25,
          ops_limit: Optional[int] = None,
          outcomes: Optional[list[Outcome]] = None) -> list[Outcome]:
    """Closed loop: keep ``concurrency`` operations in flight for ``duration``
    seconds, then wait for those still in flight. ``on_tick(elapsed)`` is
    called about every ``tick`` seconds (progress, timed events). The outcomes
    are appended to ``outcomes`` if given (a caller interrupted keeps them)."""
    outcomes = [] if outcomes is None else outcomes
    start = time.monotonic()
    end = start + duration
    next_tick = start + tick
    n = 0
    while True:
        now = time.monotonic()
        submitting = now < end and (ops_limit is None or n < ops_limit)
        if not submitting and client.in_flight == 0:
            return outcomes
        while submitting and client.in_flight < workload.concurrency and \
                (ops_limit is None or n < ops_limit):
            client.submit(*workload.op(rng, n))
            n += 1
        try:
            outcomes.extend(client.poll(min(0.05, max(0.0, next_tick - now))))
        except Unavailable:
            return outcomes
        if time.monotonic() >= next_tick:
            next_tick += tick
            if on_tick is not None:
                on_tick(time.monotonic() - start)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarize(outcomes: list[Outcome], elapsed: float) -> dict:
    """Counts, throughput and latency (ms) of a run's outcomes."""
    ok = [o for o in outcomes if o.outcome == DONE]
    lat = sorted((o.complete - o.invoke) * 1000 for o in ok)
    return {
        "ops": len(ok),
        "ops/s": len(ok) / elapsed if elapsed > 0 else 0.0,
        "p50 ms": percentile(lat, 0.50),
        "p99 ms": percentile(lat, 0.99),
        "max ms": lat[-1] if lat else float("nan"),
        "unknown": sum(o.outcome == UNKNOWN for o in outcomes),
        "failed": sum(o.outcome not in (DONE, UNKNOWN) for o in outcomes),
    }
