"""The Raft core's settings, checked when they are made (``ConfigError``
names the setting). Section numbers as in ``raft.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError, check_positive

INF = float("inf")
READ_MODES = ("index", "lease")
FAN_OUTS = ("all", "quorum")
OP_TIMEOUT = 5.0        # a client's default op timeout (session.Timing.op_timeout)
# A session outlives its client's op timeout this many times over (see session_timeout).
SESSION_MARGIN = 2


@dataclass
class Config:
    # §5.2. A follower answers a bare heartbeat only when the leader asks
    # (AppendEntries.reply), so an idle 5-node cluster costs 4 heartbeats per
    # interval and a few answers per check-quorum period (measured: 157 -> 45
    # router packets/s, from 0.05 s with every heartbeat answered).
    heartbeat_interval: float = 0.1
    # §5.2: each election timeout is drawn uniformly from this range. Two
    # heartbeat intervals at least: a follower campaigns only after missing two
    # in a row, and then harmlessly (pre-vote: the others, who still hear the
    # leader, refuse). Longer would make failover slower (benchmarks/failover.py).
    election_timeout: tuple[float, float] = (0.2, 0.4)
    max_batch_entries: int = 256        # per AppendEntries
    max_batch_bytes: int = 1 << 20      # per AppendEntries (approximate)
    # AppendEntries in flight per follower and not known to be delivered, on a
    # clean link; the window grows with the measured loss (progress.py). Wide:
    # in a closed loop a window full of lost segments stalls that follower
    # (measured: 4 -> 32 doubles ops/s at drop 0.5, benchmarks/throughput.py).
    max_inflight: int = 32
    # A follower holds up to this many AppendEntries that arrived past a gap in
    # its log; the leader keeps no more than this many outstanding per follower.
    max_held: int = 64
    # Retransmission timeout bounds; in between it follows the measured round
    # trip (3 x smoothed RTT), so a lost append is resent in a few round trips.
    min_rto: float = 0.002
    max_rto: float = 0.1
    # Log compaction (§7, thesis §5.1): snapshot when the applied log since the
    # last snapshot passes either threshold; keep the last ``snapshot_keep``
    # entries for followers a little behind; send snapshots in chunks. Each
    # snapshot forks a writer (snapshots.py): at 40K writes/s, 10,000 entries
    # meant 4 forks a second per node, about 10% of a follower's CPU with the
    # child and its copy-on-write faults; 20,000 halves that, for about 10 MB
    # more log in each worker (benchmarks/endurance.py: RSS bounded).
    snapshot_entries: int = 20_000
    snapshot_bytes: int = 4 << 20
    snapshot_keep: int = 5_000
    snapshot_chunk: int = 64 << 10
    # Thesis §6.3: a client session no leader heard from for this long (by the
    # leaders' clocks, written into the log) expires. At least SESSION_MARGIN x
    # the longest op timeout of this cluster's clients (``client_op_timeout``,
    # their Timing.op_timeout): then a client that sends a request within its
    # op timeout keeps its session (a write sent in an expired one ends
    # unknown: SessionExpired).
    session_timeout: float = 300.0
    client_op_timeout: float = OP_TIMEOUT
    # Reads (thesis §6.4): "index" confirms leadership by a heartbeat round per
    # batch of reads (ReadIndex); "lease" answers them at once while a quorum's
    # recent acknowledgements hold the leader's lease (§6.4.1, core/lease.py),
    # assuming clock rates within clock_drift of real time. Lease is the
    # default: every node of a cluster runs on one host, on one monotonic
    # clock (no drift at all), and under loss it keeps reads off the lossy
    # round trips (measured: 71% vs 41% of the drop-0 ops/s at drop 0.4).
    read_mode: str = "lease"
    clock_drift: float = 0.05
    # Quieter still (the CS3700 profile, where every packet is counted; off by
    # default). ``eager_followers``: new entries go
    # at once only to this many followers, the most up to date first (to all
    # while appends are being lost: LOSS_MEMORY), and a ReadIndex round only
    # to the followers it needs; the others catch up on their
    # heartbeat. ``quiet_heartbeats``: a follower gets a heartbeat only when
    # nothing else went to it for a heartbeat interval.
    eager_followers: Optional[int] = None
    quiet_heartbeats: bool = False
    # Whom a leader sends new entries at once (the paper leaves it open).
    # "all": every follower. "quorum": only the followers a commit needs
    # (quorum - 1 if the leader votes, ranked as for eager_followers); the
    # others get them with their heartbeat, or as soon as a full batch
    # (max_batch_entries) waits for them, so they keep up under load; to all
    # while appends are being lost, leadership is handed over or a server
    # is being removed. On a shared machine (a local cluster, every process
    # on 2 cores) the others' turns then never queue in front of a commit:
    # one-at-a-time put p50 0.275 -> 0.216 ms at 3 nodes, 0.353 -> 0.271 ms
    # at 5. Where eager_followers is set, it decides instead.
    fan_out: str = "quorum"
    # The resend interval before a round trip is measured: a candidate's vote
    # requests to the voters that have not answered (during its first
    # heartbeat interval), a new leader's probes (None: heartbeat_interval).
    # With exactly a majority alive, an election and the new leader's first
    # commit need every survivor's answer, and
    # under loss each missing one costs a whole interval: the CS3700 profile
    # uses 0.1 s, not its 0.5 s heartbeat (measured, 7 nodes, 3 dead, 30%
    # loss, 60 seeds: p90 failover 5.3 s -> 2.7 s, with no more messages).
    first_rto: Optional[float] = None

    def unmeasured_rto(self) -> float:
        """The resend interval before a round trip is measured (``first_rto``)."""
        return self.first_rto or self.heartbeat_interval

    def __post_init__(self) -> None:
        check_positive(self, "heartbeat_interval", "min_rto", "max_rto", "session_timeout",
                       "client_op_timeout")
        if self.first_rto is not None:
            check_positive(self, "first_rto")
        if self.session_timeout < SESSION_MARGIN * self.client_op_timeout:
            raise ConfigError(f"Config.session_timeout ({self.session_timeout}) must be at least "
                              f"{SESSION_MARGIN} x Config.client_op_timeout "
                              f"({self.client_op_timeout}, the clients' Timing.op_timeout)")
        check_positive(self, "max_batch_entries", "max_batch_bytes", "max_inflight",
                       integer=True)
        timeout = self.election_timeout
        if not (isinstance(timeout, (tuple, list)) and len(timeout) == 2
                and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in timeout)
                and self.heartbeat_interval < timeout[0] <= timeout[1] < INF):
            raise ConfigError(f"Config.election_timeout must be a pair (min, max) with "
                              f"heartbeat_interval < min <= max, not {timeout!r}")
        if self.min_rto > self.max_rto:
            raise ConfigError(f"Config.min_rto ({self.min_rto}) is above max_rto ({self.max_rto})")
        if self.fan_out not in FAN_OUTS:
            raise ConfigError(f"Config.fan_out must be one of {FAN_OUTS}, not {self.fan_out!r}")
        if self.read_mode not in READ_MODES:
            raise ConfigError(f"Config.read_mode must be one of {READ_MODES}, "
                              f"not {self.read_mode!r}")
        if not (isinstance(self.clock_drift, (int, float)) and 0 <= self.clock_drift < 1):
            raise ConfigError(f"Config.clock_drift must be in [0, 1), not {self.clock_drift!r}")
