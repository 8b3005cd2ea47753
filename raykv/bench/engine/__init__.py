"""`raykv bench engine`: LevelDB db_bench-style workloads on LSMStore, plyvel (LevelDB) and rocksdict (RocksDB).

Contract: ``main(argv) -> int`` runs the benchmark and prints a markdown table
(optionally written to ``--out FILE``); ``python -m raykv.bench.engine`` and the
``raykv bench engine`` CLI both land here. Nothing is asserted: this measures.
This package re-exports every public name of its modules, so
``raykv.bench.engine.X`` works for each of them.

=============  ===============================================================
adapters.py    one engine (raykv, leveldb, rocksdb) behind put/get/scan/close;
               the shared ``Options``; which peers are installed
workloads.py   db_bench keys and values, the timed put/get loops, and the
               two runs: the fsync ``never`` sequence and the fsync runs
rss.py         peak RSS of each engine, measured in a child process
report.py      the markdown report (tables, reopen and fsync notes, targets)
cli.py         argument parsing and ``main``
__main__.py    ``python -m raykv.bench.engine`` (also the RSS child's entry)
=============  ===============================================================

Cost: each engine runs every workload once per size, so the default run
(100k entries, three engines) takes about a minute; ``--full`` adds 1M entries
(about ten minutes, dominated by raykv's pure-Python paths).
"""

from .adapters import (ADAPTERS, PEER_MODULES, Adapter, LevelDBAdapter, MiB, Options, RayKVAdapter,
                       RocksDBAdapter, available_engines)
from .cli import main, parse_args
from .report import render
from .rss import measure_rss, peak_rss_kib, rss_child
from .workloads import (CHUNK, KEY_SIZE, VALUE_SIZE, Config, Result, Timer, dir_bytes, drop_page_cache, make_key,
                        make_values, run_never, run_sync, timed_gets, timed_puts)

__all__ = [
    "ADAPTERS", "Adapter", "CHUNK", "Config", "KEY_SIZE", "LevelDBAdapter", "MiB", "Options", "PEER_MODULES",
    "RayKVAdapter", "Result", "RocksDBAdapter", "Timer", "VALUE_SIZE", "available_engines", "dir_bytes",
    "drop_page_cache", "main", "make_key", "make_values", "measure_rss", "parse_args", "peak_rss_kib", "render",
    "rss_child", "run_never", "run_sync", "timed_gets", "timed_puts",
]
