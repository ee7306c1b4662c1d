"""Snapshot files and log compaction on disk: restart = newest valid snapshot +
log tail, and a crash at each point of taking one (mid-write, after the
rename before the log shrinks, between two segment deletions, before the
segment that resets the log is durable) restarts correctly."""

from __future__ import annotations

import os
import shutil

import pytest

from raftmp.core.messages import Entry, Snapshot
from raftmp.storage import CorruptStorage, FileStorage, MemoryStorage


def entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, ("put", f"k{i}", f"v{i}" * 20)) for i in range(lo, hi + 1)]


SNAP = Snapshot(60, 1, b"state at 60")


SEGMENT = 1000   # bytes: a segment holds a few entries


def filled(path, n: int = 100) -> FileStorage:
    """Entries 1..n, ten per save, in segments of a few saves."""
    s = FileStorage(path, segment_bytes=SEGMENT)
    s.save((1, 0), entries(1, min(n, 10)))
    for lo in range(11, n + 1, 10):
        s.save(None, entries(lo, min(n, lo + 9)))
    return s


def segments(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.startswith("log-"))


def log_bytes(path) -> int:
    return sum(os.path.getsize(path / n) for n in segments(path))


def reopen(path) -> FileStorage:
    return FileStorage(path)


def test_snapshot_then_compact_restarts_from_snapshot_and_tail(tmp_path):
    with filled(tmp_path) as s:
        before = log_bytes(tmp_path)
        s.save_snapshot(SNAP)
        s.compact(50, 1)                      # keep 10 entries before the snapshot
        # 50 of 100 entries left, and at most one segment (20 entries) below 51
        assert log_bytes(tmp_path) < 0.75 * before
        s.save(None, entries(101, 105))
    with reopen(tmp_path) as s:
        assert s.load_snapshot() == SNAP
        assert s.load() == (1, 0, entries(61, 105))
        assert s.base.index == 60            # compacted at open, to the snapshot
        s.save(None, entries(106, 106))
    with reopen(tmp_path) as s:
        assert s.load()[2] == entries(61, 106)


def test_older_snapshot_files_go_after_compaction(tmp_path):
    with filled(tmp_path) as s:
        s.save_snapshot(Snapshot(30, 1, b"30"))
        s.compact(30, 1)
        s.save_snapshot(SNAP)
        assert len([n for n in os.listdir(tmp_path) if n.startswith("snapshot-")]) == 2
        s.compact(60, 1)
        assert [n for n in os.listdir(tmp_path) if n.startswith("snapshot-")] == [
            f"snapshot-{60:020d}"]


def test_crash_mid_snapshot_write_keeps_the_old_state(tmp_path):
    with filled(tmp_path) as s:
        s.save_snapshot(Snapshot(30, 1, b"30"))
        s.compact(30, 1)
    # A torn temporary file, as a crash in the middle of write_snapshot leaves it.
    (tmp_path / f"snapshot-{60:020d}.tmp").write_bytes(b"\x10\x00\x00\x00torn")
    with reopen(tmp_path) as s:
        assert s.load_snapshot() == Snapshot(30, 1, b"30")
        assert s.load()[2] == entries(31, 100)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_crash_after_rename_before_the_log_shrinks(tmp_path):
    with filled(tmp_path) as s:
        s.write_snapshot(SNAP)                # durable, but the log was not compacted
    with reopen(tmp_path) as s:
        assert s.load_snapshot() == SNAP and s.load()[2] == entries(61, 100)
        assert s.base.index == 60
    with reopen(tmp_path) as s:
        assert s.load()[2] == entries(61, 100)


def test_compaction_deletes_whole_segments_and_encodes_nothing(tmp_path, monkeypatch):
    with filled(tmp_path) as s:
        names = segments(tmp_path)
        assert len(names) == 5
        s.save_snapshot(SNAP)
        monkeypatch.setattr("raftmp.storage.encode_record", None)   # no entry re-encoded
        s.compact(50, 1)
        monkeypatch.undo()
        left = segments(tmp_path)
        assert left == names[-len(left):] and len(left) < len(names)   # a suffix, untouched
        s.save(None, entries(101, 101))
    with reopen(tmp_path) as s:
        assert s.load()[2] == entries(61, 101)


