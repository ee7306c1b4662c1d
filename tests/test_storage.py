"""FileStorage: the same answers as MemoryStorage, across reopen, torn tails and crashes."""

from __future__ import annotations

import logging
import os
import random
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmp.core.errors import RaftmpError
from raftmp.core.messages import Entry
from raftmp.storage import CorruptStorage, DiskImage, FileStorage, MemoryStorage


def entries(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, f"cmd{i}") for i in range(first, first + n)]


def reopen(s: FileStorage) -> FileStorage:
    s.close()
    return FileStorage(s.path)


def log_file(path):
    """The log's last segment file (these tests write less than one segment)."""
    return max(p for p in path.iterdir() if p.name.startswith("log-"))


def log_size(path) -> int:
    return os.path.getsize(log_file(path))


def test_empty_dir_is_fresh_state(tmp_path):
    with FileStorage(tmp_path / "node") as s:
        assert s.load() == (0, None, [])
    with FileStorage(tmp_path / "node") as s:
        assert s.load() == (0, None, [])


def test_round_trip(tmp_path):
    s = FileStorage(tmp_path)
    s.save((1, 3), entries(1, 3))
    s.save(None, entries(4, 2))
    s.save((2, None), [])
    expected = (2, None, entries(1, 5))
    assert s.load() == expected
    s = reopen(s)
    assert s.load() == expected
    s.save((2, 1), entries(6, 1, term=2))
    s = reopen(s)
    assert s.load() == (2, 1, entries(1, 5) + entries(6, 1, term=2))
    s.close()


def test_truncation_replaces_the_suffix(tmp_path):
    s = FileStorage(tmp_path)
    s.save((1, None), entries(1, 5))
    s.save((2, None), entries(3, 1, term=2))  # §5.3: entries 3.. replaced
    assert s.load()[2] == entries(1, 2) + entries(3, 1, term=2)
    s = reopen(s)
    assert s.load()[2] == entries(1, 2) + entries(3, 1, term=2)
    s.save(None, entries(1, 1, term=3))
    s = reopen(s)
    assert s.load()[2] == entries(1, 1, term=3)
    s.close()


def test_save_must_continue_the_log(tmp_path):
    with FileStorage(tmp_path) as s:
        s.save(None, entries(1, 2))
        with pytest.raises(AssertionError):
            s.save(None, entries(4, 1))  # a hole at 3
        with pytest.raises(AssertionError):
            s.save(None, [Entry(1, 3), Entry(1, 5)])  # not contiguous
        assert s.load()[2] == entries(1, 2)


def test_hard_state_cannot_go_backwards(tmp_path):
    with FileStorage(tmp_path) as s:
        s.save((3, 1), [])
        for bad in [(2, None), (3, 2), (3, None)]:  # older term; second vote; forgotten vote
            with pytest.raises(AssertionError):
                s.save(bad, [])
        s.save((3, 1), [])
        s.save((4, None), [])
        assert s.load() == (4, None, [])


# --- same answers as MemoryStorage -------------------------------------------


@st.composite
def save_sequences(draw):
    """Saves as a core may issue them, with reopen points (None) in between."""
    ops = []
    last, term, vote = 0, 0, None
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.integers(0, 5)) == 0:
            ops.append(None)
            continue
        hard_state = None
        if draw(st.booleans()):
            new_term = term + draw(st.integers(0, 2))
            if new_term > term or vote is None:
                vote = draw(st.none() | st.integers(0, 4))
            term = new_term
            hard_state = (term, vote)
        batch = []
        if draw(st.booleans()):
            first = draw(st.integers(1, last + 1))
            n = draw(st.integers(1, 4))
            batch = [Entry(draw(st.integers(0, max(term, 1))), i, draw(st.binary(max_size=8)))
                     for i in range(first, first + n)]
            last = first + n - 1
        ops.append((hard_state, batch))
    return ops


@settings(max_examples=150, deadline=None)
@given(save_sequences())
def test_same_as_memory_storage(ops):
    with tempfile.TemporaryDirectory() as d:
        mem, disk = MemoryStorage(), FileStorage(d)
        try:
            for op in ops:
                if op is None:
                    disk = reopen(disk)
                else:
                    mem.save(*op)
                    disk.save(*op)
                assert disk.load() == mem.load()
            disk = reopen(disk)
            assert disk.load() == mem.load()
        finally:
            disk.close()


# --- torn and corrupt tails ----------------------------------------------------


def three_records(path) -> tuple[int, int]:
    """Save three records; return the offsets where the last one starts and ends."""
    with FileStorage(path) as s:
        s.save((1, 1), entries(1, 3))
        s.save(None, entries(4, 2))
        start = log_size(path)
        s.save(None, entries(6, 3))
        return start, log_size(path)


