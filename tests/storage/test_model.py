"""Model-based test: random put/delete/batch/get/scan against a dict, with flush, compaction and reopen interleaved."""

import random

import pytest

from raykv.storage import LSMStore


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def _get(model, clock, k):
    v, exp = model.get(k, (None, None))
    return v if exp is None or exp > clock.now else None


def _live(model, clock):
    return {k: v for k, (v, exp) in model.items() if exp is None or exp > clock.now}


def run_model(path, seed, ops, keyspace=600):
    rnd = random.Random(seed)
    clock = Clock()
    opts = dict(fsync="never", memtable_bytes=rnd.choice([16 << 10, 64 << 10]),
                cache_bytes=rnd.choice([0, 64 << 10, 1 << 20]), compression=rnd.choice(["zstd", "zlib", "none"]),
                clock=clock, block_bytes=rnd.choice([256, 1024, 4096]), l0_trigger=2, l0_stop=6,
                table_bytes=8 << 10, level_base_bytes=16 << 10, level_multiplier=3)
    db = LSMStore(path, **opts)
    model = {}   # key -> (value, expire_at or None)

    def key():
        return b"key%05d" % rnd.randrange(keyspace)

    try:
        for step in range(ops):
            r = rnd.random()
            if r < 0.40:
                k, v = key(), rnd.randbytes(rnd.randrange(0, 120))
                if rnd.random() < 0.1:
                    ttl = rnd.choice([0.5, 5.0, 50.0])
                    db.put(k, v, ttl=ttl)
                    model[k] = (v, clock.now + ttl)
                else:
                    db.put(k, v)
                    model[k] = (v, None)
            elif r < 0.52:
                k = key()
                db.delete(k)
                model.pop(k, None)
            elif r < 0.57:
                batch = []
                for _ in range(rnd.randrange(1, 8)):
                    k = key()
                    v = None if rnd.random() < 0.3 else rnd.randbytes(rnd.randrange(1, 40))
                    batch.append((k, v))
                db.write_batch(batch)
                for k, v in batch:
                    if v is None:
                        model.pop(k, None)
                    else:
                        model[k] = (v, None)
            elif r < 0.85:
                k = key()
                want = _get(model, clock, k)
                assert db.get(k) == want, (seed, step, k)
            elif r < 0.90:
                a, b = sorted([key(), key()])
                live = _live(model, clock)
                want = sorted((k, v) for k, v in live.items() if a <= k < b)
                assert list(db.scan(a, b)) == want, (seed, step)
            elif r < 0.93:
                clock.now += rnd.choice([0.1, 1.0, 10.0])
            elif r < 0.94:
                db.flush()
            elif r < 0.945:
                db.compact()
            elif r < 0.95:
                db.close()
                db = LSMStore(path, **opts)
            # else: nothing (lets background work interleave)
        assert list(db.scan()) == sorted(_live(model, clock).items())
        db.close()
        db = LSMStore(path, **opts)
        assert list(db.scan()) == sorted(_live(model, clock).items())
        for k in (b"key%05d" % i for i in range(keyspace)):
            assert db.get(k) == _get(model, clock, k)
        st = db.stats()
        assert st["levels"][0] <= 6, st
    finally:
        db.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_model(tmp_path, seed):
    run_model(tmp_path, seed, 12000)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10, 30))
def test_model_many_seeds(tmp_path, seed):
    run_model(tmp_path, seed, 30000, keyspace=3000)
