"""Shared helpers for the benchmark scripts: arguments, machine info, JSON, tables, children.

Every benchmark generates client load from separate *processes* forked with
``multiprocessing.get_context("fork")``. A child builds its own
``raftmp.Client`` after the fork and sends its results back over a ``Pipe``
(never a ``multiprocessing.Queue``, whose feeder thread we do not want).
Every child is stopped by whoever started it: ``Children`` joins each one
with a bound and kills it on timeout, in a ``finally`` (so also on Ctrl-C).
Children ignore SIGINT (Ctrl-C is the launcher's to handle) and get SIGKILL
if the launcher dies (``raftmp.worker.die_with_parent``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Optional

from tabulate import tabulate

from raftmp.seeds import pick_seed  # noqa: F401  (every benchmark's seed)

CTX = multiprocessing.get_context("fork")
_T0 = time.monotonic()


# ----------------------------------------------------------------- arguments

def base_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark has: --seed, --json, --quick."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=None,
                   help="seed for clusters and workloads (default: random, printed)")
    p.add_argument("--json", metavar="FILE", default=None, help="write raw results to FILE")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of a few seconds (overrides sizes and durations)")
    return p


def floats(text: str) -> list[float]:
    """argparse type: a comma-separated list of floats."""
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    """argparse type: a comma-separated list of ints."""
    return [int(x) for x in text.split(",") if x.strip()]


# ------------------------------------------------------------ output helpers

def progress(msg: str) -> None:
    """One progress line on stderr, stamped with seconds since start."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def machine_info() -> dict:
    """Cores, Python, platform and load average: printed beside every table."""
    try:
        load = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "loadavg_at_start": load,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 <= q <= 1) of an already sorted list; nan if empty."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def _clean(x: Any) -> Any:
    """JSON-safe: nan/inf become None, tuples lists, dict keys strings."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(path: Optional[str], data: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(_clean(data), f, indent=2, sort_keys=True)
            f.write("\n")
        progress(f"raw results written to {path}")


def fmt(x: Any) -> Any:
    """A float for a table: 3 significant digits below 100, one decimal above."""
    if isinstance(x, float):
        if not math.isfinite(x):
            return "-"
        return float(f"{x:.3g}") if abs(x) < 100 else round(x, 1)
    return x


def print_table(title: str, rows: list[dict], meta: dict, notes: Iterable[str] = ()) -> None:
    """The final report: title, machine/seed/parameters, the table, then notes."""
    print(f"\n== {title} ==")
    print(tabulate([[k, json.dumps(_clean(v)) if isinstance(v, (dict, list, tuple)) else v]
                    for k, v in meta.items()], tablefmt="plain"))
    print()
    if rows:
        headers = list(rows[0].keys())
        print(tabulate([[fmt(r.get(h)) for h in headers] for r in rows], headers=headers,
                       tablefmt="github"))
    else:
        print("(no rows)")
    for n in notes:
        print(f"note: {n}")
    sys.stdout.flush()


def pyplot() -> Any:
    """matplotlib.pyplot on a file backend, or None (with a note) if it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'raftmp[plot]'): skipping --plot",
              file=sys.stderr)
        return None
    return plt


# ------------------------------------------------------------------ children

def _child_main(target: Callable[..., Any], conn: Connection, parent_pid: int,
                args: tuple) -> None:
    from raftmp.worker import die_with_parent
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = target(conn, *args)
        conn.send(("result", result))
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        conn.close()


class ChildError(RuntimeError):
    pass


class Children:
    """Forked helper processes, each with one duplex Pipe to the launcher.

    ``start(target, *args)`` runs ``target(conn, *args)`` in a new process; its
    return value is sent back as the child's result (``collect``). The target
    may also talk over ``conn`` itself. ``stop()`` (also at the end of a
    ``with`` block, whatever the exit) joins each child with a bound and
    kills it when the bound runs out.
    """

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.conns: list[Connection] = []

    def start(self, target: Callable[..., Any], *args: Any,
              name: str = "bench-client") -> Connection:
        parent_end, child_end = CTX.Pipe(duplex=True)
        p = CTX.Process(target=_child_main, args=(target, child_end, os.getpid(), args),
                        name=name, daemon=False)
        p.start()
        child_end.close()
        self.procs.append(p)
        self.conns.append(parent_end)
        return parent_end

    def collect(self, timeout: float, conns: Optional[list[Connection]] = None) -> list[Any]:
        """Wait (up to ``timeout`` in all) for one result from each child; in start order.
        Raises ChildError if a child failed, died, or did not answer in time."""
        conns = list(conns if conns is not None else self.conns)
        results: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        pending = {id(c): c for c in conns}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{len(pending)} child process(es) gave no result in {timeout} s")
            for c in wait(list(pending.values()), left):
                try:
                    kind, value = c.recv()
                except (EOFError, OSError):
                    raise ChildError("a child process died without a result") from None
                if kind == "error":
                    raise ChildError(f"a child process failed:\n{value}")
                results[id(c)] = value
                del pending[id(c)]
        return [results[id(c)] for c in conns]

    def stop(self, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5.0)
        for c in self.conns:
            c.close()
        self.procs, self.conns = [], []

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def send_stop(conns: Iterable[Connection]) -> None:
    """Tell each child to stop (``recv_command`` reads it); one already gone is
    skipped."""
    for c in conns:
        try:
            c.send("stop")
        except OSError:
            pass


def recv_command(conn: Connection, timeout: float = 0.0) -> Any:
    """A command from the launcher if one is waiting (up to ``timeout``), else None.
    EOF (the launcher went away) reads as "stop"."""
    try:
        if conn.poll(timeout):
            return conn.recv()
    except (EOFError, OSError):
        return "stop"
    return None


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's main(); Ctrl-C exits 130 after the finally blocks ran."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
