"""``python -m raftmp scenario``: run CS3700-style fault scenarios on a cluster, and grade them.

The scenario files and their format are in ``scenario_file.py``. The run:
start a cluster, wait ``start_wait``, spread ``requests`` operations (a get
with probability ``mix``, else a put of a unique value) at random times over
``[start_wait, lifetime - end_wait]`` across 8 clients (open loop: each
client submits at its scheduled times, whatever is in flight), fire the timed
events, stop submitting at ``lifetime - end_wait``, let the clients finish
what is in flight, and stop at ``lifetime`` (later only while an operation is
still in flight; the client gives up on one after its ``op_timeout``). Event
times are seconds from the cluster's start; every time (lifetime, waits,
events) is multiplied by ``--time-scale``.

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
(``client_msgs``). ``duplicates`` counts, as the course does, answers to a
request that already had one (any attempt: a raftmp client retries with the
same id); the first result for a request the client had given up on is
reported beside it (``late_answers``), and counts among the failures.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

from tabulate import tabulate

from .checker import SHORT_VERDICT, check, load_history
from .cli import Parser, complain, integer, number, output_dir, output_file
from .cluster import Cluster
from .core.config import Config
from .core.errors import ConfigError, RaftmpError, Unavailable
from .core.membership import majority_of
from .core.session import DONE, FAILED, UNKNOWN, Outcome, Timing
from .cs3700 import course_config
from .scenario_file import (
    BENCHMARKS,
    SCENARIO_DIR,
    Event,
    Scenario,
    load_scenario,
    shipped_scenarios,
)
from .seeds import pick_seed

TIERS = ("bonus", "passed", "partial", "failed")
CLIENTS = 8                  # CS3700's simulator drove 8 clients
LEADER_POLL = 0.1            # seconds between leader observations
# The settings of a scenario's cluster and clients (``--profile``), by replica
# count. "course", the default: the CS3700 profile (``cs3700.course_config``),
# the one a replica run by the course's own simulator uses (0.5 s heartbeats,
# election 2-3 s, entries at once only to the followers a commit needs), since
# these scenarios are graded by the course's numbers, messages included; its
# commits can take a heartbeat or two when a follower is cut off, so clients
# wait 1 s before asking another node (a retry of a write that then commits
# anyway is answered twice: a CS3700 "duplicate"). "default": ``Config()`` and
# ``Timing()``. --time-scale scales the scenario's times, not these timers:
# below about 0.5, use "default".
PROFILES: dict[str, Callable[[int], dict]] = {
    "course": lambda n: {"config": course_config(n), "timing": Timing(attempt_timeout=1.0)},
    "default": lambda n: {"config": Config(), "timing": Timing()},
}


@dataclass
class ScenarioResult:
    """One run of a scenario: what happened, what it counted, how it grades.
    Times are seconds; a latency is NaN when nothing was answered."""

    name: str
    seed: int
    time_scale: float
    replicas: int
    requests: int
    mix: float
    drops: float
    profile: str = "course"           # the cluster's Raft settings (PROFILES)
    aborted: Optional[str] = None     # why the run was cut short (a packet storm)
    events: list[str] = field(default_factory=list)   # what the events did, timestamped
    t0: float = 0.0       # the clock (time.monotonic) at the events' time 0
    elapsed: float = 0.0              # from the cluster's start to the workload's end
    wall: float = 0.0                 # the whole run, cluster start and stop included
    leader_changes: int = 0
    max_term: int = 0
    unexpected_deaths: list[int] = field(default_factory=list)
    total_msgs: int = 0               # replica-to-replica router packets (CS3700's "messages")
    client_msgs: int = 0              # router packets to and from clients
    messages: int = 0                 # messages inside them
    dropped: int = 0                  # router packets dropped
    duplicated: int = 0               # router packets duplicated
    duplicates: int = 0               # answers to answered requests (CS3700's "duplicates")
    late_answers: int = 0             # first answers to requests the client had given up on
    duplicates_by_status: dict[str, int] = field(default_factory=dict)
    submitted: int = 0
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    failures: int = 0                 # failed + unknown + never submitted
    gets: int = 0
    puts: int = 0
    unanswered_gets: int = 0
    unanswered_puts: int = 0
    mean_latency: float = math.nan    # of answered operations
    median_latency: float = math.nan
    linearizable: bool = False
    checker_verdict: str = ""         # linearizable / not linearizable / undecided (gave up)
    checker: str = ""                 # the checker's explanation when not linearizable
    tiers: dict[str, str] = field(default_factory=dict)     # benchmark -> tier
    gates: dict[str, dict] = field(default_factory=dict)    # gate -> {"ok", "detail"}
    correct: bool = False
    outcomes: list[Outcome] = field(default_factory=list, repr=False)  # by invoke time
    extra: dict[str, Any] = field(default_factory=dict, repr=False)    # before_stop's findings

    def to_json(self) -> dict:
        """Every field but the outcomes and extras, NaN as None."""
        return {f.name: None if isinstance(v, float) and math.isnan(v) else v
                for f in fields(self) if f.name not in ("outcomes", "extra")
                for v in (getattr(self, f.name),)}


# ----------------------------------------------------------------- grading


def tier(value: float, thresholds: tuple[float, float, float]) -> str:
    """CS3700's grade of one benchmark: <= bonus, <= passed, <= partial, else failed."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "failed"
    for name, limit in zip(TIERS[:3], thresholds, strict=True):
        if value <= limit:
            return name
    return "failed"