def test_torn_tail_at_every_offset(tmp_path, caplog):
    start, end = three_records(tmp_path)
    log = log_file(tmp_path)
    data = log.read_bytes()
    for cut in range(start, end):
        log.write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="raftmp.storage"):
            s = FileStorage(tmp_path)
        assert s.load() == (1, 1, entries(1, 5)), cut
        assert log_size(tmp_path) == start, cut
        assert (cut == start) == (not caplog.records), cut  # a warning iff something was cut
        # The file was truncated, so a later append is readable after the cut.
        s.save(None, entries(6, 1, term=2))
        s = reopen(s)
        assert s.load()[2] == entries(1, 5) + entries(6, 1, term=2), cut
        s.close()


def record_starts(path) -> list[int]:
    data = log_file(path).read_bytes()
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 8 + int.from_bytes(data[pos:pos + 4], "little")
    return starts


def flip_bits(path, lo: int, hi: int, headers: list[int]):
    """Yield once per flipped bit of the log bytes lo..hi, with it flipped on disk:
    every bit of the record headers (at ``headers``), one bit of every other byte."""
    log = log_file(path)
    data = log.read_bytes()
    header = {h + k for h in headers for k in range(8)}
    for pos in range(lo, hi):
        for bit in range(8) if pos in header else [pos % 8]:
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            log.write_bytes(bytes(bad))
            yield pos, bit, bytes(bad)
    log.write_bytes(data)


def test_flipped_bit_anywhere_is_corruption(tmp_path):
    """A flipped bit is never a torn write: not in the last record (its body is all
    there), not in an earlier one (valid records follow). The node refuses to start
    and the file is left as it is; a truncation would drop entries a quorum may
    have counted on (issue 8: a mid-log bit flip used to truncate the log there)."""
    _, end = three_records(tmp_path)
    for pos, bit, bad in flip_bits(tmp_path, 0, end, record_starts(tmp_path)):
        with pytest.raises(CorruptStorage):
            FileStorage(tmp_path)
        assert log_file(tmp_path).read_bytes() == bad, (pos, bit)
    with FileStorage(tmp_path) as s:                    # the intact file still loads
        assert s.load() == (1, 1, entries(1, 8))


