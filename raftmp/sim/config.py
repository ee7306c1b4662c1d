"""A simulation's settings (``SimConfig``) and its counts (``SimResult``).

Every knob here has a fixed default (the sweep before swarm testing); the
swarm (``swarm.py``) draws most of them per seed instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..core.errors import ConfigError
from ..faults import Faults

FAULTS = ("crash", "restart", "partition", "duplicate", "delay", "hold", "corrupt", "churn")
# Targeted faults, each aimed at one rule (nemesis.py says which).
NEMESES = ("fast_restart", "lease_restart", "vote_hold", "stale_snapshot", "edge_partition")
# Where in a node's turn a crash lands ("idle": between turns).
CRASH_POINTS = ("idle", "before_save", "mid_save", "after_save")
# Small enough that most seeds snapshot many times and send InstallSnapshot in
# several chunks; the session timeout well above the clients' op timeout (Config checks it).
SIM_RAFT = {"snapshot_entries": 24, "snapshot_keep": 4, "snapshot_chunk": 200,
            "session_timeout": 60.0, "client_op_timeout": 30.0}
# The nodes' timers (``--timing``). "sim", the default: a 0.05 s heartbeat
# (Config's: 0.1 s), the pace the faults below were tuned to. "default":
# Config's. "tight": a narrow election range (split votes, short leases).
# "wide": a long one (a leader's lease much shorter than some followers' patience).
TIMINGS = {"sim": {"heartbeat_interval": 0.05, "election_timeout": (0.2, 0.4)},
           "default": {},
           "tight": {"heartbeat_interval": 0.03, "election_timeout": (0.1, 0.13)},
           "wide": {"heartbeat_interval": 0.05, "election_timeout": (0.15, 0.8)}}
SNAPSHOT_TIME = (0.001, 0.05)   # virtual seconds a snapshot takes to write


@dataclass
class SimConfig:
    nodes: int = 5
    drop: float = 0.0                  # packet loss between nodes
    client_drop: Optional[float] = None   # between clients and nodes; default drop / 2
    faults: tuple[str, ...] = ()
    nemeses: tuple[str, ...] = ()      # targeted faults (NEMESES), during the fault period
    ops: int = 200
    clients: int = 3
    in_flight: int = 2                 # operations in flight per client
    fault_period: float = 5.0          # virtual seconds during which faults happen
    fault_gap: tuple[float, float] = (0.2, 0.8)   # seconds between two faults
    latency: tuple[float, float] = (0.0002, 0.002)
    extra_delay: tuple[float, float] = (0.0, 0.03)   # with the "delay" fault: reordering
    duplicate: float = 0.1             # with the "duplicate" fault
    hold: float = 0.02                 # with "hold": this fraction of packets ...
    hold_for: float = 1.6              # ... is held for up to this long (4 election timeouts)
    corrupt: float = 0.3               # with "corrupt": chance a crash flips a stored bit
    keys: int = 5
    check_history: bool = True
    check_reads: bool = True           # read safety as answers leave (checks.py)
    check_liveness: bool = True        # liveness bounds during the faults (liveness.py)
    read_mode: str = "index"           # the nodes' Config.read_mode (sweep both: --read-mode)
    # Each node's clock runs at 1 - clock_drift or 1 + clock_drift times real
    # time (drawn per boot): the extremes of what lease reads assume.
    clock_drift: float = 0.0
    timing: str = "sim"                # the nodes' timers: a key of TIMINGS
    raft: dict[str, Any] = field(default_factory=dict)   # more Config settings (batch, window...)
    network: Faults = field(init=False)   # the per-packet faults the settings above make

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ConfigError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        unknown = set(self.nemeses) - set(NEMESES)
        if unknown:
            raise ConfigError(f"unknown nemeses {sorted(unknown)}; choose from "
                              f"{', '.join(NEMESES)}")
        if self.client_drop is None:
            self.client_drop = self.drop / 2
        if not (0 <= self.drop < 1 and 0 <= self.client_drop < 1):
            raise ConfigError("drop and client_drop must be in [0, 1)")
        if self.nodes < 1:
            raise ConfigError("nodes must be >= 1")
        self.network = Faults(
            self.drop, self.client_drop,
            self.extra_delay if "delay" in self.faults else (0.0, 0.0),
            self.duplicate if "duplicate" in self.faults else 0.0)
        if not 0 <= self.clock_drift < 1:
            raise ConfigError("clock_drift must be in [0, 1)")
        if self.timing not in TIMINGS:
            raise ConfigError(f"timing must be one of {', '.join(TIMINGS)}, not {self.timing!r}")

    @property
    def active(self) -> bool:
        """Whether anything happens during the fault period."""
        return bool(self.faults or self.nemeses)

    def max_delay(self) -> float:
        """The longest a packet may travel (latency, reordering, holding)."""
        d = self.latency[1] + self.network.delay[1]
        return d + (self.hold_for if "hold" in self.faults else 0.0)


@dataclass
class SimResult:
    seed: int
    ops_ok: int = 0
    ops_unknown: int = 0
    ops_failed: int = 0
    elections: int = 0
    packets: int = 0
    messages: int = 0
    end_time: float = 0.0
    snapshots: int = 0          # taken by nodes on their own
    installs: int = 0           # received from a leader
    duplicates: int = 0         # answers to an operation already answered (CS3700's count)
    changes: int = 0            # configuration changes made (churn)
    transfers: int = 0          # leaderships handed over (churn)
    violations: list[str] = field(default_factory=list)
    history: list[Any] = field(default_factory=list)
    drawn: str = ""             # the configuration the swarm drew for this seed
