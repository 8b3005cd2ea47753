"""LSMStore: the single-node storage engine (WAL -> memtable -> SSTables, leveled compaction, block cache).

Reference: LevelDB ``db/db_impl.cc`` (write path, recovery, background flush/compaction),
mini-lsm (Chi, 2023) for the decomposition. Write path: validate, one ``os.write`` of a
CRC-framed WAL record, one memtable insert, then fsync per policy. Read path: active
memtable, frozen memtables, then tables newest first (level 0) and one table per deeper
level, each guarded by its key range and bloom filter; blocks come from a byte-bounded LRU.

Concurrency: one writer lock serializes sequence numbers, WAL appends and memtable inserts;
reads take no lock (they read immutable snapshots: frozen memtables, ``Version`` objects).
A flush thread turns frozen memtables into tables (level 0, or level 1-2 when they overlap
nothing there: ``compaction.flush_level``); a compaction thread runs the pure policy of
compaction.py. Writers stall (block, never fail) while memtables wait for a flush or L0 is full.

This module holds the write and read paths; recovery.py reopens a directory, background.py
runs flushes and compactions (a mixin of LSMStore), version.py is the read view of the tables.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import zlib
from typing import Callable, Iterable, Iterator

from ..errors import InvalidArgument, InvalidKey, Overloaded, RayKVError
from . import block as B
from . import compaction as C
from . import format as F
from . import recovery as R
from . import wal as W
from .background import BackgroundWork
from .cache import BlockCache
from .iterators import live_sortable, memtable_sortable
from .memtable import Memtable
from .version import Version, build_version

_crc32 = zlib.crc32
_ONE_FRAME = F.ONE_PUT_FRAME.pack
_writev = os.writev
_CRC = F.WAL_CRC.pack
_BATCH = F.WAL_TYPE_BATCH
_KPUT = F.KIND_PUT
_ONE_SIZE = F.ONE_PUT.size
FSYNC_POLICIES = ("always", "batch", "periodic", "never")
DEFAULT_FSYNC_INTERVAL = 0.1     # seconds between the background fsyncs of fsync="periodic"
Ticket = tuple[W.WalWriter, int] | None   # what a write with durable=False returns (opaque): for wait_durable

def _bad_key(key) -> RayKVError:
    if isinstance(key, (bytes, bytearray, memoryview, str)) and len(key) == 0:
        return InvalidKey("keys must be non-empty bytes")
    return InvalidKey(f"LSMStore keys must be bytes, got {type(key).__name__}; encode str keys first")


def _bad_value(value) -> RayKVError:
    return InvalidArgument(f"LSMStore values must be bytes, got {type(value).__name__}")


class LSMStore(BackgroundWork):
    """A durable, thread-safe ordered key-value store in one directory (see DESIGN.md section 2).

    ``fsync``: "always" (one fsync per write, under the writer lock), "batch" (group commit:
    a write returns after the fsync of its group; concurrent writers share one fsync), "periodic"
    (a write returns after its append; a background thread fsyncs the log every ``fsync_interval``
    seconds when it grew: a power loss loses at most that window, a process crash nothing; Cassandra's
    ``commitlog_sync: periodic``, Redis's ``appendfsync everysec``) or "never" (records reach the OS page
    cache at once; the last writes are lost on power loss, not on a process crash). A failed periodic
    fsync fails every later write (``RayKVError``), as a failed flush does. ``write_batch``/``put_many``
    with ``durable=False`` split a write in two: the append (visible at once) and ``wait_durable(ticket)``
    (the fsync wait). Memory:
    ``memtable_bytes * (1 + max_immutable)`` + ``cache_bytes`` + per-table index and bloom filter.
    ``max_flush_level``: a flushed table that overlaps no table of levels 0..k goes straight to
    level k <= this (0: every flush lands in level 0).
    """

    def __init__(self, path: str, fsync: str = "batch", memtable_bytes: int = 4 << 20,
                 cache_bytes: int = 8 << 20, compression: str = B.DEFAULT_COMPRESSION, *,
                 block_bytes: int = F.DEFAULT_BLOCK_BYTES, bloom_bits_per_key: int = F.BLOOM_BITS_PER_KEY,
                 clock: Callable[[], float] = time.time, max_immutable: int = 2,
                 l0_trigger: int = 4, l0_stop: int = 12, table_bytes: int | None = None,
                 level_base_bytes: int | None = None, level_multiplier: int = 10, max_levels: int = 7,
                 auto_compact: bool = True, stall_timeout: float | None = None,
                 max_flush_level: int = 2, fsync_interval: float = DEFAULT_FSYNC_INTERVAL) -> None:
        if fsync not in FSYNC_POLICIES:
            raise InvalidArgument(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if isinstance(fsync_interval, bool) or not isinstance(fsync_interval, (int, float)) or not fsync_interval > 0:
            raise InvalidArgument(f"fsync_interval must be a positive number of seconds, got {fsync_interval!r}")
        if compression not in F.CODECS:
            raise InvalidArgument(f"compression must be one of {sorted(F.CODECS)}, got {compression!r}")
        if compression == "lz4" and B.DEFAULT_COMPRESSION != "lz4":
            raise InvalidArgument("compression='lz4' needs the lz4 package (pip install lz4); use 'zstd'")
        for name, v in (("memtable_bytes", memtable_bytes), ("block_bytes", block_bytes),
                        ("max_immutable", max_immutable), ("l0_trigger", l0_trigger)):
            if not isinstance(v, int) or v <= 0:
                raise InvalidArgument(f"{name} must be a positive int, got {v!r}")
        if not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise InvalidArgument(f"cache_bytes must be an int >= 0, got {cache_bytes!r}")
        if l0_stop < l0_trigger or max_levels < 2:
            raise InvalidArgument("need l0_stop >= l0_trigger and max_levels >= 2")
        self.path = os.path.abspath(os.fspath(path))
        self.fsync = fsync
        self._sync_always = fsync == "always"
        self._sync_batch = fsync == "batch"
        self._fsync_interval = float(fsync_interval)
        self._fsync_stop = threading.Event()
        self._memtable_bytes = memtable_bytes
        self._limit = memtable_bytes             # set to -1 on close/error: routes writes to _make_room
        self._codec = F.CODECS[compression]
        self._block_bytes = block_bytes
        self._bloom_bits = bloom_bits_per_key
        self._clock = clock
        self._max_imm = max_immutable
        self._l0_stop = l0_stop
        self._table_bytes = table_bytes or max(memtable_bytes // 2, 64 << 10)
        self._policy = C.Policy(l0_trigger, level_base_bytes or 5 * self._table_bytes,
                                level_multiplier, max_levels, max(0, min(max_flush_level, max_levels - 1)),
                                10 * self._table_bytes)   # LevelDB: grandparent limit = 10 tables
        self._auto_compact = auto_compact
        self._stall_timeout = stall_timeout     # None: a stalled write blocks until there is room
        self.cache = BlockCache(cache_bytes)

        self._lock = threading.Lock()
        self._room_cv = threading.Condition(self._lock)     # writers waiting for a flush/compaction
        self._flush_cv = threading.Condition(self._lock)    # flush thread waiting for a frozen memtable
        self._compact_cv = threading.Condition(self._lock)  # compaction thread waiting for work
        self._manifest_lock = threading.Lock()              # serializes state change + manifest save
        self._arrivals_lock = threading.Lock()
        self._arrivals = 0                                  # fsync="batch" writers not yet in sync_to
        self._compaction_lock = threading.Lock()            # one compaction at a time (bg or manual)
        self._closed = False
        self._closing = False
        self._bg_error: BaseException | None = None
        self._pointers: dict[int, bytes] = {}
        self._reserved: tuple[C.Reservation, ...] = ()     # output range of the running compaction
        self.counters = {"stalls": 0, "stall_seconds": 0.0, "flushes": 0, "flush_seconds": 0.0,
                         "compactions": 0, "compaction_seconds": 0.0,
                         "trivial_moves": 0, "compaction_bytes_in": 0, "compaction_bytes_out": 0,
                         "flushes_below_l0": 0}
        os.makedirs(self.path, exist_ok=True)
        self._state, self._readers, self._wal, self._seq = R.recover(
            self.path, self._policy.max_levels, self.cache, self._write_columns)
        self._mem = Memtable(self._wal.number)
        self._imm: tuple[Memtable, ...] = ()
        self._version = self._make_version()
        self._threads = [threading.Thread(target=self._flush_loop, name="raykv-flush", daemon=True),
                         threading.Thread(target=self._compact_loop, name="raykv-compact", daemon=True)]
        if fsync == "periodic":
            self._threads.append(threading.Thread(target=self._fsync_loop, name="raykv-fsync", daemon=True))
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ files and versions
    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _alloc(self) -> int:
        return R.alloc(self._state)

    def _make_version(self) -> Version:
        return build_version(self._state.levels, self._readers)

    # ------------------------------------------------------------------ writes
    def put(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        """Insert or overwrite; with ``ttl`` (seconds > 0) the key reads as absent once it expires.
        Durable on return per the fsync policy. Cost: one WAL append (+ fsync) and one memtable insert."""
        if type(key) is not bytes or not key:
            raise _bad_key(key)
        if type(value) is not bytes:
            raise _bad_value(value)
        exp = 0.0 if ttl is None else self._expiry(ttl)
        group = self._sync_batch
        if group:
            self._arrive(1)
        try:
            with self._lock:
                mem = self._mem
                if mem.bytes >= self._limit:
                    self._make_room()
                    mem = self._mem
                seq = self._seq = self._seq + 1
                wal = self._wal
                klen = len(key)
                vlen = len(value)
                tail = _ONE_FRAME(_ONE_SIZE + klen + vlen, _BATCH, seq, 1, _KPUT, klen, vlen, exp) + key + value
                crc = _CRC(_crc32(tail))
                n = _writev(wal.fd, (crc, tail))
                if n != 4 + len(tail):       # a short write (rare: signal, disk full): finish it or fail
                    W.write_all(wal.fd, (crc + tail)[n:])
                wal.written = ticket = wal.written + 4 + len(tail)
                if self._sync_always:
                    wal.sync()
                mem.put(key, seq, value, exp)
        finally:
            if group:
                self._arrive(-1)
        if group:
            wal.sync_to(ticket, self._arriving)

    def delete(self, key: bytes) -> None:
        """Write a tombstone for ``key`` (absent keys too). Same cost and durability as ``put``."""
        if type(key) is not bytes or not key:
            raise _bad_key(key)
        self._write([(key, None, 0.0)])

    def write_batch(self, items: Iterable[tuple], *, durable: bool = True) -> Ticket:
        """Apply ``(key, value)`` pairs atomically (one WAL record); value None deletes. A third
        element, if given, is a TTL in seconds for that item.

        ``durable=True``: returns once the batch is durable per the fsync policy (and returns None).
        ``durable=False`` (LevelDB's ``WriteOptions.sync = false``, made waitable): returns right after the
        append, the batch visible to reads at once, with a ticket for ``wait_durable``; so a caller holding
        a lock of its own can release it before the fsync wait and let other writers share that fsync."""
        batch = []
        append = batch.append
        for item in items:
            n = len(item) if isinstance(item, tuple) else 0
            if n != 2 and n != 3:
                raise InvalidArgument("write_batch items must be (key, value) or (key, value, ttl) tuples")
            key, value = item[0], item[1]
            if type(key) is not bytes or not key:
                raise _bad_key(key)
            if value is not None and type(value) is not bytes:
                raise _bad_value(value)
            if n == 2 or item[2] is None or value is None:
                append((key, value, 0.0))
            else:
                append((key, value, self._expiry(item[2])))
        if batch:
            return self._write(batch, wait=durable)
        return None

    def put_many(self, keys: list[bytes], values: list[bytes], *, durable: bool = True) -> Ticket:
        """``write_batch(zip(keys, values), durable=durable)`` (puts without TTL; a None value deletes) as two lists:
        one WAL record, atomic; same ticket. Checked by C-level passes (a bad item goes to ``write_batch``, which
        raises), no tuple per entry (``wal.encode_puts``, ``Memtable.put_new``)."""
        if len(keys) != len(values):
            raise InvalidArgument("put_many needs as many values as keys")
        if not keys:
            return None
        if not (set(map(type, keys)) == {bytes} and all(keys) and set(map(type, values)) == {bytes}):
            return self.write_batch(list(zip(keys, values)), durable=durable)
        return self._write(None, new=(keys, values), wait=durable)

    def wait_durable(self, ticket: Ticket) -> None:
        """Return once the write that gave ``ticket`` (``write_batch``/``put_many`` with ``durable=False``) is
        durable per the fsync policy; None returns at once. Any thread, any number of times, no lock held.

        fsync="batch": group commit (``WalWriter.sync_to``): the first waiter fsyncs every byte appended so far
        and the writers that appended meanwhile share it, so the cost is at most one fsync, often a share of
        one. A ticket names its ``WalWriter``: if the memtable rotated since the append, the old log was
        fsynced when it was closed, and the wait returns at once. An fsync error raises ``OSError`` here (the
        write must not be acknowledged). "always" synced in the append and "never" never syncs: their
        tickets are None."""
        if ticket is not None:
            wal, end = ticket
            wal.sync_to(end, self._arriving)

    def _expiry(self, ttl) -> float:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise InvalidArgument(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        return self._clock() + float(ttl)

    def _write(self, batch: list[tuple[bytes, bytes | None, float]] | None, new: tuple | None = None,
               wait: bool = True) -> Ticket:
        """One WAL record for ``batch``, then the memtable, then the fsync policy. ``new`` = (keys, values) of puts
        without expiry given as two lists instead of ``batch`` (None): encoded with no tuple per entry
        (``wal.encode_puts``) and tried first with ``Memtable.put_new`` (C-level loops).

        fsync="always" syncs under the writer lock, whatever ``wait``. fsync="batch": ``wait`` waits for the
        group commit here and returns None; ``wait=False`` returns the ticket ``(wal, end offset)`` for
        ``wait_durable`` instead. Either way the writer counts as arriving (``_arriving``: a group leader
        yields for it) only until its append is done. fsync="periodic" and "never": None."""
        group = self._sync_batch
        if group:
            self._arrive(1)
        try:
            with self._lock:
                if self._mem.bytes >= self._limit:
                    self._make_room()
                base = self._seq + 1
                self._seq = base + (len(batch) if new is None else len(new[0])) - 1
                wal = self._wal
                ticket = wal.append_payload(W.encode_batch(base, batch) if new is None else W.encode_puts(base, *new))
                if self._sync_always:
                    wal.sync()
                mem = self._mem
                if new is None:
                    mem.put_batch(batch, base)
                elif not mem.put_new(*new, base):       # some key already in the memtable, or repeated
                    mem.put_batch(list(zip(new[0], new[1], itertools.repeat(0.0))), base)
        finally:
            if group:
                self._arrive(-1)
        if not group:
            return None
        if wait:
            wal.sync_to(ticket, self._arriving)
            return None
        return wal, ticket

    def _fsync_loop(self) -> None:
        """fsync="periodic": every ``fsync_interval`` seconds, fsync the active log if it grew since its last
        fsync (through ``sync_to``, so a concurrent ``close`` or rotation is waited for, and an idle store
        costs a comparison). Stops at close, which fsyncs the log itself."""
        while not self._fsync_stop.wait(self._fsync_interval):
            wal = self._wal
            try:
                wal.sync_to(wal.written)
            except BaseException as exc:  # EIO, disk gone: acknowledged writes may not be durable; stop writes
                self._fail(exc)
                return

    def _arrive(self, delta: int) -> None:
        """Count batch-mode writers between entering the write path and finishing their append (then they wait
        in ``sync_to`` at once, or later through ``wait_durable``: either way the group leader need not wait)."""
        with self._arrivals_lock:
            self._arrivals += delta

    def _arriving(self) -> bool:
        """True while another writer is on its way to a WAL append (the group leader waits for it)."""
        return self._arrivals > 0

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise InvalidArgument(f"LSMStore at {self.path} is closed")
        if self._bg_error is not None:
            raise self._bg_error

    def _make_room(self) -> None:
        """Called with the writer lock held when the memtable is full (or the store unusable):
        freeze it and start a new one, stalling while flushes or level 0 are too far behind."""
        started = None
        while True:
            self._check_open()
            if self._mem.bytes < self._memtable_bytes:
                return
            if len(self._imm) >= self._max_imm or (self._auto_compact and len(self._state.levels[0]) >= self._l0_stop):
                t0 = time.monotonic()
                if started is None:
                    started = t0
                    self.counters["stalls"] += 1
                elif self._stall_timeout is not None and t0 - started >= self._stall_timeout:
                    raise Overloaded(f"LSMStore at {self.path}: writes stalled {t0 - started:.1f}s behind "
                                     f"flushes/compactions (disk too slow for the write rate); retry with backoff")
                self._compact_cv.notify()
                self._room_cv.wait(0.5 if self._stall_timeout is None else min(0.5, self._stall_timeout))
                self.counters["stall_seconds"] += time.monotonic() - t0
                continue
            self._rotate()

    def _rotate(self) -> None:
        """Freeze the active memtable and switch to a new WAL (writer lock held)."""
        number = self._alloc()
        new_wal = W.WalWriter(self._file(F.wal_name(number)), number)
        old = self._wal
        self._imm = self._imm + (self._mem,)
        self._mem = Memtable(number)
        self._wal = new_wal
        old.close(sync=self.fsync != "never")
        self._flush_cv.notify()

    # ------------------------------------------------------------------ reads
    def get(self, key: bytes) -> bytes | None:
        """The live value of ``key`` or None (absent, deleted or expired). Lock-free."""
        if type(key) is not bytes or not key:
            raise _bad_key(key)
        if self._closed:
            raise InvalidArgument(f"LSMStore at {self.path} is closed")
        e = self._mem.get(key)
        if e is None:
            for m in reversed(self._imm):
                e = m.get(key)
                if e is not None:
                    break
            else:
                e = self._version.get(key)
                if e is None:
                    return None
        v = e[1]
        if e[2] and e[2] <= self._clock():
            return None
        return v

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """``[get(k) for k in keys]`` against one view of the store (memtables, tables and clock taken once);
        the keys no memtable holds go to the tables as one batch (``Version.get_many``: bloom filters probed
        for the whole batch at once). Lock-free. Measured on 600 keys: absent keys over 5 tables 2.3 -> 1.1
        us/key; ``rpc_get_encoded`` of keys in cached tables 3.7 -> 2.3 us/key, in the memtable 0.87 -> 0.47."""
        if keys and not (set(map(type, keys)) == {bytes} and all(keys)):
            for key in keys:
                if type(key) is not bytes or not key:
                    raise _bad_key(key)
        if self._closed:
            raise InvalidArgument(f"LSMStore at {self.path} is closed")
        # the order ``get`` reads in: the active memtable, then the frozen ones, then the tables (a flush
        # publishes the Version holding a memtable's table before it drops the memtable, so nothing is missed)
        mem_get = self._mem.get
        imms = tuple(m.get for m in reversed(self._imm))
        version = self._version
        entries = []
        misses = []
        for i, key in enumerate(keys):
            e = mem_get(key)
            if e is None:
                for m_get in imms:
                    e = m_get(key)
                    if e is not None:
                        break
                else:
                    misses.append(i)
            entries.append(e)
        if misses:
            for i, e in zip(misses, version.get_many([keys[i] for i in misses])):
                entries[i] = e
        now = self._clock()
        return [None if e is None or (e[2] and e[2] <= now) else e[1] for e in entries]

    def scan(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of live keys with start <= key < end, in key order, from a snapshot taken now."""
        for b in (start, end):
            if b is not None and type(b) is not bytes:
                raise InvalidArgument(f"scan bounds must be bytes or None, got {type(b).__name__}")
        with self._lock:
            self._check_open()
            snap = self._mem.snapshot(start, end)
            imm = self._imm
            version = self._version
        sources = [memtable_sortable(snap)] if snap else []
        sources += [memtable_sortable(m.items(start, end)) for m in reversed(imm)]
        sources += version.sources(start, end)
        return live_sortable(sources, self._clock())

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None
    # ------------------------------------------------------------------ introspection
    @property
    def approximate_disk_bytes(self) -> int:
        """Bytes of live tables plus the current WAL."""
        with self._lock:
            return sum(m.size for lv in self._state.levels for m in lv) + self._wal.written

    def stats(self) -> dict:
        """Counters for operators and the cluster layer. ``keys`` is an upper estimate (table entries
        + memtable keys, shadowed versions and tombstones included until compaction)."""
        with self._lock:
            levels = [len(lv) for lv in self._state.levels]
            table_entries = sum(m.entries for lv in self._state.levels for m in lv)
            mem_keys = len(self._mem) + sum(len(m) for m in self._imm)
            disk = sum(m.size for lv in self._state.levels for m in lv) + self._wal.written
            index_bytes = sum(r.memory_bytes for r in self._readers.values())
            out = {
                "keys": table_entries + mem_keys,
                "keys_estimate": table_entries + mem_keys,
                "disk_bytes": disk,
                "tables": sum(levels),
                "levels": levels,
                "memtable_bytes": self._mem.bytes,
                "immutable_memtables": len(self._imm),
                "immutable_bytes": sum(m.bytes for m in self._imm),
                "index_filter_bytes": index_bytes,
                "cache_bytes": self.cache.usage,
                "cache_capacity": self.cache.capacity,
                "cache_hits": self.cache.hits,
                "cache_misses": self.cache.misses,
                "last_seq": self._seq,
                "wal_fsyncs": self._wal.fsyncs,
            }
            out.update(self.counters)
            return out

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Finish pending flushes and the running compaction, fsync the WAL, release files. Idempotent."""
        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True
            self._limit = -1
            self._fsync_stop.set()
            self._flush_cv.notify_all()
            self._compact_cv.notify_all()
            self._room_cv.notify_all()
        for t in self._threads:
            t.join()
        with self._lock:
            self._wal.close(sync=True)
            for r in self._readers.values():
                r.close()
            self._closed = True

    def __enter__(self) -> "LSMStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LSMStore({self.path!r}, fsync={self.fsync!r})"
