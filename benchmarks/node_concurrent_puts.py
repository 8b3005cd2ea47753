"""Concurrent single-key puts into one storage node over a real disk: do they share fsyncs?

Builds one ``StorageNode`` over an ``LSMBackend`` (fsync="batch") in a temporary directory, no Ray, and
runs T threads (the threads of a threaded storage actor) each doing ``PUTS`` calls of
``node.serve("put_encoded", [(key, blob)])`` with one 100-byte blind sibling per call. Prints puts/s and
writes per fsync (fsyncs counted by wrapping ``raykv.storage.wal._fdatasync``) per thread count.

Run: ``python benchmarks/node_concurrent_puts.py [--threads 2 8] [--puts 200] [--repeat 3] [--dir PATH]``
(the directory must be on a real disk: on tmpfs an fsync costs nothing). To compare two checkouts, run it
with ``PYTHONPATH`` pointing at each, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import threading
import time

from raykv.cluster.codec import encode_siblings
from raykv.cluster.config import StoreConfig
from raykv.cluster.lsm_backend import LSMBackend
from raykv.cluster.node import StorageNode
from raykv.cluster.transport import Transport
from raykv.cluster.vclock import Sibling, VClock
from raykv.storage import wal as W


class Idle(Transport):
    """No peers: the node only serves the puts we hand it."""

    async def call(self, node_id, method, *args, timeout):
        raise AssertionError("no calls expected")

    def now(self):
        return time.time()

    async def sleep(self, seconds):
        pass

    def spawn(self, coro):
        coro.close()


def run_once(threads: int, puts: int, root: str) -> tuple[float, float]:
    """(puts/s, writes per fsync) of ``threads`` threads x ``puts`` single-key put_encoded calls."""
    path = tempfile.mkdtemp(prefix="node-puts-", dir=root)
    backend = LSMBackend(path, fsync="batch")
    node = StorageNode("n0", backend, Idle(), StoreConfig())
    asyncio.run(node.start())
    value = b"v" * 100
    blobs = [[(b"t%02d-%06d" % (t, i), encode_siblings([Sibling(("bench%d" % t, i + 1), VClock(), value, 1.0)]))]
             for t in range(threads) for i in range(puts)]
    fsyncs = [0]
    real = W._fdatasync

    def counting(fd):
        fsyncs[0] += 1
        real(fd)
    W._fdatasync = counting
    barrier = threading.Barrier(threads + 1)

    def worker(t):
        serve = node.serve
        mine = blobs[t * puts:(t + 1) * puts]
        barrier.wait()
        for items in mine:
            assert serve("put_encoded", items) == [True]

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    try:
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        W._fdatasync = real
        backend.close()
        shutil.rmtree(path, ignore_errors=True)
    n = threads * puts
    return n / elapsed, n / max(fsyncs[0], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--puts", type=int, default=200, help="put_encoded calls per thread")
    ap.add_argument("--repeat", type=int, default=3, help="runs per thread count (median reported)")
    ap.add_argument("--dir", default=None, help="parent directory of the temporary store (default: the temp dir)")
    args = ap.parse_args()
    root = args.dir or tempfile.gettempdir()
    for threads in args.threads:
        runs = [run_once(threads, args.puts, root) for _ in range(args.repeat)]
        rate = statistics.median(r[0] for r in runs)
        per_fsync = statistics.median(r[1] for r in runs)
        print(f"threads={threads:2d}  puts/s={rate:8.0f}  writes/fsync={per_fsync:5.2f}  "
              f"(runs: {', '.join(f'{r[0]:.0f}/{r[1]:.2f}' for r in runs)})", flush=True)


if __name__ == "__main__":
    main()
