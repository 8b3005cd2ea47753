"""Single-key put latency p50 under each commit-log fsync policy, against a raw Ray actor call, in one process
(docs/benchmarks.md, "Cluster on Ray", session 6): a 5-node store per policy, back-to-back puts, rounds
alternated between policies so all see the same moments of a noisy host.

Run: ``python benchmarks/put_fsync_policies.py [--ops 500] [--rounds 3] [--policies periodic,batch,never]``
"""

import argparse
import shutil
import statistics
import tempfile
import time

import ray

import raykv
from raykv.bench.cluster import _baseline_actors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ops", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--policies", default="periodic,batch,never")
    args = p.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="raykv")
    Echo, _ = _baseline_actors()
    echo = Echo.remote()
    ray.get(echo.ping.remote(0))
    dirs = {f: tempfile.mkdtemp(prefix="raykv-fsync-") for f in args.policies.split(",")}
    stores = {f: raykv.start(name="fsync-" + f, nodes=5, data_dir=d, fsync=f) for f, d in dirs.items()}
    value = b"v" * 100
    try:
        for kv in stores.values():
            for i in range(100):
                kv.put(b"warm%d" % i, value)
        for r in range(args.rounds):
            raw = []
            for i in range(args.ops):
                t0 = time.perf_counter()
                ray.get(echo.ping.remote(i))
                raw.append(time.perf_counter() - t0)
            base = statistics.median(raw)
            out = []
            for f, kv in stores.items():
                lat = []
                for i in range(args.ops):
                    t0 = time.perf_counter()
                    kv.put(b"lat%d-%d" % (r, i), value)
                    lat.append(time.perf_counter() - t0)
                out.append(f"{f} {statistics.median(lat) / base:.2f}x")
            print(f"round {r + 1}: raw call {base * 1e3:.3f} ms; put p50: " + ", ".join(out), flush=True)
    finally:
        for kv in stores.values():
            kv.shutdown()
        ray.shutdown()
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
