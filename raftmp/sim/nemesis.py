"""Faults, mixed into ``run.Simulation`` (which owns the state they change).

The random mix (``FAULTS``, each described in ARCHITECTURE.md): crashes
(``CRASH_POINTS``), restarts, partitions (a random side, the leader's
minority, a one-way cut, a partial heal, a heal). Then the targeted nemeses
(``NEMESES``), each aimed at a rule that the random mix reaches only by luck:

- ``fast_restart``: a node restarts within milliseconds of its crash, its
  last turn torn or not (a vote or an acknowledgement must survive it, and a
  booted node must hold its vote: thesis §4.2.3 / §6.4.1);
- ``lease_restart``: a follower C is cut from the leader L, until it
  campaigns; then L is cut off from everyone and enough followers inside L's
  lease to make a majority with C restart at once. Only the boot-time vote
  hold keeps them from electing C while L still serves lease reads;
- ``vote_hold``: the leader is isolated and the vote traffic of the election
  that follows (requests, pre-vote refusals) is held back until the next
  change of the partition, then released in a burst, after the leader got
  enough followers back to renew its lease (the issue 18 sequence: §4.2.3
  however a voter reached the candidate's term);
- ``stale_snapshot``: the leader's state, as a snapshot, is sent to a
  follower that holds entries past it, before it knows they are committed
  (§7: it must keep them, the log after the snapshot matches);
- ``edge_partition``: the leader is cut off just before its lease ends, or
  a partition heals within milliseconds of a follower's election timeout,
  or the answers to the leader travel slowly (half an election timeout) and
  then it is cut off (a lease is dated from a round's start, thesis §6.4.1).
"""

from __future__ import annotations

import heapq

from ..core.messages import InstallSnapshot, RequestVote, RequestVoteReply
from ..core.raft import LEADER
from ..storage import CorruptStorage
from .checks import Violation
from .config import CRASH_POINTS
from .model import majority


