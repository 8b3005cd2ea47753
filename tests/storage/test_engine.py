"""LSMStore behaviour: TTL, compaction garbage collection, bounded tables/memory/cache, stalls, threads, manifest, errors."""

import os
import random
import threading
import time

import pytest

from raykv.errors import CorruptionError, InvalidArgument, InvalidKey, Overloaded
from raykv.storage import LSMStore
from raykv.storage import compaction as C
from raykv.storage import format as F
from raykv.storage import sstable
from raykv.storage import wal as W


class Clock:
    def __init__(self):
        self.now = 5000.0

    def __call__(self):
        return self.now


def test_basic_api_and_context_manager(tmp_path):
    with LSMStore(tmp_path) as db:
        assert db.get(b"a") is None
        db.put(b"a", b"1")
        db.put(b"b", b"")
        assert db.get(b"a") == b"1" and db.get(b"b") == b""
        db.delete(b"a")
        assert db.get(b"a") is None
        db.write_batch([(b"c", b"3"), (b"b", None), (b"d", b"4")])
        assert list(db.scan()) == [(b"c", b"3"), (b"d", b"4")]
        assert list(db.scan(b"c", b"d")) == [(b"c", b"3")]
        assert list(db.scan(None, b"d")) == [(b"c", b"3")]
        assert list(db.scan(b"c\x00")) == [(b"d", b"4")]
        assert b"c" in db and b"a" not in db
    with pytest.raises(InvalidArgument):
        db.put(b"x", b"y")
    with LSMStore(tmp_path) as db:
        assert list(db.scan()) == [(b"c", b"3"), (b"d", b"4")]


def test_input_validation(tmp_path):
    with LSMStore(tmp_path) as db:
        for bad in ("str", 5, None, bytearray(b"x")):
            with pytest.raises(InvalidKey):
                db.put(bad, b"v")
            with pytest.raises(InvalidKey):
                db.get(bad)
        with pytest.raises(InvalidKey, match="non-empty"):
            db.put(b"", b"v")
        for bad in ("str", 5, None):
            with pytest.raises(InvalidArgument, match="bytes"):
                db.put(b"k", bad)
        for ttl in (0, -1, "5", True):
            with pytest.raises(InvalidArgument, match="ttl"):
                db.put(b"k", b"v", ttl=ttl)
        with pytest.raises(InvalidArgument):
            db.write_batch([b"k"])
        with pytest.raises(InvalidArgument):
            db.scan("a")
        assert db.get(b"k") is None   # nothing half-written
    with pytest.raises(InvalidArgument, match="fsync"):
        LSMStore(tmp_path, fsync="sometimes")
    with pytest.raises(InvalidArgument, match="compression"):
        LSMStore(tmp_path, compression="brotli")


def test_write_batch_is_one_wal_record(tmp_path):
    with LSMStore(tmp_path, fsync="always") as db:
        db.write_batch([(b"k%d" % i, b"v") for i in range(50)] + [(b"k3", None)])
        records = list(W.read_records(db._wal.path))
        assert len(records) == 1
        assert db.get(b"k3") is None and db.get(b"k4") == b"v"


def test_ttl_expiry_in_memtable_tables_and_compaction(tmp_path):
    clock = Clock()
    with LSMStore(tmp_path, clock=clock, memtable_bytes=1 << 20) as db:
        db.put(b"short", b"s", ttl=10)
        db.put(b"long", b"l", ttl=1000)
        db.put(b"forever", b"f")
        db.write_batch([(b"batch", b"b", 10)])
        assert db.get(b"short") == b"s" and db.get(b"batch") == b"b"
        clock.now += 11
        assert db.get(b"short") is None and db.get(b"batch") is None
        assert [k for k, _ in db.scan()] == [b"forever", b"long"]
        db.flush()
        assert db.get(b"short") is None and db.get(b"long") == b"l"
        clock.now += 1000
        assert [k for k, _ in db.scan()] == [b"forever"]
        db.compact()   # bottom-level compaction drops the expired entries for good
        assert db.stats()["keys"] == 1
    with LSMStore(tmp_path, clock=clock) as db:
        assert list(db.scan()) == [(b"forever", b"f")]


def test_ttl_overwrite_without_ttl_is_permanent(tmp_path):
    clock = Clock()
    with LSMStore(tmp_path, clock=clock) as db:
        db.put(b"k", b"1", ttl=5)
        db.put(b"k", b"2")
        clock.now += 100
        assert db.get(b"k") == b"2"


