"""What a single-key put at N=3, W=2 cannot go below on this host, against a raw Ray actor call (docs/benchmarks.md,
"Cluster on Ray", session 5): the evidence behind calling the "put p50 <= 2.5x" target blocked on a 2-core machine.

Three measurements, each against a baseline in the same run:

1. **Fan-out floor**: three do-nothing actors, one call each, wait for two (``ray.wait``), p50 over a raw call's,
   for three kinds of actor: plain (one thread), threaded (``max_concurrency=32``, what storage nodes are), and
   with a concurrency group. No raykv code runs.
2. **Submitting three calls**: the driver's wall and CPU time for the three ``.remote()`` calls inside that
   fan-out loop, against the same calls submitted in a burst (Ray's per-call submission cost, and what waking the
   replicas on 2 cores adds to it).
3. **The fsync each replica does**: a 120-byte append + ``fdatasync`` on this disk, p50 alone and with three
   processes at once (three replicas on one host share one disk and one ext4 journal), and the same into a
   pre-zeroed file (no size change, so no journal commit).

Run: ``python benchmarks/put_latency_floor.py``
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import statistics
import tempfile
import time

import ray


def _p50(fn, n: int = 500) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def _actor(**options):
    @ray.remote(num_cpus=0, **options)
    class Replica:
        def ping(self, x):
            return x

        def call_packed(self, blob):
            return pickle.dumps(pickle.loads(blob))

        def other(self):            # only for the concurrency-group variant
            return 1
    return Replica


def fanout() -> None:
    variants = {"plain": _actor(), "threaded (32)": _actor(max_concurrency=32),
                "concurrency group": _actor(concurrency_groups={"bg": 8})}
    echo = _actor().remote()
    replicas = {name: [cls.remote() for _ in range(3)] for name, cls in variants.items()}
    ray.get([echo.ping.remote(0)] + [a.ping.remote(0) for group in replicas.values() for a in group])
    blob = pickle.dumps(("get_encoded", ([b"k"],)))
    raw = _p50(lambda: ray.get(echo.ping.remote(1)))
    print(f"raw round trip p50 {raw * 1e3:.3f} ms")
    for name, group in replicas.items():
        floor = _p50(lambda g=group: ray.wait([a.call_packed.remote(blob) for a in g], num_returns=2))
        print(f"  fan-out floor, {name:18s} p50 {floor * 1e3:.3f} ms = {floor / raw:.2f}x raw")
    group = replicas["threaded (32)"]
    t, c = time.perf_counter(), time.thread_time()
    refs = [group[i % 3].call_packed.remote(blob) for i in range(3000)]
    burst_wall, burst_cpu = (time.perf_counter() - t) / 1000, (time.thread_time() - c) / 1000
    ray.get(refs)
    walls, cpus = [], []
    for _ in range(500):
        t, c = time.perf_counter(), time.thread_time()
        refs = [a.call_packed.remote(blob) for a in group]
        walls.append(time.perf_counter() - t)
        cpus.append(time.thread_time() - c)
        ray.wait(refs, num_returns=2)
    print(f"submitting 3 calls: in a burst {burst_wall * 1e6:.0f} us wall, {burst_cpu * 1e6:.0f} us CPU; "
          f"inside the fan-out loop p50 {statistics.median(walls) * 1e6:.0f} us wall, "
          f"{statistics.median(cpus) * 1e6:.0f} us CPU  (raw round trip: {raw * 1e6:.0f} us)")


def _syncer(mode: str, n: int, barrier, out) -> None:
    d = tempfile.mkdtemp(prefix="raykv-fsync-")
    path = os.path.join(d, "log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    if mode == "pre-zeroed":
        os.write(fd, b"\0" * (4 << 20))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    barrier.wait()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        os.write(fd, b"x" * 120)
        os.fdatasync(fd)
        samples.append(time.perf_counter() - t)
        time.sleep(0.0005)
    os.close(fd)
    os.unlink(path)
    os.rmdir(d)
    out.put(statistics.median(samples))


def fsync() -> None:
    ctx = mp.get_context("fork")
    for mode in ("append", "pre-zeroed"):
        for procs in (1, 3):
            barrier, out = ctx.Barrier(procs), ctx.Queue()
            ps = [ctx.Process(target=_syncer, args=(mode, 400, barrier, out)) for _ in range(procs)]
            for p in ps:
                p.start()
            for p in ps:
                p.join()
            p50s = sorted(out.get() for _ in ps)
            print(f"  120-byte {mode:10s} + fdatasync, {procs} process(es) at once: p50 "
                  + ", ".join(f"{s * 1e3:.3f}" for s in p50s) + " ms")


def main() -> None:
    print("fsync on", tempfile.gettempdir())
    fsync()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fanout()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
