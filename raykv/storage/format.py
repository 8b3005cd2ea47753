"""Every on-disk constant of the storage engine: file names, record framing, block, table and manifest layouts.

docs/format.md draws these bytes; keep both in sync. All integers are little-endian.
Nothing else in raykv/storage hard-codes a size, magic number or struct layout.
"""

from __future__ import annotations

import struct

# ---------------------------------------------------------------- file names
WAL_SUFFIX = ".log"            # <number:06d>.log   write-ahead log of one memtable
TABLE_SUFFIX = ".sst"          # <number:06d>.sst   immutable sorted table
TMP_SUFFIX = ".tmp"            # any file being written; deleted on open
MANIFEST_NAME = "MANIFEST"     # the live-table set, replaced atomically by rename


def wal_name(number: int) -> str:
    return f"{number:06d}{WAL_SUFFIX}"


def table_name(number: int) -> str:
    return f"{number:06d}{TABLE_SUFFIX}"


# ---------------------------------------------------------------- WAL record
# [crc32 u32][length u32][type u8][payload: length bytes]
# crc32 covers length, type and payload (everything after the crc field).
WAL_HEADER = struct.Struct("<IIB")
WAL_HEADER_SIZE = WAL_HEADER.size          # 9
WAL_LEN_TYPE = struct.Struct("<IB")        # the part of the header the CRC covers
WAL_CRC = struct.Struct("<I")
WAL_TYPE_BATCH = 1                          # the only record type: an atomic write batch
WAL_TYPES = frozenset({WAL_TYPE_BATCH})
WAL_MAX_RECORD = 1 << 30                    # a larger length field is corrupt by definition

# batch payload: [base_seq u64][count u32] then count entries, entry i has seq base_seq + i:
#   [kind u8][klen u32][vlen u32][expire_at f64][key][value]    (vlen 0 and no value bytes for a delete)
BATCH_HEADER = struct.Struct("<QI")
BATCH_ENTRY = struct.Struct("<BIId")
KIND_DELETE = 0
KIND_PUT = 1
# the whole one-put payload in one struct call (the put fast path)
ONE_PUT = struct.Struct("<QIBIId")
# ... and with the CRC-covered header part (length, type) in front: everything after the crc field
# up to the key bytes, for a single put (length = ONE_PUT.size + klen + vlen, type = WAL_TYPE_BATCH)
ONE_PUT_FRAME = struct.Struct("<IBQIBIId")

NO_EXPIRY = 0.0                             # expire_at of an entry without TTL

# ---------------------------------------------------------------- SSTable blocks
# Every block on disk (data, index, filter, meta): [payload][codec u8][crc32 u32]
# crc32 covers the stored (possibly compressed) payload and the codec byte.
BLOCK_TRAILER = struct.Struct("<BI")
BLOCK_TRAILER_SIZE = BLOCK_TRAILER.size     # 5
CODEC_NONE = 0
CODEC_ZLIB = 1
CODEC_ZSTD = 2
CODEC_LZ4 = 3                               # lz4 block format with its 4-byte uncompressed-size prefix
CODECS = {"none": CODEC_NONE, "zlib": CODEC_ZLIB, "zstd": CODEC_ZSTD, "lz4": CODEC_LZ4}
ZLIB_LEVEL = 1
ZSTD_LEVEL = 1
MIN_COMPRESSION_GAIN = 8                    # store raw unless compression saves >= 1/8

# data block payload (uncompressed), columnar so that reading it needs no per-entry decoding:
#   [n u32] [key_off u32 * (n+1)] [val_off u32 * (n+1)] [expire_at f64 * n] [seq u64 * n] [kind u8 * n]
#   [keys...] [values...]
# key i is keys[key_off[i]:key_off[i+1]] (offsets relative to the start of the keys region, key_off[0] = 0),
# value i likewise in the values region. kind is KIND_PUT or KIND_DELETE (a delete has an empty value).
BLOCK_COUNT = struct.Struct("<I")
DEFAULT_BLOCK_BYTES = 4096


def block_layout(n: int) -> tuple[int, int, int, int, int, int]:
    """Byte offsets in an n-entry data block of: key_off, val_off, expire_at, seq, kind columns, keys region."""
    ko = BLOCK_COUNT.size
    vo = ko + 4 * (n + 1)
    eo = vo + 4 * (n + 1)
    so = eo + 8 * n
    kd = so + 8 * n
    return ko, vo, eo, so, kd, kd + n


# index block payload: [n u32] then n entries [klen u32][offset u64][size u32][last_key]
#   one entry per data block: the block's last key, where it starts, its stored size incl. trailer
INDEX_ENTRY = struct.Struct("<IQI")

# filter block payload: [k u8][bloom bit array]; bit i is byte i>>3, bit i&7
# key hash: h1 = crc32(key), h2 = adler32(key) | 1; probe i sets bit (h1 + i*h2) mod nbits
FILTER_HEADER = struct.Struct("<B")
BLOOM_BITS_PER_KEY = 10

# meta block payload: [entries u64][tombstones u64][min_seq u64][max_seq u64][slen u32][llen u32][smallest][largest]
META = struct.Struct("<QQQQII")

# footer (fixed size, last bytes of the file):
#   [filter off u64][filter size u32][index off u64][index size u32][meta off u64][meta size u32]
#   [version u32][crc32 u32 of the preceding 40 bytes][magic u64]
FOOTER_BODY = struct.Struct("<QIQIQII")
FOOTER_TAIL = struct.Struct("<IQ")
FOOTER_SIZE = FOOTER_BODY.size + FOOTER_TAIL.size   # 52
TABLE_MAGIC = 0x52_41_59_4B_56_53_53_54             # "RAYKVSST"
TABLE_VERSION = 1

# ---------------------------------------------------------------- manifest
# [magic u64][crc32 u32 of body][length u32][body: UTF-8 JSON]
MANIFEST_HEADER = struct.Struct("<QII")
MANIFEST_MAGIC = 0x52_41_59_4B_56_4D_41_4E          # "RAYKVMAN"
MANIFEST_VERSION = 1
