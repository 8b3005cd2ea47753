"""LSMStore.get_many (the batched read behind the bulk replica RPCs) answers exactly what get does, key by key."""

import random

import pytest

from raykv.errors import InvalidArgument, InvalidKey
from raykv.storage import LSMStore, bloom


class Clock:
    def __init__(self):
        self.now = 5000.0

    def __call__(self):
        return self.now


def test_batched_bloom_probe_matches_the_scalar_one():
    rnd = random.Random(5)
    keys = [rnd.randbytes(rnd.randrange(1, 40)) for _ in range(2000)]
    f = bloom.BloomFilter(bloom.build(keys[:1000]))
    h1, h2 = bloom.hash_arrays(keys)
    assert list(f.may_contain_many(h1, h2)) == [f.may_contain(bloom.key_hash(k)) for k in keys]
    assert all(f.may_contain_many(h1[:1000], h2[:1000]))               # no false negatives
    base = bloom.probe_matrix(h1, h2, f.k)
    assert list(f.may_contain_probes(base)) == list(f.may_contain_many(h1, h2))
    assert list(f.may_contain_probes(base[[5, 1500, 3]])) == [f.may_contain(bloom.key_hash(keys[i])) for i in (5, 1500, 3)]


@pytest.mark.parametrize("batch", [1, 5, 40, 700])
def test_get_many_equals_get_over_memtables_all_levels_tombstones_and_ttl(tmp_path, batch):
    rnd = random.Random(batch)
    clock = Clock()
    with LSMStore(tmp_path, fsync="never", memtable_bytes=8 << 10, table_bytes=8 << 10, l0_trigger=3,
                  auto_compact=False, clock=clock, max_flush_level=0) as db:
        universe = [b"k%05d" % i for i in range(3000)]
        for round_ in range(6):                               # several tables per level, overlapping versions
            items = []
            for k in rnd.sample(universe, 400):
                r = rnd.random()
                items.append((k, None) if r < 0.15 else (k, rnd.randbytes(30), 50) if r < 0.3 else (k, rnd.randbytes(30)))
            db.write_batch(items)
            db.flush()
            if round_ in (1, 3):
                db.compact()
        db.write_batch([(k, b"fresh") for k in rnd.sample(universe, 200)])     # some keys only in the memtable
        levels = db.stats()["levels"]
        assert levels[0] >= 2 and max(levels[1:]) > 4         # L0, and a level large enough to bisect in
        for now in (5000.0, 5100.0):                          # before and after the TTLs run out
            clock.now = now
            for _ in range(5):
                keys = [rnd.choice(universe + [b"absent%d" % i for i in range(50)]) for _ in range(batch)]
                assert db.get_many(keys) == [db.get(k) for k in keys]
                s = rnd.randrange(len(universe))                # a narrow key range: one table of a level,
                window = [k + x for k in universe[s:s + (batch + 1) // 2] for x in (b"", b"x")][:batch]
                # ... the whole batch at once, held and absent keys, in shuffled order
                rnd.shuffle(window)
                assert db.get_many(window) == [db.get(k) for k in window]
        assert db.get_many([]) == []


def test_get_many_rejects_what_get_rejects(tmp_path):
    with LSMStore(tmp_path, fsync="never") as db:
        for bad in (b"", "k", bytearray(b"k"), None):
            with pytest.raises(InvalidKey) as many:
                db.get_many([b"ok", bad])
            with pytest.raises(InvalidKey) as one:
                db.get(bad)
            assert str(many.value) == str(one.value)
    with pytest.raises(InvalidArgument):
        db.get_many([b"k"])


def test_get_many_of_a_batch_inside_one_table_of_a_deep_level(tmp_path):
    # nothing in L0 or the memtables: the whole batch is cut from a level of many tables, in key order
    rnd = random.Random(9)
    with LSMStore(tmp_path, fsync="never", memtable_bytes=64 << 10, table_bytes=8 << 10,
                  auto_compact=False) as db:
        universe = [b"k%05d" % i for i in range(0, 4000, 2)]
        db.write_batch([(k, b"v" * 20) for k in universe])
        db.flush()
        db.compact()
        levels = db.stats()["levels"]
        assert levels[0] == 0 and max(levels[1:]) > 4
        for batch in (16, 40):
            s = rnd.randrange(len(universe) - batch)
            window = [b"k%05d" % i for i in range(2 * s, 2 * s + batch)]    # held and absent keys alternate
            rnd.shuffle(window)
            assert db.get_many(window) == [db.get(k) for k in window]
