"""Deferred durability: ``write_batch``/``put_many`` with ``durable=False`` append now, ``wait_durable`` fsyncs later.

What the storage node relies on to release its write lock before the group-commit wait: the append is visible
at once, the wait returns only after an fsync covering it, a WAL rotation in between is harmless, and the
"always" / "never" policies keep their meaning.
"""

import threading

from raykv.storage import LSMStore
from tests.conftest import wait_for


def test_deferred_append_is_visible_at_once_and_durable_only_after_wait(tmp_path):
    with LSMStore(tmp_path, fsync="batch") as db:
        before = db.stats()["wal_fsyncs"]
        ticket = db.write_batch([(b"a", b"1"), (b"b", b"2")], durable=False)
        assert db.get(b"a") == b"1" and db.get(b"b") == b"2"
        assert db.stats()["wal_fsyncs"] == before and db._wal._synced < db._wal.written   # not synced yet
        assert db._arrivals == 0        # a writer that deferred its wait is no longer "arriving"
        db.wait_durable(ticket)
        assert db.stats()["wal_fsyncs"] == before + 1 and db._wal._synced == db._wal.written
        db.wait_durable(ticket)         # waiting again costs nothing
        assert db.stats()["wal_fsyncs"] == before + 1
        ticket = db.put_many([b"c", b"d"], [b"3", b"4"], durable=False)
        assert db.get_many([b"c", b"d"]) == [b"3", b"4"] and db.stats()["wal_fsyncs"] == before + 1
        db.wait_durable(ticket)
        assert db.stats()["wal_fsyncs"] == before + 2
        assert db.write_batch([], durable=False) is None and db.put_many([], [], durable=False) is None
        assert db.write_batch([(b"e", b"5")]) is None   # durable=True: durable on return, nothing to wait for
        assert db._wal._synced == db._wal.written


def test_wait_durable_returns_only_after_an_fsync_covering_the_append(tmp_path, fsync_gate):
    """Two deferred appends, then two waiters: the first blocks in its fsync (which covers both records), the
    second waits on it; neither returns before that fsync is over, and no second fsync is needed."""
    with LSMStore(tmp_path, fsync="batch") as db:
        entered, release = fsync_gate.arm()
        t1 = db.write_batch([(b"a", b"1")], durable=False)
        t2 = db.put_many([b"b"], [b"2"], durable=False)
        done = []
        waiters = [threading.Thread(target=lambda t=t: (db.wait_durable(t), done.append(t)), daemon=True)
                   for t in (t1, t2)]
        try:
            waiters[0].start()
            assert entered.wait(5)
            waiters[1].start()
            waiters[1].join(0.2)
            assert done == [] and db._wal._synced < db._wal.written
        finally:
            release.set()
        for w in waiters:
            w.join(10)
        assert len(done) == 2 and not any(w.is_alive() for w in waiters)
        assert db._wal.fsyncs == 1 and db._wal._synced == db._wal.written


def test_wait_after_a_wal_rotation_returns_at_once(tmp_path):
    """The ticket names its WalWriter: a rotation closes (and fsyncs) the old log, so the wait has nothing left to do."""
    with LSMStore(tmp_path, fsync="batch", memtable_bytes=4096, auto_compact=False) as db:
        ticket = db.write_batch([(b"big", b"x" * 8192)], durable=False)
        old = db._wal
        assert old._synced < old.written
        db.put(b"next", b"y")                  # the memtable is full: rotate (old log closed with an fsync)
        assert db._wal is not old and old.fsyncs == 1
        db.wait_durable(ticket)
        assert old.fsyncs == 1 and old._synced == old.written
        assert db.get(b"big") == b"x" * 8192
    with LSMStore(tmp_path, fsync="batch") as db:
        assert db.get(b"big") == b"x" * 8192 and db.get(b"next") == b"y"