def grade(sc: Scenario, r: ScenarioResult) -> None:
    """Fill ``r.tiers``, ``r.gates`` and ``r.correct`` from the run's counts."""
    r.tiers = {b: tier(getattr(r, b), sc.benchmarks[b]) for b in BENCHMARKS
               if b in sc.benchmarks}
    gates: dict[str, tuple[bool, str]] = {}
    gates["linearizable"] = (r.linearizable, r.checker or "ok")
    gates["no unexpected replica death"] = (
        not r.unexpected_deaths, f"died: {r.unexpected_deaths}" if r.unexpected_deaths else "ok")
    gates["not a packet storm"] = (not r.aborted, r.aborted or "ok")
    gf, pf = sc.tests["maximum_get_fail_fraction"], sc.tests["maximum_put_fail_fraction"]
    gates["unanswered gets"] = (r.unanswered_gets <= gf * r.gets,
                                f"{r.unanswered_gets} <= {gf:g} x {r.gets}")
    gates["unanswered puts"] = (r.unanswered_puts <= pf * r.puts,
                                f"{r.unanswered_puts} <= {pf:g} x {r.puts}")
    floor = sc.requests * sc.replicas * (1 - sc.mix) * 0.5
    gates["minimum traffic"] = (r.total_msgs >= floor, f"{r.total_msgs} >= {floor:g}")
    for b in ("failures", "duplicates"):
        if b in r.tiers:
            gates[f"{b} tier"] = (r.tiers[b] in ("bonus", "passed"),
                                  f"{getattr(r, b)} -> {r.tiers[b]}")
    r.gates = {k: {"ok": ok, "detail": d} for k, (ok, d) in gates.items()}
    r.correct = all(ok for ok, _ in gates.values())


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

    def change_membership(self, kind: str, leader: Optional[int]) -> None:
        c = self.cluster
        try:
            if kind == "add_node":
                self.note(f"add_node: node {c.add_node()} joined as a voter")
                return
            if leader is None:
                self.note(f"{kind}: no leader (skipped)")
            elif kind == "remove_leader":
                c.remove_node(leader)
                self.note(f"remove_leader: removed node {leader}; members {c.ids}")
            else:
                others = [i for i in c.ids if i != leader and i in c.workers]
                if not others:
                    self.note("transfer_leader: no other live voter (skipped)")
                    return
                to = self.rng.choice(others)
                self.note(f"transfer_leader: {leader} -> {to} in {c.transfer_leader(to):.3f} s")
        except RaftmpError as e:   # (a change refused or slow under faults: the run goes on)
            self.note(f"{kind}: failed: {e}")

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
        if kind in ("add_node", "remove_leader", "transfer_leader"):
            self.change_membership(kind, leader)
            return
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
            majority = majority_of(len(c.ids))
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
                 before_stop: Optional[Callable[[Any, ScenarioResult], None]] = None,
                 cluster_kwargs: Optional[dict] = None,
                 progress: Optional[Callable[[str], None]] = None,
                 profile: str = "course") -> ScenarioResult:
    """Run one scenario on a fresh cluster with the Raft settings of ``profile``
    (a key of PROFILES); its result (counts, verdict, grades).

    ``before_stop(cluster, result)`` runs after the workload, with the cluster
    still up (tests use it for their end-of-run checks, kept in ``result.extra``)."""
    if not time_scale > 0:
        raise ConfigError(f"time_scale must be > 0, not {time_scale!r}")
    if profile not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    seed = pick_seed(seed if seed is not None else sc.seed)
    per_client = schedule(sc, random.Random(seed), time_scale)
    r = ScenarioResult(sc.name, seed, time_scale, sc.replicas, sc.requests, sc.mix,
                       sc.faults.drop, profile)
    kwargs = {**asdict(sc.faults), "seed": seed, **PROFILES[profile](sc.replicas),
              **(cluster_kwargs or {})}
    started = time.monotonic()
    with Cluster(sc.replicas, **kwargs) as cluster:
        _run_workload(sc, cluster, per_client, r, progress)
        if before_stop is not None:
            before_stop(cluster, r)
    r.wall = time.monotonic() - started
    r.outcomes.sort(key=lambda o: o.invoke)
    if history:
        with open(history, "w", encoding="utf-8") as f:
            for o in r.outcomes:
                f.write(json.dumps(o.record()) + "\n")
    _tally(sc, r)
    grade(sc, r)
    return r


