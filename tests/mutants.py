"""Broken cores, each a runtime patch of the real one: the bug classes the
simulator's default sweep must find (tests/test_sim.py). ``MUTANTS`` maps a
name to (patches, pattern): each patch is (owner, attribute, replacement),
applied with ``monkeypatch.setattr``; ``pattern`` is what the first
violation must match. A handler of ``Raft`` is patched in ``_HANDLERS`` too.

Nothing in the product knows about these.
"""

from __future__ import annotations

from raftmp import logformat
from raftmp.core import raft as raft_module
from raftmp.core.kv import KVStore, Session
from raftmp.core.log import RaftLog
from raftmp.core.messages import (
    AppendEntries,
    AppendEntriesReply,
    Command,
    InstallSnapshot,
    RequestVote,
    RequestVoteReply,
)
from raftmp.core.raft import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, Raft, Ready

INF = float("inf")
_step = Raft.step
_ready = Raft.ready
_init = Raft.__init__
_handle_append = Raft.handle_append
_handle_append_reply = Raft.handle_append_reply
_handle_request_vote = Raft.handle_request_vote


# -- (a) thesis §4.2.3: the lease's vote hold checked only for a higher-term request

def _in_lease_before(self, now) -> bool:
    """Raft._in_lease before issue 18: it also needed a known leader."""
    if self.role == LEADER or now < self.vote_hold_until:
        return True
    return self.leader is not None and now - self.leader_seen < self.config.election_timeout[0]


def hole_step(self, src, m, now) -> None:
    """Raft.step as it was before issue 18: the §4.2.3 check (no vote while a
    leader is known alive, or just after boot) only for a RequestVote of a
    higher term; a node that reached the term otherwise grants with no check."""
    t = type(m)
    if m.term > self.term:
        if t is RequestVote and _in_lease_before(self, now):
            return
        if (t is RequestVote and m.pre) or (t is RequestVoteReply and m.pre and m.granted):
            pass
        else:
            leads = t is AppendEntries or t is InstallSnapshot
            self.become_follower(m.term, m.leader if leads else None, now)
    if m.term < self.term:
        return _step(self, src, m, now)   # the stale-term answers, unchanged
    raft_module._HANDLERS[t](self, src, m, now)


# -- (b) §5.4.2: commit an old-term entry by counting replicas

def commit_by_counting(self) -> bool:
    """maybe_commit without §5.4.2: commits any index a quorum holds, whatever its term."""
    matches = sorted([pr.match for pr in self.progress.values()] + [self.log.last_index],
                     reverse=True)
    n = matches[self.quorum - 1]
    if n <= self.commit:
        return False
    self._commit_to(n)
    return True


# -- (c) a granted vote not made durable

def vote_not_durable(self, now) -> Ready:
    """ready() persisting the new term but not a vote for another node."""
    rd = _ready(self, now)
    if rd.hard_state is not None and rd.hard_state[1] not in (None, self.id):
        rd.hard_state = (rd.hard_state[0], None)
    return rd


# -- (d) §7: InstallSnapshot drops the follower's entries that follow the snapshot

def install_drops_suffix(self, index: int, term: int) -> bool:
    """RaftLog.install discarding the whole log, even a suffix that matches."""
    self.entries, self.ends = [], []
    self.base, self.base_term = index, term
    return False


# -- (e) a booted node that does not hold its vote

def boot_without_hold(self, *args, **kwargs) -> None:
    """Raft.__init__ without the boot-time vote hold (thesis §6.4.1, lease mode)."""
    _init(self, *args, **kwargs)
    self.vote_hold_until = -INF


# -- (f) a lease timed from the acknowledgements' arrival

def lease_from_arrival(self, src, m, now) -> None:
    """handle_append_reply dating an acknowledged round by its arrival, not its start."""
    pr = self.progress.get(src) if self.role == LEADER else None
    before = pr.round if pr is not None else None
    _handle_append_reply(self, src, m, now)
    if pr is not None and self.role == LEADER and pr.round != before:
        pr.acked_start = now


# -- (g) a cumulative acknowledgement reusing a match proven to an earlier term's leader

def ack_reuses_old_match(self, src, m, now) -> None:
    """handle_append taking the match proven to an earlier leader as this term's."""
    self.matched = (m.term, self.matched[1])
    _handle_append(self, src, m, now)


# -- the mutants of issue 8

def stale_round_echo(self, src, m, now) -> None:
    """The §5.1 stale-term rejection echoing the old request's ReadIndex round."""
    if type(m) is AppendEntries and m.term < self.term:
        self._send(src, AppendEntriesReply(self.term, self.id, False, m.prev_index, 0, 0,
                                           m.round))
        return
    _step(self, src, m, now)


def read_before_noop_commits(self, ctx) -> bool:
    """read_index without thesis §6.4 step 1 (wait for a commit in the leader's term)."""
    if self.role != LEADER:
        return False
    self.reads.append((ctx, self.round + 1))
    self.read_bcast = True
    return True


def reads_without_quorum(self) -> list:
    """Every pending read released at once, with no round confirmed by a quorum."""
    done, self.reads = [(ctx, self.commit) for ctx, _ in self.reads], []
    return done


def ack_before_save(self, now) -> Ready:
    """Every message may leave before the save: votes and acknowledgements too."""
    rd = _ready(self, now)
    rd.messages, rd.persisted_messages = rd.messages + rd.persisted_messages, []
    return rd


