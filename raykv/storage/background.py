"""Background work of LSMStore: flush (frozen memtable -> level-0 table) and leveled compaction.

Reference: LevelDB ``DBImpl::CompactMemTable`` / ``BackgroundCompaction`` /
``DoCompactionWork``. The policy (which tables to merge) is the pure
``compaction.pick``; this module executes it: merge the inputs' sorted streams into
new tables, make the manifest naming them durable, publish a new ``Version``, and
only then delete the inputs. A flush or compaction that dies before its manifest save
leaves unreferenced tables that recovery deletes.
"""

from __future__ import annotations

import os
import time

from ..errors import RayKVError
from . import compaction as C
from . import format as F
from . import manifest as M
from .iterators import compaction_columns
from .sstable import TableBuilder, TableMeta, TableReader


class BackgroundWork:
    """Flush and compaction threads of an LSMStore (a mixin: runs on the store's state under its locks).

    Needs from the store: ``_lock`` and its conditions ``_flush_cv``/``_compact_cv``/``_room_cv``,
    ``_manifest_lock``, ``_compaction_lock``, ``_state``, ``_readers``, ``_imm``, ``_mem``,
    ``_policy``, ``_pointers``, ``counters``, ``cache``, ``_alloc``, ``_file``, ``_make_version``,
    ``_rotate``, ``_check_open`` and the table options (``_codec``, ``_block_bytes``, ...).
    """

    # ------------------------------------------------------------------ flush
    def _write_columns(self, columns: tuple, number: int) -> TableMeta:
        """One table from a frozen memtable's sorted columns (bulk path, no per-entry Python call)."""
        b = TableBuilder(self._file(F.table_name(number)), number, self._codec, self._block_bytes, self._bloom_bits)
        try:
            b.add_run(*columns)
            return b.finish()
        except BaseException:
            b.abandon()
            raise

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                while not self._imm and not self._closing:
                    self._flush_cv.wait()
                if not self._imm:
                    return
                mem = self._imm[0]
                number = self._alloc()
            try:
                if not len(mem):
                    raise AssertionError("an empty memtable was frozen")
                t0 = time.monotonic()
                meta = self._write_columns(mem.columns(), number)
                # no directory fsync here: the manifest save below fsyncs the directory, which makes
                # the table's rename durable before any file refers to it
                reader = TableReader(self._file(F.table_name(number)), number, self.cache)
                with self._manifest_lock:
                    with self._lock:
                        level = C.flush_level(self._levels_info(), meta.smallest, meta.largest,
                                              self._policy, self._reserved)
                        self._state.levels[level].insert(0, meta)
                        if level:
                            self.counters["flushes_below_l0"] += 1
                        self._readers[number] = reader
                        nxt = self._imm[1] if len(self._imm) > 1 else self._mem
                        self._state.log_number = nxt.wal_number
                        self._state.last_seq = max(self._state.last_seq, mem.max_seq)
                        snapshot = M.encode(self._state)
                    self._save(snapshot)
                    with self._lock:
                        self._version = self._make_version()
                        self._imm = self._imm[1:]
                        self.counters["flushes"] += 1
                        self.counters["flush_seconds"] += time.monotonic() - t0
                        self._room_cv.notify_all()
                        self._compact_cv.notify()
                os.unlink(self._file(F.wal_name(mem.wal_number)))
            except BaseException as exc:  # disk full, I/O error: surface to writers, stop flushing
                self._fail(exc)
                return

    def _save(self, encoded: bytes) -> None:
        """Atomic manifest replacement (a method so tests can simulate a crash before it lands)."""
        M.save_encoded(self.path, encoded)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._bg_error is None:
                self._bg_error = exc if isinstance(exc, RayKVError) else RayKVError(
                    f"background work of LSMStore at {self.path} failed: {exc!r}; reopen the store")
            self._limit = -1
            self._room_cv.notify_all()

    def flush(self) -> None:
        """Freeze the active memtable (if not empty) and wait until every frozen memtable is a table."""
        with self._lock:
            self._check_open()
            if len(self._mem):
                while len(self._imm) >= self._max_imm:
                    self._check_open()
                    self._room_cv.wait(0.5)
                self._rotate()
            while self._imm:
                self._check_open()
                self._room_cv.wait(0.5)

    # ------------------------------------------------------------------ compaction
    def _levels_info(self) -> list[list[C.FileInfo]]:
        return [[C.FileInfo(m.number, m.size, m.smallest, m.largest) for m in lv] for lv in self._state.levels]

    def _compact_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closing and not (self._auto_compact and
                                                 C.pick(self._levels_info(), self._policy, self._pointers)):
                    self._compact_cv.wait()
                if self._closing:
                    return
            try:
                with self._compaction_lock:
                    with self._lock:
                        task = C.pick(self._levels_info(), self._policy, self._pointers)
                        self._reserve(task)
                    if task is not None:
                        self._run(task)
            except BaseException as exc:
                self._fail(exc)
                return

    def compact(self) -> None:
        """Flush, then merge every table into one level: shadowed versions, tombstones and expired
        entries are gone afterwards. Blocks until done."""
        self.flush()
        with self._compaction_lock:
            with self._lock:
                task = C.full(self._levels_info())
                self._reserve(task)
            if task is not None:
                self._run(task)

    def _run(self, task: C.Task) -> None:
        """Execute a task (the caller holds ``_compaction_lock`` and reserved the task's output range
        against flush placement when it picked it), merge the inputs into new tables, make the manifest durable, then delete
        the inputs."""
        with self._lock:
            if not self._reserved:
                self._reserve(task)
        try:
            self._execute(task)
        finally:
            with self._lock:
                self._reserved = ()

    def _reserve(self, task: C.Task | None) -> None:
        """Called with the writer lock held, in the critical section that picked ``task``: from
        now on no flush places a table where the task will write."""
        self._reserved = () if task is None else (C.reservation(task),)

    def _execute(self, task: C.Task) -> None:
        t0 = time.monotonic()
        inputs = task.all_inputs
        numbers = {f.number for f in inputs}
        outputs: list[TableMeta] = []
        if not task.trivial_move:
            readers = [self._readers[n] for n in numbers]
            chunk = max(16, min(1024, self._table_bytes // 256))
            stream = compaction_columns([r.iter_sortable() for r in readers], self._clock(), task.bottom, chunk)
            builder = None
            try:
                for columns in stream:
                    if builder is None:
                        with self._lock:
                            number = self._alloc()
                        builder = TableBuilder(self._file(F.table_name(number)), number, self._codec,
                                               self._block_bytes, self._bloom_bits)
                    builder.add_run(*columns)
                    if builder.estimated_size >= self._table_bytes:
                        outputs.append(builder.finish())
                        builder = None
                if builder is not None:
                    outputs.append(builder.finish())
                    builder = None
            except BaseException:
                if builder is not None:
                    builder.abandon()
                for m in outputs:
                    os.unlink(self._file(F.table_name(m.number)))
                raise
            # the manifest save below fsyncs the directory (covers the outputs' renames)
        new_readers = {m.number: TableReader(self._file(F.table_name(m.number)), m.number, self.cache)
                       for m in outputs}
        with self._manifest_lock:
            with self._lock:
                moved = []
                for lv in self._state.levels:
                    keep = [m for m in lv if m.number not in numbers]
                    moved += [m for m in lv if m.number in numbers]
                    lv[:] = keep
                self._state.levels[task.output_level].extend(moved if task.trivial_move else outputs)
                self._readers.update(new_readers)
                snapshot = M.encode(self._state)
            self._save(snapshot)
            with self._lock:
                self._version = self._make_version()
                if not task.trivial_move:
                    for n in numbers:
                        self._readers.pop(n, None)
                if task.level > 0 and task.inputs:
                    self._pointers[task.level] = max(f.largest for f in task.inputs)
                self.counters["compactions"] += 1
                self.counters["compaction_seconds"] += time.monotonic() - t0
                if task.trivial_move:
                    self.counters["trivial_moves"] += 1
                else:
                    self.counters["compaction_bytes_in"] += task.input_bytes
                    self.counters["compaction_bytes_out"] += sum(m.size for m in outputs)
                self._room_cv.notify_all()
                self._compact_cv.notify()
        if not task.trivial_move:
            for n in numbers:   # the new manifest is durable: the inputs are garbage now
                try:
                    os.unlink(self._file(F.table_name(n)))
                except FileNotFoundError:
                    pass
                self.cache.evict_table(n)
