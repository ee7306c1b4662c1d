"""A node's figures, kept by its worker, and their Prometheus text format.

The worker (``worker.py``) feeds a ``Metrics`` as its loop runs: the
requests it steps, the messages it sends, the time each save takes (the
fsync), whom its node names leader. ``Worker.status`` returns the figures
with the rest of a node's status — so ``Cluster.stats()``, the console's
``status`` and ``raftmp serve``'s ``/metrics`` page (``prometheus``) show
the same numbers. Written by hand: the text format is a few lines per figure
(https://prometheus.io/docs/instrumenting/exposition_formats/), no dependency.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from .core.messages import ClientReply, Command, InstallSnapshot

FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MAX_TRACKED = 100_000      # writes whose latency is being timed (beyond: not timed)


class Histogram:
    """Cumulative buckets, as Prometheus wants them: counts[i] of values <= bounds[i]."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.sum += value

    def observe_all(self, values: list[float]) -> None:
        """``observe`` each of ``values`` (one answer per write: sorted once, then
        one bisection per bucket, not per value)."""
        values.sort()
        counts, at = self.counts, 0
        for i, bound in enumerate(self.bounds):
            upto = bisect_right(values, bound, at)
            counts[i] += upto - at
            at = upto
        self.count += len(values)
        self.sum += sum(values)

    def figures(self) -> dict:
        cumulative, total = [], 0
        for c in self.counts:
            total += c
            cumulative.append(total)
        return {"bounds": list(self.bounds), "cumulative": cumulative, "count": self.count,
                "sum": self.sum}


class Metrics:
    def __init__(self) -> None:
        self.leader: Any = None
        self.leader_changes = 0
        self.committed = 0            # writes answered ok by this node as leader
        self.failed = 0               # writes it answered otherwise (retry, invalid, expired),
                                      # or left unanswered when the leader changed
        self.snapshots_sent = 0       # InstallSnapshot transfers begun (offset 0)
        self.fsync = Histogram(FSYNC_BUCKETS)
        self.commit_latency = Histogram(LATENCY_BUCKETS)
        self.asked: dict[tuple[int, int], float] = {}   # write -> when it first arrived

    def request(self, cmd: Any, now: float) -> None:
        """A client request arrived (timed until its answer leaves, ``sent``)."""
        if cmd.__class__ is Command:        # (the usual case, without getattr)
            if cmd[3] == "get":
                return
            key = (cmd[0], cmd[1])
        elif getattr(cmd, "op", "get") != "get":
            key = (getattr(cmd, "client_id", None), getattr(cmd, "seq", None))
        else:
            return
        asked = self.asked
        if key not in asked and len(asked) < MAX_TRACKED:
            asked[key] = now

    def sent(self, messages: list[tuple[int, Any]], now: float) -> None:
        pop, latencies = self.asked.pop, []
        for _, m in messages:
            kind = m.__class__
            if kind is ClientReply:
                asked = pop((m.client_id, m.seq), None)
                if asked is None or m.status == "redirect":
                    continue
                if m.status == "ok":
                    latencies.append(now - asked)
                else:
                    self.failed += 1
            elif kind is InstallSnapshot and m.offset == 0:
                self.snapshots_sent += 1
        if latencies:
            self.committed += len(latencies)
            self.commit_latency.observe_all(latencies)

    def turn(self, me: int, leader: Any) -> None:
        if leader != self.leader:
            if leader is not None:
                self.leader_changes += 1
            if self.leader == me:
                # Writes this node took as leader and left unanswered: their
                # outcome is the next leader's to tell; here they failed.
                self.failed += len(self.asked)
                self.asked.clear()
            self.leader = leader

    def figures(self, node: Any) -> dict:
        lease, index = node.reads_served
        return {"has_leader": int(node.leader is not None), "leader_changes": self.leader_changes,
                "proposals_committed": self.committed, "proposals_failed": self.failed,
                "proposals_pending": node.pending_writes, "snapshots_sent": self.snapshots_sent,
                "snapshots_installed": node.installs, "reads_lease": lease,
                "reads_index": index, "fsync_seconds": self.fsync.figures(),
                "commit_latency_seconds": self.commit_latency.figures()}


# status key -> (metric name, type, help)
_FIGURES = [
    ("has_leader", "gauge", "1 if this node knows a leader"),
    ("term", "gauge", "the current term"),
    ("commit", "gauge", "the commit index"),
    ("applied", "gauge", "the applied index"),
    ("leader_changes", "counter", "times the known leader changed"),
    ("proposals_committed", "counter", "writes committed and answered by this node"),
    ("proposals_failed", "counter", "writes this node answered with a failure"),
    ("proposals_pending", "gauge", "writes waiting for their commit"),
    ("snapshots_sent", "counter", "snapshot transfers begun (InstallSnapshot)"),
    ("snapshots_installed", "counter", "snapshots installed from a leader"),
    ("reads_lease", "counter", "reads answered on the leader's lease"),
    ("reads_index", "counter", "reads answered by ReadIndex"),
    ("bad_packets", "counter", "messages dropped as malformed or unexpected"),
]


def prometheus(status: dict) -> str:
    """The Prometheus text format of a node's status (``Worker.status``)."""
    label = f'node="{status["node"]}"'
    out = []
    for key, kind, text in _FIGURES:
        if key in status:
            name = f"raftmp_{key}" + ("_total" if kind == "counter" else "")
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}",
                    f"{name}{{{label}}} {int(status[key])}"]
    for key, text in (("fsync_seconds", "time to save (write and fsync) a turn's log"),
                      ("commit_latency_seconds", "a write's time from arrival to commit")):
        h = status.get(key)
        if h is None:
            continue
        name = f"raftmp_{key}"
        out += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
        for bound, n in zip(h["bounds"], h["cumulative"], strict=True):
            out.append(f'{name}_bucket{{{label},le="{bound:g}"}} {n}')
        out += [f'{name}_bucket{{{label},le="+Inf"}} {h["count"]}',
                f"{name}_sum{{{label}}} {h['sum']:.6f}", f"{name}_count{{{label}}} {h['count']}"]
    for key, name, text in (("bytes_sent", "raftmp_peer_bytes_sent", "bytes sent to a peer"),
                            ("bytes_received", "raftmp_peer_bytes_received",
                             "bytes received from a peer"),
                            ("bad_frames", "raftmp_bad_frames", "frames refused, by check"),
                            ("frames_dropped", "raftmp_frames_dropped",
                             "frames to peers not sent, by reason")):
        values = status.get(key)
        if values is None:
            continue
        out += [f"# HELP {name}_total {text}", f"# TYPE {name}_total counter"]
        what = "kind" if key in ("bad_frames", "frames_dropped") else "peer"
        out += [f'{name}_total{{{label},{what}="{k}"}} {v}' for k, v in sorted(values.items())]
    return "\n".join(out) + "\n"
