"""The markdown report of a `raykv bench engine` run.

Contract: ``render(cfg, results, rss, command) -> str``: the command and
machine line, one table row per (entries, fsync, workload, threads) with each
engine's ops/s and raykv's ratio to each peer, notes on the reopen and fsync
runs, the target lines (MET / MISSED), and the peak-RSS table when ``rss`` is
not empty. Pure formatting: it measures nothing.
"""

from __future__ import annotations

import os
import sys
import time

from .adapters import POLICIES, MiB
from .workloads import KEY_SIZE, VALUE_SIZE, Config, Result

def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render(cfg: Config, results: list[Result], rss: list[dict], command: str) -> str:
    engines = [e for e in cfg.engines if any(r.engine == e for r in results)]
    peers = [e for e in engines if e != "raykv"]
    by = {(r.num, r.policy, r.workload, r.threads, r.engine): r for r in results}
    rows = sorted({(r.num, r.policy, r.workload, r.threads) for r in results},
                  key=lambda k: (k[1] != "never", k[0], POLICIES.index(k[1]), k[3], _ORDER.get(k[2], 99)))
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
        p = get(num, "periodic", "fillrandom-sync", "raykv", threads)
        if p and b:
            lines.append(f"- raykv periodic x{threads} / batch x{threads}: {p / b:.2f}x (no target: what the store's "
                         f"default fsync policy buys over group commit)")
    return lines
