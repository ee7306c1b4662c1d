"""``python -m raftmp scenario``: CS3700-style fault scenarios against a real cluster.

A scenario is a JSON file in the format of the CS3700 key-value store
simulator (see ``/work/shared/CS3700.md``)::

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
``description`` (free text).

The run: start a cluster, wait ``start_wait``, spread ``requests`` operations
(a get with probability ``mix``, else a put of a unique value) at random
times over ``[start_wait, lifetime - end_wait]`` across 8 clients (open loop:
each client submits at its scheduled times, whatever is in flight), fire the
timed events, stop submitting at ``lifetime - end_wait``, let the clients
finish what is in flight, and stop at ``lifetime`` (later only while an
operation is still in flight; the client gives up on one after its
``op_timeout``). Event times are seconds from the cluster's start; every time
(lifetime, waits, events) is multiplied by ``--time-scale``.

Grading follows CS3700 with its quirks fixed: latency counts only answered
operations (not redirects or failures), and instead of a per-client check of
gets the whole history is checked for linearizability. Correctness gates: the
history is linearizable, no replica died that the scenario did not kill, the
run was not aborted as a packet storm, unanswered gets <= 0.5 x gets (the
``tests`` fraction), likewise puts, total_msgs >= requests x replicas x
(1 - mix) x 0.5, and the failures and duplicates benchmarks reach at least
the "passed" tier. Exit status: 0 every scenario correct, 1 otherwise, 2 a
bad config or usage.

``total_msgs`` counts router packets between replicas, as the course
simulator counts messages between replicas (one router packet compares to
one CS3700 message); packets to and from clients are reported beside it
(``client_msgs``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

SCENARIO_DIR = Path(__file__).with_name("scenarios")

EVENT_TYPES = ("kill_leader", "kill_non_leader", "part_easy", "part_hard", "part_end", "restart")
BENCHMARKS = ("total_msgs", "failures", "duplicates", "median_latency")
TIERS = ("bonus", "passed", "partial", "failed")
TEST_FRACTIONS = {
    "maximum_get_fail_fraction": 0.5,
    "maximum_put_fail_fraction": 0.5,
    # Accepted for compatibility; they grade CS3700 internals raftmp does not expose.
    "maximum_get_generation_fail_fraction": 0.1,
    "maximum_appends_batched_fraction": 0.5,
}
CLIENTS = 8                  # CS3700's simulator drove 8 clients
DEFAULT_MAX_PACKETS = 20000
LEADER_POLL = 0.1            # seconds between leader observations


class ConfigError(ValueError):
    """A scenario file is malformed; the message names the file and the problem."""


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
    drops: float = 0.0
    max_packets: int = DEFAULT_MAX_PACKETS
    events: list[Event] = field(default_factory=list)
    tests: dict[str, float] = field(default_factory=lambda: dict(TEST_FRACTIONS))
    benchmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    delay: tuple[float, float] = (0.0, 0.0)
    duplicate: float = 0.0
    client_drop: float = 0.0
    description: str = ""
    path: Optional[str] = None


# ----------------------------------------------------------------- parsing

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
    if "drops" in data:
        sc.drops = num("drops", 0.0, 1.0, hi_open=True)
    if "client_drop" in data:
        sc.client_drop = num("client_drop", 0.0, 1.0, hi_open=True)
    if "duplicate" in data:
        sc.duplicate = num("duplicate", 0.0, 1.0, hi_open=True)
    if "max_packets" in data:
        sc.max_packets = integer("max_packets", 1)
    if "delay" in data:
        d = data["delay"]
        if not (isinstance(d, list) and len(d) == 2 and all(_is_num(x) for x in d)
                and 0 <= d[0] <= d[1]):
            raise bad(f"'delay' must be [lo, hi] seconds with 0 <= lo <= hi, got {d!r}")
        sc.delay = (float(d[0]), float(d[1]))
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
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column "
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


# ----------------------------------------------------------------- grading


def tier(value: float, thresholds: tuple[float, float, float]) -> str:
    """CS3700's grade of one benchmark: <= bonus, <= passed, <= partial, else failed."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "failed"
    for name, limit in zip(TIERS[:3], thresholds, strict=True):
        if value <= limit:
            return name
    return "failed"


