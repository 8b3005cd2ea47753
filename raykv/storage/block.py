"""SSTable blocks: the columnar data-block codec, the index codec, and the per-block compression + CRC trailer.

Reference: LevelDB ``table/block_builder.cc`` and ``table/format.cc`` (block trailer =
compression type + CRC). Unlike LevelDB we do not prefix-compress keys: the block is
columnar (all fixed-width fields in one run) so a single ``struct.unpack_from`` decodes
them, and the per-block compressor removes most of the key redundancy instead.
"""

from __future__ import annotations

import threading
import zlib
from bisect import bisect_left

import zstandard

from raykv.errors import CorruptionError
from raykv.storage import format as F

_crc32 = zlib.crc32
_tls = threading.local()


def _zstd_c():
    c = getattr(_tls, "zc", None)
    if c is None:
        c = _tls.zc = zstandard.ZstdCompressor(level=F.ZSTD_LEVEL)
    return c


def _zstd_d():
    d = getattr(_tls, "zd", None)
    if d is None:
        d = _tls.zd = zstandard.ZstdDecompressor()
    return d


def seal(payload: bytes, codec: int) -> bytes:
    """Compress (when it saves >= 1/8) and append the ``[codec u8][crc32 u32]`` trailer."""
    stored, used = payload, F.CODEC_NONE
    if codec == F.CODEC_ZSTD:
        c = _zstd_c().compress(payload)
        if len(c) < len(payload) - len(payload) // F.MIN_COMPRESSION_GAIN:
            stored, used = c, codec
    elif codec == F.CODEC_ZLIB:
        c = zlib.compress(payload, F.ZLIB_LEVEL)
        if len(c) < len(payload) - len(payload) // F.MIN_COMPRESSION_GAIN:
            stored, used = c, codec
    crc = _crc32(bytes((used,)), _crc32(stored))
    return stored + F.BLOCK_TRAILER.pack(used, crc)


def unseal(raw: bytes, path: str, offset: int) -> bytes:
    """Verify the trailer CRC and decompress; ``CorruptionError`` on any mismatch. Cost O(block)."""
    if len(raw) < F.BLOCK_TRAILER_SIZE:
        raise CorruptionError(path, offset, "block shorter than its trailer")
    body_len = len(raw) - F.BLOCK_TRAILER_SIZE
    codec, crc = F.BLOCK_TRAILER.unpack_from(raw, body_len)
    stored = raw[:body_len]
    if _crc32(bytes((codec,)), _crc32(stored)) != crc:
        raise CorruptionError(path, offset, "block checksum mismatch")
    try:
        if codec == F.CODEC_NONE:
            return stored
        if codec == F.CODEC_ZSTD:
            return _zstd_d().decompress(stored)
        if codec == F.CODEC_ZLIB:
            return zlib.decompress(stored)
    except Exception as exc:  # CRC matched but the codec refuses: still corruption, never wrong data
        raise CorruptionError(path, offset, f"block does not decompress: {exc}") from None
    raise CorruptionError(path, offset, f"unknown block codec {codec}")


def encode_data(keys: list[bytes], seqs: list[int], values: list, exps: list[float]) -> bytes:
    """Columnar data-block payload (format.py). Cost O(block bytes)."""
    n = len(keys)
    vlens = [F.TOMBSTONE_VLEN if v is None else len(v) for v in values]
    fixed = F.block_fields(n).pack(*[len(k) for k in keys], *vlens, *exps, *seqs)
    return b"".join((F.BLOCK_COUNT.pack(n), fixed, b"".join(keys),
                     b"".join(v for v in values if v is not None)))


class DataBlock:
    """A decoded data block: parallel lists, ``find(key)`` by bisection. ``charge`` = bytes held in memory."""

    __slots__ = ("keys", "seqs", "values", "exps", "charge")

    def __init__(self, payload: bytes, path: str = "?", offset: int = 0) -> None:
        try:
            (n,) = F.BLOCK_COUNT.unpack_from(payload, 0)
            st = F.block_fields(n)
            fields = st.unpack_from(payload, F.BLOCK_COUNT.size)
        except Exception as exc:
            raise CorruptionError(path, offset, f"malformed data block: {exc}") from None
        klens = fields[:n]
        vlens = fields[n:2 * n]
        self.exps = fields[2 * n:3 * n]
        self.seqs = fields[3 * n:]
        pos = F.BLOCK_COUNT.size + st.size
        keys = []
        append = keys.append
        for kl in klens:
            append(payload[pos:pos + kl])
            pos += kl
        values = []
        append = values.append
        tomb = F.TOMBSTONE_VLEN
        for vl in vlens:
            if vl == tomb:
                append(None)
            else:
                append(payload[pos:pos + vl])
                pos += vl
        if pos != len(payload):
            raise CorruptionError(path, offset, "data block lengths do not add up")
        self.keys = keys
        self.values = values
        self.charge = len(payload) + 100 * n + 200

    def find(self, key: bytes):
        """(seq, value|None, expire_at) of ``key`` in this block, or None."""
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return self.seqs[i], self.values[i], self.exps[i]
        return None


def encode_index(entries: list[tuple[bytes, int, int]]) -> bytes:
    """Index payload: per data block (last_key, offset, stored size incl. trailer)."""
    parts = [F.BLOCK_COUNT.pack(len(entries))]
    for key, off, size in entries:
        parts.append(F.INDEX_ENTRY.pack(len(key), off, size))
        parts.append(key)
    return b"".join(parts)


def decode_index(payload: bytes, path: str, offset: int) -> tuple[list[bytes], list[int], list[int]]:
    """(last_keys, offsets, sizes); ``CorruptionError`` when malformed."""
    try:
        (n,) = F.BLOCK_COUNT.unpack_from(payload, 0)
        pos = F.BLOCK_COUNT.size
        keys, offs, sizes = [], [], []
        esize = F.INDEX_ENTRY.size
        for _ in range(n):
            klen, off, size = F.INDEX_ENTRY.unpack_from(payload, pos)
            pos += esize
            keys.append(payload[pos:pos + klen])
            pos += klen
            offs.append(off)
            sizes.append(size)
    except Exception as exc:
        raise CorruptionError(path, offset, f"malformed index block: {exc}") from None
    if pos != len(payload) or any(keys[i] >= keys[i + 1] for i in range(len(keys) - 1)):
        raise CorruptionError(path, offset, "index block is not a sorted list of block handles")
    return keys, offs, sizes