def test_compaction_removes_shadowed_versions_and_tombstones(tmp_path):
    with LSMStore(tmp_path, memtable_bytes=32 << 10, fsync="never", auto_compact=False) as db:
        for rnd in range(6):
            for i in range(2000):
                db.put(b"key%05d" % i, b"%d" % rnd * 50)
            db.flush()
        for i in range(0, 2000, 2):
            db.delete(b"key%05d" % i)
        db.flush()
        before = db.stats()
        assert before["keys"] >= 6 * 2000
        db.compact()
        after = db.stats()
        assert after["keys"] == 1000                    # one entry per live key, no tombstone left
        assert after["disk_bytes"] < before["disk_bytes"] / 3
        assert after["levels"][0] == 0
        live = sorted(os.listdir(tmp_path))
        assert len([n for n in live if n.endswith(F.TABLE_SUFFIX)]) == after["tables"]
        assert db.get(b"key00000") is None and db.get(b"key00001") == b"5" * 50


def test_tombstone_kept_while_an_older_version_lies_below(tmp_path):
    with LSMStore(tmp_path, auto_compact=False, l0_trigger=1, max_flush_level=0) as db:
        db.put(b"a", b"old")
        db.put(b"z", b"zz")
        db.compact()                                        # -> level 1
        [l1] = db._state.levels[1]
        info = C.FileInfo(l1.number, l1.size, l1.smallest, l1.largest)
        with db._compaction_lock:
            db._run(C.Task(1, [info], 2, trivial_move=True))  # push it down to level 2
        assert [len(lv) for lv in db._state.levels[:3]] == [0, 0, 1]
        db.delete(b"a")
        db.flush()
        task = C.pick(db._levels_info(), db._policy)
        assert task.level == 0 and task.output_level == 1 and not task.bottom
        with db._compaction_lock:
            db._run(task)
        [l1] = db._state.levels[1]
        assert l1.tombstones == 1                           # kept: it still shadows "old" in level 2
        assert db.get(b"a") is None
        assert list(db.scan()) == [(b"z", b"zz")]
        db.compact()                                        # now everything is merged at the bottom
        assert sum(m.tombstones for lv in db._state.levels for m in lv) == 0
        assert db.get(b"a") is None


def test_table_count_bounded_under_long_random_workload(tmp_path):
    rnd = random.Random(7)
    with LSMStore(tmp_path, fsync="never", memtable_bytes=16 << 10, table_bytes=16 << 10,
                  l0_trigger=4, l0_stop=8) as db:
        peak = 0
        for i in range(25000):
            db.put(b"k%06d" % rnd.randrange(100000), rnd.randbytes(40))
            if i % 500 == 0:
                st = db.stats()
                peak = max(peak, st["levels"][0])
                assert st["levels"][0] <= 8
        db.flush()
        st = db.stats()
        assert st["compactions"] > 5 and st["flushes"] > 50
        # a read consults at most L0 tables + one table per deeper level
        assert peak <= 8
        assert sum(1 for n in st["levels"][1:] if n) <= 4


def test_cache_and_memory_stay_bounded(tmp_path):
    cache = 64 << 10
    mem = 32 << 10
    rnd = random.Random(3)
    with LSMStore(tmp_path, fsync="never", memtable_bytes=mem, cache_bytes=cache) as db:
        for i in range(30000):
            db.put(b"k%06d" % i, rnd.randbytes(60))
            if i % 1000 == 0:
                st = db.stats()
                assert st["memtable_bytes"] <= mem + 200
                assert st["immutable_bytes"] <= 2 * (mem + 200)
        db.flush()
        st = db.stats()
        assert st["disk_bytes"] > 20 * (cache + mem)        # the data set is much bigger than memory
        for _ in range(5000):
            k = b"k%06d" % rnd.randrange(30000)
            assert db.get(k) is not None
            assert db.cache.usage <= cache
        st = db.stats()
        assert st["cache_misses"] > 0 and st["cache_hits"] > 0
        assert st["cache_bytes"] <= cache


def test_writes_stall_but_never_fail_when_flushes_fall_behind(tmp_path, monkeypatch):
    real_finish = sstable.TableBuilder.finish

    def slow_finish(self):
        time.sleep(0.05)
        return real_finish(self)

    monkeypatch.setattr(sstable.TableBuilder, "finish", slow_finish)
    with LSMStore(tmp_path, fsync="never", memtable_bytes=4 << 10, max_immutable=1) as db:
        for i in range(1200):
            db.put(b"k%05d" % i, b"v" * 30)
        st = db.stats()
        assert st["stalls"] > 0 and st["stall_seconds"] > 0
        assert st["immutable_memtables"] <= 1
        assert all(db.get(b"k%05d" % i) == b"v" * 30 for i in range(1200))


