"""Liveness bounds during the faults, not only after the heal, mixed into
``run.Simulation``.

Two promises, each with its bound computed from the seed's own timers,
loss rate and longest packet delay (``SimConfig.max_delay``):

- check-quorum (thesis §6.2): a leader steps down within two check periods
  (``quorum_deadline``: 2 x the maximum election timeout each, on its
  clock), plus the longest delay of an answer, after the last moment at
  which a majority's worth of its peers had each been alive and linked to
  it both ways (per peer: a leader hears from different peers at different
  times while partitions change, and counts them over a whole period);
- elections (§5.2, with pre-vote): while a majority of live nodes stays
  connected both ways, one of them leads within the step-down bound of any
  old leader plus a few election timeouts, more under loss.

Connectivity is recomputed whenever it changes (a cut, a crash, a restart).
"""

from __future__ import annotations

from ..core.raft import LEADER
from .checks import Violation
from .model import majority

# (The bounds count a majority of the fixed ``SimConfig.nodes``: a seed with
# membership churn, churn.py, skips them.)

INF = float("inf")
ELECTION_ROUNDS = 4   # election timeouts a connected majority may need, at no loss


class Liveness:
    """The liveness bounds (state lives on ``Simulation``)."""

    def _init_liveness(self) -> None:
        cfg, raft = self.cfg, self.raft_config
        lo, hi = raft.election_timeout
        slow = 1 - cfg.clock_drift     # the slowest clock stretches every local timer
        period = 2 * hi / slow
        delay = cfg.max_delay() + (0.6 * lo if "edge_partition" in cfg.nemeses else 0.0)
        self.stepdown_bound = 2 * period + 2 * delay + 2 * raft.heartbeat_interval
        lossy = (1 - cfg.drop) ** 4    # a pre-vote and a vote, each a round trip
        held = 4 * hi + 1.5 * lo if "vote_hold" in cfg.nemeses else 0.0   # votes held back
        self.elect_bound = self.stepdown_bound + ELECTION_ROUNDS * hi / slow / lossy + \
            2 * delay + held
        # (a, b) -> until when a and b were last alive and linked both ways (INF: now)
        self.linked_until: dict[tuple[int, int], float] = {}
        self.leader_since: dict[int, float] = {}  # leader -> since when it leads
        self.group: frozenset = frozenset()       # the connected majority of live nodes, if any
        self.group_since = 0.0
        self.group_led = 0.0                      # when a node of the group last led
        self._connectivity_changed()

    def _linked(self, a: int, b: int) -> bool:
        return (a, b) not in self.cut and (b, a) not in self.cut

    def _connectivity_changed(self) -> None:
        alive = sorted(self.nodes)
        need = majority(self.cfg.nodes)
        for a in self.ids:
            for b in self.ids:
                if a != b:
                    if a in self.nodes and b in self.nodes and self._linked(a, b):
                        self.linked_until[a, b] = INF
                    elif self.linked_until.get((a, b), INF) == INF:
                        self.linked_until[a, b] = self.now
        group: frozenset = frozenset()
        left = set(alive)
        while left:   # the connected components of the live nodes
            comp, todo = set(), [left.pop()]
            while todo:
                a = todo.pop()
                comp.add(a)
                near = [b for b in left if self._linked(a, b)]
                left.difference_update(near)
                todo += near
            if len(comp) >= need:
                group = frozenset(comp)
        if group != self.group:
            self.group, self.group_since = group, self.now

    def _leader_elected(self, i: int) -> None:
        self.leader_since[i] = self.now

    def _check_leader_alone(self, i: int, node) -> None:
        """Check-quorum's bound: called on a leader's turns."""
        if not self.cfg.check_liveness or "churn" in self.cfg.faults or self.healed:
            return
        need = majority(self.cfg.nodes) - 1   # peers to hear from in a check period
        if need == 0:
            return
        ups = sorted((self.linked_until[i, j] for j in self.ids if j != i), reverse=True)
        since = max(ups[need - 1], self.leader_since.get(i, 0.0))
        if self.now > since + self.stepdown_bound:
            raise Violation(f"liveness: leader {i} of term {node.term} still leads "
                            f"{self.now - since:.3f} s after it last had a majority to hear "
                            f"from (bound {self.stepdown_bound:.3f} s, check-quorum §6.2)")

    def _check_liveness(self) -> None:
        """The election bound: called once per event of the run loop."""
        if not self.cfg.check_liveness or "churn" in self.cfg.faults or self.healed or not self.group:
            return
        for i in self.group:
            node = self.nodes.get(i)
            if node is not None and node.role == LEADER:
                self.group_led = self.now
                return
        since = max(self.group_since, self.group_led)
        if self.now > since + self.elect_bound:
            raise Violation(f"liveness: nodes {sorted(self.group)} are alive and connected, "
                            f"a majority, but none has led for {self.now - since:.3f} s "
                            f"(bound {self.elect_bound:.3f} s)")
