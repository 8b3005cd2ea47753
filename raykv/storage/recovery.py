"""Recovery: reopen a store directory after a clean close or a crash (manifest, tables, WAL replay).

Reference: LevelDB ``DBImpl::Recover`` / ``RecoverLogFile``. Steps: load the manifest
(CRC-checked); open every table it names (a missing one is ``CorruptionError``); delete
temp files, tables no manifest names (a flush/compaction that crashed before its manifest
became durable) and logs older than ``log_number``; replay the remaining logs in number
order into one memtable (a torn tail is dropped, a bad record followed by a valid one is
``CorruptionError``); write that memtable as one level-0 table; save the manifest naming a
new empty log; only then delete the replayed logs. A crash anywhere in between leaves a
directory this procedure accepts again. Cost: O(live tables) opens + O(log bytes).
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

from ..errors import CorruptionError
from . import format as F
from . import manifest as M
from . import wal as W
from .cache import BlockCache
from .memtable import Memtable
from .sstable import TableMeta, TableReader


class Recovered(NamedTuple):
    """What an opened store starts from: the durable layout, its open tables, a fresh WAL, the last sequence."""
    state: M.ManifestState
    readers: dict[int, TableReader]
    wal: W.WalWriter
    seq: int


def alloc(state: M.ManifestState) -> int:
    """The next file number (tables and logs share one counter)."""
    n = state.next_file
    state.next_file = n + 1
    return n


def recover(path: str, max_levels: int, cache: BlockCache,
            write_columns: Callable[[tuple, int], TableMeta]) -> Recovered:
    """Reopen the store at ``path`` (see the module docstring); ``write_columns(columns, number)``
    writes the replayed memtable as table ``number``. On failure every file opened here is closed."""
    def file(name: str) -> str:
        return os.path.join(path, name)

    readers: dict[int, TableReader] = {}
    wal = None
    try:
        state = M.load(path) or M.ManifestState()
        while len(state.levels) < max_levels:
            state.levels.append([])
        for lv in state.levels:
            for m in lv:
                tpath = file(F.table_name(m.number))
                if not os.path.exists(tpath):
                    raise CorruptionError(tpath, 0, "table named by the manifest is missing")
                readers[m.number] = TableReader(tpath, m.number, cache)
        live_tables = set(readers)
        logs = []
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if name.endswith(F.TMP_SUFFIX):
                os.unlink(full)
            elif name.endswith(F.TABLE_SUFFIX) and name[:-4].isdigit() and int(name[:-4]) not in live_tables:
                os.unlink(full)   # written by a flush/compaction whose manifest never became durable
            elif name.endswith(F.WAL_SUFFIX) and name[:-4].isdigit():
                n = int(name[:-4])
                if n < state.log_number:
                    os.unlink(full)
                else:
                    logs.append(n)
        logs.sort()
        mem = Memtable()
        seq = state.last_seq
        for n in logs:
            for s, key, value, exp in W.replay(file(F.wal_name(n))):
                mem.put(key, s, value, exp)
                if s > seq:
                    seq = s
        wal_number = alloc(state)
        wal = W.WalWriter(file(F.wal_name(wal_number)), wal_number)
        if len(mem):
            meta = write_columns(mem.columns(), alloc(state))
            state.levels[0].insert(0, meta)
            readers[meta.number] = TableReader(file(F.table_name(meta.number)), meta.number, cache)
        state.log_number = wal_number
        state.last_seq = seq
        M.save(path, state)
        for n in logs:
            os.unlink(file(F.wal_name(n)))
        return Recovered(state, readers, wal, seq)
    except BaseException:
        for r in readers.values():
            r.close()
        if wal is not None:
            wal.close(sync=False)
        raise
