"""Composable iterators over (key, seq, value|None, expire_at) entries: merge, newest-wins, live-only.

Reference: LevelDB ``table/merger.cc`` (k-way merge) and ``db/db_iter.cc`` (hide shadowed
versions and deletions). Every stage is a plain generator: ``live(newest(merge(sources)), now)``
over (key, seq, value|None, expire_at) entries is the reference pipeline. The engine runs the
same rules over *sortable* tuples (key, -seq, value|b"", kind, expire_at), which order correctly
under plain tuple comparison so ``heapq.merge`` needs no key function: ``live_sortable`` for
scans, ``compaction_columns`` for compaction (tests check both against the reference).
"""

from __future__ import annotations

import heapq
from typing import Iterable, Iterator

from .format import KIND_DELETE, KIND_PUT

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


def live_sortable(sources: list[Iterable[tuple]], now: float) -> Iterator[tuple[bytes, bytes]]:
    """The scan pipeline fused for speed over *sortable* streams ((key, -seq, value, kind,
    expire_at), see ``TableReader.iter_sortable``): merge with plain tuple comparison (no key
    function), keep the newest version of each key, hide tombstones and entries expired at ``now``.
    Equivalent to ``live(newest(merge(...)))`` on the plain entry form."""
    merged = heapq.merge(*sources) if len(sources) > 1 else iter(sources[0]) if sources else iter(())
    last = None
    delete = KIND_DELETE
    for k, _nseq, v, kind, e in merged:
        if k == last:
            continue
        last = k
        if kind == delete or (e and e <= now):
            continue
        yield k, v


def memtable_sortable(pairs: Iterable[tuple[bytes, tuple]]) -> Iterator[tuple]:
    """Adapt memtable (key, (seq, value|None, exp)) pairs to sortable tuples."""
    put, delete = KIND_PUT, KIND_DELETE
    for k, (seq, v, exp) in pairs:
        if v is None:
            yield k, -seq, b"", delete, exp
        else:
            yield k, -seq, v, put, exp


def memtable_entries(pairs: Iterable[tuple[bytes, tuple]]) -> Iterator[Entry]:
    """Adapt memtable (key, (seq, value, exp)) pairs to entries."""
    for k, (seq, v, exp) in pairs:
        yield k, seq, v, exp


def compaction_columns(sources: list[Iterable[tuple]], now: float, bottom: bool,
                       chunk: int) -> Iterator[tuple[list, list, list, list]]:
    """The compaction pipeline: merge *sortable* streams ((key, -seq, value, kind, expire_at), see
    ``TableReader.iter_sortable``), keep the newest version of each key, and at the bottom (no older
    version can remain below) drop tombstones and expired entries; elsewhere keep them, because they
    shadow older versions. Yields (keys, seqs, values|None, expires) column chunks of <= ``chunk``
    entries for ``TableBuilder.add_run``. Cost O(log k) C-level comparisons per entry."""
    merged = heapq.merge(*sources) if len(sources) > 1 else iter(sources[0])
    keys: list = []
    seqs: list = []
    vals: list = []
    exps: list = []
    last = None
    delete = KIND_DELETE
    for k, nseq, v, kind, e in merged:
        if k == last:
            continue
        last = k
        if kind == delete:
            if bottom:
                continue
            v = None
        elif bottom and e and e <= now:
            continue
        keys.append(k)
        seqs.append(-nseq)
        vals.append(v)
        exps.append(e)
        if len(keys) >= chunk:
            yield keys, seqs, vals, exps
            keys, seqs, vals, exps = [], [], [], []
    if keys:
        yield keys, seqs, vals, exps