def _run_workload(sc: Scenario, cluster: Cluster, per_client: list[list[_Op]],
                  r: ScenarioResult, progress: Optional[Callable[[str], None]]) -> None:
    """The clients' schedules and the events, on a running cluster; fills ``r``'s
    outcomes and the cluster's counts."""
    scale = r.time_scale
    t0 = time.monotonic()
    events = _Events(cluster, random.Random(r.seed ^ 0x5EED), t0)
    clients = [cluster.client() for _ in range(CLIENTS)]
    for cl in clients:
        _count_duplicates(cl.session, r.duplicates_by_status)
    op_timeout = clients[0].session.timing.op_timeout
    hard_end = t0 + max(sc.lifetime * scale, (sc.lifetime - sc.end_wait) * scale + op_timeout + 1)
    results: list[list] = [[] for _ in clients]
    stop = threading.Event()
    threads = [threading.Thread(target=_client_loop, name=f"scenario-client{k}",
                                args=(cl, per_client[k], t0, hard_end, stop, results[k]),
                                daemon=True)
               for k, cl in enumerate(clients)]
    for t in threads:
        t.start()
    try:
        leaders = _drive(sc, cluster, events, threads, hard_end, r, progress)
    finally:
        stop.set()
        for t in threads:
            t.join(10.0)
    for res in results:
        r.outcomes.extend(res)
    r.elapsed = time.monotonic() - t0
    r.duplicates = sum(cl.session.duplicates for cl in clients)
    r.late_answers = sum(cl.session.late for cl in clients)
    r.duplicates_by_status = dict(sorted(r.duplicates_by_status.items()))
    stats = cluster.stats()
    r.unexpected_deaths = sorted(set(cluster.ids) - set(cluster.alive()) - events.killed)
    r.events, r.t0 = events.log, t0
    r.leader_changes = len([x for x in leaders if x is not None]) - 1
    r.max_term = max((n.get("term", 0) for n in stats["nodes"]), default=0)
    total = stats["router"]["total"]
    ids = set(cluster.ids)    # CS3700 counts replica-to-replica packets only
    r.total_msgs = sum(c["packets"] for (src, dst), c in stats["router"]["links"].items()
                       if src in ids and dst in ids)
    r.client_msgs = total["packets"] - r.total_msgs
    r.messages = total["messages"]
    r.dropped, r.duplicated = total["dropped"], total["duplicated"]


