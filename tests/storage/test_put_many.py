"""LSMStore.put_many (the blind-write batch behind put_encoded) and the memtable's lazily sorted key list."""

import random

import pytest

from raykv.errors import InvalidArgument, InvalidKey
from raykv.storage import LSMStore
from raykv.storage.memtable import ENTRY_OVERHEAD, Memtable


def test_memtable_put_new_and_lazy_order_match_put():
    rnd = random.Random(3)
    a, b = Memtable(), Memtable()
    seq = 1
    for round_ in range(20):
        keys = [rnd.randbytes(rnd.randrange(1, 12)) for _ in range(50)]
        vals = [rnd.randbytes(rnd.randrange(0, 20)) for _ in keys]
        if not b.put_new(keys, vals, seq):      # refused (a key held or repeated): nothing changed
            b.put_batch([(k, v, 0.0) for k, v in zip(keys, vals)], seq)
        for i, (k, v) in enumerate(zip(keys, vals)):
            a.put(k, seq + i, v, 0.0)
        seq += len(keys)
        if round_ % 3 == 0:                      # ordered reads between writes sort the tail in
            lo, hi = sorted(rnd.sample(keys, 2))
            assert a.snapshot(lo, hi) == b.snapshot(lo, hi)
    assert b.put_new([b"x1", b"x1"], [b"a", b"b"], seq) is False and b.get(b"x1") is None
    assert a.bytes == b.bytes and a.max_seq == b.max_seq and len(a) == len(b)
    assert a.columns() == b.columns() and list(a.items()) == list(b.items())
    assert [k for k, _ in b.items()] == sorted(b._d)
    m = Memtable()
    assert m.put_new([b"k", b"j"], [b"vv", b""], 7) and m.bytes == 4 + 2 * ENTRY_OVERHEAD and m.max_seq == 8
    assert m.columns() == ([b"j", b"k"], [8, 7], [b"", b"vv"], [0.0, 0.0])


def test_put_many_equals_write_batch_and_survives_reopen(tmp_path):
    rnd = random.Random(4)
    with LSMStore(tmp_path / "a", fsync="batch", memtable_bytes=8 << 10) as a, \
            LSMStore(tmp_path / "b", fsync="batch", memtable_bytes=8 << 10) as b:
        for _ in range(30):
            keys = [b"k%04d" % rnd.randrange(2000) for _ in range(rnd.randrange(1, 80))]   # repeats, overwrites
            vals = [rnd.randbytes(rnd.randrange(0, 60)) for _ in keys]
            a.put_many(keys, vals)
            b.write_batch(list(zip(keys, vals)))
        assert list(a.scan()) == list(b.scan())
        a.put_many([], [])
    with LSMStore(tmp_path / "a") as a, LSMStore(tmp_path / "b") as b:
        assert list(a.scan()) == list(b.scan()) and len(list(a.scan())) > 100


def test_put_many_rejects_what_write_batch_rejects(tmp_path):
    with LSMStore(tmp_path, fsync="never") as db:
        for keys, vals in (([b"ok", b""], [b"v", b"v"]), ([b"ok", "k"], [b"v", b"v"]), ([b"ok", b"k"], [b"v", "s"])):
            with pytest.raises((InvalidKey, InvalidArgument)) as many:
                db.put_many(keys, vals)
            with pytest.raises((InvalidKey, InvalidArgument)) as batch:
                db.write_batch(list(zip(keys, vals)))
            assert type(many.value) is type(batch.value) and str(many.value) == str(batch.value)
        with pytest.raises(InvalidArgument):
            db.put_many([b"a"], [])
        assert list(db.scan()) == []