def grade(sc: Scenario, r: dict) -> None:
    """Fill ``r["tiers"]``, ``r["gates"]`` and ``r["correct"]`` from the run's counts."""
    r["tiers"] = {b: tier(r[b], sc.benchmarks[b]) for b in BENCHMARKS if b in sc.benchmarks}
    gates: dict[str, tuple[bool, str]] = {}
    gates["linearizable"] = (r["linearizable"], r["checker"] or "ok")
    gates["no unexpected replica death"] = (
        not r["unexpected_deaths"],
        f"died: {r['unexpected_deaths']}" if r["unexpected_deaths"] else "ok")
    gates["not a packet storm"] = (not r["aborted"], r["aborted"] or "ok")
    gf, pf = sc.tests["maximum_get_fail_fraction"], sc.tests["maximum_put_fail_fraction"]
    gates["unanswered gets"] = (r["unanswered_gets"] <= gf * r["gets"],
                                f"{r['unanswered_gets']} <= {gf:g} x {r['gets']}")
    gates["unanswered puts"] = (r["unanswered_puts"] <= pf * r["puts"],
                                f"{r['unanswered_puts']} <= {pf:g} x {r['puts']}")
    floor = sc.requests * sc.replicas * (1 - sc.mix) * 0.5
    gates["minimum traffic"] = (r["total_msgs"] >= floor, f"{r['total_msgs']} >= {floor:g}")
    for b in ("failures", "duplicates"):
        if b in r["tiers"]:
            gates[f"{b} tier"] = (r["tiers"][b] in ("bonus", "passed"),
                                  f"{r[b]} -> {r['tiers'][b]}")
    r["gates"] = {k: {"ok": ok, "detail": d} for k, (ok, d) in gates.items()}
    r["correct"] = all(ok for ok, _ in gates.values())


# ----------------------------------------------------------------- running


@dataclass
class _Op:
    at: float          # seconds after the cluster started
    op: str
    key: str
    value: Optional[str]


def schedule(sc: Scenario, rng: random.Random, scale: float = 1.0,
             clients: int = CLIENTS) -> list[list[_Op]]:
    """Each client's operations, in time order: ``requests`` spread uniformly at
    random over ``[start_wait, lifetime - end_wait]``; gets with probability
    ``mix``, else puts of values unique in the run."""
    lo, hi = sc.start_wait * scale, (sc.lifetime - sc.end_wait) * scale
    keys = max(4, sc.requests // 10)
    per: list[list[_Op]] = [[] for _ in range(clients)]
    for n, at in enumerate(sorted(rng.uniform(lo, hi) for _ in range(sc.requests))):
        key = f"k{rng.randrange(keys)}"
        if rng.random() < sc.mix:
            op = _Op(at, "get", key, None)
        else:
            op = _Op(at, "put", key, f"v{n}")
        per[rng.randrange(clients)].append(op)
    return per


def _count_duplicates(session: Any, by_status: dict[str, int]) -> None:
    """Break ``ClientSession.duplicates`` down by the duplicate reply's status
    (a second result, or a late refusal such as a deposed leader's retry)."""
    step = session.step

    def counting_step(src: int, reply: Any, now: float) -> None:
        before = session.duplicates
        step(src, reply, now)
        if session.duplicates != before:
            by_status[reply.status] = by_status.get(reply.status, 0) + 1

    session.step = counting_step


def _client_loop(client: Any, ops: list[_Op], t0: float, hard_end: float,
                 stop: threading.Event, out: list) -> None:
    from .core.errors import Unavailable

    i = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            while i < len(ops) and t0 + ops[i].at <= now:
                o = ops[i]
                client.submit(o.op, o.key, o.value)
                i += 1
            if i >= len(ops) and client.in_flight == 0:
                return
            if now >= hard_end:
                return
            nxt = t0 + ops[i].at if i < len(ops) else now + 0.05
            out.extend(client.poll(max(0.0, min(nxt - now, 0.05))))
    except Unavailable:
        return


class _Events:
    """Fires the scenario's events against the cluster; remembers what it did."""

    def __init__(self, cluster: Any, rng: random.Random, t0: float) -> None:
        self.cluster, self.rng, self.t0 = cluster, rng, t0
        self.killed: set[int] = set()
        self.log: list[str] = []

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:6.2f}s  {text}")

    def fire(self, ev: Event) -> None:
        c = self.cluster
        kind = ev.type
        if kind == "part_end":
            c.heal()
            self.note("part_end: healed every partition")
            return
        if kind == "restart":
            nodes = [ev.node] if ev.node is not None else sorted(self.killed)
            for i in nodes:
                if i in self.killed:
                    c.restart(i)
                    self.killed.discard(i)
            self.note(f"restart: restarted {nodes or 'nothing (no node was down)'}")
            return
        leader = c.leader()
        if leader is None and kind in ("kill_leader", "part_easy", "part_hard"):
            try:
                leader = c.wait_for_leader(1.0)
            except Exception:
                leader = None
        if kind == "kill_leader":
            if leader is None:
                self.note("kill_leader: no leader to kill (skipped)")
                return
            c.kill(leader)
            self.killed.add(leader)
            self.note(f"kill_leader: killed node {leader}")
        elif kind == "kill_non_leader":
            live = [i for i in c.alive() if i != leader]
            if not live:
                self.note("kill_non_leader: no live non-leader (skipped)")
                return
            victim = self.rng.choice(live)
            c.kill(victim)
            self.killed.add(victim)
            self.note(f"kill_non_leader: killed node {victim} (leader {leader})")
        else:
            majority = c.n // 2 + 1
            live = set(c.alive())
            # Prefer live nodes for the majority side, so that it can make progress.
            others = [i for i in c.ids if i != leader]
            self.rng.shuffle(others)
            others.sort(key=lambda i: i not in live)
            if kind == "part_easy":
                side = ([leader] if leader is not None else []) + others
                side = side[:majority]
            else:
                side = others[:majority]
            rest = [i for i in c.ids if i not in side]
            c.partition(sorted(side), rest)
            self.note(f"{kind}: partition {sorted(side)} | {rest} (leader {leader})")