def test_stall_timeout_turns_a_long_stall_into_overloaded(tmp_path, monkeypatch):
    gate = threading.Event()
    real_finish = sstable.TableBuilder.finish

    def blocked_finish(self):
        gate.wait(10)
        return real_finish(self)

    monkeypatch.setattr(sstable.TableBuilder, "finish", blocked_finish)
    db = LSMStore(tmp_path, fsync="never", memtable_bytes=1 << 10, max_immutable=1, stall_timeout=0.2)
    with pytest.raises(Overloaded, match="stalled"):
        for i in range(1000):
            db.put(b"k%05d" % i, b"v" * 30)
    gate.set()
    db.put(b"after", b"ok")          # once the flush catches up, writes go through again
    assert db.get(b"after") == b"ok"
    db.close()


def test_concurrent_writers_and_readers(tmp_path):
    db = LSMStore(tmp_path, fsync="never", memtable_bytes=16 << 10)
    errors = []

    def writer(t):
        try:
            for i in range(1500):
                db.put(b"t%d-%05d" % (t, i), b"%d" % i)
                if i % 100 == 0:
                    db.delete(b"t%d-%05d" % (t, i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            for _ in range(200):
                keys = [k for k, _ in db.scan(b"t0-", b"t0-~")]
                assert keys == sorted(keys)
                db.get(b"t1-00001")
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(4)] + \
         [threading.Thread(target=reader) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for t in range(4):
        for i in range(1500):
            want = None if i % 100 == 0 else b"%d" % i
            assert db.get(b"t%d-%05d" % (t, i)) == want
    db.close()


def test_scan_is_a_snapshot(tmp_path):
    with LSMStore(tmp_path) as db:
        for i in range(10):
            db.put(b"k%d" % i, b"old")
        it = db.scan()
        db.put(b"k5", b"new")
        db.put(b"k55", b"new")
        db.delete(b"k1")
        assert [(k, v) for k, v in it] == [(b"k%d" % i, b"old") for i in range(10)]


def test_orphans_removed_on_open_and_obsolete_files_after_compaction(tmp_path):
    with LSMStore(tmp_path, memtable_bytes=8 << 10, fsync="never") as db:
        for i in range(3000):
            db.put(b"k%05d" % i, b"x" * 20)
        db.compact()
        live = {m.number for lv in db._state.levels for m in lv}
        on_disk = {int(n[:-4]) for n in os.listdir(tmp_path) if n.endswith(F.TABLE_SUFFIX)}
        assert on_disk == live                               # compaction inputs were deleted
    (tmp_path / F.table_name(999999)).write_bytes(b"half-written table")
    (tmp_path / ("000123" + F.TABLE_SUFFIX + F.TMP_SUFFIX)).write_bytes(b"tmp")
    (tmp_path / (F.MANIFEST_NAME + F.TMP_SUFFIX)).write_bytes(b"tmp")
    with LSMStore(tmp_path) as db:
        names = os.listdir(tmp_path)
        assert F.table_name(999999) not in names
        assert not [n for n in names if n.endswith(F.TMP_SUFFIX)]
        assert db.get(b"k00042") == b"x" * 20


def test_corrupt_manifest_is_an_error(tmp_path):
    with LSMStore(tmp_path) as db:
        db.put(b"a", b"1")
    path = tmp_path / F.MANIFEST_NAME
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as ei:
        LSMStore(tmp_path)
    assert ei.value.path == str(path)


def test_corrupt_table_block_surfaces_on_read(tmp_path):
    with LSMStore(tmp_path, cache_bytes=0, fsync="never", max_flush_level=0) as db:
        for i in range(2000):
            db.put(b"k%05d" % i, b"v%d" % i)
        db.flush()
        [meta] = db._state.levels[0]
        path = tmp_path / F.table_name(meta.number)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01                                        # inside the first data block
    path.write_bytes(bytes(data))
    with LSMStore(tmp_path, cache_bytes=0) as db:
        with pytest.raises(CorruptionError) as ei:
            for i in range(2000):
                db.get(b"k%05d" % i)
        assert ei.value.path == str(path)
        with pytest.raises(CorruptionError):
            list(db.scan())


def test_stats_keys(tmp_path):
    with LSMStore(tmp_path) as db:
        db.put(b"a", b"1")
        st = db.stats()
        for key in ("keys", "keys_estimate", "disk_bytes", "tables", "levels", "memtable_bytes",
                    "cache_hits", "cache_misses", "cache_bytes"):
            assert key in st
        assert st["keys"] == 1 and db.approximate_disk_bytes > 0


def _fail_manifest_saves(db):
    def failing(encoded):
        raise OSError("simulated crash before the new manifest became durable")
    db._save = failing


def test_compaction_inputs_survive_until_the_manifest_is_durable(tmp_path):
    db = LSMStore(tmp_path, fsync="never", auto_compact=False, memtable_bytes=8 << 10)
    for r in range(3):
        for i in range(500):
            db.put(b"k%04d" % i, b"round%d" % r)
        db.flush()
    for i in range(0, 500, 3):
        db.delete(b"k%04d" % i)
    db.flush()
    _fail_manifest_saves(db)
    with pytest.raises(OSError, match="simulated"):
        db.compact()
    db.close()                 # the process "dies" here: the new manifest never landed
    # auto_compact off: a background compaction of the reopened store would otherwise race the listing below
    # (its outputs in the state, its inputs not unlinked yet): the flake sessions 2-3 could not reproduce
    with LSMStore(tmp_path, auto_compact=False) as db2:
        for i in range(500):
            assert db2.get(b"k%04d" % i) == (None if i % 3 == 0 else b"round2")
        names = os.listdir(tmp_path)
        live = {m.number for lv in db2._state.levels for m in lv}
        assert {int(n[:-4]) for n in names if n.endswith(F.TABLE_SUFFIX)} == live   # outputs were orphans


def test_flushed_log_survives_until_the_manifest_is_durable(tmp_path):
    db = LSMStore(tmp_path, fsync="never")
    for i in range(100):
        db.put(b"k%03d" % i, b"v%d" % i)
    _fail_manifest_saves(db)
    with pytest.raises(Exception, match="simulated"):
        db.flush()
    with pytest.raises(Exception, match="simulated"):
        db.put(b"more", b"x")  # background failure is reported to writers, not swallowed
    db.close()
    with LSMStore(tmp_path) as db2:
        assert [k for k, _ in db2.scan()] == [b"k%03d" % i for i in range(100)]


def _assert_deep_levels_disjoint(db):
    for lv in db._state.levels[1:]:
        ordered = sorted(lv, key=lambda m: m.smallest)
        assert all(a.largest < b.smallest for a, b in zip(ordered, ordered[1:]))


def test_flush_places_disjoint_tables_below_level0(tmp_path):
    """Sequential inserts flush tables that overlap nothing: they skip level 0 (PickLevelForMemTableOutput)."""
    with LSMStore(tmp_path, fsync="never", memtable_bytes=32 << 10) as db:
        for i in range(3000):
            db.put(b"seq%06d" % i, b"x" * 100)
        db.flush()
        st = db.stats()
        assert st["flushes"] >= 5 and st["flushes_below_l0"] >= st["flushes"] - 1
        assert st["levels"][0] <= 1 and st["compaction_bytes_in"] == 0     # nothing was rewritten
        _assert_deep_levels_disjoint(db)
    with LSMStore(tmp_path, fsync="never") as db:
        assert db.get(b"seq000000") == b"x" * 100 and db.get(b"seq002999") == b"x" * 100
        assert sum(1 for _ in db.scan()) == 3000
    with LSMStore(tmp_path / "off", fsync="never", memtable_bytes=32 << 10, max_flush_level=0) as db:
        for i in range(3000):
            db.put(b"seq%06d" % i, b"x" * 100)
        db.flush()
        assert db.stats()["flushes_below_l0"] == 0


def test_flush_placement_with_concurrent_compaction_keeps_reads_right(tmp_path):
    """Random and sequential writes interleaved, flushes racing background compactions: every level
    below 0 stays disjoint and every read matches a dict."""
    rng = random.Random(11)
    model = {}
    with LSMStore(tmp_path, fsync="never", memtable_bytes=16 << 10, table_bytes=16 << 10, l0_trigger=2) as db:
        for i in range(6000):
            if rng.random() < 0.5:
                k = b"seq%06d" % i
            else:
                k = b"rnd%04d" % rng.randrange(2000)
            if rng.random() < 0.1:
                db.delete(k)
                model.pop(k, None)
            else:
                v = b"%d" % i * 5
                db.put(k, v)
                model[k] = v
        db.flush()
        _assert_deep_levels_disjoint(db)
        assert db.stats()["flushes_below_l0"] > 0 and db.stats()["compactions"] > 0
        assert dict(db.scan()) == model
        assert all(db.get(k) == v for k, v in model.items())
    with LSMStore(tmp_path, fsync="never") as db:
        assert dict(db.scan()) == model
