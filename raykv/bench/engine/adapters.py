"""The engines under test, each behind the five calls the workloads need.

Contract: ``ADAPTERS[name](path, policy, opts)`` opens engine ``name``
(``raykv`` = LSMStore, ``leveldb`` = plyvel, ``rocksdb`` = rocksdict) at
``path`` with fsync ``policy`` (never | batch | always | periodic) and the shared
``Options``; the object offers ``put(key, value)``, ``get(key) -> bytes | None``,
``scan() -> int`` (entries seen) and ``close()``. ``available_engines(wanted)``
keeps the names whose Python module imports, noting the others on stderr.

fsync policies map to the peers as: ``never`` and ``periodic`` -> ``sync=False``
(neither peer has a timed fsync: raykv's ``periodic`` acks like ``never`` and
fsyncs every 0.1 s off the write path); ``always`` and ``batch`` ->
``sync=True`` (LevelDB and RocksDB group commit concurrent synced writers in
their writer queue, which is what raykv's ``batch`` does).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable

MiB = 1 << 20
POLICIES = ("never", "batch", "always", "periodic")     # fsync policies the bench knows, in report order


# ---------------------------------------------------------------- adapters


@dataclass
class Options:
    """Settings shared by every engine so the comparison is like for like."""

    memtable_bytes: int = 4 * MiB      # LevelDB's default write_buffer_size
    cache_bytes: int = 8 * MiB         # LevelDB's default block cache
    bloom_bits: int = 10


class Adapter:
    """One engine (kept as ``self.db``) behind the five calls the workloads need; ``policy``: see the module doc."""

    name = "?"

    def __init__(self, path: str, policy: str, opts: Options) -> None:
        self.path, self.policy, self.opts = path, policy, opts

    def put(self, key: bytes, value: bytes) -> None: raise NotImplementedError
    def get(self, key: bytes) -> bytes | None: raise NotImplementedError
    def scan(self) -> int: raise NotImplementedError

    def close(self) -> None:
        self.db.close()


class RayKVAdapter(Adapter):
    name = "raykv"

    def __init__(self, path, policy, opts):
        super().__init__(path, policy, opts)
        from raykv.storage import LSMStore
        self.db = LSMStore(path, fsync=policy, memtable_bytes=opts.memtable_bytes, cache_bytes=opts.cache_bytes)
        self.put = self.db.put
        self.get = self.db.get

    def scan(self) -> int:
        n = 0
        for _ in self.db.scan():
            n += 1
        return n


class LevelDBAdapter(Adapter):
    name = "leveldb"

    def __init__(self, path, policy, opts):
        super().__init__(path, policy, opts)
        import plyvel
        self.db = plyvel.DB(path, create_if_missing=True, write_buffer_size=opts.memtable_bytes,
                            lru_cache_size=opts.cache_bytes, bloom_filter_bits=opts.bloom_bits)
        sync = policy not in ("never", "periodic")
        db = self.db
        self.put = (lambda k, v: db.put(k, v, sync=True)) if sync else db.put
        self.get = db.get

    def scan(self) -> int:
        n = 0
        with self.db.iterator() as it:
            for _ in it:
                n += 1
        return n


class RocksDBAdapter(Adapter):
    name = "rocksdb"

    def __init__(self, path, policy, opts):
        super().__init__(path, policy, opts)
        import rocksdict as r
        o = r.Options(raw_mode=True)
        o.create_if_missing(True)
        o.set_write_buffer_size(opts.memtable_bytes)
        t = r.BlockBasedOptions()
        t.set_block_cache(r.Cache(opts.cache_bytes))
        t.set_bloom_filter(opts.bloom_bits, False)
        o.set_block_based_table_factory(t)
        self.db = r.Rdict(path, o)
        w = r.WriteOptions()
        w.sync = policy not in ("never", "periodic")
        self.db.set_write_options(w)
        self.put = self.db.put
        self.get = self.db.get

    def scan(self) -> int:
        n = 0
        for _ in self.db.items():
            n += 1
        return n


ADAPTERS: dict[str, type[Adapter]] = {"raykv": RayKVAdapter, "leveldb": LevelDBAdapter, "rocksdb": RocksDBAdapter}
PEER_MODULES = {"leveldb": "plyvel", "rocksdb": "rocksdict"}


def available_engines(wanted: Iterable[str]) -> list[str]:
    out = []
    for name in wanted:
        mod = PEER_MODULES.get(name)
        if mod is not None:
            try:
                __import__(mod)
            except ImportError:
                print(f"note: {mod} not installed, skipping {name} (pip install 'raykv[bench]')", file=sys.stderr)
                continue
        out.append(name)
    return out
