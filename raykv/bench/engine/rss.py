"""Peak RSS of each engine, measured in a child process.

Contract: ``measure_rss(cfg, engine, entries)`` runs
``python -m raykv.bench.engine --rss-child ...`` and returns the child's dict
(or None, with a warning, if the child failed); the child calls
``rss_child(engine, path, entries, memtable, cache)``, which writes ``entries``
keys, reads a quarter back at random and scans all, and reports baseline, end
and peak RSS in KiB plus the bytes on disk. Peak RSS is ``VmHWM`` of
``/proc/self/status``, else ``ru_maxrss``; the caller sizes the dataset at
least 10x ``memtable_bytes + cache_bytes``.
"""

from __future__ import annotations

import gc
import json
import random
import resource
import shutil
import subprocess
import sys

from .adapters import ADAPTERS, Options
from .workloads import Config, _fresh, dir_bytes, make_key, make_values

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
