"""SSTable round trips, codecs, and corruption detection: any flipped bit in any block is an error, never wrong data."""

import os
import random

import pytest

from raykv.errors import CorruptionError
from raykv.storage import block as B
from raykv.storage import format as F
from raykv.storage.bloom import key_hash
from raykv.storage.cache import BlockCache
from raykv.storage.sstable import TableBuilder, TableReader


def _entries(n=600, seed=0):
    rnd = random.Random(seed)
    keys = sorted({b"key-%08d" % rnd.randrange(10 ** 7) for _ in range(n)})
    out = []
    for i, k in enumerate(keys):
        value = None if i % 11 == 0 else bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 60)))
        out.append((k, i + 1, value, 0.0 if i % 5 else 1000.0 + i))
    return out


def _build(path, entries, codec=F.CODEC_ZSTD, block_bytes=512, bulk=False):
    b = TableBuilder(str(path), 7, codec, block_bytes)
    if bulk:
        b.add_run([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries],
                  [e[3] for e in entries])
    else:
        for e in entries:
            b.add(*e)
    return b.finish()


@pytest.mark.parametrize("codec", [F.CODEC_NONE, F.CODEC_ZLIB, F.CODEC_ZSTD, F.CODEC_LZ4])
@pytest.mark.parametrize("bulk", [False, True])
def test_roundtrip(tmp_path, codec, bulk):
    entries = _entries()
    meta = _build(tmp_path / "t.sst", entries, codec, bulk=bulk)
    assert meta.entries == len(entries)
    assert meta.smallest == entries[0][0] and meta.largest == entries[-1][0]
    assert meta.tombstones == sum(1 for e in entries if e[2] is None)
    r = TableReader(str(tmp_path / "t.sst"), 7, BlockCache(1 << 20))
    assert len(r.index_keys) > 5, "want several data blocks"
    for k, s, v, e in entries:
        assert r.get(k, key_hash(k)) == (s, v, e)
    assert r.get(b"key-zzz", key_hash(b"key-zzz")) is None
    assert list(r.iter()) == entries
    lo, hi = entries[100][0], entries[400][0]
    assert list(r.iter(lo, hi)) == entries[100:400]
    assert list(r.iter(b"key-00000000x", None))[0] == next(e for e in entries if e[0] >= b"key-00000000x")
    assert not os.path.exists(str(tmp_path / "t.sst") + F.TMP_SUFFIX)
    r.close()


def test_find_many_is_get_per_key_and_leaves_the_rest_alone(tmp_path):
    """``TableReader.find_many`` (``Version.get_many``'s loop per table) fills ``out[i]`` exactly where ``get``
    finds ``keys[i]``: held keys, deleted ones (their tombstone), absent ones between and past the last key."""
    entries = _entries()
    _build(tmp_path / "t.sst", entries, F.CODEC_LZ4)
    r = TableReader(str(tmp_path / "t.sst"), 7, BlockCache(1 << 20))
    keys = [e[0] for e in entries[::7]] + [e[0] + b"x" for e in entries[::13]] + [b"a", b"zzz"]
    random.Random(3).shuffle(keys)
    idx = [i for i in range(len(keys)) if i % 4]             # some indexes not asked
    out = ["untouched"] * len(keys)
    assert r.find_many(keys, iter(idx), out)
    for i, k in enumerate(keys):
        want = r.get(k, key_hash(k)) if i in idx else None
        assert out[i] == (want if want is not None else "untouched")
    assert not r.find_many([b"zzz"], [0], [None])
    r.close()


def test_compression_shrinks_blocks(tmp_path):
    entries = [(b"k%06d" % i, i + 1, b"hello world " * 8, 0.0) for i in range(2000)]
    raw = _build(tmp_path / "a.sst", entries, F.CODEC_NONE).size
    z = _build(tmp_path / "b.sst", entries, F.CODEC_ZSTD).size
    zl = _build(tmp_path / "c.sst", entries, F.CODEC_ZLIB).size
    lz = _build(tmp_path / "d.sst", entries, F.CODEC_LZ4).size
    assert z < raw / 3 and zl < raw / 3 and lz < raw / 3


def _block_spans(path):
    """(kind, offset, size) of every block and of the footer of a table file."""
    r = TableReader(str(path), 7, None)
    size = os.path.getsize(path)
    foot = open(path, "rb").read()[-F.FOOTER_SIZE:]
    foff, fsize, ioff, isize, moff, msize, _ = F.FOOTER_BODY.unpack(foot[:F.FOOTER_BODY.size])
    spans = [("data", o, s) for o, s in zip(r.offsets, r.sizes)]
    spans += [("filter", foff, fsize), ("index", ioff, isize), ("meta", moff, msize),
              ("footer", size - F.FOOTER_SIZE, F.FOOTER_SIZE)]
    r.close()
    return spans


