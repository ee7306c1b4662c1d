"""Membership churn in the simulator: the ``churn`` fault (``Churn``, a mixin
of ``run.Simulation``, which owns the state these methods use).

Among the other faults, a churn event is one of: a new server (an id never
used) booted knowing no configuration and added as a learner; a learner
promoted; a member removed (the leader too); leadership transferred to
another voter (thesis §3.10); a node's disk lost — the node crashes, its
disk is wiped, it never starts again — and removed (fresh servers join
later). Changes go through an admin client session, like the launcher's
``Cluster._change``, up to two at a time (so the leader's refusals are
exercised too); removals keep at least three voters, and a disk is lost
only while no node is dead, so the cluster can always recover.

The checks that follow the configuration (``checks.py``): at most one
leader per term (whatever configuration each counted votes over); no two
configurations in a node's log differ by more than one voter unless the
first was committed when the second was appended (thesis §4.1, the 2015
rule); the latest committed entry stays on a majority of the voters of a
configuration in use; at the end, the members (not the removed servers)
agree and hold every acknowledged write. The liveness bounds
(``liveness.py``) count a fixed majority, so a seed with churn skips them.
"""

from __future__ import annotations

import random
from typing import Optional

from ..core.membership import ADD_LEARNER, PROMOTE, REMOVE, Configuration
from ..core.messages import ClientReply
from ..core.raft import LEADER
from ..core.session import DONE, ClientSession
from ..storage import DiskImage
from ..transports.wire import FIRST_CLIENT_ID

ADMIN = FIRST_CLIENT_ID + 999     # the admin client's id (workload clients count up from 1000)
EXTRA = 2                         # members beyond SimConfig.nodes, at most
MIN_VOTERS = 3
CHURN = ("add", "promote", "remove", "transfer", "lose_disk")


class Churn:
    """Membership churn and its bookkeeping (state lives on ``Simulation``)."""

    def _init_churn(self) -> None:
        self.first = list(self.ids)          # the first configuration; later ids join empty
        self.admin = ClientSession(ADMIN, list(self.ids), random.Random(f"{self.seed}/admin"),
                                   self.timing)
        self.changes = {"ok": 0, "refused": 0, "unknown": 0}
        self.wiped: set[int] = set()         # lost their disk (counted as holding everything)
        self.transfers_from: dict[int, int] = {}   # leader -> the term it began handing over

    def _boot_nodes(self, i: int) -> list[int]:
        return self.first if i in self.first else []

    # -- the configuration in use --------------------------------------------

    def _voter_sets(self, planned: bool = True) -> list[frozenset[int]]:
        """The voters of every configuration in use: the committed one of the
        most advanced live node, and each live node's latest (and, if
        ``planned``, those the admin's pending changes may make)."""
        if not self.nodes:
            return [frozenset(self.first)]
        ahead = max(self.nodes.values(), key=lambda n: n.commit)
        confs = [ahead.committed_configuration[1]] + [n.configuration[1]
                                                      for n in self.nodes.values()]
        sets = {frozenset(c.voters) for c in confs}
        # ... and the ones the admin's changes still under way may make
        for p in self.admin.pending.values() if planned else ():
            op = p.command.op    # (the admin's session registration has no server)
            if op == REMOVE:
                sets |= {s - {int(p.command.key)} for s in sets}
            elif op == PROMOTE:
                sets |= {s | {int(p.command.key)} for s in sets}
        return list(sets)

    def _committed_config(self) -> Configuration:
        ahead = max(self.nodes.values(), key=lambda n: n.commit)
        return ahead.committed_configuration[1]

    def _keeps_majority(self, without: int = -1, down: int = -1, up: int = -1) -> bool:
        """Whether every configuration in use, with ``without`` removed from it,
        ``down`` down for good and ``up`` promoted, keeps a live majority: a
        crashed node may never restart (without the restart fault)."""
        for voters in self._voter_sets():
            voters = (voters - {without}) | ({up} if up >= 0 else set())
            alive = sum(v in self.nodes and v not in self.crash_at and v != down
                        for v in voters)   # (a crash already set for a node's turn counts)
            if alive < len(voters) // 2 + 1:
                return False
        return True

    def _down_voters(self) -> tuple[int, int]:
        """(the most voters down in any configuration in use, the fewest voters)."""
        sets = self._voter_sets()
        # (a crash set for a node's next persisting turn counts: it will be down)
        down = max(sum(v not in self.nodes or v in self.crash_at for v in s) for s in sets)
        return down, min(len(s) for s in sets)

    # -- events ----------------------------------------------------------------

    def _churn_choices(self) -> list[str]:
        if "churn" not in self.cfg.faults or len(self.admin.pending) >= 2 or not self.nodes:
            return []
        return ["churn", "churn"]

    def _churn(self) -> None:
        r = self.rng
        kind = r.choice(CHURN)
        conf = self._committed_config()
        leaders = [i for i, n in self.nodes.items() if n.role == LEADER]
        leader: Optional[int] = max(leaders, key=lambda i: self.nodes[i].term, default=None)
        if kind == "add" and len(conf.members) < self.cfg.nodes + EXTRA:
            j = max(self.ids) + 1
            self.ids.append(j)
            self.storage[j] = DiskImage()
            self.nodes[j] = self._boot(j)
            self.admin.nodes.append(j)
            self._admin(ADD_LEARNER, j)
        elif kind == "promote":
            ready = [j for j in conf.learners if self._keeps_majority(up=j)]
            if ready:
                self._admin(PROMOTE, r.choice(ready))
        elif kind == "remove":
            victims = list(conf.learners)
            if len(conf.voters) > MIN_VOTERS:
                victims += [v for v in conf.voters if self._keeps_majority(without=v)]
            if victims:
                self._admin(REMOVE, r.choice(victims))
        elif kind == "transfer" and leader is not None:
            others = [v for v in conf.voters if v != leader and v in self.nodes]
            if others and self.nodes[leader].transfer_leader(r.choice(others),
                                                             self._local(leader)) is None:
                self.transfers_from[leader] = self.nodes[leader].term
        elif (kind == "lose_disk" and not self.dead and not self.corrupted
              and len(conf.voters) > MIN_VOTERS):
            victims = [v for v in conf.voters if v != leader and self._keeps_majority(down=v)]
            if not victims:
                return
            j = r.choice(victims)
            if j in self.nodes:
                self._crash(j, corrupt=False)
            self.storage[j] = DiskImage()   # it may never start again: the launcher's refusal
            self.dead.add(j)
            self.wiped.add(j)
            self._admin(REMOVE, j)

    def _admin(self, op: str, node: int) -> None:
        self.admin.submit(op, str(node), None, None, self.now)
        self._admin_flush()

    def _admin_flush(self) -> None:
        for dst, msg in self.admin.take_messages():
            self._send(ADMIN, dst, [msg])
        for out in self.admin.take_finished():
            if out.outcome == DONE:
                self.changes["ok"] += 1
            elif out.result.startswith("refused"):
                self.changes["refused"] += 1
            else:
                self.changes["unknown"] += 1

    def _admin_turn(self, src: Optional[int] = None, reply: Optional[ClientReply] = None
                    ) -> None:
        if reply is not None:
            self.admin.step(src, reply, self.now)
        elif self.admin.next_deadline() <= self.now:
            self.admin.tick(self.now)
        self._admin_flush()

    def _members(self) -> list[int]:
        """The live members of the configuration in use at the end."""
        members = self._committed_config().members
        return sorted(i for i in self.nodes if i in members)