def _drive(sc: Scenario, cluster: Cluster, events: _Events, threads: list[threading.Thread],
           hard_end: float, r: ScenarioResult,
           progress: Optional[Callable[[str], None]]) -> list[Optional[int]]:
    """Fire the events on time and watch the leader and the packet count until
    the clients are done (or a packet storm); the leaders seen, in order."""
    t0, scale = events.t0, r.time_scale
    pending = list(sc.events)
    leaders = [cluster.leader()]
    next_poll = 0.0
    while True:
        now = time.monotonic()
        while pending and t0 + pending[0].time * scale <= now:
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
                r.aborted = f"packet storm: {packets} router packets > max_packets {sc.max_packets}"
                events.note(r.aborted)
                return leaders
        busy = any(t.is_alive() for t in threads)
        if (now >= t0 + sc.lifetime * scale and not pending and not busy) or now >= hard_end + 2:
            return leaders
        time.sleep(0.01)


def _tally(sc: Scenario, r: ScenarioResult) -> None:
    """The counts, latencies and linearizability verdict of ``r.outcomes``."""
    outcomes = r.outcomes
    lat = sorted(o.complete - o.invoke for o in outcomes if o.outcome == DONE)
    gets = [o for o in outcomes if o.command.op == "get"]
    puts = [o for o in outcomes if o.command.op == "put"]
    r.submitted, r.ok = len(outcomes), len(lat)
    r.failed = sum(o.outcome == FAILED for o in outcomes)
    r.unknown = sum(o.outcome == UNKNOWN for o in outcomes)
    r.gets, r.puts = len(gets), len(puts)
    r.unanswered_gets = sum(o.outcome != DONE for o in gets)
    r.unanswered_puts = sum(o.outcome != DONE for o in puts)
    r.mean_latency = statistics.fmean(lat) if lat else math.nan
    r.median_latency = statistics.median(lat) if lat else math.nan
    # Operations never submitted (the run was cut short) count as unanswered too.
    r.failures = r.failed + r.unknown + (sc.requests - len(outcomes))
    verdict = check(load_history(json.dumps(o.record()) for o in outcomes), time_limit=30.0)
    r.linearizable = verdict.ok
    r.checker_verdict = verdict.verdict  # a search that gave up is undecided, never "NO"
    r.checker = "" if verdict.ok else f"{verdict.verdict}: {verdict.explanation}"


# ----------------------------------------------------------------- output


def _fmt_s(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.5f}"


def summary_rows(sc: Scenario, r: ScenarioResult) -> list[tuple]:
    def bench(name: str) -> tuple[str, str]:
        if name not in sc.benchmarks:
            return "", ""
        return r.tiers[name], " / ".join(f"{x:g}" for x in sc.benchmarks[name])

    return [
        ("total messages (replica packets)", r.total_msgs, *bench("total_msgs")),
        ("client packets", r.client_msgs, "", ""),
        ("messages (in packets)", r.messages, "", ""),
        ("requests submitted / answered", f"{r.submitted} / {r.ok}", "", ""),
        ("failures (failed + unknown)", f"{r.failures} ({r.failed} + {r.unknown})",
         *bench("failures")),
        ("duplicates (by reply status)",
         f"{r.duplicates} {r.duplicates_by_status or ''}".strip(), *bench("duplicates")),
        ("late answers (to given-up requests)", r.late_answers, "", ""),
        ("median latency (s)", _fmt_s(r.median_latency), *bench("median_latency")),
        ("mean latency (s)", _fmt_s(r.mean_latency), "", ""),
        ("unanswered gets / puts", f"{r.unanswered_gets}/{r.gets} / "
         f"{r.unanswered_puts}/{r.puts}", "", ""),
        ("packets dropped / duplicated", f"{r.dropped} / {r.duplicated}", "", ""),
        ("leader changes (max term)", f"{r.leader_changes} ({r.max_term})", "", ""),
        ("linearizable", SHORT_VERDICT[r.checker_verdict], "", ""),
    ]


