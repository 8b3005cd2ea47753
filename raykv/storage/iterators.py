"""Composable iterators over (key, seq, value|None, expire_at) entries: merge, newest-wins, live-only.

Reference: LevelDB ``table/merger.cc`` (k-way merge) and ``db/db_iter.cc`` (hide shadowed
versions and deletions). Every stage is a plain generator, so scan and compaction compose
the same pieces: ``live(newest(merge(sources)), now)`` for reads, ``newest(merge(...))`` for compaction.
"""

from __future__ import annotations

import heapq
from typing import Iterable, Iterator

Entry = tuple  # (key, seq, value|None, expire_at)


def _order(e):
    return e[0], -e[1]


def merge(sources: list[Iterable[Entry]]) -> Iterator[Entry]:
    """K-way merge by (key ascending, seq descending): the newest version of a key comes first.
    Cost O(log k) per entry."""
    if not sources:
        return iter(())
    if len(sources) == 1:
        return iter(sources[0])
    return heapq.merge(*sources, key=_order)


def newest(entries: Iterable[Entry]) -> Iterator[Entry]:
    """Keep only the first (newest) entry of each key of a merged stream."""
    last = None
    for e in entries:
        k = e[0]
        if k != last:
            last = k
            yield e


def live(entries: Iterable[Entry], now: float) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of the entries that are neither tombstones nor expired at ``now``."""
    for k, _seq, v, exp in entries:
        if v is not None and (not exp or exp > now):
            yield k, v


def memtable_entries(pairs: Iterable[tuple[bytes, tuple]]) -> Iterator[Entry]:
    """Adapt memtable (key, (seq, value, exp)) pairs to entries."""
    for k, (seq, v, exp) in pairs:
        yield k, seq, v, exp


def drop_obsolete(entries: Iterable[Entry], now: float, bottom: bool) -> Iterator[Entry]:
    """Compaction filter: at the bottom (no older version can remain below), tombstones and
    expired entries are dropped; elsewhere they are kept because they shadow older versions."""
    if not bottom:
        yield from entries
        return
    for e in entries:
        v = e[2]
        if v is None:
            continue
        exp = e[3]
        if exp and exp <= now:
            continue
        yield e