def run_scenario(sc: Scenario, *, seed: Optional[int] = None, time_scale: float = 1.0,
                 history: Optional[str] = None,
                 before_stop: Optional[Callable[[Any, dict], None]] = None,
                 cluster_kwargs: Optional[dict] = None,
                 progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run one scenario on a fresh cluster; its result (counts, verdict, grades).

    ``before_stop(cluster, result)`` runs after the workload, with the cluster
    still up (tests use it for their end-of-run checks). The outcomes are in
    ``result["outcomes"]`` (``session.Outcome``; dropped by ``--json``)."""
    from .checker import check, load_history
    from .cluster import Cluster
    from .core.session import DONE

    if time_scale <= 0:
        raise ValueError("time_scale must be > 0")
    seed = seed if seed is not None else sc.seed
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    per_client = schedule(sc, rng, time_scale)
    lifetime = sc.lifetime * time_scale
    outcomes: list = []
    r: dict[str, Any] = {"name": sc.name, "seed": seed, "time_scale": time_scale,
                         "replicas": sc.replicas, "requests": sc.requests, "mix": sc.mix,
                         "drops": sc.drops, "aborted": None}
    stop = threading.Event()
    kwargs = dict(drop=sc.drops, client_drop=sc.client_drop, delay=sc.delay,
                  duplicate=sc.duplicate, seed=seed)
    kwargs.update(cluster_kwargs or {})
    started = time.monotonic()
    with Cluster(sc.replicas, **kwargs) as cluster:
        t0 = time.monotonic()
        events = _Events(cluster, random.Random(seed ^ 0x5EED), t0)
        clients = [cluster.client() for _ in range(CLIENTS)]
        dup_status: dict[str, int] = {}
        for cl in clients:
            _count_duplicates(cl.session, dup_status)
        op_timeout = clients[0].session.timing.op_timeout
        hard_end = t0 + max(lifetime, (sc.lifetime - sc.end_wait) * time_scale + op_timeout + 1)
        results: list[list] = [[] for _ in clients]
        threads = [threading.Thread(target=_client_loop, name=f"scenario-client{k}",
                                    args=(cl, per_client[k], t0, hard_end, stop, results[k]),
                                    daemon=True)
                   for k, cl in enumerate(clients)]
        for t in threads:
            t.start()
        pending = list(sc.events)
        leaders = [cluster.leader()]
        next_poll = 0.0
        try:
            while True:
                now = time.monotonic()
                while pending and t0 + pending[0].time * time_scale <= now:
                    events.fire(pending.pop(0))
                    if progress:
                        progress(events.log[-1])
                if now >= next_poll:
                    next_poll = now + LEADER_POLL
                    leader = cluster.leader()
                    if leader is not None and leader != leaders[-1]:
                        leaders.append(leader)
                        events.note(f"node {leader} leads")
                    packets = cluster.router.stats()["total"]["packets"]
                    if packets > sc.max_packets:
                        r["aborted"] = (f"packet storm: {packets} router packets > "
                                        f"max_packets {sc.max_packets}")
                        events.note(r["aborted"])
                        stop.set()
                        break
                busy = any(t.is_alive() for t in threads)
                if now >= t0 + lifetime and not pending and not busy:
                    break
                if now >= hard_end + 2:
                    stop.set()
                    break
                time.sleep(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(10.0)
        for res in results:
            outcomes.extend(res)
        r["elapsed"] = time.monotonic() - t0
        r["duplicates"] = sum(cl.session.duplicates for cl in clients)
        r["duplicates_by_status"] = dict(sorted(dup_status.items()))
        stats = cluster.stats()
        r["unexpected_deaths"] = sorted(set(cluster.ids) - set(cluster.alive()) - events.killed)
        r["events"] = events.log
        r["leader_changes"] = len([x for x in leaders if x is not None]) - 1
        r["max_term"] = max((n.get("term", 0) for n in stats["nodes"]), default=0)
        total = stats["router"]["total"]
        ids = set(cluster.ids)
        r["total_msgs"] = sum(c["packets"] for (src, dst), c in stats["router"]["links"].items()
                              if src in ids and dst in ids)
        r["client_msgs"] = total["packets"] - r["total_msgs"]
        r["messages"] = total["messages"]
        r["dropped"] = total["dropped"]
        r["duplicated"] = total["duplicated"]
        r["outcomes"] = outcomes
        if before_stop is not None:
            before_stop(cluster, r)
    r["wall"] = time.monotonic() - started
    outcomes.sort(key=lambda o: o.invoke)
    if history:
        with open(history, "w", encoding="utf-8") as f:
            for o in outcomes:
                f.write(json.dumps(o.record()) + "\n")
    ok = [o for o in outcomes if o.outcome == DONE]
    lat = sorted(o.complete - o.invoke for o in ok)
    gets = [o for o in outcomes if o.command.op == "get"]
    puts = [o for o in outcomes if o.command.op == "put"]
    r.update(
        submitted=len(outcomes), ok=len(ok),
        failed=sum(o.outcome == "fail" for o in outcomes),
        unknown=sum(o.outcome == "unknown" for o in outcomes),
        gets=len(gets), puts=len(puts),
        unanswered_gets=sum(o.outcome != DONE for o in gets),
        unanswered_puts=sum(o.outcome != DONE for o in puts),
        mean_latency=statistics.fmean(lat) if lat else float("nan"),
        median_latency=statistics.median(lat) if lat else float("nan"),
    )
    # Operations never submitted (the run was cut short) count as unanswered too.
    r["failures"] = r["failed"] + r["unknown"] + (sc.requests - len(outcomes))
    verdict = check(load_history(json.dumps(o.record()) for o in outcomes), time_limit=30.0)
    r["linearizable"] = verdict.ok
    r["checker"] = "" if verdict.ok else verdict.explanation
    grade(sc, r)
    return r


# ----------------------------------------------------------------- output


def _fmt_s(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.5f}"


def summary_rows(sc: Scenario, r: dict) -> list[tuple]:
    def bench(name: str) -> tuple[str, str]:
        if name not in sc.benchmarks:
            return "", ""
        return r["tiers"][name], " / ".join(f"{x:g}" for x in sc.benchmarks[name])

    return [
        ("total messages (replica packets)", r["total_msgs"], *bench("total_msgs")),
        ("client packets", r["client_msgs"], "", ""),
        ("messages (in packets)", r["messages"], "", ""),
        ("requests submitted / answered", f"{r['submitted']} / {r['ok']}", "", ""),
        ("failures (failed + unknown)", f"{r['failures']} ({r['failed']} + {r['unknown']})",
         *bench("failures")),
        ("duplicates (by reply status)",
         f"{r['duplicates']} {r['duplicates_by_status'] or ''}".strip(), *bench("duplicates")),
        ("median latency (s)", _fmt_s(r["median_latency"]), *bench("median_latency")),
        ("mean latency (s)", _fmt_s(r["mean_latency"]), "", ""),
        ("unanswered gets / puts", f"{r['unanswered_gets']}/{r['gets']} / "
         f"{r['unanswered_puts']}/{r['puts']}", "", ""),
        ("packets dropped / duplicated", f"{r['dropped']} / {r['duplicated']}", "", ""),
        ("leader changes (max term)", f"{r['leader_changes']} ({r['max_term']})", "", ""),
        ("linearizable", "yes" if r["linearizable"] else "NO", "", ""),
    ]


def print_report(sc: Scenario, r: dict) -> None:
    from tabulate import tabulate

    for line in r["events"]:
        print(f"  {line}")
    print(tabulate(summary_rows(sc, r), headers=(sc.name, "value", "tier", "bonus/passed/partial")))
    failed = [f"{k} ({g['detail']})" for k, g in r["gates"].items() if not g["ok"]]
    if not r["linearizable"]:
        print(f"checker: {r['checker']}")
    print(f"verdict: {'CORRECT' if r['correct'] else 'INCORRECT: ' + '; '.join(failed)}"
          f"  [{r['wall']:.1f} s wall]")


def table_row(r: dict) -> dict:
    t = r["tiers"]
    return {
        "scenario": r["name"], "reqs": r["requests"], "ok": r["ok"], "fail": r["failures"],
        "dup": r["duplicates"], "msgs": r["total_msgs"], "lost": r["dropped"],
        "p50 ms": f"{r['median_latency'] * 1000:.1f}" if not math.isnan(r["median_latency"])
        else "n/a",
        "leaders": r["leader_changes"], "linear": "yes" if r["linearizable"] else "NO",
        "msgs tier": t.get("total_msgs", "-"), "fail tier": t.get("failures", "-"),
        "dup tier": t.get("duplicates", "-"), "lat tier": t.get("median_latency", "-"),
        "result": "ok" if r["correct"] else "FAIL",
    }


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m raftmp scenario",
        description="Run CS3700-format fault scenarios against a real raftmp cluster and grade "
                    "them. Exit 0 when every scenario is correct, 1 otherwise, 2 on bad input.")
    p.add_argument("files", nargs="*", help="scenario JSON files")
    p.add_argument("--all", action="store_true",
                   help=f"run every shipped scenario ({SCENARIO_DIR})")
    p.add_argument("--seed", type=int, default=None, help="override the scenarios' seeds")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply every time (lifetime, waits, events) by this (default 1)")
    p.add_argument("--json", dest="json_out", default=None, help="write the results here")
    p.add_argument("--history-dir", default=None,
                   help="write each scenario's history to DIR/NAME.jsonl")
    a = p.parse_args(argv)
    if not a.files and not a.all:
        p.error("give scenario files, or --all")
    if not a.time_scale > 0:
        p.error("--time-scale must be > 0")
    paths = [Path(f) for f in a.files] + (shipped_scenarios() if a.all else [])
    scenarios = []
    for path in paths:
        try:
            scenarios.append(load_scenario(path))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if a.history_dir:
        os.makedirs(a.history_dir, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}; time scale {a.time_scale:g}", flush=True)
    results = []
    many = len(scenarios) > 1
    for sc in scenarios:
        seed = a.seed if a.seed is not None else sc.seed
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        print(f"\n== {sc.name}: {sc.replicas} replicas, {sc.requests} requests, mix {sc.mix:g}, "
              f"drops {sc.drops:g}, lifetime {sc.lifetime:g} s x {a.time_scale:g}, "
              f"events {[(e.type, e.time) for e in sc.events]}, seed {seed}", flush=True)
        hist = os.path.join(a.history_dir, f"{sc.name}.jsonl") if a.history_dir else None
        r = run_scenario(sc, seed=seed, time_scale=a.time_scale, history=hist)
        print_report(sc, r)
        sys.stdout.flush()
        results.append((sc, r))
    if many:
        from tabulate import tabulate
        print()
        print(tabulate([table_row(r) for _, r in results], headers="keys"))
    if a.json_out:
        out = []
        for sc, r in results:
            d = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in r.items() if k != "outcomes"}
            d["scenario"] = asdict(sc)
            out.append(d)
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, default=str)
    bad = [r["name"] for _, r in results if not r["correct"]]
    if many:
        print(f"\n{len(results) - len(bad)}/{len(results)} scenarios correct"
              + (f"; incorrect: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
