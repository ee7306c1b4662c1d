"""Every command, given each kind of careless input, answers as a command should
(issue 23): exactly one line on stderr, no traceback, exit 2 for bad input and
130 (with ``interrupted``) for Ctrl-C, and nothing left behind: no process of
its session, no process naming its temporary folder, no /dev/shm folder.

One table, ``BAD`` (bad values and bad files) and ``CTRL_C`` (a command
interrupted once it is at work), run as real subprocesses. Each row's
expected line is a pattern; the note of issue 23 copies what they print.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import wait_until

from raftmp import identity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM = os.path.join(ROOT, "..", "shared", "cs3700")
for _d in (os.environ.get("RAFTMP_CS3700"), SIM, os.path.join(ROOT, "..", "..", "shared",
                                                            "cs3700")):
    if _d and os.path.isfile(os.path.join(_d, "run")):
        SIM = os.path.abspath(_d)
HAVE_SIM = os.path.isfile(os.path.join(SIM, "run"))
SCENARIO = os.path.join(ROOT, "raftmp", "scenarios", "simple-1.json")

RANGE_NODES = r"must be an integer in \[1, 99\]"
# (id, argv, exit status, the one stderr line: a regex searched in it)
BAD = [
    # the main job
    ("main-nodes-0", ["--nodes", "0"], 2, rf"argument --nodes: {RANGE_NODES}, not '0'"),
    ("main-drop-1.5", ["--drop", "1.5"], 2, r"--drop: must be a number in \[0, 1\), not '1.5'"),
    ("main-drop-nan", ["--drop", "nan"], 2, r"--drop: must be a number in \[0, 1\)"),
    ("main-keys-0", ["--keys", "0"], 2, r"--keys: must be an integer >= 1, not '0'"),
    ("main-reads-5", ["--reads", "5"], 2, r"--reads: must be a number in \[0, 1\], not '5'"),
    ("main-reads--1", ["--reads", "-1"], 2, r"--reads: must be a number in \[0, 1\]"),
    ("main-duration-0", ["--duration", "0"], 2, r"--duration: must be a number > 0"),
    ("main-concurrency-x", ["--concurrency", "x"], 2, r"--concurrency: must be an integer >= 1"),
    ("main-history-nodir", ["--history", "nodir/h.jsonl"], 2,
     r"--history: 'nodir/h.jsonl' cannot be written \(no folder .*nodir\)"),
    ("main-history-folder", ["--history", "."], 2, r"--history: '\.' is a folder"),
    ("main-history-empty", ["--history", ""], 2, r"--history: must name a file, not ''"),
    ("main-unknown", ["--frobnicate"], 2, r"unrecognized arguments: --frobnicate"),
    # run
    ("run-nodes--3", ["run", "--nodes", "-3"], 2, rf"--nodes: {RANGE_NODES}, not '-3'"),
    ("run-nodes-0", ["run", "--nodes", "0"], 2, rf"--nodes: {RANGE_NODES}"),
    ("run-drop-1.5", ["run", "--drop", "1.5"], 2, r"--drop: must be a number in \[0, 1\)"),
    ("run-seed-x", ["run", "--seed", "x"], 2, r"--seed: must be an integer >= 0, not 'x'"),
    ("run-data-dir-file", ["run", "--data-dir", "/etc/passwd"], 2,
     r"--data-dir: '/etc/passwd' exists and is not a folder"),
    ("run-data-dir-empty", ["run", "--data-dir", ""], 2, r"--data-dir: must name a folder"),
    ("run-data-dir-unwritable", ["run", "--data-dir", "/proc/raftmp"], 2,
     r"^error: /proc/raftmp: No such file or directory$"),
    ("run-other-nodes", ["run", "--nodes", "3", "--data-dir", "five"], 2,
     r"^error: five holds a cluster of 5 nodes \(0-4\), not 3 nodes \(0-2\): start it with its "
     r"5 nodes \(--nodes 5\), or use a fresh data directory"),
    # sim
    ("sim-seeds-0", ["sim", "--seeds", "0"], 2, r"--seeds: must be an integer >= 1, not '0'"),
    ("sim-ops--3", ["sim", "--ops", "-3"], 2, r"--ops: must be an integer >= 0, not '-3'"),
    ("sim-jobs-0", ["sim", "--jobs", "0"], 2, r"--jobs: must be an integer in \[1, 256\]"),
    ("sim-drop-1.5", ["sim", "--drop", "1.5"], 2, r"--drop: must be a number in \[0, 1\)"),
    ("sim-faults", ["sim", "--faults", "bogus"], 2, r"unknown faults \['bogus'\]; choose from"),
    ("sim-read-mode", ["sim", "--read-mode", "x"], 2, r"--read-mode: invalid choice: 'x'"),
    # scenario
    ("scenario-nothing", ["scenario"], 2, r"give scenario files, or --all"),
    ("scenario-missing", ["scenario", "nosuch.json"], 2,
     r"^error: nosuch.json: cannot read: No such file"),
    ("scenario-not-utf8", ["scenario", "latin1.jsonl"], 2,
     r"^error: latin1.jsonl: not UTF-8 text \(byte 0xff"),
    ("scenario-truncated", ["scenario", "truncated.jsonl"], 2,
     r"^error: truncated.jsonl: not valid JSON \(Unterminated string starting at line 1"),
    ("scenario-time-scale-0", ["scenario", SCENARIO, "--time-scale", "0"], 2,
     r"--time-scale: must be a number in \(0, 100\], not '0'"),
    ("scenario-json-nodir", ["scenario", SCENARIO, "--json", "nodir/r.json"], 2,
     r"--json: 'nodir/r.json' cannot be written"),
    ("scenario-history-dir-file", ["scenario", SCENARIO, "--history-dir", "/etc/passwd"], 2,
     r"--history-dir: '/etc/passwd' exists and is not a folder"),
    # check
    ("check-not-utf8", ["check", "latin1.jsonl"], 2,
     r"^error: latin1.jsonl: line 1: not UTF-8 text \(byte 0xff at column 37\)$"),
    ("check-truncated", ["check", "truncated.jsonl"], 2,
     r"^error: truncated.jsonl: line 1: not valid JSON \(Unterminated string starting at "
     r"column 35\)$"),
    ("check-missing", ["check", "nosuch.jsonl"], 2, r"^error: cannot read nosuch.jsonl: No such"),
    ("check-folder", ["check", "."], 2, r"^error: cannot read \.: Is a directory"),
    ("check-max-states", ["check", "h.jsonl", "--max-states", "-1"], 2,
     r"--max-states: must be an integer >= 0"),
    ("check-time-limit", ["check", "h.jsonl", "--time-limit", "0"], 2,
     r"--time-limit: must be a number > 0"),
    ("check-nothing", ["check"], 2, r"the following arguments are required: history"),
    # cs3700
    ("cs3700-no-such-config", ["cs3700", "nosuch-9"], 2,
     r"^error: no such test or config 'nosuch-9': not a file, nor one of .*configs: advanced-1"),
    ("cs3700-sim-folder", ["cs3700", "--sim", ".", "simple-1"], 2,
     r"--sim: '\.' holds no simulator \(no file \./run\)"),
    ("cs3700-replica", ["cs3700", "--replica", "/etc/passwd", "simple-1"], 2,
     r"--replica: '/etc/passwd' is not an executable file"),
    # the course replica (what the simulator starts)
    ("replica-port", ["raftmp-3700kvstore", "70000", "0001", "0002"], 2,
     r"^raftmp-3700kvstore: error: argument port: must be an integer in \[1, 65535\]"),
    ("replica-ids", ["raftmp-3700kvstore", "5000", "0001", "0001"], 2,
     r"ids must be distinct 4-hex-digit addresses other than FFFF"),
]

# (id, argv, a stdout line that says the command is at work (None: it waits
# reading stdin), processes of its session by then, a line the interrupted
# command still prints)
CTRL_C = [
    ("main", ["--nodes", "3", "--duration", "60"], r"workload for 60 s", 4,
     r"linearizable\s+not checked \(interrupted\)"),
    ("run", ["run", "--nodes", "3"], r"^leader: node \d", 4, None),
    ("sim", ["sim", "--seeds", "5000", "--jobs", "2"], r"^raftmp sim: 5000 seeds", 3, None),
    ("scenario", ["scenario", SCENARIO], r"^== simple-1", 7, None),
    ("cs3700", ["cs3700", "simple-1"], r"^simulator ", 3, None),
    ("check", ["check", "/dev/stdin"], None, 1, None),     # at work: reading the history
]


def files(tmp_path) -> None:
    (tmp_path / "latin1.jsonl").write_bytes(b'{"client": 1, "op": "put", "key": "k\xff"}\n')
    (tmp_path / "truncated.jsonl").write_text('{"client": 1, "op": "put", "key": "k')
    (tmp_path / "h.jsonl").write_text("")
    identity.init_cluster(str(tmp_path / "five"), list(range(5)))


def env(tmp_path) -> dict:
    e = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=str(tmp_path), NO_COLOR="1")
    if HAVE_SIM:
        e["RAFTMP_CS3700"] = SIM
    return e


def start(argv, tmp_path) -> subprocess.Popen:
    """The command in a session of its own (its process group is its pid)."""
    module = "raftmp.cs3700" if argv[:1] == ["raftmp-3700kvstore"] else "raftmp"
    argv = argv[1:] if module == "raftmp.cs3700" else argv
    return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=tmp_path,
                            env=env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def processes_of(session: int, tmp_path) -> list[str]:
    """Live processes in ``session``, or naming ``tmp_path`` (the simulator and its
    replicas, which run in sessions of their own)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(stat[:-4] + "cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] not in "ZX" and (int(fields[3]) == session or str(tmp_path) in cmd):
            found.append(f"{stat.split('/')[2]} {cmd[:120]}")
    return found


def wchan(pid: int) -> str:
    """Where in the kernel process ``pid`` waits (``pipe_read``: reading a pipe)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def shm_folders() -> set[str]:
    """A Cluster's runtime folders (``mkdtemp(prefix="raftmp-")``: 8 characters after;
    the course replicas' ``raftmp-3700-ID-...``, which other tests make, are longer)."""
    return set(glob.glob("/dev/shm/raftmp-" + "?" * 8))


def bound_sockets() -> str:
    with open("/proc/net/unix") as f:
        return f.read()


def left_in_shm(before: set[str], since: float) -> list[str]:
    """Folders made in /dev/shm since ``since`` and still there, with no socket bound
    in them (another test's live cluster has its router's)."""
    sockets = bound_sockets()
    left = []
    for d in shm_folders() - before:
        try:
            if os.stat(d).st_ctime >= since - 1 and f"{d}/" not in sockets:
                left.append(d)
        except FileNotFoundError:
            pass
    return left


def assert_clean_end(proc, out: str, err: str, status: int, tmp_path, before, since) -> None:
    lines = err.splitlines()
    assert proc.returncode == status, f"exit {proc.returncode}, not {status}:\n{out}\n{err}"
    assert len(lines) == 1, f"stderr must be one line, not {len(lines)}:\n{err}"
    assert "Traceback" not in err + out, f"{out}\n{err}"
    wait_until(lambda: not processes_of(proc.pid, tmp_path), 10,
               f"the command's processes to end: {processes_of(proc.pid, tmp_path)}")
    wait_until(lambda: not left_in_shm(before, since), 5,
               f"no /dev/shm folder left: {left_in_shm(before, since)}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv, status, line", [row[1:] for row in BAD],
                         ids=[row[0] for row in BAD])
def test_bad_input_is_one_line(argv, status, line, tmp_path):
    if argv[0] == "cs3700" and not HAVE_SIM:
        pytest.skip("the CS3700 simulator (../shared/cs3700) is not here")
    files(tmp_path)
    before, since = shm_folders(), time.time()
    proc = start(argv, tmp_path)
    out, err = proc.communicate(timeout=45)
    assert_clean_end(proc, out, err, status, tmp_path, before, since)
    assert re.search(line, err.strip()), f"stderr {err.strip()!r} does not match {line!r}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("argv, ready, busy, still", [row[1:] for row in CTRL_C],
                         ids=[row[0] for row in CTRL_C])
