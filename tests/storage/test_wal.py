"""WAL framing, torn-tail recovery, mid-log corruption, and fsync policies (group commit really groups)."""

import os
import threading

import pytest

from raykv.errors import CorruptionError
from raykv.storage import LSMStore
from raykv.storage import format as F
from raykv.storage import wal as W


def _write_log(path, batches):
    w = W.WalWriter(str(path), 1)
    offsets = []
    seq = 1
    for batch in batches:
        offsets.append(w.written)
        w.append(W.frame(W.encode_batch(seq, batch)))
        seq += len(batch)
    w.close()
    return offsets


BATCHES = [[(b"k%d" % i, b"v%d" % i * (i + 1), 0.0)] for i in range(6)] + \
          [[(b"a", b"1", 0.0), (b"b", None, 0.0), (b"c", b"3", 123.5)]]


def test_roundtrip_batches(tmp_path):
    p = tmp_path / "1.log"
    _write_log(p, BATCHES)
    got = list(W.replay(str(p)))
    assert [(k, v, e) for _, k, v, e in got] == [e for b in BATCHES for e in b]
    assert [s for s, *_ in got] == list(range(1, 10))


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_encode_puts_gives_encode_batch_bytes(n):
    """``encode_puts`` (``LSMStore.put_many``'s record, from two lists) is ``encode_batch`` of the same puts
    without expiry, byte for byte, so replay and the format doc cover it."""
    keys = [b"k%05d" % i for i in range(n)]
    values = [os.urandom(i % 50) for i in range(n)]
    assert W.encode_puts(9, keys, values) == W.encode_batch(9, [(k, v, 0.0) for k, v in zip(keys, values)])
    assert W.decode_batch(W.encode_puts(9, keys, values)) == [(9 + i, k, v, 0.0)
                                                               for i, (k, v) in enumerate(zip(keys, values))]


def test_truncate_at_every_offset_of_last_record_drops_only_it(tmp_path):
    p = tmp_path / "1.log"
    offsets = _write_log(p, BATCHES)
    data = p.read_bytes()
    last = offsets[-1]
    complete = [e for b in BATCHES[:-1] for e in b]
    for cut in range(last, len(data)):
        p.write_bytes(data[:cut])
        got = [(k, v, e) for _, k, v, e in W.replay(str(p))]
        assert got == complete, cut
    p.write_bytes(data)
    assert len(list(W.replay(str(p)))) == 9


def test_truncated_log_reopens_in_store_with_exactly_complete_records(tmp_path):
    src = tmp_path / "db"
    db = LSMStore(src, fsync="always")
    for i in range(5):
        db.put(b"key%d" % i, b"value%d" % i)
    log = db._wal.path
    last_len = len(W.frame(W.encode_batch(5, [(b"key4", b"value4", 0.0)])))
    data = open(log, "rb").read()
    files = {name: (src / name).read_bytes() for name in os.listdir(src)}
    db.close()
    for cut in range(len(data) - last_len, len(data)):
        d2 = tmp_path / f"copy{cut}"   # the directory as a crash mid-append would leave it
        d2.mkdir()
        for name, content in files.items():
            (d2 / name).write_bytes(data[:cut] if name == os.path.basename(log) else content)
        with LSMStore(d2) as db2:
            assert [k for k, _ in db2.scan()] == [b"key%d" % i for i in range(4)]
            assert db2.get(b"key4") is None


def test_flipped_byte_in_middle_record_is_corruption_with_offset(tmp_path):
    p = tmp_path / "1.log"
    offsets = _write_log(p, BATCHES)
    data = bytearray(p.read_bytes())
    for victim in (2, 3):
        for pos in range(offsets[victim], offsets[victim + 1]):
            bad = bytearray(data)
            bad[pos] ^= 0x40
            p.write_bytes(bytes(bad))
            with pytest.raises(CorruptionError) as ei:
                list(W.replay(str(p)))
            assert ei.value.offset == offsets[victim]
            assert ei.value.path == str(p)