def follower_commits_stale_tail(self, src, m, now) -> None:
    """handle_append, then the follower commit rule without min(leaderCommit, last new)."""
    _handle_append(self, src, m, now)
    if self.role == FOLLOWER and self.log.term(m.prev_index) == m.prev_term:
        self.commit = max(self.commit, min(m.commit, self.log.last_index))


# -- more bug classes

def vote_twice(self, src, m, now) -> None:
    """handle_request_vote granting whatever vote it already gave this term."""
    self.vote = None
    _handle_request_vote(self, src, m, now)


def count_any_vote(self, src, m, now) -> None:
    """handle_vote_reply counting a granted vote of any term (a stale reply too)."""
    if self.role in (PRE_CANDIDATE, CANDIDATE) and m.granted:
        pre = self.role == PRE_CANDIDATE
        m = m._replace(term=self.term + pre, pre=pre)
    _handle_vote_reply(self, src, m, now)


_handle_vote_reply = Raft.handle_vote_reply


def no_check_quorum(self, now) -> None:
    """check_quorum that never steps down (thesis §6.2 missing)."""
    for pr in self.progress.values():
        pr.active = False
    self.quorum_deadline = now + 2 * self.config.election_timeout[1]


def lease_without_drift(self) -> float:
    """The lease not shortened by the clock-drift bound (thesis §6.4.1)."""
    return self.config.election_timeout[0]


def truncate_on_short_append(self, m) -> int:
    """_append that drops whatever follows the message's last entry (a reordered,
    shorter append then erases acknowledged entries)."""
    last = m.prev_index + len(m.entries)
    if m.entries and self.log.last_index > last and last > self.commit:
        self.log.truncate(last + 1)
    return _append(self, m)


_append = Raft._append


def apply_duplicates(self, cmd, index=0):
    """KVStore.apply forgetting the results it keeps: a retry is applied again."""
    s = self.sessions.get((getattr(cmd, "client_id", None), getattr(cmd, "session", None)))
    if s is not None:
        s.results.pop(getattr(cmd, "seq", None), None)
    return _kv_apply(self, cmd, index)


def open_session_by_command(self, cmd, index=0):
    """KVStore.apply opening a session for a command of one not in the table (as
    before registration): a late copy of an expired session's command is applied
    again."""
    if type(cmd) is Command and cmd.op != "register":
        self.sessions.setdefault((cmd.client_id, cmd.session), Session())
    return _kv_apply(self, cmd, index)


_kv_apply = KVStore.apply


# name -> (patches, what the first violation says)
MUTANTS = {
    "lease-vote-hole": ([(Raft, "step", hole_step)], "lease|stale read"),
    "commit-old-term-by-counting": ([(Raft, "maybe_commit", commit_by_counting)],
                                    "commit rule"),
    "vote-not-durable": ([(Raft, "ready", vote_not_durable)], "vote not durable"),
    "install-drops-suffix": ([(RaftLog, "install", install_drops_suffix)],
                             "acknowledged what the disk lacks|durability|no convergence"),
    "boot-without-vote-hold": ([(Raft, "__init__", boot_without_hold)], "lease|stale read"),
    "lease-from-ack-arrival": ([(Raft, "handle_append_reply", lease_from_arrival)],
                               "lease|stale read"),
    "ack-reuses-old-term-match": ([(Raft, "handle_append", ack_reuses_old_match)],
                                  "acknowledged"),
    "stale-round-echo": ([(Raft, "step", stale_round_echo)], "read confirmation"),
    "read-before-noop-commits": ([(Raft, "read_index", read_before_noop_commits)],
                                 "stale read"),
    "reads-without-quorum": ([(Raft, "_released_reads", reads_without_quorum)], "stale read"),
    "ack-before-save": ([(Raft, "ready", ack_before_save)], "before the save"),
    "truncate-mid-log": ([(logformat, "_torn", lambda view, pos: "any bad record")],
                         "started from a log with a flipped bit|durability"),
    "up-to-date-always": ([(RaftLog, "is_up_to_date", lambda self, i, t: True)],
                          "leader completeness|state machine safety|log matching"),
    "follower-commits-stale-tail": ([(Raft, "handle_append", follower_commits_stale_tail)],
                                    "state machine safety|log matching|leader completeness"),
    "vote-twice": ([(Raft, "handle_request_vote", vote_twice)], "election safety"),
    "count-any-vote": ([(Raft, "handle_vote_reply", count_any_vote)], "election safety|lease"),
    "no-check-quorum": ([(Raft, "check_quorum", no_check_quorum)], "liveness"),
    "lease-without-drift": ([(Raft, "lease_duration", lease_without_drift)], "lease|stale read"),
    "truncate-on-short-append": ([(Raft, "_append", truncate_on_short_append)],
                                 "acknowledged|durability|state machine|leader completeness"),
    "apply-duplicates": ([(KVStore, "apply", apply_duplicates)], "differ|stale read|history"),
    "open-session-by-command": ([(KVStore, "apply", open_session_by_command)],
                                "executed twice|differ|stale read|history"),
}
HANDLED = {"handle_append": AppendEntries, "handle_append_reply": AppendEntriesReply,
           "handle_request_vote": RequestVote, "handle_vote_reply": RequestVoteReply}


def apply(monkeypatch, name: str) -> str:
    """Patch the core with mutant ``name``; what its first violation must match."""
    patches, what = MUTANTS[name]
    for owner, attr, fn in patches:
        monkeypatch.setattr(owner, attr, fn)
        if owner is Raft and attr in HANDLED:
            monkeypatch.setitem(raft_module._HANDLERS, HANDLED[attr], fn)
    return what