def _read_everything(path):
    r = TableReader(str(path), 7, None)
    try:
        got = list(r.iter())
        for k, s, v, e in got:
            r.get(k, key_hash(k))
        return got
    finally:
        r.close()


@pytest.mark.parametrize("codec", [F.CODEC_NONE, F.CODEC_ZSTD, F.CODEC_LZ4])
def test_flipped_bit_in_any_block_is_detected(tmp_path, codec):
    entries = _entries(300, seed=3)
    path = tmp_path / "t.sst"
    _build(path, entries, codec)
    good = path.read_bytes()
    rnd = random.Random(9)
    kinds = set()
    for kind, off, size in _block_spans(path):
        positions = {off, off + size - 1} | {off + rnd.randrange(size) for _ in range(6)}
        for pos in positions:
            bad = bytearray(good)
            bad[pos] ^= 1 << rnd.randrange(8)
            path.write_bytes(bytes(bad))
            try:
                got = _read_everything(path)
            except CorruptionError as exc:
                assert exc.path == str(path)
                kinds.add(kind)
                continue
            # only acceptable without an error: every answer still exactly right
            assert got == entries, f"wrong data after flipping a bit at {pos} in the {kind} block"
    path.write_bytes(good)
    assert kinds == {"data", "filter", "index", "meta", "footer"}


def test_truncated_table_is_corruption(tmp_path):
    path = tmp_path / "t.sst"
    _build(path, _entries(50))
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptionError):
            _read_everything(path)


def test_every_block_has_a_crc_trailer():
    payload = b"x" * 100
    sealed = B.seal(payload, F.CODEC_NONE)
    assert sealed[:-F.BLOCK_TRAILER_SIZE] == payload
    assert B.unseal(sealed, "p", 0) == payload
    with pytest.raises(CorruptionError):
        B.unseal(sealed[:-1] + bytes([sealed[-1] ^ 1]), "p", 0)


def test_cache_serves_repeated_reads(tmp_path):
    entries = _entries()
    _build(tmp_path / "t.sst", entries)
    cache = BlockCache(1 << 20)
    r = TableReader(str(tmp_path / "t.sst"), 7, cache)
    k = entries[10][0]
    r.get(k, key_hash(k))
    misses = cache.misses
    for _ in range(10):
        r.get(k, key_hash(k))
    assert cache.misses == misses and cache.hits >= 10
    r.close()


def test_bulk_runs_fill_blocks_like_single_adds(tmp_path):
    entries = _entries(2000, seed=4)
    one = _build(tmp_path / "a.sst", entries, F.CODEC_NONE, block_bytes=1024)
    b = TableBuilder(str(tmp_path / "b.sst"), 7, F.CODEC_NONE, 1024)
    for i in range(0, len(entries), 37):       # many small runs, as compaction emits them
        part = entries[i:i + 37]
        b.add_run([e[0] for e in part], [e[1] for e in part], [e[2] for e in part], [e[3] for e in part])
    runs = b.finish()
    ra = TableReader(str(tmp_path / "a.sst"), 7, None)
    rb = TableReader(str(tmp_path / "b.sst"), 7, None)
    assert list(rb.iter()) == entries == list(ra.iter())
    assert abs(len(rb.index_keys) - len(ra.index_keys)) <= 1      # no partial block per run
    assert runs.tombstones == one.tombstones and runs.entries == one.entries
    ra.close()
    rb.close()



def test_data_block_find_matches_whole_keys_only():
    """``DataBlock.find`` searches the keys run with ``bytes.find``: a match inside a longer key, or straddling
    two keys, is not an entry; a key that is a prefix or suffix of its neighbours is found exactly; the first of
    two entries of one key wins; deletes come back as None values."""
    keys = [b"a", b"ab", b"abc", b"b", b"bc", b"bca", b"c", b"cab", b"x", b"x"]
    seqs = list(range(len(keys), 0, -1))
    values = [b"v-" + k for k in keys]
    values[3] = None                                      # b"b" is a delete
    values[-1] = b"older x"
    blk = B.DataBlock(B.encode_data(keys, seqs, values, [0.0] * len(keys)))
    for i, k in enumerate(keys[:-1]):
        assert blk.find(k) == (seqs[i], values[i], 0.0), k
    for absent in (b"ca", b"bcab", b"cb", b"abcb", b"bcx", b"", b"aa", b"cabx", b"y"):
        assert blk.find(absent) is None, absent      # substrings of the run ("ca" in "bca|c", "cb" in "abc|b"...)
    rng = random.Random(3)
    many = sorted({bytes(rng.choice(b"ab") for _ in range(rng.randint(1, 6))) for _ in range(300)})
    blk = B.DataBlock(B.encode_data(many, list(range(len(many))), many, [0.0] * len(many)))
    for i, k in enumerate(many):
        assert blk.find(k) == (i, k, 0.0)
    for _ in range(300):
        probe = bytes(rng.choice(b"ab") for _ in range(rng.randint(1, 7)))
        assert (blk.find(probe) is None) == (probe not in many)
