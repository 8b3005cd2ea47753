"""Memtable: the newest writes, in key order, in memory; frozen when full and flushed to an SSTable.

Reference: LevelDB ``db/memtable.cc`` (a skiplist there; a ``sortedcontainers.SortedDict`` here,
whose dict half serves point gets in O(1) and whose sorted key list serves scans and flushes).

Each key maps to its newest entry ``(seq, value_or_None, expire_at)``; ``None`` is a tombstone.
Only the newest version is kept (the engine offers no snapshots older than "now").
"""

from __future__ import annotations

from typing import Iterator

from sortedcontainers import SortedDict

_dict_set = dict.__setitem__
ENTRY_OVERHEAD = 64   # bytes charged per key beyond its key/value bytes (dict slot, tuple, sorted-list slot)


class Memtable:
    """Sorted map key -> (seq, value|None, expire_at) with byte accounting; callers serialize writes.

    put/delete cost O(log n) (sorted-list insert for a new key, O(1) for an overwrite);
    get costs one dict lookup; ``items`` walks a key range in order.
    """

    __slots__ = ("_sd", "_add", "get", "bytes", "wal_number", "max_seq", "__weakref__")

    def __init__(self, wal_number: int = 0) -> None:
        self._sd = SortedDict()
        self._add = self._sd._list.add        # the sorted key list (bypass SortedDict.__setitem__ overhead)
        self.get = self._sd.get               # plain dict lookup: key -> entry or None
        self.bytes = 0
        self.wal_number = wal_number          # the log holding this memtable's writes
        self.max_seq = 0

    def put(self, key: bytes, seq: int, value: bytes | None, expire_at: float) -> None:
        sd = self._sd
        old = sd.get(key)
        if old is None:
            self._add(key)
            self.bytes += len(key) + ENTRY_OVERHEAD + (len(value) if value is not None else 0)
        else:
            ov = old[1]
            self.bytes += (len(value) if value is not None else 0) - (len(ov) if ov is not None else 0)
        _dict_set(sd, key, (seq, value, expire_at))
        self.max_seq = seq            # writes arrive in sequence order (under the writer lock, or replay)

    def put_batch(self, batch: list[tuple[bytes, bytes | None, float]], base_seq: int) -> None:
        """``put(key, base_seq + i, value, expire_at)`` for each entry i, in order (one call per batch instead of
        one per key: part of the measured 5.7 -> 3.7 us/item of node CPU for a 600-item ``put_encoded``)."""
        sd = self._sd
        get = sd.get
        add = self._add
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
            _dict_set(sd, key, (seq, value, exp))
            seq += 1
        self.bytes += grown
        if batch:
            self.max_seq = seq - 1

    def __len__(self) -> int:
        return len(self._sd)

    def items(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, tuple]]:
        """(key, entry) for start <= key < end in key order. Only safe on a frozen memtable or
        under the writer lock (see ``snapshot``)."""
        sd = self._sd
        for key in sd.irange(start, end, inclusive=(True, False)):
            yield key, sd[key]

    def columns(self) -> tuple[list, list, list, list]:
        """(keys, seqs, values, expires) of every entry in key order, for a flush. Frozen memtables only."""
        sd = self._sd
        keys = list(sd.keys())
        if not keys:
            return [], [], [], []
        seqs, values, exps = zip(*map(sd.__getitem__, keys))
        return keys, list(seqs), list(values), list(exps)

    def snapshot(self, start: bytes | None = None, end: bytes | None = None) -> list[tuple[bytes, tuple]]:
        """A materialized copy of the range (take it under the writer lock). Cost O(range)."""
        sd = self._sd
        return [(k, sd[k]) for k in sd.irange(start, end, inclusive=(True, False))]
