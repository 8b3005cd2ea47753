"""`raykv bench engine`: LevelDB db_bench-style workloads on LSMStore, plyvel (LevelDB) and rocksdict (RocksDB).

Contract: ``main(argv) -> int`` runs the benchmark and prints a markdown table
(optionally written to ``--out FILE``); ``python -m raykv.bench.engine`` and the
``raykv bench engine`` CLI both land here. Nothing is asserted: this measures.

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
                       fsync policy ``batch`` or ``always``
=====================  =====================================================

fsync policies map to the peers as: ``never`` -> ``sync=False``;
``always`` and ``batch`` -> ``sync=True`` (LevelDB and RocksDB group commit
concurrent synced writers in their writer queue, which is what raykv's
``batch`` does). Peak RSS is measured in a child process
(``VmHWM`` of ``/proc/self/status``, else ``ru_maxrss``) that writes, reads and scans
a dataset at least 10x ``memtable_bytes + cache_bytes``.

Cost: each engine runs every workload once per size, so the default run
(100k entries, three engines) takes about a minute; ``--full`` adds 1M entries
(about ten minutes, dominated by raykv's pure-Python paths).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

KEY_SIZE = 16
VALUE_SIZE = 100
MiB = 1 << 20


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


# ---------------------------------------------------------------- adapters


@dataclass
class Options:
    """Settings shared by every engine so the comparison is like for like."""

    memtable_bytes: int = 4 * MiB      # LevelDB's default write_buffer_size
    cache_bytes: int = 8 * MiB         # LevelDB's default block cache
    bloom_bits: int = 10


class Adapter:
    """One engine behind the five calls the workloads need; ``policy`` is never | batch | always."""

    name = "?"

    def __init__(self, path: str, policy: str, opts: Options) -> None:
        self.path, self.policy, self.opts = path, policy, opts

    def put(self, key: bytes, value: bytes) -> None: raise NotImplementedError
    def get(self, key: bytes) -> bytes | None: raise NotImplementedError
    def scan(self) -> int: raise NotImplementedError
    def close(self) -> None: raise NotImplementedError


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

    def close(self) -> None:
        self.db.close()


class LevelDBAdapter(Adapter):
    name = "leveldb"

    def __init__(self, path, policy, opts):
        super().__init__(path, policy, opts)
        import plyvel
        self.db = plyvel.DB(path, create_if_missing=True, write_buffer_size=opts.memtable_bytes,
                            lru_cache_size=opts.cache_bytes, bloom_filter_bits=opts.bloom_bits)
        sync = policy != "never"
        db = self.db
        self.put = (lambda k, v: db.put(k, v, sync=True)) if sync else db.put
        self.get = db.get

    def scan(self) -> int:
        n = 0
        with self.db.iterator() as it:
            for _ in it:
                n += 1
        return n

    def close(self) -> None:
        self.db.close()


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
        w.sync = policy != "never"
        self.db.set_write_options(w)
        self.put = self.db.put
        self.get = self.db.get

    def scan(self) -> int:
        n = 0
        for _ in self.db.items():
            n += 1
        return n

    def close(self) -> None:
        self.db.close()


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
    policies: list[str] = field(default_factory=lambda: ["never", "batch", "always"])
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
    if "always" in cfg.policies:
        plan += [("always", t) for t in sorted({1, cfg.threads})]
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


# ---------------------------------------------------------------- peak RSS (child process)


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which a child
    inherits from the parent it forked from), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(engine: str, path: str, entries: int, memtable: int, cache: int) -> dict:
    """Write ``entries`` keys, read a quarter back at random and scan all, in this process; report RSS in KiB."""
    import psutil
    proc = psutil.Process()
    cls = ADAPTERS[engine]
    values = make_values()
    gc.collect()
    base = max(proc.memory_info().rss // 1024, peak_rss_kib())
    db = cls(path, "never", Options(memtable_bytes=memtable, cache_bytes=cache))
    rng = random.Random(7)
    for i in range(entries):
        db.put(make_key(rng.randrange(entries * 4)), values[i % len(values)])
    for _ in range(entries // 4):
        db.get(make_key(rng.randrange(entries * 4)))
    db.scan()
    end = proc.memory_info().rss // 1024
    db.close()
    peak = peak_rss_kib()
    return {"engine": engine, "entries": entries, "baseline_kib": base, "end_kib": end, "peak_kib": peak,
            "disk_bytes": dir_bytes(path)}


def measure_rss(cfg: Config, engine: str, entries: int) -> dict | None:
    path = _fresh(cfg.root, f"{engine}-rss")
    cmd = [sys.executable, "-m", "raykv.bench.engine", "--rss-child", engine, path, str(entries),
           str(cfg.rss_memtable), str(cfg.rss_cache)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    except subprocess.CalledProcessError as e:
        print(f"WARNING: rss child for {engine} failed:\n{e.stderr[-2000:]}", file=sys.stderr)
        return None
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render(cfg: Config, results: list[Result], rss: list[dict], command: str) -> str:
    engines = [e for e in cfg.engines if any(r.engine == e for r in results)]
    peers = [e for e in engines if e != "raykv"]
    by = {(r.num, r.policy, r.workload, r.threads, r.engine): r for r in results}
    rows = sorted({(r.num, r.policy, r.workload, r.threads) for r in results},
                  key=lambda k: (k[1] != "never", k[0], ["never", "batch", "always"].index(k[1]), k[3], _ORDER.get(k[2], 99)))
    head = ["entries", "fsync", "workload", "threads"] + [f"{e} ops/s" for e in engines] + [f"raykv/{p}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in rows:
        cells = [f"{key[0]:,}", key[1], key[2], str(key[3])]
        vals = {e: by.get(key + (e,)) for e in engines}
        cells += [_fmt(vals[e].ops_per_sec) if vals[e] else "-" for e in engines]
        rk = vals.get("raykv")
        for p in peers:
            if rk and vals[p]:
                c = f"{rk.ops_per_sec / vals[p].ops_per_sec:.2f}x"
                if key[1] == "never" and rk.cpu > 0 and vals[p].cpu > 0:
                    c += f" (cpu {rk.ops_per_cpu_sec / vals[p].ops_per_cpu_sec:.2f}x)"
                cells.append(c)
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"Command: `{command}`", "",
           f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
           f"load average at the end {os.getloadavg()[0]:.1f} (other work shares this machine). "
           f"Options for every engine: memtable/write buffer {cfg.opts.memtable_bytes // MiB} MiB, "
           f"block cache {cfg.opts.cache_bytes // MiB} MiB, bloom {cfg.opts.bloom_bits} bits/key; "
           f"16-byte keys, 100-byte values (compressible 2x). Ratios are wall-clock ops/s; "
           f"for fsync `never`, (cpu ...) is the same ratio in ops per process-CPU second, steadier on a shared machine.",
           "", *lines, ""]
    reopen = [r for r in results if r.workload == "readrandom-reopen"]
    if reopen:
        out.append("Reopen (cold OS cache): " + "; ".join(
            f"{r.engine} @ {r.num:,}: open {r.extra.get('open_seconds')} s, {r.extra.get('disk_mib')} MiB on disk"
            for r in reopen) + ".")
        out.append("")
    sync_rows = [r for r in results if r.policy != "never"]
    if sync_rows:
        out.append("fsync runs are the median of 3 interleaved rounds (ops/s of each round): " + "; ".join(
            f"{r.engine} {r.policy} x{r.threads}: {r.extra.get('rounds')}" for r in sync_rows) + ".")
        out.append("")
    out += _targets(results)
    if rss:
        out += ["", f"Peak RSS (child process; memtable {cfg.rss_memtable // 1024} KiB + cache {cfg.rss_cache // 1024} KiB, "
                    "write all, read a quarter at random, scan all):", "",
                "| engine | entries | dataset bytes (raw) | x(memtable+cache) | disk MiB | RSS before open MiB | peak RSS MiB | growth MiB |",
                "|---|---|---|---|---|---|---|---|"]
        for m in rss:
            raw = m["entries"] * (KEY_SIZE + VALUE_SIZE)
            out.append(f"| {m['engine']} | {m['entries']:,} | {raw:,} | {raw / (cfg.rss_memtable + cfg.rss_cache):.0f}x | "
                       f"{m['disk_bytes'] / MiB:.1f} | {m['baseline_kib'] / 1024:.1f} | {m['peak_kib'] / 1024:.1f} | "
                       f"{(m['peak_kib'] - m['baseline_kib']) / 1024:.1f} |")
    return "\n".join(out) + "\n"


_ORDER = {w: i for i, w in enumerate(["fillseq", "fillrandom", "overwrite", "readrandom", "readrandom-reopen",
                                      "readmissing", "scan", "fillrandom-sync"])}


def _targets(results: list[Result]) -> list[str]:
    def get(num, policy, workload, engine, threads=1):
        for r in results:
            if (r.num, r.policy, r.workload, r.engine, r.threads) == (num, policy, workload, engine, threads):
                return r.ops_per_sec
        return None

    lines = ["Targets (ratios measured in this run):", ""]
    for num in sorted({r.num for r in results if r.policy == "never"}):
        for workload, goal in (("fillrandom", 0.5), ("readrandom-reopen", 0.2)):
            a, b = get(num, "never", workload, "raykv"), get(num, "never", workload, "leveldb")
            if a and b:
                ratio = a / b
                lines.append(f"- {workload} @ {num:,} (fsync never): raykv/leveldb = {ratio:.2f}x, "
                             f"target >= {goal}x: {'MET' if ratio >= goal else 'MISSED'}")
    sync = sorted({(r.num, r.threads) for r in results if r.policy == "batch" and r.engine == "raykv"})
    for num, threads in sync:
        b = get(num, "batch", "fillrandom-sync", "raykv", threads)
        for at in sorted({r.threads for r in results if r.policy == "always" and r.engine == "raykv"}):
            a = get(num, "always", "fillrandom-sync", "raykv", at)
            if a and b:
                ratio = b / a
                lines.append(f"- raykv batch x{threads} / always x{at}: {ratio:.2f}x, target >= 5x: "
                             f"{'MET' if ratio >= 5 else 'MISSED'}")
    return lines


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="raykv bench engine", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=100_000, help="entries per run (default 100000)")
    p.add_argument("--full", action="store_true", help="run 100k and 1M entries")
    p.add_argument("--sync-num", type=int, default=10_000, help="entries for the batch/always fsync runs")
    p.add_argument("--threads", type=int, default=8, help="writer threads for the batch (and always) runs")
    p.add_argument("--engines", default="raykv,leveldb,rocksdb", help="comma list of raykv,leveldb,rocksdb")
    p.add_argument("--policies", default="never,batch,always", help="fsync policies to run")
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
    bad = [e for e in cfg.engines if e not in ADAPTERS] + [x for x in cfg.policies if x not in ("never", "batch", "always")]
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


if __name__ == "__main__":
    sys.exit(main())
