"""``python -m raftmp scenario``: config validation, grading, a short real run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from raftmp import scenario, scenario_file
from raftmp.checker import check, load_history
from raftmp.core.errors import ConfigError
from raftmp.core.session import DONE
from raftmp.scenario import tier
from raftmp.scenario_file import parse_scenario, shipped_scenarios

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

MATRIX = ["simple-1", "simple-2", "unreliable-1", "unreliable-2", "unreliable-3",
          "crash-1", "crash-2", "crash-3", "crash-4",
          "partition-1", "partition-2", "partition-3", "partition-4",
          "advanced-1", "advanced-2", "advanced-3", "advanced-4"]

BASE = {"lifetime": 30, "replicas": 5, "requests": 100}


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "raftmp", "scenario", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------- validation


@pytest.mark.parametrize("patch, words", [
    ({"lifetime": None}, ["missing", "lifetime"]),
    ({"replicas": None}, ["missing", "replicas"]),
    ({"requests": None}, ["missing", "requests"]),
    ({"bogus": 1}, ["unknown key", "bogus"]),
    ({"lifetime": "30"}, ["lifetime", "number"]),
    ({"lifetime": 2}, ["lifetime", "[5"]),
    ({"replicas": 5.0}, ["replicas", "integer"]),
    ({"replicas": 2}, ["replicas"]),
    ({"replicas": True}, ["replicas", "integer"]),
    ({"requests": -1}, ["requests"]),
    ({"mix": 1.5}, ["mix"]),
    ({"drops": 1.0}, ["drops"]),
    ({"wait": 1, "start_wait": 1}, ["wait", "not both"]),
    ({"start_wait": 20, "end_wait": 20}, ["start_wait + end_wait"]),
    ({"delay": [0.1, 0.0]}, ["delay"]),
    ({"delay": 0.1}, ["delay"]),
    ({"max_packets": 0}, ["max_packets"]),
    ({"events": {"type": "part_end"}}, ["events", "list"]),
    ({"events": [{"type": "nuke", "time": 3}]}, ["unknown event type", "nuke"]),
    ({"events": [{"type": "part_end"}]}, ["events[0]", "time"]),
    ({"events": [{"type": "part_end", "time": 99}]}, ["events[0]", "time"]),
    ({"events": [{"type": "part_end", "time": 5, "when": 1}]}, ["events[0]", "when"]),
    ({"events": [{"type": "kill_leader", "time": 5, "node": 1}]}, ["only a 'restart'"]),
    ({"events": [{"type": "restart", "time": 5, "node": 9}]}, ["node"]),
    ({"tests": {"benchmarks": {"speed": [1, 2, 3]}}}, ["unknown benchmark", "speed"]),
    ({"tests": {"benchmarks": {"failures": [1, 2]}}}, ["failures", "three numbers"]),
    ({"tests": {"benchmarks": {"failures": [3, 2, 1]}}}, ["failures", "non-decreasing"]),
    ({"tests": {"maximum_get_fail_fraction": 2}}, ["maximum_get_fail_fraction"]),
    ({"tests": {"nope": 0.1}}, ["tests", "nope"]),
])
def test_bad_configs_are_refused_with_a_message(patch, words):
    data = dict(BASE)
    for k, v in patch.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    with pytest.raises(ConfigError) as e:
        parse_scenario(data, "bad")
    msg = str(e.value)
    assert msg.startswith("bad: ")
    for w in words:
        assert w in msg, (w, msg)


def test_not_an_object():
    with pytest.raises(ConfigError, match="JSON object"):
        parse_scenario([1, 2], "x")


def test_defaults_and_old_wait_name():
    sc = parse_scenario({**BASE, "wait": 3.5, "events": [
        {"type": "part_end", "time": 9}, {"type": "part_easy", "time": 4},
        {"type": "restart", "time": 12, "node": 2}]}, "x")
    assert (sc.mix, sc.start_wait, sc.end_wait, sc.faults.drop, sc.max_packets) == (0.8, 3.5, 2.0,
                                                                            0.0, 20000)
    assert [(e.type, e.time, e.node) for e in sc.events] == [
        ("part_easy", 4.0, None), ("part_end", 9.0, None), ("restart", 12.0, 2)]


def test_cli_exit_2_names_the_problem(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text(json.dumps({**BASE, "events": [{"type": "kill_everyone", "time": 1}]}))
    r = run_cli(str(f))
    assert r.returncode == 2
    assert "broken" in r.stderr and "kill_everyone" in r.stderr
    g = tmp_path / "notjson.json"
    g.write_text("{lifetime: 30")
    r = run_cli(str(g))
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = run_cli(str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = run_cli()
    assert r.returncode == 2


def test_every_shipped_scenario_parses():
    files = shipped_scenarios()
    names = [p.stem for p in files]
    for m in MATRIX:
        assert m in names
    assert names[:len(MATRIX)] == MATRIX   # the CS3700 matrix order
    assert len(files) > len(MATRIX)       # plus raftmp's additions
    for p in files:
        sc = scenario_file.load_scenario(p)
        assert sc.lifetime == 30
        assert set(sc.benchmarks) == set(scenario_file.BENCHMARKS), p
        if sc.name in MATRIX:
            assert sc.replicas == 5


def test_matrix_values_match_cs3700():
    def load(n: str) -> scenario_file.Scenario:
        return scenario_file.load_scenario(scenario_file.SCENARIO_DIR / f"{n}.json")

    s = load("simple-1")
    assert (s.mix, s.requests, s.faults.drop, s.events) == (0.8, 500, 0.0, [])
    assert s.benchmarks["median_latency"] == (0.0004, 0.002, 0.05)
    a = load("advanced-3")
    assert (a.faults.drop, a.end_wait, a.requests) == (0.3, 10.0, 200)
    assert [(e.type, e.time) for e in a.events] == [("kill_leader", 5.0)]
    p = load("partition-4")
    assert [e.type for e in p.events] == ["part_hard", "part_end"] * 2
    assert p.benchmarks["failures"] == (0, 20, 60)


def test_tiers():
    t = (0, 2, 5)
    assert [tier(v, t) for v in (0, 1, 2, 5, 6)] == ["bonus", "passed", "passed", "partial",
                                                     "failed"]
    assert tier(float("nan"), t) == "failed"


# ------------------------------------------------------------- real runs


def _short(tmp_path: Path, **extra) -> Path:
    data = {"lifetime": 30, "replicas": 5, "requests": 120, "mix": 0.5, "drops": 0.05,
            "start_wait": 2, "end_wait": 2,
            "events": [{"type": "kill_leader", "time": 10}, {"type": "restart", "time": 16},
                       {"type": "part_hard", "time": 20}, {"type": "part_end", "time": 24}],
            "tests": {"benchmarks": {"total_msgs": [100, 100000, 200000],
                                     "failures": [0, 10, 50], "duplicates": [0, 60, 120],
                                     "median_latency": [0.001, 0.05, 0.5]}}}
    data.update(extra)
    f = tmp_path / "short.json"
    f.write_text(json.dumps(data))
    return f


def test_short_scenario_end_to_end(tmp_path):
    f = _short(tmp_path)
    out = tmp_path / "out.json"
    hist = tmp_path / "hist"
    r = run_cli(str(f), "--time-scale", "0.15", "--profile", "default", "--seed", "7",
                "--json", str(out),
                "--history-dir", str(hist))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "seed 7" in r.stdout
    for row in ("total messages (replica packets)", "client packets", "failures", "duplicates",
                "median latency", "leader changes", "linearizable", "verdict: CORRECT"):
        assert row in r.stdout, row
    assert "kill_leader: killed node" in r.stdout and "restart: restarted" in r.stdout
    (res,) = json.loads(out.read_text())
    assert res["correct"] and res["linearizable"] and res["seed"] == 7
    # The summary agrees with the recorded history.
    ops = load_history(hist / "short.jsonl")
    assert len(ops) == res["submitted"] == 120
    assert sum(o.outcome == "ok" for o in ops) == res["ok"]
    assert sum(o.outcome != "ok" for o in ops) == res["failures"]
    assert sum(o.op == "get" for o in ops) == res["gets"]
    assert sum(o.op == "put" for o in ops) == res["puts"]
    assert res["gets"] + res["puts"] == 120
    assert sum(o.op == "get" and o.outcome != "ok" for o in ops) == res["unanswered_gets"]
    lat = sorted(o.complete - o.invoke for o in ops if o.outcome == "ok")
    assert math.isclose(res["median_latency"], (lat[(len(lat) - 1) // 2] + lat[len(lat) // 2]) / 2)
    puts = [o.value for o in ops if o.op == "put"]
    assert len(set(puts)) == len(puts)   # unique values: the history is checkable
    assert check(ops).ok
    assert res["leader_changes"] >= 1
    # total_msgs counts replica-to-replica packets only (as CS3700 does); client
    # packets are counted beside it; every packet carries at least one message.
    assert res["total_msgs"] >= res["ok"] and res["client_msgs"] >= res["ok"]
    assert res["messages"] >= res["total_msgs"] + res["client_msgs"]
    assert set(res["tiers"]) == set(scenario_file.BENCHMARKS)


def test_run_counts_are_consistent_in_process(tmp_path):
    sc = scenario_file.load_scenario(_short(tmp_path, requests=80, drops=0.0, events=[
        {"type": "kill_non_leader", "time": 8}, {"type": "part_easy", "time": 12},
        {"type": "part_end", "time": 16}]))
    seen = {}

    def before_stop(cluster, r):
        seen["alive"] = cluster.alive()

    r = scenario.run_scenario(sc, seed=3, time_scale=0.1, before_stop=before_stop,
                              profile="default")
    assert len(seen["alive"]) == 4
    outcomes = r.outcomes
    assert r.submitted == len(outcomes) == 80
    assert r.ok + r.failed + r.unknown == 80
    assert r.failures == r.failed + r.unknown
    assert r.linearizable and r.correct, r.gates
    assert r.unexpected_deaths == []


def test_gates_catch_a_packet_storm(tmp_path):
    f = _short(tmp_path, max_packets=200, events=[])
    r = run_cli(str(f), "--time-scale", "0.15", "--profile", "default", "--seed", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "packet storm" in r.stdout and "INCORRECT" in r.stdout


# ------------------------------------------------- at the quorum's edge (issue 19)

EDGE = sorted((ROOT / "raftmp" / "scenarios" / "edge").glob("*.json"))


@pytest.mark.parametrize("path", EDGE, ids=lambda p: p.stem)
def test_edge_scenarios_leave_exactly_a_majority(path):
    """Each configuration of the class: 5 or 7 replicas, 0-30% drops, and its
    kills or partitions leave exactly a majority able to commit, never less."""
    sc = scenario_file.load_scenario(path)
    n, majority = sc.replicas, sc.replicas // 2 + 1
    assert n in (5, 7) and 0 <= sc.faults.drop <= 0.3
    alive, least = n, n
    for ev in sc.events:
        if ev.type.startswith("kill"):
            alive -= 1
        if ev.type.startswith("part"):
            assert alive == n, "a partition after a kill could leave less than a majority"
            least = min(least, majority)
        least = min(least, alive)
    assert least == majority
    # The failures benchmark "passed" is 10% of the requests: >= 90% answered.
    assert sc.benchmarks["failures"][1] <= sc.requests // 10


def test_a_short_edge_scenario_keeps_committing_with_the_course_profile(tmp_path):
    """kill-5-30 shortened: 5 replicas, 30% drops, two leaders killed (3 of 5
    left), on the course profile, end to end. Asserted: after each kill the
    clients are answered again (some operation invoked after it completes)
    and the history is linearizable. (The search stuck at a dead node is
    test_session's test_the_search_leaves_a_dead_node_while_operations_keep_timing_out.)
    Not a share of answers: with 2-3 s election timeouts and 30% loss a
    failover takes a random 2.5-6 s here (an election that needs every
    survivor's vote, then a first commit that needs every survivor's
    acknowledgement), so two of them in an 8 s window left 48-100% answered
    in 20 runs; the issue's >= 90% is measured over 10 full runs of each
    edge configuration (README, the issue's note)."""
    data = json.loads((ROOT / "raftmp" / "scenarios" / "edge" / "kill-5-30.json").read_text())
    data.update(lifetime=11, requests=120, end_wait=2,
                events=[{"type": "kill_leader", "time": 3}, {"type": "kill_leader", "time": 6}])
    sc = scenario_file.parse_scenario(data, "kill-5-30-short")
    r = scenario.run_scenario(sc, seed=5, profile="course")
    kills = [float(e.split("s")[0]) for e in r.events if "kill_leader: killed node" in e]
    assert len(kills) == 2, r.events
    for at in kills:
        after = [o for o in r.outcomes if o.invoke - r.t0 > at]
        assert any(o.outcome == DONE for o in after), \
            f"nothing invoked after the kill at {at} s was answered: {r.events}"
    assert r.linearizable and not r.unexpected_deaths, r.gates


def test_membership_events_grow_move_and_remove_the_leader(tmp_path):
    """add_node, transfer_leader and remove_leader (raftmp's own events) run
    inside a workload that stays linearizable; the launcher follows."""
    sc = scenario_file.load_scenario(_short(tmp_path, requests=80, drops=0.0, events=[
        {"type": "add_node", "time": 6}, {"type": "transfer_leader", "time": 10},
        {"type": "remove_leader", "time": 14}]))
    seen = {}

    def before_stop(cluster, r):
        seen["ids"], seen["alive"] = list(cluster.ids), cluster.alive()

    r = scenario.run_scenario(sc, seed=5, time_scale=0.1, before_stop=before_stop,
                              profile="default")
    assert any("add_node: node 5 joined as a voter" in e for e in r.events), r.events
    assert any("transfer_leader: " in e and " -> " in e for e in r.events), r.events
    assert any("remove_leader: removed node" in e for e in r.events), r.events
    assert len(seen["ids"]) == 5 and seen["alive"] == seen["ids"]
    assert r.linearizable and r.correct, r.gates
    assert r.unexpected_deaths == []
