"""Bloom filter per SSTable: skips tables that cannot hold a key, ~1% false positives at 10 bits/key.

Reference: Bloom (1970); LevelDB ``util/bloom.cc`` (k = bits_per_key * ln 2, double hashing);
Kirsch & Mitzenmacher, "Less Hashing, Same Performance" (2006) for probe i = h1 + i*h2.

The hash is deterministic across processes and machines (BLAKE2b, 64 bits), unlike Python's
``hash`` of bytes: filters are written to disk and read back by another process.
"""

from __future__ import annotations

import hashlib
import math

from raykv.storage import format as F

_blake = hashlib.blake2b


def key_hash(key: bytes) -> int:
    """64-bit deterministic hash of a key; computed once per lookup and reused for every table."""
    return int.from_bytes(_blake(key, digest_size=8).digest(), "little")


def probes_for(bits_per_key: int) -> int:
    return max(1, min(30, int(round(bits_per_key * math.log(2)))))


def build(hashes: list[int], bits_per_key: int = F.BLOOM_BITS_PER_KEY) -> bytes:
    """Filter payload ``[k u8][bits]`` for the given key hashes. Cost O(n * k)."""
    k = probes_for(bits_per_key)
    nbits = max(64, len(hashes) * bits_per_key)
    nbytes = (nbits + 7) // 8
    nbits = nbytes * 8
    bits = bytearray(nbytes)
    for h in hashes:
        h1 = h & 0xFFFFFFFF
        h2 = (h >> 32) | 1
        for i in range(k):
            pos = (h1 + i * h2) % nbits
            bits[pos >> 3] |= 1 << (pos & 7)
    return F.FILTER_HEADER.pack(k) + bytes(bits)


class BloomFilter:
    """A decoded filter; ``may_contain(hash)`` is False only if the key was certainly not added. Cost O(k)."""

    __slots__ = ("k", "bits", "nbits")

    def __init__(self, payload: bytes) -> None:
        (self.k,) = F.FILTER_HEADER.unpack_from(payload, 0)
        self.bits = payload[F.FILTER_HEADER.size:]
        self.nbits = len(self.bits) * 8
        if self.k == 0 or self.nbits == 0:
            raise ValueError("empty bloom filter")

    def may_contain(self, h: int) -> bool:
        bits = self.bits
        nbits = self.nbits
        h1 = h & 0xFFFFFFFF
        h2 = (h >> 32) | 1
        for i in range(self.k):
            pos = (h1 + i * h2) % nbits
            if not (bits[pos >> 3] >> (pos & 7)) & 1:
                return False
        return True

    @property
    def memory_bytes(self) -> int:
        return len(self.bits) + 64
