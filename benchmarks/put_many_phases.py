"""Where one 1,000-key ``put_many`` spends its time, phase by phase (docs/benchmarks.md, "Cluster on Ray").

Starts an embedded Ray and a 5-node store, wraps the client router's ``_submit``/``_feed`` with timers,
and prints the median over 10 calls of: planning (validation, minting, preference lists), submitting
the node calls, waiting for the first reply, the remaining replies, and the rest.

Run: ``python benchmarks/put_many_phases.py``
"""

import statistics
import tempfile
import time

import ray

import raykv


def main() -> None:
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    kv = raykv.start(name="phases", nodes=5, data_dir=tempfile.mkdtemp(prefix="raykv-phases-"))
    try:
        r = kv._client.router
        batches = [{b"bulk%04d%06d" % (b, i): b"v" * 100 for i in range(1000)} for b in range(12)]
        kv.put_many(batches[0])
        marks: dict[str, float] = {}
        submit, feed = r._submit, r._feed

        def timed_submit(rnd, sends, out, timeout):
            first = "submit0" not in marks
            marks.setdefault("submit0", time.perf_counter())
            submit(rnd, sends, out, timeout)
            if first:
                marks["submit1"] = time.perf_counter()

        def timed_feed(out, ref, timeout):
            marks.setdefault("reply0", time.perf_counter())
            feed(out, ref, timeout)
            marks["replyN"] = time.perf_counter()

        r._submit, r._feed = timed_submit, timed_feed
        rows = []
        for b in batches[2:]:
            marks.clear()
            t0 = time.perf_counter()
            kv.put_many(b)
            t1 = time.perf_counter()
            rows.append([marks["submit0"] - t0, marks["submit1"] - marks["submit0"], marks["reply0"] - marks["submit1"],
                         marks["replyN"] - marks["reply0"], t1 - marks["replyN"], t1 - t0])
        for j, name in enumerate(["planning", "submitting", "first reply", "remaining replies", "the rest", "total"]):
            print(f"{name:>18}: {statistics.median(x[j] for x in rows) * 1e3:6.2f} ms")
    finally:
        kv.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
