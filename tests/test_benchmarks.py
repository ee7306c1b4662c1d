"""Smoke tests of the benchmark scripts: each runs with --quick as a subprocess.

They check that a script exits 0, prints its table and writes a JSON file with
the expected fields. No timing assertions: numbers depend on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def run_quick(script: str, tmp_path, *extra: str, timeout: float = 60.0) -> tuple[str, dict]:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, f"{script}.py"), "--quick", "--seed", "7",
         "--json", str(out), *extra],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "== " in proc.stdout and "|---" in proc.stdout, proc.stdout   # the table
    for word in ("cores", "python", "seed"):
        assert word in proc.stdout, proc.stdout
    assert "7" in proc.stdout
    with open(out) as f:
        data = json.load(f)
    meta = data["meta"]
    assert meta["seed"] == 7 and meta["quick"] is True
    assert {"cores", "python", "platform"} <= set(meta["machine"])
    return proc.stdout, data


def test_throughput_quick(tmp_path):
    _, data = run_quick("throughput", tmp_path, "--drops", "0,0.3")
    rows = data["rows"]
    assert [r["drop"] for r in rows] == [0.0, 0.3]
    for r in rows:
        assert {"ops/s", "p50 ms", "p99 ms", "p99.9 ms", "pkts/op", "msgs/op", "dropped",
                "elections", "unknown", "failed", "idle pkts/s"} <= set(r)
        assert r["idle pkts/s"] > 0                     # heartbeats, at least


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed (pip install 'raftmp[plot]')")
def test_throughput_plot(tmp_path):
    png = tmp_path / "tput.png"
    _, data = run_quick("throughput", tmp_path, "--drops", "0,0.3", "--read-mode", "lease",
                        "--plot", str(png))
    assert data["meta"]["read_mode"] == "lease"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_quick(tmp_path):
    stdout, data = run_quick("latency", tmp_path)
    assert "put p50 / router RTT p50" in stdout
    assert [r["nodes"] for r in data["results"]] == [3, 5]
    for r in data["results"]:
        for what in ("put", "get", "rtt"):
            assert {"p50", "p90", "p99", "n"} <= set(r[what])
        assert "put_p50_over_rtt_p50" in r


def test_failover_quick(tmp_path):
    _, data = run_quick("failover", tmp_path)
    assert {(r["drop"], r["mode"]) for r in data["rows"]} == \
        {(0.0, "kill"), (0.0, "restart"), (0.2, "kill"), (0.2, "restart")}
    for r in data["rows"]:
        assert {"trials", "first write p50 ms", "p99 ms", "max ms", "elected p50 ms",
                "no write", "unknown ops", "failed ops"} <= set(r)
    for t in data["trials"]:
        assert {"old_leader", "first_write_s", "elected_s", "answered_by"} <= set(t)


def test_membership_quick(tmp_path):
    _, data = run_quick("membership", tmp_path)
    (run,) = data["runs"]
    assert run["drop"] == 0.2 and run["linearizable"] is True and run["ops"] > 0
    assert {k: len(v) for k, v in run["times"].items()} == \
        {"grow": 2, "replace": 1, "remove leader": 1, "transfer": 3}
    assert len(run["gaps"]) == 3 and all(g > 0 for g in run["gaps"])


@pytest.mark.skipif(importlib.util.find_spec("pysyncobj") is None,
                    reason="pysyncobj is not installed (pip install 'raftmp[compare]')")
def test_compare_quick(tmp_path):
    stdout, data = run_quick("compare", tmp_path)
    assert "cannot drop packets" in stdout
    assert data["pysyncobj_available"] is True
    assert {r["system"] for r in data["runs"]} == {"raftmp", "pysyncobj", "pysyncobj-nobatch"}
    assert data["load"]
    for r in data["rows"]:
        assert {"metric", "raftmp", "pysyncobj", "pysyncobj-nobatch",
                "raftmp / best pysyncobj"} <= set(r)
    # CPU per 1,000 puts, from /proc: every system's processes were counted.
    cpu = next(r for r in data["rows"] if r["metric"].startswith("CPU s per 1,000 puts"))
    assert all(cpu[s] > 0 for s in ("raftmp", "pysyncobj", "pysyncobj-nobatch")), cpu


def test_help():
    for script in ("throughput", "latency", "failover", "compare", "endurance", "membership"):
        proc = subprocess.run([sys.executable, os.path.join(BENCH, f"{script}.py"), "--help"],
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        for opt in ("--seed", "--json", "--quick"):
            assert opt in proc.stdout


def test_checker_quick(tmp_path):
    _, data = run_quick("checker", tmp_path)
    assert {r["k"] for r in data["rows"]} == {8, 24}
    assert all(r["checker"] == "now" and r["verdict"] == "linearizable" for r in data["rows"])


def test_endurance_quick(tmp_path):
    stdout, data = run_quick("endurance", tmp_path, timeout=120.0)
    assert "restarts under load" in stdout
    assert data["rows"] and data["meta"]["compaction"] is True
    for r in data["rows"]:
        assert {"t s", "writes/s", "p99 ms", "max RSS MB", "max log entries", "max data MB",
                "min snapshot", "commit"} <= set(r)
    assert [e["event"].split()[0] for e in data["events"]] == ["follower", "follower", "leader"]
    for e in data["events"]:
        assert e["caught up s"] is not None, e      # every restarted node caught up
    assert data["summary"]["writes"] > 0


def test_nomajority_quick(tmp_path):
    _, data = run_quick("nomajority", tmp_path)
    [row] = data["rows"]
    assert row["pending"] == 20 and row["still pending"] == 20     # nobody could commit
    assert row["no-majority idle pkts/s"] > 0 and row["with writes pending pkts/s"] > 0


def test_resp_quick(tmp_path):
    """redis-benchmark against a serve cluster, or a skip line saying why not."""
    out = tmp_path / "resp.json"
    # serve's election timeouts (1-2 s): a shared machine's stalls do not change the
    # leader mid-run (redis-benchmark stops at the first error reply).
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "resp.py"), "--quick", "--seed",
                           "7", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    if data.get("skipped"):
        assert "redis-benchmark is not installed" in proc.stdout
        return
    assert "|---" in proc.stdout
    assert sorted((r["test"], r["-P"]) for r in data["rows"]) == \
        [("GET", 1), ("GET", 16), ("SET", 1), ("SET", 16)]
    assert all(r["requests/s"] > 0 for r in data["rows"])