class Nemeses:
    """Fault injection (state lives on ``Simulation``)."""

    # ------------------------------------------------------------ plumbing

    def _at(self, delay: float, action) -> None:
        """Run ``action()`` ``delay`` seconds from now (if the faults have not healed)."""
        self.seq += 1
        heapq.heappush(self.actions, (self.now + delay, self.seq, action))

    def _run_actions(self) -> None:
        while self.actions and self.actions[0][0] <= self.now:
            _, _, action = heapq.heappop(self.actions)
            if not self.healed:
                action()

    def _set_cut(self, cut: set) -> None:
        """Change which links are cut; vote traffic held by ``vote_hold`` is let go."""
        if cut != self.cut:
            self.cut = cut
            self._release_votes()
            self._connectivity_changed()

    def _release_votes(self) -> None:
        held, self.held_votes = self.held_votes, []
        if not held:
            return
        # In one burst (within 2 ms, in any order), some time after the change:
        # a refusal that moves a voter to the candidate's term and the request
        # itself then reach it back to back, as in the issue 18 sequence.
        at = self.now + self.rng.uniform(0, 1.5 * self.raft_config.election_timeout[0])
        for src, dst, msgs in held:
            self.seq += 1
            heapq.heappush(self.net, (at + self.rng.uniform(0, 0.002), self.seq, src, dst, msgs))

    @staticmethod
    def _is_vote(m) -> bool:
        """What ``vote_hold`` holds: vote requests and pre-vote refusals (whose
        term moves the voter to the candidate's term first)."""
        t = type(m)
        return (t is RequestVote and not m.pre) or (t is RequestVoteReply and m.pre
                                                     and not m.granted)

    def _sequence(self, duration: float) -> None:
        """A targeted nemesis plays out for ``duration`` seconds: no other fault
        meanwhile, and only reads from the clients (a write would leave the
        campaigner behind the others' logs, and no vote could be won at all)."""
        self.nemesis_until = self.quiet_until = self.now + duration

    def _leader(self):
        leaders = [(n.term, i) for i, n in self.nodes.items() if n.role == LEADER]
        return max(leaders)[1] if leaders else None

    def _real(self, i: int, local: float) -> float:
        """When (in simulated time) node i's clock reads ``local``."""
        return local / self.rate[i]

    # ------------------------------------------------------------ random mix

    def _may_crash(self) -> bool:
        if self.healed or "crash" not in self.cfg.faults:
            return False
        down, voters = self._down_voters()   # over every configuration in use (churn)
        return down < (voters - 1) // 2 + ("restart" in self.cfg.faults)

    def _fault_gap(self) -> float:
        return self.now + self.rng.uniform(*self.cfg.fault_gap)

    def _inject_fault(self) -> None:
        cfg, r = self.cfg, self.rng
        self.next_fault = self._fault_gap()
        if self.next_fault >= self.heal_time:
            self.next_fault = float("inf")
        if self.now < self.nemesis_until:
            return
        for victim in list(self.crash_at):   # never reached a persisting turn: crash now
            self._crash(victim, corrupt=True)
        choices = list(cfg.nemeses) * 3    # each aims at one rule: more often than a random fault
        restartable = [i for i in self.ids if i not in self.nodes and i not in self.dead]
        if self._may_crash():
            choices.append("crash")
        if "restart" in cfg.faults and restartable:
            choices += ["restart", "restart"]
        if "partition" in cfg.faults:
            choices += ["partition", "isolate_leader", "one_way", "reconnect", "heal"]
        choices += self._churn_choices()
        if not choices:
            return
        kind = r.choice(choices)
        if kind == "churn":
            self._churn()
        elif kind == "crash":
            self._crash_somewhere(r.choice(sorted(self.nodes)))
        elif kind == "restart":
            self._restart(r.choice(restartable))
        elif kind == "partition":
            self._partition(r.sample(self.ids, r.randint(1, max(1, cfg.nodes // 2))))
        elif kind == "isolate_leader":
            self._isolate_leader()
        elif kind == "one_way":
            a, b = r.sample(self.ids, 2) if cfg.nodes > 1 else (0, 0)
            self._set_cut(self.cut | {(a, b)})
        elif kind == "reconnect":
            self._reconnect(r.choice(self.ids))
        elif kind == "heal":
            self._set_cut(set())
        else:
            getattr(self, "_nemesis_" + kind)()

    def _crash_somewhere(self, victim: int) -> None:
        point = self.rng.choice(CRASH_POINTS)
        if point == "idle":
            self._crash(victim, corrupt=True)
        else:
            self.crash_at[victim] = point

    def _partition(self, side: list[int]) -> None:
        other = [i for i in self.ids if i not in side]
        self._set_cut({(a, b) for a in side for b in other} | {(b, a) for a in side for b in other})

    def _isolate_leader(self) -> None:
        cfg, r = self.cfg, self.rng
        leaders = [i for i, n in self.nodes.items() if n.role == LEADER]
        minority = leaders[:1] + r.sample(self.ids, (cfg.nodes - 1) // 2)
        self._partition(list(dict.fromkeys(minority))[: max(1, (cfg.nodes - 1) // 2)])

    def _reconnect(self, i: int) -> None:
        """A partial heal: node i's links come back."""
        self._set_cut({(a, b) for a, b in self.cut if i not in (a, b)})

    def _crash(self, i: int, corrupt: bool) -> None:
        """Node i stops; its disk keeps what was written (and, with the "corrupt"
        fault, once per run, one flipped bit: a cluster of 3 or more can lose one
        node for good)."""
        del self.nodes[i]
        self.crash_at.pop(i, None)
        self.disk_views.pop(i, None)
        cfg, r = self.cfg, self.rng
        if (corrupt and "corrupt" in cfg.faults and not self.corrupted and not self.dead
                and cfg.nodes >= 3
                and r.random() < cfg.corrupt and self.storage[i].flip_bit(r)):
            self.corrupted.add(i)
        self._check_durable(i)
        self._connectivity_changed()
        if i in self.restart_soon:
            self.restart_soon.discard(i)
            self._at(r.uniform(0.0005, 0.01), lambda: self._restart_if_down(i))

    def _restart_if_down(self, i: int) -> None:
        if i not in self.nodes and i not in self.dead:
            self._restart(i)

    def _restart(self, i: int) -> None:
        """Boot node i from its disk: a flipped bit must stop it (CorruptStorage)."""
        try:
            self.nodes[i] = self._boot(i)
        except CorruptStorage as exc:
            if i not in self.corrupted:
                raise Violation(f"node {i} refused to start from an intact disk: {exc}") from exc
            self.dead.add(i)
            return
        if i in self.corrupted:
            raise Violation(f"node {i} started from a log with a flipped bit: entries "
                            "may be silently lost")
        self._connectivity_changed()

    def _heal_all(self) -> None:
        self.healed = True
        self.next_fault = float("inf")
        self.crash_at.clear()
        self.restart_soon.clear()
        self.holding_votes = False
        self.slow_to = None
        self._set_cut(set())
        self._release_votes()
        if "restart" in self.cfg.faults or self.cfg.nemeses:
            for i in self.ids:
                if i not in self.nodes and i not in self.dead:
                    self._restart(i)

    # ----------------------------------------------------- targeted nemeses

    def _nemesis_fast_restart(self) -> None:
        alive = sorted(self.nodes)
        down = len(self.ids) - len(alive)
        if not alive or down >= (self.cfg.nodes - 1) // 2 + 1:
            return
        leader = self._leader()
        victim = leader if leader is not None and self.rng.random() < 0.5 else \
            self.rng.choice(alive)
        self.restart_soon.add(victim)
        self._crash_somewhere(victim)

    def _nemesis_lease_restart(self) -> None:
        leader = self._leader()
        others = [i for i in self.nodes if i != leader]
        if leader is None or len(others) < 2:
            return
        cfg = self.raft_config
        hi, beat = cfg.election_timeout[1], cfg.heartbeat_interval
        self._sequence(3 * hi)
        campaigner = self.rng.choice(others)

        def cut_campaigner() -> None:
            self._set_cut(self.cut | {(leader, campaigner), (campaigner, leader)})

        def restart_inside_lease() -> None:
            node = self.nodes.get(leader)
            if node is None or node.role != LEADER:
                return
            self._partition([leader])
            # Enough of the followers that heard it last that, with the
            # campaigner, they make a majority.
            followers = sorted((i for i in self.nodes if i not in (leader, campaigner)),
                               key=lambda i: -self.nodes[i].leader_seen)
            for victim in followers[:majority(self.cfg.nodes) - 1]:
                self.restart_soon.add(victim)
                self._crash(victim, corrupt=False)

        self._at(2 * beat, cut_campaigner)   # once the last writes have spread
        self._at(2 * beat + hi + 2 * beat, restart_inside_lease)

    def _nemesis_vote_hold(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        cfg = self.raft_config
        lo, hi = cfg.election_timeout
        self._sequence(4 * hi)

        def isolate() -> None:
            self.holding_votes = True
            self._partition([leader])

        def give_some_back() -> None:
            # Enough followers to renew its lease (a majority with it): the
            # held votes then reach voters inside that lease.
            self.holding_votes = False
            others = [i for i in self.ids if i != leader]
            back = self.rng.sample(others, majority(self.cfg.nodes) - 1)
            self._set_cut({(a, b) for a, b in self.cut
                           if not ({a, b} <= {leader, *back})})
            self._release_votes()

        self._at(2 * cfg.heartbeat_interval, isolate)
        self._at(2 * cfg.heartbeat_interval + self.rng.uniform(hi, 2 * hi), give_some_back)

    def _nemesis_stale_snapshot(self) -> None:
        """For the next second, at a leader's turn (``_stale_snapshot``)."""
        self.stale_snapshot_until = self.now + 1.0

    def _stale_snapshot(self, leader: int, node) -> None:
        """The leader's state as a snapshot (one it could have taken and sent
        now), to a follower that holds entries past it but does not know them
        committed yet."""
        snap = None
        for i, n in self.nodes.items():
            if i != leader and n.term == node.term and n.commit < node.applied < n.last_index:
                snap = snap or node.make_snapshot()
                self._send(leader, i, [InstallSnapshot(node.term, leader, snap.index, snap.term,
                                                       len(snap.data), 0, snap.data)])
                self.stale_snapshot_until = 0.0
                return

    def _nemesis_edge_partition(self) -> None:
        r = self.rng
        leader = self._leader()
        if leader is None:
            return
        node, cfg = self.nodes[leader], self.raft_config
        lo, hi = cfg.election_timeout
        self._sequence(3 * hi)
        self._at(3 * hi, lambda: self._set_cut(set()))
        kind = r.choice(("slow_acks", "lease_end", "election_edge"))
        if kind == "slow_acks":
            # Answers reach the leader late: its lease must still be dated from
            # the start of the round answered, not from the answer's arrival.
            self.slow_to = (leader, r.uniform(0.3, 0.6) * lo)
            self._at(r.uniform(lo / 2, lo), lambda: self._partition([leader]))
            self._at(3 * hi, lambda: setattr(self, "slow_to", None))
        elif kind == "lease_end" and node.lease_until() > self._local(leader):
            edge = self._real(leader, node.lease_until()) - self.now
            self._at(max(0.0, edge - r.uniform(0, 0.005)), lambda: self._partition([leader]))
        else:
            self._partition([leader])

            def heal_at_the_edge() -> None:
                waiting = [self._deadline(i) for i in self.nodes if i != leader]
                if waiting:
                    edge = min(waiting) - self.now
                    self._at(max(0.0, edge + r.uniform(-0.003, 0.003)),
                             lambda: self._set_cut(set()))

            self._at(lo / 2, heal_at_the_edge)