@pytest.mark.parametrize("conflict", [False, True])
def test_crash_between_segment_deletions(tmp_path, monkeypatch, conflict):
    """Compaction deletes old segments one by one: a crash after any number of
    them restarts with the same log after the snapshot. With a snapshot that
    does not match the log (thesis §5.3), the segment that resets it is durable
    before the first deletion."""
    snap = Snapshot(60, 2, b"leader's") if conflict else SNAP
    expected = [] if conflict else entries(61, 100)
    k = 0
    while True:
        path = tmp_path / str(k)
        real, deleted = os.unlink, []

        def crash(name, real=real, deleted=deleted, k=k):
            if len(deleted) == k:
                raise KeyboardInterrupt("crash mid-compaction")
            deleted.append(name)
            real(name)

        with filled(path) as s:
            s.save_snapshot(snap)
            monkeypatch.setattr(os, "unlink", crash)
            try:
                s.compact(60, 2 if conflict else 1)
                finished = True
            except KeyboardInterrupt:
                finished = False
            monkeypatch.undo()
        with reopen(path) as s:
            assert s.load_snapshot() == snap and s.load()[2] == expected, k
            s.save(None, entries(101, 101) if not conflict else entries(61, 61, term=2))
        with reopen(path) as s:
            assert s.load()[2] == (expected + entries(101, 101) if not conflict
                                   else entries(61, 61, term=2)), k
        if finished:
            break
        k += 1
    assert k >= 3


def test_crash_while_starting_a_segment(tmp_path):
    """A new segment torn in its first write (even its base record) is dropped;
    the segments before it are intact."""
    with filled(tmp_path / "pristine", 20) as s:
        before = segments(tmp_path / "pristine")
        s.save(None, entries(21, 30))                     # starts a segment
        new = [n for n in segments(tmp_path / "pristine") if n not in before]
        assert len(new) == 1
    data = (tmp_path / "pristine" / new[0]).read_bytes()
    for cut in (0, 3, 9, len(data) - 1):
        path = tmp_path / str(cut)
        shutil.copytree(tmp_path / "pristine", path)
        (path / new[0]).write_bytes(data[:cut])
        with reopen(path) as s:
            assert s.load()[2] == entries(1, 20), cut
            s.save(None, entries(21, 21, term=2))
        with reopen(path) as s:
            assert s.load()[2] == entries(1, 20) + entries(21, 21, term=2), cut


def test_a_torn_write_before_the_last_segment_is_corruption(tmp_path):
    with filled(tmp_path):
        names = segments(tmp_path)
    data = (tmp_path / names[1]).read_bytes()
    (tmp_path / names[1]).write_bytes(data[:-5])
    with pytest.raises(CorruptStorage, match="later segments"):
        reopen(tmp_path)


def test_snapshot_from_leader_replaces_a_conflicting_log(tmp_path):
    """Thesis §5.3: the log does not hold the snapshot's last entry, so all of
    it goes — also when the crash came before the log was compacted."""
    snap = Snapshot(12, 2, b"leader's")
    for crash_before_compact in (False, True):
        path = tmp_path / str(crash_before_compact)
        with filled(path, 20) as s:           # entries 1..20 of term 1: entry 12 differs
            s.save_snapshot(snap)
            if not crash_before_compact:
                s.compact(12, 2)
                assert s.load()[2] == []
        with reopen(path) as s:
            assert s.load() == (1, 0, []) and s.load_snapshot() == snap
            s.save(None, entries(13, 14, term=2))
        with reopen(path) as s:
            assert s.load()[2] == entries(13, 14, term=2)


def test_snapshot_from_leader_keeps_a_matching_tail(tmp_path):
    with filled(tmp_path, 20) as s:
        s.save_snapshot(Snapshot(12, 1, b"x"))
        s.compact(12, 1)
        assert s.load()[2] == entries(13, 20)
    with reopen(tmp_path) as s:
        assert s.load()[2] == entries(13, 20)


def test_corrupt_newest_snapshot_falls_back_or_refuses(tmp_path):
    with filled(tmp_path) as s:
        s.save_snapshot(SNAP)
        s.compact(60, 1)
    newest = tmp_path / f"snapshot-{60:020d}"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    # No older snapshot covers the compacted log: refuse, never start without entries 1..60.
    with pytest.raises(CorruptStorage, match="no snapshot"):
        reopen(tmp_path)


def test_torn_tail_after_a_compacted_log(tmp_path):
    with filled(tmp_path) as s:
        s.save_snapshot(SNAP)
        s.compact(60, 1)
        s.save(None, entries(101, 102))
    with open(tmp_path / segments(tmp_path)[-1], "ab") as f:
        f.write(b"\x99\x00")                  # a torn header
    with reopen(tmp_path) as s:
        assert s.load()[2] == entries(61, 102)


def test_memory_storage_has_the_same_rules():
    s = MemoryStorage()
    s.save((1, 0), entries(1, 20))
    s.save_snapshot(Snapshot(12, 2, b"x"))        # a crash here: the log does not fit it
    assert s.load()[2] == []
    s.compact(12, 2)
    s.save(None, entries(13, 13, term=2))
    assert s.load()[2] == entries(13, 13, term=2)
    m = MemoryStorage()
    m.save((1, 0), entries(1, 20))
    m.save_snapshot(Snapshot(10, 1, b"x"))
    m.compact(5, 1)
    assert m.entries == entries(6, 20)            # catch-up entries kept ...
    assert m.load()[2] == entries(11, 20)         # ... until a restart
