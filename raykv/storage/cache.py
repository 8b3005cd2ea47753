"""Byte-bounded LRU cache of decoded data blocks, shared by every table of one store.

Reference: LevelDB ``util/cache.cc`` (LRU with a charge per entry). Keys are
``(table_number, block_offset)``; values expose ``.charge`` (approximate bytes held).
``usage`` never exceeds ``capacity`` after an ``insert`` returns; an entry larger than the
whole cache is simply not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class BlockCache:
    """Thread-safe LRU bounded by total charge; lookup/insert O(1). Hit/miss counters are approximate
    under concurrency (unlocked increments)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self.usage = 0
        self.hits = 0
        self.misses = 0
        self._map: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        """The cached value or None. Lock-free: each OrderedDict operation is atomic under the GIL;
        an entry evicted between the lookup and the LRU bump is still returned (it was valid)."""
        v = self._map.get(key)
        if v is None:
            self.misses += 1
            return None
        try:
            self._map.move_to_end(key)
        except KeyError:
            pass
        self.hits += 1
        return v

    def insert(self, key, value) -> None:
        charge = value.charge
        if charge > self.capacity:
            return
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None:
                self.usage -= old.charge
            self._map[key] = value
            self.usage += charge
            m = self._map
            while self.usage > self.capacity:
                _, ev = m.popitem(last=False)
                self.usage -= ev.charge

    def evict_table(self, number: int) -> None:
        """Drop every block of a deleted table. Cost O(cache entries)."""
        with self._lock:
            for key in [k for k in self._map if k[0] == number]:
                self.usage -= self._map.pop(key).charge

    def __len__(self) -> int:
        return len(self._map)