def test_unwritten_sector_in_last_record_is_torn(tmp_path):
    """A crash can leave the file longer than what reached the disk: a last record
    whose size is right but holds an all-zero sector was never fsynced (etcd's
    isTornEntry). It is cut off; a record before it would not be."""
    with FileStorage(tmp_path) as s:
        s.save((1, 1), entries(1, 3))
        start = log_size(tmp_path)
        s.save(None, [Entry(1, 4, "x" * 3000)])
        end = log_size(tmp_path)
    data = bytearray(log_file(tmp_path).read_bytes())
    sector = (start // 512 + 2) * 512
    data[sector:sector + 512] = bytes(512)
    log_file(tmp_path).write_bytes(bytes(data))
    with FileStorage(tmp_path) as s:
        assert s.load()[2] == entries(1, 3)
        s.save(None, entries(4, 1))                     # and a valid record after it ...
    assert log_size(tmp_path) < end
    data = bytearray(log_file(tmp_path).read_bytes())
    data[:start] = bytes(start)                         # ... makes an earlier hole corruption
    log_file(tmp_path).write_bytes(bytes(data))
    with pytest.raises(CorruptStorage):
        FileStorage(tmp_path)


def test_zero_filled_tail_is_torn(tmp_path):
    start, end = three_records(tmp_path)
    with open(log_file(tmp_path), "ab") as f:
        f.write(b"\0" * 4096)  # what a crash can leave after the file size was updated
    with FileStorage(tmp_path) as s:
        assert s.load()[2] == entries(1, 8)
    assert log_size(tmp_path) == end


def test_crc_valid_unreadable_record_raises(tmp_path):
    import struct
    import zlib

    with FileStorage(tmp_path) as s:
        s.save(None, entries(1, 2))
    body = b"not a pickle"
    with open(log_file(tmp_path), "ab") as f:
        f.write(struct.pack("<II", len(body), zlib.crc32(body)) + body)
    with pytest.raises(CorruptStorage):
        FileStorage(tmp_path)


def test_creating_the_data_dir_syncs_its_parents(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    FileStorage(tmp_path / "a" / "b").close()
    assert str(tmp_path) in synced and str(tmp_path / "a") in synced
    synced.clear()
    FileStorage(tmp_path / "a" / "b").close()           # existing: nothing to sync
    assert str(tmp_path) not in synced


def test_crc_valid_record_that_breaks_the_log_raises(tmp_path):
    import pickle
    import struct
    import zlib

    with FileStorage(tmp_path) as s:
        s.save(None, entries(1, 2))
    body = pickle.dumps(entries(5, 1))  # a hole: a bug wrote it, no crash did
    with open(log_file(tmp_path), "ab") as f:
        f.write(struct.pack("<II", len(body), zlib.crc32(body)) + body)
    with pytest.raises(CorruptStorage):
        FileStorage(tmp_path)


# --- hard state -------------------------------------------------------------------


def test_hard_state_survives_reopen(tmp_path):
    with FileStorage(tmp_path) as s:
        s.save((5, 2), [])
    with FileStorage(tmp_path) as s:
        assert s.load() == (5, 2, [])
        s.save((6, None), [])
    with FileStorage(tmp_path) as s:
        assert s.load() == (6, None, [])


def test_leftover_state_tmp_keeps_the_old_state(tmp_path):
    with FileStorage(tmp_path) as s:
        s.save((5, 2), [])
    (tmp_path / "state.tmp").write_bytes(b"\x07half-written")
    with FileStorage(tmp_path) as s:
        assert s.load() == (5, 2, [])
    assert not (tmp_path / "state.tmp").exists()


def test_crash_before_replace_keeps_the_old_state(tmp_path, monkeypatch):
    s = FileStorage(tmp_path)
    s.save((5, 2), [])

    def crash(*args):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        s.save((6, 3), [])
    monkeypatch.undo()
    assert (tmp_path / "state.tmp").exists()
    s.close()
    with FileStorage(tmp_path) as s:
        assert s.load() == (5, 2, [])


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x05\x00\x00\x00\x00\x00\x00\x00[1,2]"])
def test_corrupt_state_raises(tmp_path, content):
    with FileStorage(tmp_path) as s:
        s.save((5, 2), [])
    (tmp_path / "state").write_bytes(content)
    with pytest.raises(CorruptStorage):
        FileStorage(tmp_path)
    # The failed open released the directory.
    (tmp_path / "state").unlink()
    FileStorage(tmp_path).close()


# --- costs, locking, compaction ---------------------------------------------------


def test_nothing_to_save_does_no_io(tmp_path, monkeypatch):
    s = FileStorage(tmp_path)
    s.save((3, 1), entries(1, 2))

    def no_io(*args, **kwargs):
        raise AssertionError("I/O on an empty save")

    for name in ("write", "fsync", "fdatasync", "replace", "open", "ftruncate"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, no_io)
    monkeypatch.setattr("builtins.open", no_io)
    s.save(None, [])
    s.save((3, 1), [])  # unchanged hard state
    monkeypatch.undo()
    s.close()


def test_one_fsync_per_save(tmp_path, monkeypatch):
    s = FileStorage(tmp_path)
    calls = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def counted(fd, real=real, name=name):
            calls.append(name)
            real(fd)

        monkeypatch.setattr(os, name, counted)
    s.save(None, entries(1, 100))
    assert calls == ["fdatasync", "fsync"]  # the first segment, then its name in the directory
    calls.clear()
    s.save(None, entries(101, 100))
    assert len(calls) == 1
    calls.clear()
    s.save((1, 1), [])
    assert len(calls) == 2  # state.tmp, then the directory after the replace
    monkeypatch.undo()
    s.close()


def test_sync_false_does_not_fsync(tmp_path, monkeypatch):
    def no_sync(fd):
        raise AssertionError("fsync with sync=False")

    with FileStorage(tmp_path, sync=False) as s:
        monkeypatch.setattr(os, "fsync", no_sync)
        monkeypatch.setattr(os, "fdatasync", no_sync)
        s.save((1, 1), entries(1, 3))
        monkeypatch.undo()
    with FileStorage(tmp_path) as s:
        assert s.load() == (1, 1, entries(1, 3))


def test_one_process_per_dir(tmp_path):
    with FileStorage(tmp_path):
        with pytest.raises(RaftmpError):
            FileStorage(tmp_path)
    FileStorage(tmp_path).close()


# --- DiskImage: the simulator's disk, FileStorage's format in memory ------------------


def test_disk_image_torn_save_loses_only_the_unsynced_write():
    """A crash inside save leaves a prefix of the write (cut off, or with unwritten
    zero sectors): recovery drops exactly that write, and the old hard state stays."""
    torn = 0
    for seed in range(200):
        rng = random.Random(seed)
        disk = DiskImage()
        synced = entries(1, 3) + [Entry(2, 4, "y" * rng.randrange(2000))]
        disk.save((1, 1), synced[:3])
        disk.save((2, None), synced[3:])
        write = [Entry(2, i, "z" * rng.randrange(1500)) for i in range(5, 8)]
        disk.save_torn(write, rng)
        loaded = disk.load()
        assert loaded in ((2, None, synced), (2, None, synced + write)), seed
        torn += loaded[2] == synced
        assert disk.load() == loaded, seed                  # the torn tail was cut off
    assert torn > 190


def test_disk_image_bit_flip_is_always_caught():
    rng = random.Random(1)
    for _ in range(300):
        disk = DiskImage()
        for first in range(1, 30, 3):
            disk.save(None, entries(first, 3))
        assert disk.flip_bit(rng)
        with pytest.raises(CorruptStorage):
            disk.load()
