"""Version: an immutable view of the live tables, the unit a lock-free read or a scan snapshot holds.

Reference: LevelDB ``db/version_set.h`` (``Version::Get``: level 0 newest first, then
one table per deeper level found by binary search on the tables' largest keys).
A new Version is built after every flush or compaction; readers holding the old one
keep using its (still open) tables.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from typing import Iterable

from .bloom import key_hash
from .sstable import TableMeta, TableReader


class Version:
    """An immutable view of the live tables; ``get`` consults L0 newest first, then one table per level."""

    __slots__ = ("l0", "deeper", "tables")

    def __init__(self, levels: list[list[TableReader]]) -> None:
        self.l0 = tuple(levels[0]) if levels else ()
        self.deeper = tuple(([r.largest for r in lv], tuple(lv)) for lv in levels[1:] if lv)
        self.tables = [r for lv in levels for r in lv]

    def get(self, key: bytes):
        h = None
        for r in self.l0:
            if r.smallest <= key <= r.largest:
                if h is None:
                    h = key_hash(key)
                e = r.get(key, h)
                if e is not None:
                    return e
        for largests, readers in self.deeper:
            i = bisect_left(largests, key)
            if i < len(readers):
                r = readers[i]
                if r.smallest <= key:
                    if h is None:
                        h = key_hash(key)
                    e = r.get(key, h)
                    if e is not None:
                        return e
        return None

    def sources(self, start: bytes | None, end: bytes | None) -> list[Iterable]:
        """One sortable stream per L0 table and one per deeper level (its tables chained), for a scan."""
        hi_ok = (lambda r: True) if end is None else (lambda r: r.smallest < end)
        lo_ok = (lambda r: True) if start is None else (lambda r: r.largest >= start)
        out: list[Iterable] = [r.iter_sortable(start, end, True) for r in self.l0 if hi_ok(r) and lo_ok(r)]
        for _, readers in self.deeper:
            chosen = [r for r in readers if hi_ok(r) and lo_ok(r)]
            if chosen:
                out.append(itertools.chain.from_iterable(r.iter_sortable(start, end, True) for r in chosen))
        return out


def build_version(levels: list[list[TableMeta]], readers: dict[int, TableReader]) -> Version:
    """Sort each level in place (level 0 newest first by max sequence, deeper levels by smallest
    key) and return the Version over their readers. Cost O(tables log tables)."""
    out = []
    for lv, metas in enumerate(levels):
        if lv == 0:
            metas.sort(key=lambda m: m.max_seq, reverse=True)
        else:
            metas.sort(key=lambda m: m.smallest)
        out.append([readers[m.number] for m in metas])
    return Version(out)
