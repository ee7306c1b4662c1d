"""What every command line shares: a parser whose errors are one line, option
types that name their allowed range, and how a command ends.

Bad input (an option out of range, a file that cannot be read) ends a command
with exit status 2 and one line on stderr, never a traceback; Ctrl-C with
``interrupted`` and 130 (128 + SIGINT, what a shell reports). ``__main__``
catches what a command lets through; the commands check their options here,
when they parse them, so that nothing starts before a value is known to work.
"""

from __future__ import annotations

import argparse
import logging  # noqa: F401  (first: its at-fork hooks are registered before CtrlC's)
import math
import multiprocessing.pool
import os
import signal
import sys
from typing import Any, Callable, NoReturn, Optional

BAD_INPUT = 2
INTERRUPTED = 130


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


def complain(what: Any) -> int:
    """Print ``error: WHAT`` as one line on stderr; the exit status of bad input.
    An OSError reads ``FILE: what went wrong``."""
    if isinstance(what, OSError) and what.strerror:
        what = f"{what.filename}: {what.strerror}" if what.filename else what.strerror
    print(f"error: {one_line(what)}", file=sys.stderr, flush=True)
    return BAD_INPUT


class CtrlC:
    """The SIGINT handler of a command: KeyboardInterrupt in the process that
    installed it, nothing in the children it forks.

    Ctrl-C reaches the whole process group, and children forked from here
    inherit this handler until they set their own (sim's pool workers never
    do): they ignore it, and the command stops them as it unwinds. An
    exception raised in an at-fork hook is printed and lost, and a launcher
    forking its workers is often in one (logging's): during a fork, or in
    code that must not be cut short (``whole``), the interrupt is raised
    again 10 ms later, from SIGALRM."""

    forking = False
    # Code an exception must not interrupt: CPython's Pool.__init__ cleans up
    # on Exception only, and a Pool interrupted half-made keeps a thread forking
    # workers that the interpreter then waits for at exit, forever.
    whole = {multiprocessing.pool.Pool.__init__.__code__}

    def __init__(self) -> None:
        self.pid = os.getpid()

    def install(self) -> tuple[Any, Any]:
        """Handle SIGINT (and the deferring SIGALRM); the handlers it replaced."""
        return signal.signal(signal.SIGINT, self), signal.signal(signal.SIGALRM, self)

    def __call__(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:
            return
        if CtrlC.forking or _inside(frame, self.whole):
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        raise KeyboardInterrupt

    @staticmethod
    def _fork(starting: bool) -> None:
        CtrlC.forking = starting


def _inside(frame: Any, codes: set) -> bool:
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


# Hooks run before in reverse order of registration, after in order: these,
# registered after logging's, enclose them.
os.register_at_fork(before=lambda: CtrlC._fork(True),
                    after_in_parent=lambda: CtrlC._fork(False))


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (``PROG: error: MESSAGE``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"{self.prog}: error: {one_line(message)}\n")


def _bounds(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"{'<' if hi_open else '<='} {hi:g}"


def integer(lo: Optional[int] = None, hi: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (either end may be open-ended)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(
                f"must be an integer {_bounds(lo, hi, False, False)}, not {text!r}")
        return value
    parse.__name__ = "integer"
    return parse


def number(lo: Optional[float] = None, hi: Optional[float] = None, *, above: bool = False,
           below: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number from ``lo`` to ``hi``; ``above`` / ``below``
    leave out the end itself (``number(0, 1, below=True)`` is [0, 1))."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value)
                and (lo is None or value > lo or (value == lo and not above))
                and (hi is None or value < hi or (value == hi and not below))):
            raise argparse.ArgumentTypeError(
                f"must be a number {_bounds(lo, hi, above, below)}, not {text!r}")
        return value
    parse.__name__ = "number"
    return parse


def output_file(text: str) -> str:
    """An argparse type: a file the command will write (its folder exists, it is
    not a folder), checked before any work starts."""
    if not text:
        raise argparse.ArgumentTypeError("must name a file, not ''")
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        why = "is a folder" if os.path.isdir(text) else \
            f"cannot be written (no folder {folder})" if not os.path.isdir(folder) else \
            f"cannot be written (folder {folder} is read-only)"
        raise argparse.ArgumentTypeError(f"{text!r} {why}")
    return text


def output_dir(text: str) -> str:
    """An argparse type: a folder the command will create or write into."""
    if not text:
        raise argparse.ArgumentTypeError("must name a folder, not ''")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return text
