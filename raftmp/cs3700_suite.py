"""``python -m raftmp cs3700 [configs...]``: the CS3700 course simulator against this replica.

The simulator is not part of raftmp: it is found with ``--sim DIR`` (a folder
holding ``run`` and ``configs/``), else ``$RAFTMP_CS3700``, else
``../shared/cs3700`` from the current directory or from this checkout. It
launches the replica program once per replica; by default that is a small
wrapper around this raftmp and this Python (``--replica PATH`` picks another,
e.g. an installed ``raftmp-3700kvstore``).

With no config it runs the simulator's own ``all`` (17 tests, about 14
minutes) and prints its output as it goes (its colours only on a terminal,
and not with ``NO_COLOR`` set), ending in ``Passed N out of 17 tests``; with
configs (names such as ``crash-3``, or paths) it runs each one and ends with
a table of the simulator's figures and tiers. The exit status is 0 when
every test passed the simulator's correctness checks, 2 on bad input (a
config that is neither a file nor in the simulator's ``configs/``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import raftmp

from .cli import BAD_INPUT, Parser, complain

TIER_NAMES = {"Bonus!": "bonus", "Full credit": "full",
              "Partial credit, needs improvement": "partial", "No credit": "none"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PERF = re.compile(r"^(.+?): (\S+) (?:<|>=) \S+, (.+)$")


@dataclass
class Result:
    config: str
    passed: bool
    output: str
    stats: dict[str, str] = field(default_factory=dict)   # "Total messages sent" -> "2420"
    tiers: dict[str, str] = field(default_factory=dict)   # metric -> bonus/full/partial/none


def find_sim(explicit: Optional[str]) -> Optional[str]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(raftmp.__file__)))
    for d in (explicit, os.environ.get("RAFTMP_CS3700"),
              os.path.join("..", "shared", "cs3700"),
              os.path.join(here, "..", "shared", "cs3700")):
        if d and os.path.isfile(os.path.join(d, "run")):
            return os.path.abspath(d)
    return None


def replica_wrapper(workdir: str) -> str:
    """An executable that runs this raftmp's replica with this Python."""
    path = os.path.join(workdir, "3700kvstore")
    root = os.path.dirname(os.path.dirname(os.path.abspath(raftmp.__file__)))
    with open(path, "w") as f:
        f.write(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {root!r})\n"
                "from raftmp.cs3700 import main\nsys.exit(main())\n")
    os.chmod(path, 0o755)
    return path


def parse(config: str, output: str) -> Result:
    text = _ANSI.sub("", output)
    result = Result(config, "All correctness tests passed" in text, output)
    for line in text.splitlines():
        m = _PERF.match(line.strip())
        if m and m.group(3) in TIER_NAMES:
            result.tiers[m.group(1)] = TIER_NAMES[m.group(3)]
            continue
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(("[", "#", "*")):
            result.stats[key.strip()] = value.strip()
    return result


def simulator(sim: str, replica: str, target: list[str], workdir: str) -> subprocess.Popen:
    """The simulator (``run --silence --replica R TARGET``), output on a pipe. It
    runs in a session of its own, so that a Ctrl-C at the terminal reaches only
    this command, which then stops it with ``stop``."""
    return subprocess.Popen([sys.executable, os.path.join(sim, "run"), "--silence",
                             "--replica", replica, *target], cwd=workdir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Stop the simulator as a Ctrl-C would (it then kills its replicas at exit), or
    with SIGKILL after 10 s; its output is dropped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def run_config(sim: str, config: str, workdir: str, replica: Optional[str] = None,
               timeout: float = 180.0) -> Result:
    """One config through the simulator, silenced replicas."""
    proc = simulator(sim, replica or replica_wrapper(workdir), [config], workdir)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        stop(proc)
    return parse(config, output)


def config_path(sim: str, name: str) -> Optional[str]:
    """A config given as a file, or as a name in the simulator's ``configs/``."""
    for path in (name, os.path.join(sim, "configs", f"{name}.json")):
        if os.path.isfile(path):
            return os.path.abspath(path)
    return None


def main(argv: Optional[list[str]] = None) -> int:
    p = Parser(prog="python -m raftmp cs3700", description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="*",
                   help="config names (simple-1, crash-3, ...) or files; none: the whole suite")
    p.add_argument("--sim", default=None, help="the simulator's folder (holds run, configs/)")
    p.add_argument("--replica", default=None, help="replica program (default: this raftmp)")
    a = p.parse_args(argv)
    if a.sim is not None and not os.path.isfile(os.path.join(a.sim, "run")):
        p.error(f"argument --sim: {a.sim!r} holds no simulator (no file {a.sim}/run)")
    sim = find_sim(a.sim)
    if sim is None:
        p.error("no CS3700 simulator found: give --sim DIR (a folder with run and configs/), "
                "or set RAFTMP_CS3700 (see README, 'The CS3700 simulator')")
    if a.replica is not None and not (os.path.isfile(a.replica)
                                      and os.access(a.replica, os.X_OK)):
        p.error(f"argument --replica: {a.replica!r} is not an executable file")
    paths = [config_path(sim, c) for c in a.configs]
    for c, path in zip(a.configs, paths, strict=True):
        if path is None:
            names = sorted(f[:-5] for f in os.listdir(os.path.join(sim, "configs"))
                           if f.endswith(".json"))
            complain(f"no such test or config {c!r}: not a file, nor one of "
                     f"{sim}/configs: {', '.join(names)}")
            return BAD_INPUT
    with tempfile.TemporaryDirectory(prefix="raftmp-cs3700-") as work:
        replica = os.path.abspath(a.replica) if a.replica else replica_wrapper(work)
        print(f"simulator {sim}, replica {replica}", flush=True)
        if not a.configs:
            proc = simulator(sim, replica, ["-c", os.path.join(sim, "configs") + os.sep, "all"],
                             work)
            assert proc.stdout is not None
            summary = ""
            colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
            try:
                for line in proc.stdout:
                    print(line if colour else _ANSI.sub("", line), end="", flush=True)
                    if line.startswith("Passed "):
                        summary = line
            finally:
                stop(proc)
            m = re.match(r"Passed (\d+) out of (\d+)", summary)
            return 0 if m and m.group(1) == m.group(2) else 1
        results = []
        for path in paths:
            r = run_config(sim, path, work, replica)
            print(f"{os.path.basename(path)}: {'PASS' if r.passed else 'FAIL'}", flush=True)
            if not r.passed:
                print(_ANSI.sub("", r.output))
            results.append(r)
    from tabulate import tabulate
    rows = [(os.path.basename(r.config), "PASS" if r.passed else "FAIL",
             r.stats.get("Total messages sent", "?"),
             r.stats.get("Total get()/put() failures", "?"),
             r.stats.get("Total unanswered get()/put() requests", "?"),
             r.stats.get("Total duplicate responses", "?"),
             r.stats.get("Mean/Median query latency", "?").split("/")[-1],
             " ".join(r.tiers.values())) for r in results]
    print(tabulate(rows, headers=("config", "result", "messages", "failed get/put",
                                  "unanswered get/put", "duplicates", "median latency",
                                  "tiers (msgs fail dup lat)")))
    return 0 if all(r.passed for r in results) else 1
