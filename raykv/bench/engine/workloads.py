"""The db_bench workloads: their keys and values, the timed loops, and the two runs.

Contract: ``run_never(cfg, num, values)`` runs the fsync ``never`` sequence on
every engine in ``cfg.engines`` and ``run_sync(cfg, values)`` the fsync
``batch`` / ``always`` / ``periodic`` runs; both return ``Result`` rows (and log each to
stderr unless ``cfg.quiet``). Stores live in fresh directories under ``cfg.root``.

Workloads follow LevelDB's ``db_bench`` (leveldb/benchmarks/db_bench.cc):
16-byte keys (``%016d``), 100-byte values that compress to about half their
size (db_bench's ``RandomGenerator`` with ``compression_ratio=0.5``).

=====================  =====================================================
fillseq                fresh store, ``num`` puts in key order
fillrandom             fresh store, ``num`` puts in random order
overwrite              ``num`` puts of random existing keys
readrandom             ``reads`` gets of random existing keys, warm (same process, OS cache hot)
readrandom-reopen      close, drop the files from the OS page cache
                       (``posix_fadvise(DONTNEED)``), reopen, then ``reads`` gets
readmissing            ``reads`` gets of keys that were never written
scan                   one forward scan over every key (ops = entries)
fill-sync (threads=T)  fresh store, ``sync_num`` puts from T threads under the
                       fsync policy ``batch``, ``always`` or ``periodic``
=====================  =====================================================
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .adapters import ADAPTERS, POLICIES, MiB, Options

KEY_SIZE = 16
VALUE_SIZE = 100


# ---------------------------------------------------------------- data


def make_key(i: int) -> bytes:
    """db_bench's key format: the decimal index zero-padded to 16 bytes."""
    return b"%016d" % i


def make_values(count: int = 1024, seed: int = 301) -> list[bytes]:
    """``count`` distinct 100-byte values, each half random bytes and half repetition (compresses ~2x, as db_bench)."""
    rng = random.Random(seed)
    out = []
    half = VALUE_SIZE // 2
    for _ in range(count):
        raw = bytes(rng.randrange(32, 127) for _ in range(half))
        out.append((raw + raw[: VALUE_SIZE - half])[:VALUE_SIZE])
    return out


