"""Memtable byte accounting and ordering; block cache LRU order and byte bound."""

import threading

from raykv.storage.cache import BlockCache
from raykv.storage.memtable import ENTRY_OVERHEAD, Memtable


class Blob:
    def __init__(self, charge):
        self.charge = charge


def test_memtable_accounts_bytes_and_keeps_newest():
    m = Memtable(wal_number=3)
    m.put(b"b", 1, b"x" * 10, 0.0)
    assert m.bytes == 1 + 10 + ENTRY_OVERHEAD
    m.put(b"b", 2, b"x" * 4, 0.0)            # overwrite: charged the difference
    assert m.bytes == 1 + 4 + ENTRY_OVERHEAD
    m.put(b"b", 3, None, 0.0)                # tombstone keeps the key
    assert m.bytes == 1 + ENTRY_OVERHEAD and m.get(b"b") == (3, None, 0.0)
    m.put(b"a", 4, b"y", 7.0)
    assert [k for k, _ in m.items()] == [b"a", b"b"]
    assert m.snapshot(b"a", b"b") == [(b"a", (4, b"y", 7.0))]
    assert m.columns() == ([b"a", b"b"], [4, 3], [b"y", None], [7.0, 0.0])
    assert m.max_seq == 4 and m.wal_number == 3 and len(m) == 2


def test_cache_is_lru_and_byte_bounded():
    c = BlockCache(100)
    for i in range(5):
        c.insert((1, i), Blob(30))
        assert c.usage <= 100
    assert len(c) == 3 and c.get((1, 0)) is None and c.get((1, 1)) is None
    assert c.get((1, 2)) is not None          # touch: (1, 2) becomes most recent
    c.insert((1, 9), Blob(30))
    assert c.get((1, 2)) is not None and c.get((1, 3)) is None
    c.insert((2, 0), Blob(1000))              # larger than the whole cache: not kept
    assert c.get((2, 0)) is None and c.usage <= 100
    c.evict_table(1)
    assert len(c) == 0 and c.usage == 0
    assert c.hits == 2 and c.misses == 4


def test_cache_bound_holds_under_concurrency():
    c = BlockCache(10_000)
    def worker(t):
        for i in range(3000):
            c.insert((t, i % 500), Blob(37 + i % 50))
            c.get((t, (i * 7) % 500))
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert c.usage == sum(b.charge for b in c._map.values()) <= 10_000
