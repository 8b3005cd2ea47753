"""MemoryBackend: the in-memory VersionedBackend the simulator runs on (toydb's ``Memory`` engine).

Durability model: every call is durable on return, as an LSM store with
``fsync="always"`` would be. A simulated crash therefore keeps the backend
object (the "disk") and drops the StorageNode that used it (membership view,
counters, in-flight work). Keys are indexed by (ring token, key) in a
``SortedList`` so ``iter_range`` over a token arc is O(log n + k).
"""

from __future__ import annotations

from typing import Iterator

from sortedcontainers import SortedList

from .backend import VersionedBackend
from .ring import TOKEN_SPACE, key_token
from .vclock import Sibling, sync

_BIG = b"\xff" * 64


class MemoryBackend(VersionedBackend):
    """Sibling sets, hints and metadata in dicts; durable by definition (survives a simulated crash)."""

    def __init__(self) -> None:
        self._data: dict[bytes, list[Sibling]] = {}
        self._index = SortedList()                      # (token, key)
        self._hints: dict[tuple[str, bytes], list[Sibling]] = {}
        self._meta: dict[str, bytes] = {}
        self.writes = 0

    # --- data ---
    def get(self, key: bytes) -> list[Sibling]:
        return list(self._data.get(key, ()))

    def put(self, key: bytes, siblings: list[Sibling]) -> None:
        """Store the sibling set; an empty list removes the key (as LSMBackend: empty = absent)."""
        self.writes += 1
        if not siblings:
            self.remove(key)
            return
        if key not in self._data:
            self._index.add((key_token(key), key))
        self._data[key] = list(siblings)

    def put_many(self, items: list[tuple[bytes, list[Sibling]]]) -> None:
        for key, siblings in items:
            self.put(key, siblings)

    def remove(self, key: bytes) -> None:
        if self._data.pop(key, None) is not None:
            self._index.discard((key_token(key), key))

    def _slice(self, lo: int, hi: int) -> list:
        """(token, key) with lo < token <= hi, lo < hi, by token."""
        i = self._index.bisect_left((lo + 1, b""))
        j = self._index.bisect_left((hi + 1, b""))
        return list(self._index.islice(i, j))

    def iter_range(self, lo: int, hi: int) -> Iterator[tuple[bytes, list[Sibling]]]:
        if lo == hi:
            entries = list(self._index)
        elif lo < hi:
            entries = self._slice(lo, hi)
        else:  # wrapping arc: (lo, end of ring] then [0, hi]
            entries = self._slice(lo, TOKEN_SPACE - 1) + self._slice(-1, hi)
        for _, key in entries:
            sibs = self._data.get(key)
            if sibs is not None:
                yield key, list(sibs)

    # --- hints ---
    def add_hint(self, target: str, key: bytes, siblings: list[Sibling]) -> None:
        held = self._hints.get((target, key), [])
        self._hints[(target, key)] = sync(held, siblings)

    def iter_hints(self, target: str | None = None) -> Iterator[tuple[str, bytes, list[Sibling]]]:
        for (t, key), sibs in list(self._hints.items()):
            if target is None or t == target:
                yield t, key, list(sibs)

    def get_hint(self, target: str, key: bytes) -> list[Sibling] | None:
        sibs = self._hints.get((target, key))
        return None if sibs is None else list(sibs)

    def remove_hint(self, target: str, key: bytes) -> None:
        self._hints.pop((target, key), None)

    def hint_count(self) -> int:
        return len(self._hints)

    # --- metadata ---
    def meta_get(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def meta_put(self, name: str, value: bytes) -> None:
        self._meta[name] = bytes(value)

    def stats(self) -> dict:
        size = sum(len(k) + sum(len(s.value or b"") + 48 for s in v) for k, v in self._data.items())
        return {"keys": len(self._data), "disk_bytes": size, "hints": len(self._hints)}
