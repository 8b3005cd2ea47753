"""Where a 1,000-key ``put_many``/``get_many`` spends its time: wall, CPU of the driver's main thread, of the
driver process, and of the whole machine, per batch, for raykv and for the bench's plain dict actor
(docs/benchmarks.md, "Cluster on Ray", session 6). A machine CPU well under 2 x wall on this 2-core host
means the request is a chain of waits, not short of CPU.

Run: ``python benchmarks/bulk_cpu.py [--batches 40]``
"""

import argparse
import shutil
import tempfile
import time

import psutil
import ray

import raykv
from raykv.bench.cluster import _baseline_actors, _value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=40)
    args = p.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="raykv")
    _, DictStore = _baseline_actors()
    plain = DictStore.remote()
    data_dir = tempfile.mkdtemp(prefix="raykv-bulkcpu-")
    kv = raykv.start(name="bulkcpu", nodes=5, data_dir=data_dir)
    me = psutil.Process()

    def process_cpu():
        t = me.cpu_times()
        return t.user + t.system

    def machine_cpu():
        t = psutil.cpu_times()
        return t.user + t.system + t.irq + t.softirq

    try:
        keys = [[b"bulk%04d%06d" % (b, i) for i in range(1000)] for b in range(args.batches + 1)]
        batches = [{k: _value(k) for k in ks} for ks in keys]
        kv.put_many(batches[0])
        kv.get_many(keys[0])
        ray.get([plain.put_many.remote(batches[0]), plain.get_many.remote(keys[0])])
        for name, fn, data in (("plain put_many", lambda d: ray.get(plain.put_many.remote(d)), batches),
                               ("plain get_many", lambda d: ray.get(plain.get_many.remote(d)), keys),
                               ("raykv put_many", kv.put_many, batches),
                               ("raykv get_many", kv.get_many, keys)):
            m0, p0, t0, w0 = machine_cpu(), process_cpu(), time.thread_time(), time.perf_counter()
            for b in data[1:]:
                fn(b)
            n = len(data) - 1
            print(f"{name:>15}: wall {(time.perf_counter() - w0) / n * 1e3:5.2f} ms, driver main thread "
                  f"{(time.thread_time() - t0) / n * 1e3:5.2f} ms, driver process {(process_cpu() - p0) / n * 1e3:5.2f}"
                  f" ms, machine {(machine_cpu() - m0) / n * 1e3:5.2f} ms of CPU per batch", flush=True)
    finally:
        kv.shutdown()
        ray.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
