"""Merkle trees over a token arc, for anti-entropy: two replicas compare roots, then exchange only differing ranges.

References: Merkle, "A Digital Signature Based on a Conventional Encryption
Function" (CRYPTO 1987); DeCandia et al., "Dynamo" (SOSP 2007) section 4.7
(one tree per key range, compared top-down); riak_core ``hashtree.erl`` and
Cassandra's ``MerkleTree`` (fixed-depth tree over token sub-ranges).

Shape: the arc (lo, hi] is cut into 2**depth equal token buckets (leaf i
holds offsets o = t - lo - 1 with floor(o * 2**depth / width) == i). A leaf
hashes its sorted (key, digest) pairs; an inner node hashes its two
children; empty leaves share one constant hash. All hashes are 16-byte
blake2b, so a tree is a full binary heap of 2**(depth+1) - 1 hashes
(32 KiB at depth 10). ``diff`` descends only into differing subtrees.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable

from .ring import TOKEN_SPACE
from .vclock import Sibling

HASH_BYTES = 16
MAX_DEPTH = 20
_HEADER = struct.Struct(">BBQQQ")     # version, depth, lo, hi, item count
_VERSION = 1
_blake2b = hashlib.blake2b
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SIB = struct.Struct(">QB")


def _h(data: bytes) -> bytes:
    return _blake2b(data, digest_size=HASH_BYTES).digest()


EMPTY_LEAF = _h(b"raykv-merkle-empty-leaf")


def _width(lo: int, hi: int) -> int:
    return (hi - lo) % TOKEN_SPACE or TOKEN_SPACE    # lo == hi: the whole circle


class MerkleTree:
    """Fixed-depth hash tree over the token arc (lo, hi]. Build O(items log items + 2**depth); diff O(differing
    leaves * depth); immutable after ``build``."""

    __slots__ = ("lo", "hi", "depth", "count", "_nodes")

    def __init__(self, lo: int, hi: int, depth: int, nodes: list[bytes], count: int = 0) -> None:
        self.lo, self.hi, self.depth, self.count = lo, hi, depth, count
        self._nodes = nodes                 # heap order: 1 = root, children of i are 2i and 2i+1; [0] unused

    # ------------------------------------------------------------ building

    @staticmethod
    def _check(lo: int, hi: int, depth: int) -> None:
        if not (0 <= lo < TOKEN_SPACE and 0 <= hi < TOKEN_SPACE):
            raise ValueError(f"arc bounds must be tokens in [0, 2**64), got ({lo}, {hi})")
        if not 0 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be between 0 and {MAX_DEPTH}, got {depth}")

    def bucket(self, token: int) -> int:
        """Leaf index of ``token``; ValueError when the token is outside the arc."""
        width = _width(self.lo, self.hi)
        off = (token - self.lo - 1) % TOKEN_SPACE
        if off >= width:
            raise ValueError(f"token {token} is outside the arc ({self.lo}, {self.hi}]")
        return (off << self.depth) // width

    @classmethod
    def build(cls, lo: int, hi: int, items: Iterable[tuple[int, bytes, bytes]], depth: int = 10) -> "MerkleTree":
        """Tree of ``items`` = (token, key, digest of the key's value) with tokens in (lo, hi]."""
        cls._check(lo, hi, depth)
        tree = cls(lo, hi, depth, [], 0)
        leaves: dict[int, list[tuple[bytes, bytes]]] = {}
        count = 0
        for token, key, digest in items:
            leaves.setdefault(tree.bucket(token), []).append((key, digest))
            count += 1
        nleaves = 1 << depth
        nodes = [EMPTY_LEAF] * (2 * nleaves)
        for i, pairs in leaves.items():
            pairs.sort()
            h = _blake2b(digest_size=HASH_BYTES)
            for key, digest in pairs:
                h.update(_U32.pack(len(key)))
                h.update(key)
                h.update(_U16.pack(len(digest)))
                h.update(digest)
            nodes[nleaves + i] = h.digest()
        tree._fill(nodes)
        tree.count = count
        return tree

    def _fill(self, nodes: list[bytes]) -> None:
        for i in range((1 << self.depth) - 1, 0, -1):
            left, right = nodes[2 * i], nodes[2 * i + 1]
            nodes[i] = EMPTY_LEAF if left == EMPTY_LEAF and right == EMPTY_LEAF else _h(left + right)
        self._nodes = nodes

    # ------------------------------------------------------------ queries

    @property
    def root(self) -> bytes:
        return self._nodes[1]

    def leaf(self, i: int) -> bytes:
        return self._nodes[(1 << self.depth) + i]

    def leaf_range(self, i: int) -> tuple[int, int]:
        """The token arc (lo, hi] of leaf ``i`` (lo == hi only for a 0-width leaf of a tiny arc, or the whole
        circle at depth 0)."""
        width = _width(self.lo, self.hi)
        nleaves = 1 << self.depth
        start = -((-i * width) // nleaves)                  # ceil(i * width / nleaves)
        end = -((-(i + 1) * width) // nleaves)
        return ((self.lo + start) % TOKEN_SPACE, (self.lo + end) % TOKEN_SPACE)

    def _leaf_width(self, i: int) -> int:
        width = _width(self.lo, self.hi)
        nleaves = 1 << self.depth
        return -((-(i + 1) * width) // nleaves) - -((-i * width) // nleaves)

    def diff(self, other: "MerkleTree") -> list[tuple[int, int]]:
        """Token sub-arcs (lo, hi] whose leaves differ, in arc order, adjacent ones merged. Both trees must cover
        the same arc at the same depth (ValueError otherwise). A merged arc spanning the whole circle is (t, t)."""
        if (self.lo, self.hi, self.depth) != (other.lo, other.hi, other.depth):
            raise ValueError(f"cannot diff trees over different arcs/depths: ({self.lo}, {self.hi}, d={self.depth})"
                             f" vs ({other.lo}, {other.hi}, d={other.depth})")
        a, b = self._nodes, other._nodes
        nleaves = 1 << self.depth
        leaves: list[int] = []
        stack = [1]
        while stack:
            i = stack.pop()
            if a[i] == b[i]:
                continue
            if i >= nleaves:
                leaves.append(i - nleaves)
            else:
                stack.append(2 * i + 1)
                stack.append(2 * i)
        out: list[list[int]] = []
        last = None
        for i in leaves:                                     # stack order yields leaves left to right
            if self._leaf_width(i) == 0:
                continue
            lo, hi = self.leaf_range(i)
            if out and last == i - 1:
                out[-1][1] = hi
            else:
                out.append([lo, hi])
            last = i
        return [(lo, hi) for lo, hi in out]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MerkleTree) and (self.lo, self.hi, self.depth) == (other.lo, other.hi, other.depth)
                and self.root == other.root)

    def __hash__(self) -> int:
        return hash((self.lo, self.hi, self.depth, self.root))

    def __repr__(self) -> str:
        return f"MerkleTree(({self.lo}, {self.hi}], depth={self.depth}, items={self.count}, root={self.root.hex()[:12]})"

    # ------------------------------------------------------------ wire format

    def to_bytes(self) -> bytes:
        """Header (version, depth, lo, hi, count), a bitmap of non-empty leaves, then their 16-byte hashes;
        inner nodes are recomputed on decode. A sparse tree is a few hundred bytes, a full depth-10 one ~16 KiB."""
        nleaves = 1 << self.depth
        leaves = self._nodes[nleaves:]
        bitmap = bytearray((nleaves + 7) // 8)
        hashes = []
        for i, h in enumerate(leaves):
            if h != EMPTY_LEAF:
                bitmap[i >> 3] |= 1 << (i & 7)
                hashes.append(h)
        return _HEADER.pack(_VERSION, self.depth, self.lo, self.hi, self.count) + bytes(bitmap) + b"".join(hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> "MerkleTree":
        """Inverse of ``to_bytes``; ValueError on malformed input."""
        try:
            version, depth, lo, hi, count = _HEADER.unpack_from(data, 0)
        except struct.error as e:
            raise ValueError(f"malformed Merkle tree bytes: {e}") from None
        if version != _VERSION:
            raise ValueError(f"unknown Merkle tree encoding version {version}")
        cls._check(lo, hi, depth)
        nleaves = 1 << depth
        pos = _HEADER.size
        bitmap = data[pos:pos + (nleaves + 7) // 8]
        pos += (nleaves + 7) // 8
        nodes = [EMPTY_LEAF] * (2 * nleaves)
        for i in range(nleaves):
            if i >> 3 < len(bitmap) and bitmap[i >> 3] & (1 << (i & 7)):
                h = data[pos:pos + HASH_BYTES]
                if len(h) != HASH_BYTES:
                    raise ValueError("malformed Merkle tree bytes: truncated leaf hashes")
                nodes[nleaves + i] = h
                pos += HASH_BYTES
        if len(bitmap) != (nleaves + 7) // 8 or pos != len(data):
            raise ValueError("malformed Merkle tree bytes: length does not match the leaf bitmap")
        tree = cls(lo, hi, depth, [], count)
        tree._fill(nodes)
        return tree


def sibling_digest(siblings: list[Sibling]) -> bytes:
    """Order-independent 16-byte digest of a sibling set: its dots, tombstone flags and values.

    Two replicas holding the same versions of a key (in any order) get the same digest; a missing, extra or
    obsolete-but-unpruned sibling changes it. O(total value bytes).
    """
    parts = []
    for s in siblings:
        h = _blake2b(digest_size=HASH_BYTES)
        actor = s.dot[0].encode()
        h.update(_U16.pack(len(actor)))
        h.update(actor)
        h.update(_SIB.pack(s.dot[1], 0 if s.value is None else 1))
        if s.value is not None:
            h.update(s.value)
        parts.append(h.digest())
    parts.sort()
    return _h(b"".join(parts))
