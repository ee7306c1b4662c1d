"""The event loops' poll-before-block window (transports/idle.py)."""

from raftmp.transports.idle import SPIN_MIN, SPIN_START, Spinner


class Loop:
    """A fake clock and link: a packet arrives at ``arrival`` (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.arrival = float("inf")
        self.checks = self.blocks = 0

    def clock(self) -> float:
        return self.now

    def check(self) -> list:
        self.checks += 1
        self.now += 1e-6            # a poll costs a microsecond
        return ["packet"] if self.now >= self.arrival else []

    def block(self, timeout: float) -> list:
        self.blocks += 1
        if self.arrival <= self.now + timeout:
            self.now = max(self.now, self.arrival)
            return ["packet"]
        self.now += timeout
        return []

    def wait(self, spinner: Spinner, gap: float, timeout: float = 1.0) -> list:
        """The next packet comes ``gap`` seconds from now."""
        self.arrival = self.now + gap
        return spinner.wait(self.check, self.block, timeout)


def test_a_quick_packet_opens_a_window_that_catches_the_next_without_blocking():
    loop = Loop()
    s = Spinner(cap=1e-3, clock=loop.clock)
    assert loop.wait(s, 100e-6) == ["packet"] and loop.blocks == 1 and loop.checks == 0
    assert s.window == SPIN_START
    loop.wait(s, 80e-6)          # beyond the window: it blocks, and the window doubles
    assert loop.blocks == 2 and s.window == 2 * SPIN_START
    blocks = loop.blocks
    assert loop.wait(s, 60e-6) == ["packet"]   # within the window: no blocking wait
    assert loop.blocks == blocks and loop.checks > 0
    assert s.window == 2 * SPIN_START


def test_the_window_never_passes_the_cap():
    loop = Loop()
    s = Spinner(cap=300e-6, clock=loop.clock)
    for _ in range(10):
        loop.wait(s, 290e-6)
        assert s.window <= 300e-6
    assert s.window == 300e-6


def test_packets_later_than_the_cap_close_the_window():
    loop = Loop()
    s = Spinner(cap=1e-3, clock=loop.clock)
    for _ in range(6):
        loop.wait(s, 500e-6)
    assert s.window == 800e-6    # 50, 100, ... 800: wide enough, it stays
    windows = []
    for _ in range(10):          # an idle cluster: a heartbeat every 50 ms
        loop.wait(s, 50e-3, timeout=0.1)
        windows.append(s.window)
    assert windows[0] == 400e-6 and windows[1] == 200e-6   # halves at each
    assert windows[-1] == 0.0 and all(w == 0 or w >= SPIN_MIN for w in windows)
    checks = loop.checks
    loop.wait(s, 50e-3, timeout=0.1)
    assert loop.checks == checks  # closed: no polling at all


def test_a_zero_timeout_or_cap_never_polls():
    loop = Loop()
    s = Spinner(cap=1e-3, clock=loop.clock)
    s.window = 1e-3
    loop.wait(s, 10.0, timeout=0.0)
    assert loop.checks == 0 and loop.blocks == 1
    off = Spinner(cap=0.0, clock=loop.clock)
    for _ in range(3):
        loop.wait(off, 10e-6)
    assert loop.checks == 0 and off.window == 0.0


def test_the_poll_stops_at_the_timeout():
    loop = Loop()
    s = Spinner(cap=1e-3, clock=loop.clock)
    s.window = 1e-3
    start = loop.now
    assert loop.wait(s, 1.0, timeout=200e-6) == []   # the loop's own deadline comes first
    assert loop.now - start <= 200e-6 + 2e-6   # the poll, then only the rest, blocking


def test_the_cap_comes_from_raftmp_spin_us_in_microseconds_within_bounds():
    import pytest

    from raftmp.transports.idle import SPIN_LIMIT_US, spin_cap

    assert spin_cap(None) == 1000e-6
    assert spin_cap("0") == 0.0 and spin_cap("250") == 250e-6
    assert spin_cap(str(SPIN_LIMIT_US)) == SPIN_LIMIT_US * 1e-6
    for bad in ("", "abc", "-1", "nan", "inf", str(SPIN_LIMIT_US + 1)):
        with pytest.raises(ValueError, match="RAFTMP_SPIN_US"):
            spin_cap(bad)


def test_a_bad_raftmp_spin_us_is_one_line_of_error_not_a_traceback():
    import os
    import subprocess
    import sys

    env = dict(os.environ, RAFTMP_SPIN_US="fast")
    for argv in (["-m", "raftmp", "--duration", "1"], ["-m", "raftmp.cs3700", "1", "0000", "0001"]):
        done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        assert "RAFTMP_SPIN_US='fast'" in done.stderr and "Traceback" not in done.stderr, \
            (argv, done.stderr)