def print_report(sc: Scenario, r: ScenarioResult) -> None:
    for line in r.events:
        print(f"  {line}")
    print(tabulate(summary_rows(sc, r), headers=(sc.name, "value", "tier", "bonus/passed/partial")))
    failed = [f"{k} ({g['detail']})" for k, g in r.gates.items() if not g["ok"]]
    if not r.linearizable:
        print(f"checker: {r.checker}")
    print(f"verdict: {'CORRECT' if r.correct else 'INCORRECT: ' + '; '.join(failed)}"
          f"  [{r.wall:.1f} s wall]")


def table_row(r: ScenarioResult) -> dict:
    t = r.tiers
    return {
        "scenario": r.name, "reqs": r.requests, "ok": r.ok, "fail": r.failures,
        "dup": r.duplicates, "msgs": r.total_msgs, "lost": r.dropped,
        "p50 ms": f"{r.median_latency * 1000:.1f}" if not math.isnan(r.median_latency)
        else "n/a",
        "leaders": r.leader_changes, "linear": SHORT_VERDICT[r.checker_verdict],
        "msgs tier": t.get("total_msgs", "-"), "fail tier": t.get("failures", "-"),
        "dup tier": t.get("duplicates", "-"), "lat tier": t.get("median_latency", "-"),
        "result": "ok" if r.correct else "FAIL",
    }


def main(argv: Optional[list[str]] = None) -> int:
    p = Parser(
        prog="python -m raftmp scenario",
        description="Run CS3700-format fault scenarios against a real raftmp cluster and grade "
                    "them. Exit 0 when every scenario is correct, 1 otherwise, 2 on bad input.")
    p.add_argument("files", nargs="*", help="scenario JSON files")
    p.add_argument("--all", action="store_true",
                   help=f"run every shipped scenario ({SCENARIO_DIR})")
    p.add_argument("--seed", type=integer(0), default=None, help="override the scenarios' seeds")
    p.add_argument("--time-scale", type=number(0, 100, above=True), default=1.0,
                   help="multiply every time (lifetime, waits, events) by this, in (0, 100] "
                        "(default 1)")
    p.add_argument("--profile", choices=tuple(PROFILES), default="course",
                   help="the cluster's Raft settings: 'course' (default: the CS3700 "
                        "profile, quiet, 0.5 s heartbeats) or 'default' (raftmp.Config())")
    p.add_argument("--json", dest="json_out", type=output_file, default=None,
                   help="write the results here")
    p.add_argument("--history-dir", type=output_dir, default=None,
                   help="write each scenario's history to DIR/NAME.jsonl")
    a = p.parse_args(argv)
    if not a.files and not a.all:
        p.error("give scenario files, or --all")
    paths = [Path(f) for f in a.files] + (shipped_scenarios() if a.all else [])
    scenarios = []
    for path in paths:
        try:
            scenarios.append(load_scenario(path))
        except ConfigError as e:
            return complain(e)
    if a.history_dir:
        os.makedirs(a.history_dir, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}; time scale {a.time_scale:g}; "
          f"profile {a.profile}", flush=True)
    results = []
    many = len(scenarios) > 1
    for sc in scenarios:
        seed = pick_seed(a.seed if a.seed is not None else sc.seed)
        print(f"\n== {sc.name}: {sc.replicas} replicas, {sc.requests} requests, mix {sc.mix:g}, "
              f"drops {sc.faults.drop:g}, lifetime {sc.lifetime:g} s x {a.time_scale:g}, "
              f"events {[(e.type, e.time) for e in sc.events]}, seed {seed}", flush=True)
        hist = os.path.join(a.history_dir, f"{sc.name}.jsonl") if a.history_dir else None
        r = run_scenario(sc, seed=seed, time_scale=a.time_scale, history=hist,
                         profile=a.profile)
        print_report(sc, r)
        sys.stdout.flush()
        results.append((sc, r))
    if many:
        print()
        print(tabulate([table_row(r) for _, r in results], headers="keys"))
    if a.json_out:
        out = [{**r.to_json(), "scenario": asdict(sc)} for sc, r in results]
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, default=str)
    bad = [r.name for _, r in results if not r.correct]
    if many:
        print(f"\n{len(results) - len(bad)}/{len(results)} scenarios correct"
              + (f"; incorrect: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
