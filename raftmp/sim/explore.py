"""Systematic search beside the random one: delay-bounded scheduling
(Emmi, Qadeer and Rakamarić, POPL 2011).

A short run of 3 nodes and a small workload, on a network that delivers
every packet in the order it was sent (a fixed latency, no loss) and with
fixed timers, is one schedule. A deviation delays one packet between nodes:
by a little (``short``: it is overtaken by the next few, a reordering), by a
maximum election timeout (``long``: it arrives after an election that it could
have prevented), or with everything its sender sends for that long
(``stall``: a paused node, whose old messages arrive after the others moved
on). ``--explore`` runs every schedule with at most k deviations
among the first ``HORIZON`` packets, with the same invariants as the random
runs, and prints the one-line replay of a schedule that breaks one.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from typing import Optional

from tabulate import tabulate

from ..transports.wire import FIRST_CLIENT_ID
from .config import SimConfig, SimResult
from .run import Simulation

HORIZON = 30          # the packets (between nodes) a deviation may delay
SHORT = 0.003         # a reordering: 3 x the latency
EXPLORE = SimConfig(nodes=3, ops=10, clients=2, in_flight=1, latency=(0.001, 0.001),
                    read_mode="lease", clock_drift=0.0, timing="sim", check_liveness=False)
LONG = 0.4            # the maximum election timeout of the "sim" timers
SIZES = {"short": SHORT, "long": LONG, "stall": LONG}


class Scheduled(Simulation):
    """A run whose n-th packet between nodes deviates as ``deviations[n]`` says."""

    def __init__(self, deviations: dict[int, str]) -> None:
        self.deviations = deviations
        self.sent = 0
        self.stalled: dict[int, float] = {}   # node -> until when its packets wait
        super().__init__(0, EXPLORE)

    def _deviation(self, src: int, dst: int) -> float:
        if src >= FIRST_CLIENT_ID or dst >= FIRST_CLIENT_ID:
            return 0.0
        self.sent += 1
        kind = self.deviations.get(self.sent)
        if kind == "stall":
            self.stalled[src] = self.now + LONG
        wait = max(0.0, self.stalled.get(src, 0.0) - self.now)
        return wait + (SIZES[kind] if kind in ("short", "long") else 0.0)


def schedules(k: int, horizon: int = HORIZON) -> list[tuple[tuple[int, str], ...]]:
    """Every choice of at most k (packet, size) deviations, packets distinct."""
    out: list[tuple[tuple[int, str], ...]] = []
    for n in range(k + 1):
        for packets in itertools.combinations(range(1, horizon + 1), n):
            for sizes in itertools.product(SIZES, repeat=n):
                out.append(tuple(zip(packets, sizes, strict=True)))
    return out


def run_schedule(schedule: tuple[tuple[int, str], ...]) -> tuple[tuple, SimResult]:
    result = Scheduled(dict(schedule)).run()
    result.history = []
    return schedule, result


def spell(schedule: tuple[tuple[int, str], ...]) -> str:
    return ",".join(f"{n}:{size}" for n, size in schedule) or "none"


def parse(text: str) -> tuple[tuple[int, str], ...]:
    """``12:long,40:short`` (as ``spell`` writes it)."""
    if text == "none":
        return ()
    out = []
    for part in text.split(","):
        n, _, size = part.partition(":")
        if not n.isdigit() or size not in SIZES:
            raise ValueError(f"a deviation is PACKET:{'|'.join(SIZES)}, not {part!r}")
        out.append((int(n), size))
    return tuple(out)


def explore_main(k: int, jobs: int, only: Optional[str] = None) -> int:
    todo = [parse(only)] if only is not None else schedules(k)
    print(f"raftmp sim --explore: {len(todo)} schedules (3 nodes, {EXPLORE.ops} ops, at most "
          f"{k} deviations among the first {HORIZON} packets between nodes)", flush=True)
    start = time.monotonic()
    if jobs > 1 and len(todo) > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            done = pool.map(run_schedule, todo, chunksize=16)
    else:
        done = [run_schedule(s) for s in todo]
    bad = [(s, r) for s, r in done if r.violations]
    print(tabulate([{"deviations": k, "schedules": len(done),
                     "elections": sum(r.elections for _, r in done),
                     "ops ok": sum(r.ops_ok for _, r in done), "violations": len(bad)}],
                   headers="keys"))
    print(f"{len(done)} schedules in {time.monotonic() - start:.1f} s on {jobs} processes")
    for s, r in bad[:5]:
        print(f"\nschedule {spell(s)} violated: {r.violations[0]}")
        print(f"  replay: python -m raftmp sim --explore --schedule {spell(s)}")
    return 1 if bad else 0