def drop_page_cache(path: str) -> None:
    """Evict every file under ``path`` from the OS page cache (clean pages only; files are fsynced first)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            fp = os.path.join(root, name)
            try:
                fd = os.open(fp, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            finally:
                os.close(fd)


def dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


# ---------------------------------------------------------------- timing


@dataclass
class Result:
    num: int
    policy: str
    workload: str
    engine: str
    ops: int
    seconds: float                     # wall clock
    threads: int = 1
    cpu: float = 0.0                   # process CPU seconds (all threads, background compaction included)
    extra: dict = field(default_factory=dict)

    @property
    def ops_per_sec(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ops_per_cpu_sec(self) -> float:
        return self.ops / self.cpu if self.cpu > 0 else float("inf")


CHUNK = 2048


def _bar(total: int, desc: str, quiet: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="op", unit_scale=True, leave=False, disable=quiet or total < 20000,
                file=sys.stderr, mininterval=0.5)


class Timer:
    """Wall and process-CPU seconds of a ``with`` block (CPU time is steadier than wall time on a shared machine)."""

    def __enter__(self) -> "Timer":
        gc.collect()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


def timed_puts(put: Callable, keys: list[bytes], values: list[bytes], threads: int, desc: str, quiet: bool) -> Timer:
    """Put every key (value chosen by index), split over ``threads`` threads."""
    nv = len(values)
    bar = _bar(len(keys), desc, quiet)
    lock = threading.Lock()

    def work(lo: int, hi: int) -> None:
        for start in range(lo, hi, CHUNK):
            end = min(hi, start + CHUNK)
            for i in range(start, end):
                put(keys[i], values[i % nv])
            with lock:
                bar.update(end - start)

    with Timer() as t:
        if threads <= 1:
            work(0, len(keys))
        else:
            step = (len(keys) + threads - 1) // threads
            ts = [threading.Thread(target=work, args=(i * step, min(len(keys), (i + 1) * step)))
                  for i in range(threads)]
            for th in ts:
                th.start()
            for th in ts:
                th.join()
    bar.close()
    return t


def timed_gets(get: Callable, keys: list[bytes], desc: str, quiet: bool) -> tuple[Timer, int]:
    """Get every key; returns (timer, number found)."""
    bar = _bar(len(keys), desc, quiet)
    found = 0
    with Timer() as t:
        for start in range(0, len(keys), CHUNK):
            for k in keys[start:start + CHUNK]:
                if get(k) is not None:
                    found += 1
            bar.update(min(CHUNK, len(keys) - start))
    bar.close()
    return t, found


# ---------------------------------------------------------------- the run


@dataclass
class Config:
    nums: list[int]
    sync_num: int = 10000
    threads: int = 8
    engines: list[str] = field(default_factory=lambda: ["raykv", "leveldb", "rocksdb"])
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    opts: Options = field(default_factory=Options)
    root: str = ""
    seed: int = 301
    quiet: bool = False
    rss: bool = True
    rss_memtable: int = 1 * MiB
    rss_cache: int = 1 * MiB


def _fresh(root: str, tag: str) -> str:
    path = os.path.join(root, tag)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _log(cfg: Config, msg: str) -> None:
    if not cfg.quiet:
        print(msg, file=sys.stderr, flush=True)


def _record(cfg: Config, res: list[Result], r: Result) -> None:
    res.append(r)
    _log(cfg, f"  {r.engine:8s} {r.num:>8d} {r.policy:6s} {r.workload:18s} x{r.threads:<2d} "
              f"{r.ops_per_sec:>12,.0f} ops/s  {r.ops_per_cpu_sec:>12,.0f} ops/cpu-s")


def run_never(cfg: Config, num: int, values: list[bytes]) -> list[Result]:
    """The db_bench sequence with fsync ``never``; each phase runs on every engine back to back,
    so load drift on a shared machine hits all engines alike."""
    opts, q, engines = cfg.opts, cfg.quiet, cfg.engines
    rng = random.Random(cfg.seed)
    seq = [make_key(i) for i in range(num)]
    order = seq[:]
    rng.shuffle(order)
    over = [seq[rng.randrange(num)] for _ in range(num)]
    reads = [seq[rng.randrange(num)] for _ in range(num)]
    missing = [make_key(num + rng.randrange(num * 10)) for _ in range(num)]
    res: list[Result] = []

    def add(engine: str, workload: str, ops: int, t: Timer, **extra) -> None:
        _record(cfg, res, Result(num, "never", workload, engine, ops, t.wall, 1, t.cpu, extra))

    for e in engines:
        path = _fresh(cfg.root, f"{e}-seq")
        db = ADAPTERS[e](path, "never", opts)
        add(e, "fillseq", num, timed_puts(db.put, seq, values, 1, f"{e} fillseq", q))
        db.close()
        shutil.rmtree(path, ignore_errors=True)
    dbs, paths = {}, {}
    for e in engines:
        paths[e] = _fresh(cfg.root, f"{e}-rand")
        dbs[e] = ADAPTERS[e](paths[e], "never", opts)
        add(e, "fillrandom", num, timed_puts(dbs[e].put, order, values, 1, f"{e} fillrandom", q))
    for e in engines:
        add(e, "overwrite", num, timed_puts(dbs[e].put, over, values, 1, f"{e} overwrite", q))
    for e in engines:
        t, found = timed_gets(dbs[e].get, reads, f"{e} readrandom", q)
        add(e, "readrandom", num, t, found=found)
        if found != num:
            print(f"WARNING: {e} found {found}/{num} existing keys", file=sys.stderr)
    for e in engines:
        t, found = timed_gets(dbs[e].get, missing, f"{e} readmissing", q)
        add(e, "readmissing", num, t, found=found)
        if found:
            print(f"WARNING: {e} found {found} never-written keys", file=sys.stderr)
    for e in engines:
        with Timer() as t:
            n = dbs[e].scan()
        add(e, "scan", n, t)
        if n != num:
            print(f"WARNING: {e} scan saw {n}/{num} keys", file=sys.stderr)
    for e in engines:
        dbs[e].close()
        drop_page_cache(paths[e])
    for e in engines:
        with Timer() as t_open:
            db = ADAPTERS[e](paths[e], "never", opts)
        t, found = timed_gets(db.get, reads, f"{e} readrandom-reopen", q)
        add(e, "readrandom-reopen", num, t, found=found, open_seconds=round(t_open.wall, 3),
            disk_mib=round(dir_bytes(paths[e]) / MiB, 1))
        db.close()
        shutil.rmtree(paths[e], ignore_errors=True)
    return res


def run_sync(cfg: Config, values: list[bytes], rounds: int = 3) -> list[Result]:
    """``sync_num`` random puts from 1 or ``threads`` threads under fsync ``batch`` / ``always``, fresh stores;
    ``rounds`` interleaved rounds, the median kept (fsync latency on a shared disk swings a lot)."""
    res: list[Result] = []
    plan = [("batch", cfg.threads)] if "batch" in cfg.policies else []
    for policy in ("always", "periodic"):
        if policy in cfg.policies:
            plan += [(policy, t) for t in sorted({1, cfg.threads})]
    keys = [make_key(i) for i in range(cfg.sync_num)]
    random.Random(cfg.seed).shuffle(keys)
    samples: dict[tuple[str, int, str], list[Timer]] = {}
    for rnd in range(rounds):
        for policy, threads in plan:
            for e in cfg.engines:
                path = _fresh(cfg.root, f"{e}-{policy}-{threads}")
                db = ADAPTERS[e](path, policy, cfg.opts)
                t = timed_puts(db.put, keys, values, threads, f"{e} {policy} x{threads} #{rnd + 1}", cfg.quiet)
                db.close()
                shutil.rmtree(path, ignore_errors=True)
                samples.setdefault((policy, threads, e), []).append(t)
    for (policy, threads, e), ts in samples.items():
        ts.sort(key=lambda t: t.wall)
        t = ts[len(ts) // 2]
        _record(cfg, res, Result(cfg.sync_num, policy, "fillrandom-sync", e, cfg.sync_num, t.wall, threads, t.cpu,
                                 {"rounds": [round(cfg.sync_num / x.wall) for x in ts]}))
    return res
