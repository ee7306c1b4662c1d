"""Scenario files: CS3700-style fault scenarios, parsed and validated.

A scenario is a JSON file in the format of the CS3700 key-value store
simulator (the course project's ``sim.py`` configs), for example::

    {"lifetime": 30, "replicas": 5, "requests": 500, "mix": 0.2, "drops": 0.1,
     "events": [{"type": "kill_leader", "time": 10}],
     "tests": {"benchmarks": {"total_msgs": [2500, 4000, 5000], "failures": [0, 1, 5],
                              "duplicates": [0, 2, 5], "median_latency": [0.001, 0.005, 0.05]}}}

Required keys: ``lifetime`` (s, >= 5), ``replicas`` (3..21), ``requests`` (>= 0).
Optional: ``seed``, ``mix`` (read fraction, 0.8), ``start_wait`` (older name
``wait``; 2.0), ``end_wait`` (2.0), ``drops`` (replica-link loss, 0.0),
``max_packets`` (20000: more router packets abort the run as a packet storm),
``events``, ``tests``. raftmp additions: event type ``restart`` (restart
every killed node, or only ``"node"``), and keys ``delay`` ([lo, hi] seconds
per packet), ``duplicate`` (probability), ``client_drop`` (client-link loss),
``description`` (free text). ``scenario.py`` runs and grades one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .core.errors import ConfigError
from .faults import Faults

SCENARIO_DIR = Path(__file__).with_name("scenarios")

EVENT_TYPES = ("kill_leader", "kill_non_leader", "part_easy", "part_hard", "part_end", "restart",
               # membership (thesis chapter 4, §3.10): raftmp's own, not the course's
               "add_node", "remove_leader", "transfer_leader")
BENCHMARKS = ("total_msgs", "failures", "duplicates", "median_latency")
TEST_FRACTIONS = {
    "maximum_get_fail_fraction": 0.5,
    "maximum_put_fail_fraction": 0.5,
    # Accepted for compatibility; they grade CS3700 internals raftmp does not expose.
    "maximum_get_generation_fail_fraction": 0.1,
    "maximum_appends_batched_fraction": 0.5,
}
DEFAULT_MAX_PACKETS = 20000


@dataclass
class Event:
    type: str
    time: float
    node: Optional[int] = None   # only for "restart"


@dataclass
class Scenario:
    name: str
    lifetime: float
    replicas: int
    requests: int
    seed: Optional[int] = None
    mix: float = 0.8
    start_wait: float = 2.0
    end_wait: float = 2.0
    faults: Faults = Faults()       # drops is faults.drop
    max_packets: int = DEFAULT_MAX_PACKETS
    events: list[Event] = field(default_factory=list)
    tests: dict[str, float] = field(default_factory=lambda: dict(TEST_FRACTIONS))
    benchmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    description: str = ""
    path: Optional[str] = None


_KEYS = ("lifetime", "replicas", "requests", "seed", "mix", "start_wait", "wait", "end_wait",
         "drops", "max_packets", "events", "tests", "delay", "duplicate", "client_drop",
         "description")
_REQUIRED = ("lifetime", "replicas", "requests")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_scenario(data: Any, name: str = "scenario") -> Scenario:
    """Validate a decoded config strictly; raises :class:`ConfigError` naming the problem."""

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{name}: {msg}")

    if not isinstance(data, dict):
        raise bad(f"the config must be a JSON object, got {type(data).__name__}")
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise bad(f"unknown key(s) {', '.join(map(repr, unknown))}; "
                  f"known keys: {', '.join(_KEYS)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise bad(f"missing required key(s) {', '.join(map(repr, missing))}")

    def num(key: str, lo: float = 0.0, hi: float = math.inf, hi_open: bool = False) -> float:
        v = data[key]
        if not _is_num(v):
            raise bad(f"{key!r} must be a number, got {v!r}")
        if v < lo or v > hi or (hi_open and v >= hi):
            raise bad(f"{key!r} must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}, got {v!r}")
        return float(v)

    def integer(key: str, lo: int, hi: float = math.inf) -> int:
        v = data[key]
        if not _is_int(v):
            raise bad(f"{key!r} must be an integer, got {v!r}")
        if v < lo or v > hi:
            raise bad(f"{key!r} must be in [{lo}, {hi:g}], got {v!r}")
        return v

    sc = Scenario(name=name, lifetime=num("lifetime", 5.0), replicas=integer("replicas", 3, 21),
                  requests=integer("requests", 0))
    if "seed" in data:
        sc.seed = integer("seed", 0)
    if "mix" in data:
        sc.mix = num("mix", 0.0, 1.0)
    if "wait" in data and "start_wait" in data:
        raise bad("give 'start_wait' or its older name 'wait', not both")
    if "wait" in data:
        sc.start_wait = num("wait")
    if "start_wait" in data:
        sc.start_wait = num("start_wait")
    if "end_wait" in data:
        sc.end_wait = num("end_wait")
    if sc.start_wait + sc.end_wait >= sc.lifetime:
        raise bad(f"start_wait + end_wait ({sc.start_wait:g} + {sc.end_wait:g}) must be less "
                  f"than lifetime ({sc.lifetime:g})")
    faults = {knob: num(key, 0.0, 1.0, hi_open=True)
              for key, knob in (("drops", "drop"), ("client_drop", "client_drop"),
                                ("duplicate", "duplicate")) if key in data}
    if "delay" in data:
        d = data["delay"]
        if not (isinstance(d, list) and len(d) == 2 and all(_is_num(x) for x in d)
                and 0 <= d[0] <= d[1]):
            raise bad(f"'delay' must be [lo, hi] seconds with 0 <= lo <= hi, got {d!r}")
        faults["delay"] = (float(d[0]), float(d[1]))
    sc.faults = Faults(**faults)
    if "max_packets" in data:
        sc.max_packets = integer("max_packets", 1)
    if "description" in data:
        if not isinstance(data["description"], str):
            raise bad(f"'description' must be a string, got {data['description']!r}")
        sc.description = data["description"]
    if "events" in data:
        sc.events = _parse_events(data["events"], sc, bad)
    if "tests" in data:
        _parse_tests(data["tests"], sc, bad)
    return sc


def _parse_events(events: Any, sc: Scenario, bad: Callable[[str], ConfigError]) -> list[Event]:
    if not isinstance(events, list):
        raise bad(f"'events' must be a list, got {type(events).__name__}")
    out = []
    for n, e in enumerate(events):
        where = f"events[{n}]"
        if not isinstance(e, dict):
            raise bad(f"{where} must be an object with 'type' and 'time', got {e!r}")
        extra = [k for k in e if k not in ("type", "time", "node")]
        if extra:
            raise bad(f"{where}: unknown key(s) {', '.join(map(repr, extra))} "
                      "(an event has 'type', 'time' and, for restart, 'node')")
        if "type" not in e or "time" not in e:
            raise bad(f"{where} needs both 'type' and 'time', got {e!r}")
        kind, t = e["type"], e["time"]
        if kind not in EVENT_TYPES:
            raise bad(f"{where}: unknown event type {kind!r}; choose from "
                      f"{', '.join(EVENT_TYPES)}")
        if not _is_num(t) or not 0 <= t <= sc.lifetime:
            raise bad(f"{where}: 'time' must be a number in [0, lifetime={sc.lifetime:g}], "
                      f"got {t!r}")
        node = e.get("node")
        if "node" in e:
            if kind != "restart":
                raise bad(f"{where}: only a 'restart' event takes a 'node'")
            if not _is_int(node) or not 0 <= node < sc.replicas:
                raise bad(f"{where}: 'node' must be an integer in [0, {sc.replicas - 1}], "
                          f"got {node!r}")
        out.append(Event(kind, float(t), node))
    return sorted(out, key=lambda ev: ev.time)   # stable: same-time events keep file order


def _parse_tests(tests: Any, sc: Scenario, bad: Callable[[str], ConfigError]) -> None:
    if not isinstance(tests, dict):
        raise bad(f"'tests' must be an object, got {type(tests).__name__}")
    for key, v in tests.items():
        if key == "benchmarks":
            continue
        if key not in TEST_FRACTIONS:
            raise bad(f"tests: unknown key {key!r}; known: "
                      f"{', '.join([*TEST_FRACTIONS, 'benchmarks'])}")
        if not _is_num(v) or not 0 <= v <= 1:
            raise bad(f"tests.{key} must be a number in [0, 1], got {v!r}")
        sc.tests[key] = float(v)
    benches = tests.get("benchmarks", {})
    if not isinstance(benches, dict):
        raise bad(f"tests.benchmarks must be an object, got {type(benches).__name__}")
    for key, tiers in benches.items():
        if key not in BENCHMARKS:
            raise bad(f"tests.benchmarks: unknown benchmark {key!r}; known: "
                      f"{', '.join(BENCHMARKS)}")
        if not (isinstance(tiers, list) and len(tiers) == 3 and all(_is_num(x) for x in tiers)):
            raise bad(f"tests.benchmarks.{key} must be three numbers (bonus, passed, partial "
                      f"thresholds), got {tiers!r}")
        if not (0 <= tiers[0] <= tiers[1] <= tiers[2]):
            raise bad(f"tests.benchmarks.{key} thresholds must be >= 0 and non-decreasing, "
                      f"got {tiers!r}")
        sc.benchmarks[key] = (float(tiers[0]), float(tiers[1]), float(tiers[2]))


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate one scenario file; :class:`ConfigError` on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                          f"{e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        at = "" if e.msg.endswith(" at") else " at"   # "Unterminated string starting at"
        raise ConfigError(f"{p}: not valid JSON ({e.msg}{at} line {e.lineno} column "
                          f"{e.colno})") from None
    sc = parse_scenario(data, p.stem)
    sc.path = str(p)
    return sc


def shipped_scenarios() -> list[Path]:
    """The scenario files shipped in ``raftmp/scenarios``, CS3700's matrix order first."""
    order = ["simple", "unreliable", "crash", "partition", "advanced"]

    def rank(p: Path) -> tuple:
        family = p.stem.rsplit("-", 1)[0]
        return (order.index(family) if family in order else len(order), p.stem)

    return sorted(SCENARIO_DIR.glob("*.json"), key=rank)
