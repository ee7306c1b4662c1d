"""Swarm testing (Groce et al., ISSTA 2012): each seed draws its own configuration.

One fixed mix of faults and settings leaves whole classes of schedule out of
reach (a batch of 256 entries carries a new leader's no-op with the old
entries, so Figure 8's commit never arises; a fault that fires every half
second hides one that needs quiet around it). So each seed draws, from its
number alone: the cluster size (3 to 7, even sizes too), the timers, the read
mode, batch size and window (down to 1 and 1), the snapshot thresholds, the
loss rate, which faults and targeted nemeses run and how hard. About one seed
in five runs a single fault class, hard. About one in five without loss has
sessions shorter than the longest hold (thesis §6.3: they expire mid-run and
clients register new ones while late copies of old commands are in flight).
Membership churn is drawn apart, in about 3 seeds in 10, from a stream of its
own (the other draws of a seed are as they were before it existed), and so is
``Config.fan_out`` (its default in two seeds of three, "all" in the rest). A knob
given on the command line is pinned instead (``pinned``), so a seed's
replay is the same command line with ``--seed``.
"""

from __future__ import annotations

import random
from typing import Any

from ..core.config import SESSION_MARGIN
from .config import FAULTS, NEMESES, SimConfig

BASE = tuple(f for f in FAULTS if f != "churn")
CHURN_SHARE = 0.3   # of the seeds add membership churn to their faults (churn.py)

# The command line's knobs, which a flag pins (the rest are always drawn).
KNOBS = ("nodes", "drop", "faults", "nemeses", "ops", "read_mode", "clock_drift", "timing")


def draw(seed: int, pinned: dict[str, Any]) -> SimConfig:
    """The configuration of ``seed``, with the ``pinned`` knobs as given."""
    r = random.Random(f"swarm/{seed}")
    d: dict[str, Any] = {
        "nodes": r.choice((3, 3, 3, 4, 5, 5, 6, 7)),
        "timing": r.choice(("sim", "sim", "default", "tight", "wide")),
        "read_mode": r.choice(("lease", "lease", "index")),
        "clock_drift": r.choice((0.0, 0.05, 0.05)),
        "drop": r.choice((0.0, 0.0, round(r.uniform(0, 0.2), 3), round(r.uniform(0.2, 0.5), 3))),
        "ops": r.choice((80, 120, 150)),
    }
    window = r.choice((1, 1, 2, 4, 32))
    entries, keep = r.choice(((8, 0), (24, 4), (24, 0), (100, 10), (10_000, 5_000)))
    d["raft"] = {"max_batch_entries": r.choice((1, 1, 2, 4, 256)), "max_inflight": window,
                 "max_held": r.choice((1, window, 64)), "snapshot_entries": entries,
                 "snapshot_keep": keep, "snapshot_chunk": r.choice((64, 200, 4096)),
                 "eager_followers": r.choice((None, None, None, None, 1)),
                 "quiet_heartbeats": r.random() < 0.2}
    if r.random() < 0.2:    # one fault class, hard
        one = r.choice(BASE + NEMESES)
        d["faults"] = {"restart": ("crash", "restart"), "corrupt": ("crash", "corrupt")}.get(
            one, (one,) if one in FAULTS else ())
        d["nemeses"] = (one,) if one in NEMESES else ()
        d.update(fault_gap=(0.05, 0.25), hold=0.1, hold_for=1.0, duplicate=0.4,
                 extra_delay=(0.0, 0.08), corrupt=1.0)
    else:
        d["faults"] = tuple(f for f in BASE if r.random() < 0.6)
        d["nemeses"] = tuple(n for n in NEMESES if r.random() < 0.4)
        lo = r.uniform(0.05, 0.4)
        d.update(fault_gap=(lo, lo * r.uniform(1.5, 4)), hold=r.uniform(0.005, 0.05),
                 hold_for=r.uniform(0.2, 1.6), duplicate=r.uniform(0.02, 0.3),
                 extra_delay=(0.0, r.choice((0.005, 0.03, 0.08))), corrupt=r.uniform(0.1, 1.0))
    if random.Random(f"swarm/{seed}/churn").random() < CHURN_SHARE:
        d["faults"] += ("churn",)   # (its own stream: the other draws stay as they were)
    # (Its own stream too.) Config.fan_out's default, "quorum", in two seeds of three.
    d["raft"]["fan_out"] = random.Random(f"swarm/{seed}/fan_out").choice(("quorum", "quorum",
                                                                          "all"))
    d.update(pinned)
    # Short sessions (and so short op timeouts: Config.session_timeout) only without
    # loss, where an operation started after the heal completes within one.
    if r.random() < 0.2 and not d["drop"]:
        session = r.choice((0.6, 1.0))
        d["raft"].update(session_timeout=session, client_op_timeout=session / SESSION_MARGIN)
    return SimConfig(**d)


def describe(cfg: SimConfig) -> str:
    """One line: what this seed drew."""
    raft = cfg.raft
    return (f"nodes={cfg.nodes} timing={cfg.timing} read-mode={cfg.read_mode} "
            f"drift={cfg.clock_drift} drop={cfg.drop} ops={cfg.ops} "
            f"batch={raft.get('max_batch_entries')} window={raft.get('max_inflight')} "
            f"held={raft.get('max_held')} snapshot={raft.get('snapshot_entries')}/"
            f"{raft.get('snapshot_keep')} fan-out={raft.get('fan_out', 'quorum')} "
            f"faults={','.join(cfg.faults) or 'none'} "
            f"nemeses={','.join(cfg.nemeses) or 'none'} "
            f"fault-gap={cfg.fault_gap[0]:.2f}-{cfg.fault_gap[1]:.2f}"
            + (f" session={raft['session_timeout']}" if "session_timeout" in raft else ""))

