"""Memtable: the newest writes, in memory; frozen when full and flushed to an SSTable.

Reference: LevelDB ``db/memtable.cc`` (a skiplist there). Here a dict serves point gets in O(1) and
a key list, sorted lazily, serves scans and flushes: a new key is appended to an unsorted tail, and
the first ordered read (``items``/``snapshot``/``columns``) sorts the tail into the list (timsort:
O(tail log tail) plus a merge). Measured on 24k random data keys in 600-key batches: the writer's
insert 0.83 (``SortedDict``) -> 0.24 us/key (``put_batch``) or 0.19 (``put_new``), the flush's
``columns`` 0.19 -> 0.34 us/key (it now sorts): ~0.45 us/key less node CPU, 0.6 off the write path.

Each key maps to its newest entry ``(seq, value_or_None, expire_at)``; ``None`` is a tombstone.
Only the newest version is kept (the engine offers no snapshots older than "now").
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from itertools import repeat
from typing import Iterator

ENTRY_OVERHEAD = 64   # bytes charged per key beyond its key/value bytes (dict slot, tuple, key-list slot)


class Memtable:
    """Map key -> (seq, value|None, expire_at) with byte accounting; callers serialize writes.

    put/delete cost O(1) (a dict store, plus an append for a new key); get costs one dict lookup;
    ordered reads sort the keys added since the last ordered read, then walk a key range in order.
    """

    __slots__ = ("_d", "_sorted", "_tail", "_order_lock", "get", "bytes", "wal_number", "max_seq", "__weakref__")

    def __init__(self, wal_number: int = 0) -> None:
        self._d: dict[bytes, tuple] = {}
        self._sorted: list[bytes] = []        # keys in order, as of the last ordered read
        self._tail: list[bytes] = []          # keys added since, unsorted
        self._order_lock = threading.Lock()   # a frozen memtable may be read in order by the flush and a scan at once
        self.get = self._d.get                # plain dict lookup: key -> entry or None
        self.bytes = 0
        self.wal_number = wal_number          # the log holding this memtable's writes
        self.max_seq = 0

    def put(self, key: bytes, seq: int, value: bytes | None, expire_at: float) -> None:
        d = self._d
        old = d.get(key)
        if old is None:
            self._tail.append(key)
            self.bytes += len(key) + ENTRY_OVERHEAD + (len(value) if value is not None else 0)
        else:
            ov = old[1]
            self.bytes += (len(value) if value is not None else 0) - (len(ov) if ov is not None else 0)
        d[key] = (seq, value, expire_at)
        self.max_seq = seq            # writes arrive in sequence order (under the writer lock, or replay)

    def put_batch(self, batch: list[tuple[bytes, bytes | None, float]], base_seq: int) -> None:
        """``put(key, base_seq + i, value, expire_at)`` for each entry i, in order (one call per batch)."""
        d = self._d
        get = d.get
        add = self._tail.append
        grown = 0
        seq = base_seq
        for key, value, exp in batch:
            old = get(key)
            if old is None:
                add(key)
                grown += len(key) + ENTRY_OVERHEAD + (len(value) if value is not None else 0)
            else:
                ov = old[1]
                grown += (len(value) if value is not None else 0) - (len(ov) if ov is not None else 0)
            d[key] = (seq, value, exp)
            seq += 1
        self.bytes += grown
        if batch:
            self.max_seq = seq - 1

    def put_new(self, keys: list[bytes], values: list[bytes], base_seq: int) -> bool:
        """``put(keys[i], base_seq + i, values[i], 0.0)`` when every key is new to the memtable and distinct and
        every value is bytes (a batch of blind writes), in C-level loops; returns False, changing nothing,
        otherwise (then use ``put_batch``). 0.24 -> 0.19 us/key against ``put_batch`` with its tuples."""
        d = self._d
        n = len(keys)
        if not n or any(map(d.__contains__, keys)) or len(set(keys)) != n:
            return False
        d.update(zip(keys, zip(range(base_seq, base_seq + n), values, repeat(0.0))))
        self._tail += keys
        self.bytes += sum(map(len, keys)) + sum(map(len, values)) + n * ENTRY_OVERHEAD
        self.max_seq = base_seq + n - 1
        return True

    def __len__(self) -> int:
        return len(self._d)

    def _ordered(self) -> list[bytes]:
        """Every key in order: the tail sorted into the key list (a new list: a reader may hold the old one)."""
        if self._tail:
            with self._order_lock:
                tail = self._tail
                if tail:
                    keys = self._sorted + tail
                    keys.sort()
                    self._sorted, self._tail = keys, []
        return self._sorted

    def _range(self, start: bytes | None, end: bytes | None) -> list[bytes]:
        keys = self._ordered()
        i = 0 if start is None else bisect_left(keys, start)
        j = len(keys) if end is None else bisect_left(keys, end, i)
        return keys[i:j]

    def items(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, tuple]]:
        """(key, entry) for start <= key < end in key order. Only safe on a frozen memtable or
        under the writer lock (see ``snapshot``)."""
        d = self._d
        for key in self._range(start, end):
            yield key, d[key]

    def columns(self) -> tuple[list, list, list, list]:
        """(keys, seqs, values, expires) of every entry in key order, for a flush. Frozen memtables only."""
        keys = list(self._ordered())
        if not keys:
            return [], [], [], []
        seqs, values, exps = zip(*map(self._d.__getitem__, keys))
        return keys, list(seqs), list(values), list(exps)

    def snapshot(self, start: bytes | None = None, end: bytes | None = None) -> list[tuple[bytes, tuple]]:
        """A materialized copy of the range (take it under the writer lock). Cost O(range) after the tail sort."""
        keys = self._range(start, end)
        return list(zip(keys, map(self._d.__getitem__, keys)))
