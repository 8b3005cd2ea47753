"""SSTable: an immutable sorted file of data blocks + bloom filter + sparse index + meta + footer.

Reference: LevelDB ``table/table_builder.cc`` and ``table/table.cc``; layout in format.py and
docs/format.md. Every block read (data, index, filter, meta) verifies its CRC, and the footer
carries its own CRC and magic, so a flipped bit anywhere is a ``CorruptionError``, never wrong data.

Memory held by an open reader: index (one key per data block) + bloom bits + meta, no data.
"""

from __future__ import annotations

import operator
import os
import weakref
import zlib
from bisect import bisect_left
from itertools import accumulate
from dataclasses import dataclass
from typing import Iterator

from ..errors import CorruptionError
from . import block as B
from . import bloom
from . import format as F
from .cache import BlockCache


@dataclass
class TableMeta:
    """What the manifest records about one table."""
    number: int
    size: int
    smallest: bytes
    largest: bytes
    entries: int
    tombstones: int
    min_seq: int
    max_seq: int


class TableBuilder:
    """Writes entries given in strictly increasing key order into a new table at ``path`` (via a temp file).

    ``finish`` fsyncs and renames; the caller fsyncs the directory. Cost O(bytes written).
    """

    def __init__(self, path: str, number: int, codec: int = F.CODEC_ZSTD,
                 block_bytes: int = F.DEFAULT_BLOCK_BYTES, bits_per_key: int = F.BLOOM_BITS_PER_KEY) -> None:
        self.path = path
        self.tmp = path + F.TMP_SUFFIX
        self.number = number
        self.codec = codec
        self.block_bytes = block_bytes
        self.bits_per_key = bits_per_key
        self._f = open(self.tmp, "wb", buffering=1 << 16)
        self._off = 0
        self._keys: list[bytes] = []
        self._seqs: list[int] = []
        self._vals: list = []
        self._exps: list[float] = []
        self._blk_bytes = 0
        self._index: list[tuple[bytes, int, int]] = []
        self._all_keys: list[bytes] = []   # for the bloom filter, built at finish
        self.entries = 0
        self.tombstones = 0
        self.min_seq = 1 << 64
        self.max_seq = 0
        self.smallest = None
        self.largest = None

    @property
    def estimated_size(self) -> int:
        return self._off + self._blk_bytes

    def add(self, key: bytes, seq: int, value: bytes | None, expire_at: float) -> None:
        if self.smallest is None:
            self.smallest = key
        self.largest = key
        self._keys.append(key)
        self._seqs.append(seq)
        self._vals.append(value)
        self._exps.append(expire_at)
        self._all_keys.append(key)
        self.entries += 1
        if value is None:
            self.tombstones += 1
            self._blk_bytes += len(key) + 24
        else:
            self._blk_bytes += len(key) + len(value) + 24
        if seq < self.min_seq:
            self.min_seq = seq
        if seq > self.max_seq:
            self.max_seq = seq
        if self._blk_bytes >= self.block_bytes:
            self._flush_block()

    def add_run(self, keys: list[bytes], seqs: list[int], values: list, exps: list[float]) -> None:
        """Add a sorted run (strictly increasing keys, all greater than any added before) in bulk:
        block boundaries come from cumulative sizes, so there is no per-entry Python call. A trailing
        partial block stays pending, so consecutive runs fill blocks as ``add`` would."""
        if not keys:
            return
        if self.smallest is None:
            self.smallest = keys[0]
        self.largest = keys[-1]
        self._all_keys.extend(keys)
        self.entries += len(keys)
        self.tombstones += values.count(None)
        self.min_seq = min(self.min_seq, min(seqs))
        self.max_seq = max(self.max_seq, max(seqs))
        if self._keys:   # continue the pending partial block
            keys, seqs = self._keys + list(keys), self._seqs + list(seqs)
            values, exps = self._vals + list(values), self._exps + list(exps)
        n = len(keys)
        cum = list(accumulate(len(k) + (len(v) if v is not None else 0) + 24 for k, v in zip(keys, values)))
        start = 0
        base = 0
        bb = self.block_bytes
        while start < n:
            stop = bisect_left(cum, base + bb, start) + 1
            if stop > n:
                break
            payload = B.encode_data(keys[start:stop], seqs[start:stop], values[start:stop], exps[start:stop])
            off, size = self._write_block(payload, self.codec)
            self._index.append((keys[stop - 1], off, size))
            base = cum[stop - 1]
            start = stop
        self._keys, self._seqs = list(keys[start:]), list(seqs[start:])
        self._vals, self._exps = list(values[start:]), list(exps[start:])
        self._blk_bytes = cum[-1] - base if start < n else 0

    def _write_block(self, payload: bytes, codec: int) -> tuple[int, int]:
        raw = B.seal(payload, codec)
        off = self._off
        self._f.write(raw)
        self._off += len(raw)
        return off, len(raw)

    def _flush_block(self) -> None:
        if not self._keys:
            return
        payload = B.encode_data(self._keys, self._seqs, self._vals, self._exps)
        off, size = self._write_block(payload, self.codec)
        self._index.append((self._keys[-1], off, size))
        self._keys, self._seqs, self._vals, self._exps = [], [], [], []
        self._blk_bytes = 0

    def finish(self) -> TableMeta:
        self._flush_block()
        if self.entries == 0:
            raise ValueError("an SSTable needs at least one entry")
        foff, fsize = self._write_block(bloom.build(self._all_keys, self.bits_per_key), F.CODEC_NONE)
        ioff, isize = self._write_block(B.encode_index(self._index), self.codec)
        meta = F.META.pack(self.entries, self.tombstones, self.min_seq, self.max_seq,
                           len(self.smallest), len(self.largest)) + self.smallest + self.largest
        moff, msize = self._write_block(meta, F.CODEC_NONE)
        body = F.FOOTER_BODY.pack(foff, fsize, ioff, isize, moff, msize, F.TABLE_VERSION)
        self._f.write(body + F.FOOTER_TAIL.pack(zlib.crc32(body), F.TABLE_MAGIC))
        self._off += F.FOOTER_SIZE
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)
        return TableMeta(self.number, self._off, self.smallest, self.largest, self.entries,
                         self.tombstones, self.min_seq, self.max_seq)

    def abandon(self) -> None:
        try:
            self._f.close()
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