def test_wait_after_close_returns(tmp_path):
    db = LSMStore(tmp_path, fsync="batch")
    ticket = db.write_batch([(b"a", b"1")], durable=False)
    db.close()                                 # close fsyncs the log
    db.wait_durable(ticket)
    with LSMStore(tmp_path) as db:
        assert db.get(b"a") == b"1"


def test_fsync_always_syncs_in_the_append_and_never_has_nothing_to_wait_for(tmp_path):
    with LSMStore(tmp_path / "always", fsync="always") as db:
        before = db._wal.fsyncs
        ticket = db.write_batch([(b"a", b"1")], durable=False)
        assert ticket is None and db._wal.fsyncs == before + 1 and db._wal._synced == db._wal.written
        assert db.put_many([b"b"], [b"2"], durable=False) is None and db._wal.fsyncs == before + 2
        db.wait_durable(ticket)
        assert db._wal.fsyncs == before + 2
    with LSMStore(tmp_path / "never", fsync="never") as db:
        ticket = db.write_batch([(b"a", b"1")], durable=False)
        assert ticket is None and db.get(b"a") == b"1"
        db.wait_durable(ticket)
        assert db._wal.fsyncs == 0


def test_fsync_periodic_acks_after_the_append_and_syncs_within_the_interval(tmp_path, fsync_gate):
    """fsync="periodic": writes return with the fsync still blocked (the ack does not wait for it); the background
    thread then covers them within ``fsync_interval``; an idle store is not fsynced again; close stops it."""
    import time
    db = LSMStore(tmp_path, fsync="periodic", fsync_interval=0.02)
    try:
        assert [t.name for t in db._threads].count("raykv-fsync") == 1
        entered, release = fsync_gate.arm()
        t0 = time.monotonic()
        db.put(b"a", b"1")
        assert db.write_batch([(b"b", b"2")]) is None
        assert db.put_many([b"c"], [b"3"], durable=False) is None          # no ticket: nothing to wait for
        db.wait_durable(None)
        assert time.monotonic() - t0 < 1.0 and db.get_many([b"a", b"b", b"c"]) == [b"1", b"2", b"3"]
        assert entered.wait(5), "the periodic fsync never ran"            # ...and it is blocked right now
        assert db._wal._synced < db._wal.written
        release.set()
        wait_for(lambda: db._wal._synced == db._wal.written, 5, 0.005, "the periodic fsync to cover the writes")
        synced = db.stats()["wal_fsyncs"]
        time.sleep(0.1)                                                   # 5 intervals with nothing written
        assert db.stats()["wal_fsyncs"] == synced
        db.put(b"d", b"4")
        wait_for(lambda: db.stats()["wal_fsyncs"] == synced + 1, 5, 0.005, "the periodic fsync of the new write")
    finally:
        db.close()
    assert not any(t.is_alive() for t in db._threads)
    with LSMStore(tmp_path, fsync="periodic") as db:
        assert db.get_many([b"a", b"b", b"c", b"d"]) == [b"1", b"2", b"3", b"4"]


def test_fsync_periodic_failure_fails_later_writes_and_bad_intervals_are_refused(tmp_path, monkeypatch):
    import pytest
    from raykv.errors import InvalidArgument, RayKVError
    from raykv.storage import wal as W
    for bad in (0, -1, True, "1s", None):
        with pytest.raises(InvalidArgument, match="fsync_interval"):
            LSMStore(tmp_path / "bad", fsync="periodic", fsync_interval=bad)

    def eio(fd):
        raise OSError(5, "Input/output error")
    db = LSMStore(tmp_path / "db", fsync="periodic", fsync_interval=0.01)
    try:
        monkeypatch.setattr(W, "_fdatasync", eio)
        db.put(b"a", b"1")                          # acknowledged: the periodic fsync fails after the fact
        wait_for(lambda: db._bg_error is not None, 5, 0.005, "the failed periodic fsync to be recorded")
        with pytest.raises(RayKVError, match="Input/output error"):
            db.put(b"b", b"2")
        assert db.get(b"a") == b"1" and db.get(b"b") is None
    finally:
        monkeypatch.undo()
        db.close()