def test_store_refuses_to_open_a_log_corrupt_in_the_middle(tmp_path):
    db = LSMStore(tmp_path, fsync="always")
    for i in range(10):
        db.put(b"k%d" % i, b"v" * 50)
    log = db._wal.path
    data = bytearray(open(log, "rb").read())
    db.close()
    # close() does not flush the memtable: the log still holds all ten records
    data[len(data) // 2] ^= 0xFF
    open(log, "wb").write(bytes(data))
    with pytest.raises(CorruptionError) as ei:
        LSMStore(tmp_path)
    assert ei.value.path == log


def test_fsync_always_syncs_every_write(tmp_path):
    with LSMStore(tmp_path, fsync="always") as db:
        before = db._wal.fsyncs
        for i in range(20):
            db.put(b"k%d" % i, b"v")
        assert db._wal.fsyncs - before == 20


def test_fsync_never_does_not_sync(tmp_path):
    with LSMStore(tmp_path, fsync="never") as db:
        for i in range(20):
            db.put(b"k%d" % i, b"v")
        assert db._wal.fsyncs == 0
        # but the bytes are in the OS already (a process crash loses nothing)
        assert os.path.getsize(db._wal.path) == db._wal.written > 0


def test_group_commit_shares_fsyncs_between_threads(tmp_path):
    db = LSMStore(tmp_path, fsync="batch", memtable_bytes=64 << 20)
    per_thread = 200
    threads = 8
    barrier = threading.Barrier(threads)

    def writer(t):
        barrier.wait()
        for i in range(per_thread):
            db.put(b"t%d-%d" % (t, i), b"x" * 100)

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    fsyncs = db._wal.fsyncs
    writes = threads * per_thread
    assert db._wal._synced == db._wal.written      # everything acknowledged is synced
    assert fsyncs < writes / 2, f"{fsyncs} fsyncs for {writes} writes: no grouping"
    assert all(db.get(b"t%d-%d" % (t, i)) for t in range(threads) for i in range(per_thread))
    db.close()


def test_batch_put_returns_only_after_its_fsync(tmp_path, monkeypatch):
    synced_at_return = []
    db = LSMStore(tmp_path, fsync="batch")
    for i in range(10):
        db.put(b"k%d" % i, b"v")
        synced_at_return.append(db._wal._synced >= db._wal.written)
    assert all(synced_at_return)
    db.close()


def test_wal_header_constants_agree():
    assert F.WAL_HEADER_SIZE == 9
    assert F.ONE_PUT.size == F.BATCH_HEADER.size + F.BATCH_ENTRY.size


def test_group_commit_lone_writer_never_yields(tmp_path, monkeypatch):
    """The GIL yield is the fixed cost of fsync='batch'; a single writer must not pay it."""
    from raykv.storage import wal as W
    calls = []
    real_sleep = W.time.sleep
    monkeypatch.setattr(W.time, "sleep", lambda s: (calls.append(s), real_sleep(s)))
    with LSMStore(tmp_path, fsync="batch") as db:
        for i in range(50):
            db.put(b"k%d" % i, b"v")
        db.write_batch([(b"a", b"1"), (b"b", None)])
        assert db._wal.fsyncs == 51
    assert calls == []


def test_group_commit_leader_yields_to_an_arriving_writer(tmp_path):
    """While another writer is on its way to an append, the leader yields before it fsyncs."""
    from raykv.storage import wal as W
    w = W.WalWriter(str(tmp_path / "x.log"), 1)
    asked = []

    def arriving():
        asked.append(1)
        if len(asked) == 2:                  # the other writer appends during the leader's yield
            w.append(W.frame(W.encode_batch(2, [(b"b", b"2", 0.0)])))
        return len(asked) < 2

    t1 = w.append(W.frame(W.encode_batch(1, [(b"a", b"1", 0.0)])))
    w.sync_to(t1, arriving)
    assert len(asked) >= 2
    assert w.fsyncs == 1 and w._synced == w.written > t1   # one fsync covered both records
    w.close(sync=False)


def test_group_commit_failed_fsync_is_not_acknowledged(tmp_path, monkeypatch):
    from raykv.storage import wal as W
    w = W.WalWriter(str(tmp_path / "x.log"), 1)
    ticket = w.append(W.frame(W.encode_batch(1, [(b"a", b"1", 0.0)])))

    def boom(fd):
        raise OSError(5, "EIO")
    monkeypatch.setattr(W, "_fdatasync", boom)
    with pytest.raises(OSError):
        w.sync_to(ticket)
    assert w._synced < ticket and w._latch is None       # not durable, and the next writer can lead
    monkeypatch.undo()
    w.sync_to(ticket)
    assert w._synced == ticket
    w.close()
