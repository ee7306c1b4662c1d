"""Snapshot files and log compaction on disk: restart = newest valid snapshot +
log tail, and a crash at each point of taking one (mid-write, after the
rename before the log shrinks, mid-rewrite of the log) restarts correctly."""

from __future__ import annotations

import os

import pytest

from raftmp.core.messages import Entry, Snapshot
from raftmp.storage import CorruptStorage, FileStorage, MemoryStorage


def entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, ("put", f"k{i}", f"v{i}" * 20)) for i in range(lo, hi + 1)]


SNAP = Snapshot(60, 1, b"state at 60")


def filled(path, n: int = 100) -> FileStorage:
    s = FileStorage(path)
    s.save((1, 0), entries(1, n))
    return s


def reopen(path) -> FileStorage:
    return FileStorage(path)


def test_snapshot_then_compact_restarts_from_snapshot_and_tail(tmp_path):
    with filled(tmp_path) as s:
        before = os.path.getsize(tmp_path / "log")
        s.save_snapshot(SNAP)
        s.compact(50, 1)                      # keep 10 entries before the snapshot
        assert os.path.getsize(tmp_path / "log") < 0.6 * before     # 50 of 100 entries left
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


def test_crash_mid_log_rewrite_keeps_the_old_log(tmp_path, monkeypatch):
    with filled(tmp_path) as s:
        s.save_snapshot(SNAP)
        real = os.replace

        def crash(src, dst):
            if str(src).endswith("log.tmp"):
                raise KeyboardInterrupt("crash before the rename")
            real(src, dst)

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(KeyboardInterrupt):
            s.compact(60, 1)
        monkeypatch.setattr(os, "replace", real)
        assert (tmp_path / "log.tmp").exists()
        s._log_fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_APPEND)   # let close() work
    with reopen(tmp_path) as s:
        assert s.load_snapshot() == SNAP and s.load()[2] == entries(61, 100)
    assert not (tmp_path / "log.tmp").exists()


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
    with open(tmp_path / "log", "ab") as f:
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
