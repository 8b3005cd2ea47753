"""What a storage node needs from local storage: versioned keys by token range, durable hints, metadata.

``MemoryBackend`` (raykv/cluster/memory_backend.py) (for the simulator, toydb-style) and
``LSMBackend`` (over ``raykv.storage.LSMStore``) implement it; one shared test
suite (tests/cluster/test_backend_suite.py) runs against both.

Keys are grouped by their ring token (``raykv.cluster.ring.key_token``), so
``iter_range`` walks one token range in order: that is what Merkle
anti-entropy and range streaming on join/leave read.
"""

from __future__ import annotations

import abc
from typing import Iterator

from .codec import decode_siblings, encode_siblings
from .vclock import Sibling


class VersionedBackend(abc.ABC):
    """Sibling sets per key, hints per target node, small metadata; every method is synchronous and durable on return
    (subject to the backend's fsync policy), except the ``*_deferred`` writes: they return once the write is
    visible, with a ticket that ``wait_durable`` turns into durability (the storage node waits after releasing
    its write lock, so concurrent writers share one fsync). By default the deferred writes are the durable ones
    and the ticket is None."""

    @abc.abstractmethod
    def get(self, key: bytes) -> list[Sibling]:
        """Stored siblings of ``key`` (tombstones and expired ones included); [] when absent."""

    @abc.abstractmethod
    def put(self, key: bytes, siblings: list[Sibling]) -> None:
        """Replace the stored sibling set of ``key`` (callers pass the result of ``vclock.sync``)."""

    @abc.abstractmethod
    def put_many(self, items: list[tuple[bytes, list[Sibling]]]) -> None:
        """Atomic batch of ``put`` (one WAL record in the LSM backend)."""

    def get_encoded(self, key: bytes) -> bytes | None:
        """``codec.encode_siblings`` of the stored siblings, or None when absent. Backends that store the
        encoding (the LSM one) return it without decoding; the default encodes ``get``."""
        sibs = self.get(key)
        return encode_siblings(sibs) if sibs else None

    def put_many_encoded(self, items: list[tuple[bytes, bytes | None]]) -> None:
        """``put_many`` with each sibling set already encoded (None = no siblings: remove the key)."""
        self.put_many([(k, decode_siblings(b) if b else []) for k, b in items])

    def get_many_encoded(self, keys: list[bytes], digests: bytes | None = None) -> list[bytes | None]:
        """``[get_encoded(k) for k in keys]``; the LSM backend reads the batch as one engine ``get_many``.
        ``digests``: the keys' 8-byte blake2b digests joined (``ring.key_digests``), a hint a backend that
        files keys by token may use instead of hashing (``lsm_backend.data_keys``); others ignore it."""
        get = self.get_encoded
        return [get(k) for k in keys]

    def merge_many_encoded(self, items, merge) -> int:
        """Read-merge-write of ``(key, blob, ...)`` items: ``merge(held, blob)`` gets what is stored (or None; for a
        key repeated in ``items``, what an earlier item left) and returns the bytes to store, or None to leave the
        key as it is. One ``put_many_encoded`` at the end; returns keys written. The LSM backend batches the reads."""
        pending: dict[bytes, bytes] = {}
        get = self.get_encoded
        for item in items:
            key = item[0]
            new = merge(pending[key] if key in pending else get(key), item[1])
            if new is not None:
                pending[key] = new
        if pending:
            self.put_many_encoded(list(pending.items()))
        return len(pending)

    def put_many_deferred(self, items: list[tuple[bytes, list[Sibling]]]):
        """``put_many`` that may return before the batch is durable; returns a ticket for ``wait_durable``
        (None: durable already). Reads see the batch on return. Default: ``put_many``, None."""
        self.put_many(items)
        return None

    def merge_many_encoded_deferred(self, items, merge, digests: bytes | None = None) -> tuple[int, object]:
        """``merge_many_encoded`` that may return before the write is durable: (keys written, ticket for
        ``wait_durable``). Default: ``merge_many_encoded``, ticket None; ``digests`` as in ``get_many_encoded``."""
        return self.merge_many_encoded(items, merge), None

    def wait_durable(self, ticket) -> None:
        """Return once the deferred write that gave ``ticket`` is durable per the fsync policy (None: at once).
        Call it without holding locks other writers need. Default: no-op (writes are durable on return)."""

    @abc.abstractmethod
    def remove(self, key: bytes) -> None:
        """Forget ``key`` entirely (tombstone GC, handing off a range that is no longer ours)."""

    @abc.abstractmethod
    def iter_range(self, lo: int, hi: int) -> Iterator[tuple[bytes, list[Sibling]]]:
        """Keys whose token t satisfies lo < t <= hi (wrapping when lo >= hi; lo == hi means the whole ring), by token."""

    @abc.abstractmethod
    def add_hint(self, target: str, key: bytes, siblings: list[Sibling]) -> None:
        """Durably remember that ``target`` should receive ``siblings`` for ``key`` (merged with any hint already held)."""

    @abc.abstractmethod
    def iter_hints(self, target: str | None = None) -> Iterator[tuple[str, bytes, list[Sibling]]]:
        """(target, key, siblings) for every hint held, optionally for one target."""

    def get_hint(self, target: str, key: bytes) -> list[Sibling] | None:
        """Siblings held for (target, key), or None. Default scans ``iter_hints(target)``: override when cheaper."""
        for _t, k, sibs in self.iter_hints(target):
            if k == key:
                return sibs
        return None

    @abc.abstractmethod
    def remove_hint(self, target: str, key: bytes) -> None: ...

    @abc.abstractmethod
    def hint_count(self) -> int: ...

    @abc.abstractmethod
    def meta_get(self, name: str) -> bytes | None: ...

    @abc.abstractmethod
    def meta_put(self, name: str, value: bytes) -> None: ...

    @abc.abstractmethod
    def stats(self) -> dict:
        """At least {'keys': int, 'disk_bytes': int}."""

    def close(self) -> None:
        pass
