"""`raykv bench engine`: LevelDB db_bench-style workloads on LSMStore, plyvel (LevelDB) and rocksdict (RocksDB).

Contract: ``main(argv) -> int`` parses ``argv``, runs the fsync ``never``
sequence per size, the fsync runs and (unless ``--no-rss``) the peak-RSS
children, prints the markdown report and writes it to ``--out`` if given;
it returns 2 for an unknown engine or policy. ``main(["--rss-child", ...])``
is the RSS child's side: it prints one JSON line. The first line of this
docstring is the ``--help`` description.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from .adapters import ADAPTERS, POLICIES, MiB, Options, available_engines
from .report import render
from .rss import measure_rss, rss_child
from .workloads import KEY_SIZE, VALUE_SIZE, Config, Result, _log, make_values, run_never, run_sync

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="raykv bench engine", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=100_000, help="entries per run (default 100000)")
    p.add_argument("--full", action="store_true", help="run 100k and 1M entries")
    p.add_argument("--sync-num", type=int, default=10_000, help="entries for the batch/always/periodic fsync runs")
    p.add_argument("--threads", type=int, default=8, help="writer threads for the batch (and always) runs")
    p.add_argument("--engines", default="raykv,leveldb,rocksdb", help="comma list of raykv,leveldb,rocksdb")
    p.add_argument("--policies", default=",".join(POLICIES), help="fsync policies to run")
    p.add_argument("--memtable-bytes", type=int, default=4 * MiB)
    p.add_argument("--cache-bytes", type=int, default=8 * MiB)
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--rss-entries", type=int, default=0,
                   help="entries for the RSS run (default: 12x (rss memtable + cache) of raw data)")
    p.add_argument("--dir", default=None, help="scratch directory (default: a new temporary directory)")
    p.add_argument("--out", default=None, help="also write the markdown report to this file")
    p.add_argument("--seed", type=int, default=301)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--rss-child"]:
        engine, path, entries, memtable, cache = argv[1:6]
        print(json.dumps(rss_child(engine, path, int(entries), int(memtable), int(cache))))
        return 0
    a = parse_args(argv)
    nums = [100_000, 1_000_000] if a.full else [a.num]
    cfg = Config(nums=nums, sync_num=a.sync_num, threads=a.threads,
                 engines=available_engines([e.strip() for e in a.engines.split(",") if e.strip()]),
                 policies=[x.strip() for x in a.policies.split(",") if x.strip()],
                 opts=Options(a.memtable_bytes, a.cache_bytes), seed=a.seed, quiet=a.quiet, rss=not a.no_rss)
    bad = [e for e in cfg.engines if e not in ADAPTERS] + [x for x in cfg.policies if x not in POLICIES]
    if bad:
        print(f"unknown engine or policy: {bad}", file=sys.stderr)
        return 2
    own_root = a.dir is None
    cfg.root = tempfile.mkdtemp(prefix="raykv-bench-") if own_root else a.dir
    os.makedirs(cfg.root, exist_ok=True)
    values = make_values(seed=a.seed)
    results: list[Result] = []
    rss: list[dict] = []
    try:
        for num in nums:
            if "never" in cfg.policies:
                results += run_never(cfg, num, values)
        results += run_sync(cfg, values)
        if cfg.rss:
            entries = a.rss_entries or (12 * (cfg.rss_memtable + cfg.rss_cache)) // (KEY_SIZE + VALUE_SIZE)
            for engine in cfg.engines:
                _log(cfg, f"  {engine:8s} peak RSS, {entries:,} entries ...")
                m = measure_rss(cfg, engine, entries)
                if m:
                    rss.append(m)
    finally:
        if own_root:
            shutil.rmtree(cfg.root, ignore_errors=True)
    command = "raykv bench engine " + " ".join(argv) if argv else "raykv bench engine"
    report = render(cfg, results, rss, command.strip())
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report)
    return 0