class TableReader:
    """Point lookups and range iteration over one table; thread-safe (``os.pread``, shared block cache).

    ``get`` costs one bloom probe, one bisection in the in-memory index and, on a cache miss,
    one pread + CRC + decompress of a single block.
    """

    def __init__(self, path: str, number: int, cache: BlockCache | None) -> None:
        self.path = path
        self.number = number
        self.cache = cache
        self._fd = os.open(path, os.O_RDONLY)
        self._finalizer = weakref.finalize(self, os.close, self._fd)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        self.size = size
        if size < F.FOOTER_SIZE:
            raise CorruptionError(self.path, 0, f"file of {size} bytes is shorter than a table footer")
        foot = os.pread(self._fd, F.FOOTER_SIZE, size - F.FOOTER_SIZE)
        body = foot[:F.FOOTER_BODY.size]
        crc, magic = F.FOOTER_TAIL.unpack_from(foot, F.FOOTER_BODY.size)
        if magic != F.TABLE_MAGIC:
            raise CorruptionError(self.path, size - F.FOOTER_SIZE, "bad table magic (not a raykv SSTable?)")
        if zlib.crc32(body) != crc:
            raise CorruptionError(self.path, size - F.FOOTER_SIZE, "footer checksum mismatch")
        foff, fsize, ioff, isize, moff, msize, version = F.FOOTER_BODY.unpack(body)
        if version != F.TABLE_VERSION:
            raise CorruptionError(self.path, size - F.FOOTER_SIZE, f"unsupported table version {version}")
        limit = size - F.FOOTER_SIZE
        for off, sz in ((foff, fsize), (ioff, isize), (moff, msize)):
            if off + sz > limit:
                raise CorruptionError(self.path, off, "block handle points past the end of the file")
        try:
            self.filter = bloom.BloomFilter(self._read_raw(foff, fsize))
        except ValueError as exc:
            raise CorruptionError(self.path, foff, f"bad filter block: {exc}") from None
        self.index_keys, self.offsets, self.sizes = B.decode_index(self._read_raw(ioff, isize), self.path, ioff)
        meta = self._read_raw(moff, msize)
        try:
            (self.entries, self.tombstones, self.min_seq, self.max_seq, slen, llen) = F.META.unpack_from(meta, 0)
        except Exception as exc:
            raise CorruptionError(self.path, moff, f"malformed meta block: {exc}") from None
        p = F.META.size
        self.smallest = meta[p:p + slen]
        self.largest = meta[p + slen:p + slen + llen]
        if (p + slen + llen != len(meta) or not self.index_keys or self.index_keys[-1] != self.largest
                or (self.offsets and self.offsets[0] != 0)):
            raise CorruptionError(self.path, moff, "meta block disagrees with the index")

    def _read_raw(self, off: int, size: int) -> bytes:
        raw = os.pread(self._fd, size, off)
        if len(raw) != size:
            raise CorruptionError(self.path, off, "short read: the file is truncated")
        return B.unseal(raw, self.path, off)

    @property
    def memory_bytes(self) -> int:
        """Bytes pinned while the table is open (index keys + filter), excluding cached blocks."""
        return sum(len(k) + 50 for k in self.index_keys) + self.filter.memory_bytes

    def _block(self, i: int, fill_cache: bool = True) -> B.DataBlock:
        cache = self.cache
        off = self.offsets[i]
        if cache is not None:
            ck = (self.number, off)
            blk = cache.get(ck)
            if blk is not None:
                return blk
        blk = B.DataBlock(self._read_raw(off, self.sizes[i]), self.path, off)
        if cache is not None and fill_cache:
            cache.insert(ck, blk)
        return blk

    def get(self, key: bytes, h: int):
        """(seq, value|None, expire_at) of ``key``, or None; ``h`` = ``bloom.key_hash(key)``."""
        if not self.filter.may_contain(h):
            return None
        i = bisect_left(self.index_keys, key)
        if i == len(self.index_keys):
            return None
        return self._block(i).find(key)

    def find_many(self, keys: list[bytes], idx, out: list) -> bool:
        """``get`` without the bloom filter, for a caller that probed it already (``Version.get_many``): ``out[i]``
        = the entry of ``keys[i]`` for each ``i`` of ``idx`` the table holds (others left as they are); True if
        any was found. One loop per table for a batch, not a call per key."""
        index, n, block = self.index_keys, len(self.index_keys), self._block
        found = False
        for i in idx:
            key = keys[i]
            b = bisect_left(index, key)
            if b < n:
                e = block(b).find(key)
                if e is not None:
                    out[i] = e
                    found = True
        return found

    def iter_sortable(self, start: bytes | None = None, end: bytes | None = None,
                      fill_cache: bool = False) -> Iterator[tuple[bytes, int, bytes, int, float]]:
        """(key, -seq, value or b"" for a delete, kind, expire_at) for start <= key < end: tuples that
        order correctly by plain comparison (newest version of a key first) and never compare None,
        so ``heapq.merge`` needs no key function (the scan and compaction input path)."""
        neg = operator.neg
        for blk, keys, j, stop in self._slices(start, end, fill_cache):
            yield from zip(keys[j:stop], map(neg, blk.seqs[j:stop]), blk.values(j, stop, raw=True),
                           blk.kinds[j:stop], blk.exps[j:stop])

    def iter(self, start: bytes | None = None, end: bytes | None = None,
             fill_cache: bool = True) -> Iterator[tuple[bytes, int, bytes | None, float]]:
        """(key, seq, value|None, expire_at) for start <= key < end, in key order."""
        for blk, keys, j, stop in self._slices(start, end, fill_cache):
            yield from zip(keys[j:stop], blk.seqs[j:stop], blk.values(j, stop), blk.exps[j:stop])

    def _slices(self, start: bytes | None, end: bytes | None, fill_cache: bool):
        """(block, its keys, first index, stop index) of each block overlapping [start, end), in order."""
        i = 0 if start is None else bisect_left(self.index_keys, start)
        n = len(self.index_keys)
        while i < n:
            blk = self._block(i, fill_cache)
            keys = blk.keys()
            j = 0 if start is None else bisect_left(keys, start)
            stop = len(keys) if end is None else bisect_left(keys, end)
            yield blk, keys, j, stop
            if stop < len(keys):
                return
            i += 1

    def close(self) -> None:
        self._finalizer()


def overlaps(smallest: bytes, largest: bytes, lo: bytes | None, hi: bytes | None) -> bool:
    """Does [smallest, largest] intersect [lo, hi] (None = unbounded, both inclusive)?"""
    return not ((hi is not None and smallest > hi) or (lo is not None and largest < lo))