def test_ctrl_c_is_one_line(argv, ready, busy, still, tmp_path):
    """SIGINT to the command's process group, as a terminal's Ctrl-C, once it is at work."""
    if argv[0] == "cs3700" and not HAVE_SIM:
        pytest.skip("the CS3700 simulator (../shared/cs3700) is not here")
    before, since = shm_folders(), time.time()
    proc = start(argv, tmp_path)
    try:
        seen = []
        for line in proc.stdout if ready else ():   # bounded by the test's timeout
            seen.append(line)
            if re.search(ready, line):
                break
        else:
            if ready:
                pytest.fail(f"the command ended before it was at work:\n{''.join(seen)}"
                            f"{proc.stderr.read()}")
            try:
                wait_until(lambda: "pipe_read" in wchan(proc.pid), 10, "a read of its stdin")
            except AssertionError:
                pytest.skip(f"/proc/PID/wchan never said pipe_read ({wchan(proc.pid)!r}): "
                            "this kernel may hide it")
        wait_until(lambda: len(processes_of(proc.pid, tmp_path)) >= busy, 30,
                   f"{busy} processes at work")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:      # failed: the launcher first (its router then cleans up)
            proc.kill()
            proc.communicate()
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not processes_of(proc.pid, tmp_path), 5, "its children")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    out = "".join(seen) + out
    assert_clean_end(proc, out, err, 130, tmp_path, before, since)
    assert err == "interrupted\n", err
    if still:
        assert re.search(still, out, re.M), f"{still!r} not in what it printed:\n{out}"
