"""The ``raykv`` command: ``demo``, ``up``, ``status``, ``down``, ``bench``.

``raykv demo`` is the README's main job: an embedded Ray, a 5-node store
(N=3, R=2, W=2) in a temporary directory, thousands of keys written and read
back with a progress bar, a storage node killed while writes continue (sloppy
quorum + hinted handoff) and brought back (hints delivered), a conflict made
and resolved, the ring and node table printed, everything cleaned up.
``up``/``status``/``down`` manage a named store on a running Ray cluster
(``--address auto``); ``bench engine|cluster`` run the benchmarks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time


def _print_table(title: str, header: list[str], rows: list[list]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
        t = Table(title=title)
        for h in header:
            t.add_column(h)
        for r in rows:
            t.add_row(*(str(x) for x in r))
        Console().print(t)
    except ImportError:
        print(title)
        print("  ".join(f"{h:>10}" for h in header))
        for r in rows:
            print("  ".join(f"{str(x):>10}" for x in r))


def print_status(st) -> None:
    rows = [[n.node_id, "yes" if n.alive else "NO", n.datacenter or "-", f"{n.weight:g}",
             f"{n.ownership * 100:.1f}%", *("-" if x is None else x for x in (n.keys, n.disk_bytes, n.hints_pending)),
             (n.ray_node_id or "?")[:12]]
            for n in st.nodes]
    _print_table(f"store {st.name!r}: N={st.replicas} R={st.read_quorum} W={st.write_quorum}, "
                 f"{st.alive}/{len(st.nodes)} nodes alive",
                 ["node", "alive", "dc", "weight", "owns", "keys", "disk bytes", "hints", "ray node"], rows)


def _wait(pred, timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


def demo(args) -> int:
    import ray
    from tqdm import tqdm

    import raykv
    from raykv.actors.client import get_manager
    from raykv.cluster.ring import NodeInfo, Ring

    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="raykv-demo-")
    print(f"== starting Ray (embedded) and a {args.nodes}-node store, N=3 R=2 W=2, data in {tmp}")
    # address="local": a Ray of its own, even when another cluster runs on this machine (the demo kills and
    # restarts actors; it must never do that on someone else's cluster, nor fail to start beside one)
    ray.init(address="local", namespace="raykv", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
             log_to_driver=False)
    kv = None
    try:
        kv = raykv.start(name="demo", nodes=args.nodes, replicas=3, read_quorum=2, write_quorum=2, data_dir=tmp)
        n, batch = args.keys, 250
        value = b"x" * 100
        with tqdm(total=n, desc="put_many", unit="key") as bar:
            for lo in range(0, n, batch):
                kv.put_many({b"key:%06d" % i: value + b"%d" % i for i in range(lo, min(n, lo + batch))})
                bar.update(min(batch, n - lo))
        found = 0
        with tqdm(total=n, desc="get_many", unit="key") as bar:
            for lo in range(0, n, batch):
                got = kv.get_many([b"key:%06d" % i for i in range(lo, min(n, lo + batch))])
                found += sum(got[b"key:%06d" % i] == value + b"%d" % i for i in range(lo, min(n, lo + batch)))
                bar.update(min(batch, n - lo))
        print(f"   {found}/{n} keys read back")
        t0 = time.perf_counter()
        for i in tqdm(range(args.single), desc="single put+get", unit="op"):
            kv.put(b"single:%d" % i, value)
            assert kv.get(b"single:%d" % i) == value
        dt = (time.perf_counter() - t0) / max(1, 2 * args.single)
        print(f"   single-key put/get: {dt * 1000:.2f} ms per call on average")
        print_status(kv.status())

        mgr = get_manager("demo")
        victim = kv.status().nodes[1].node_id
        print(f"\n== killing storage node {victim} (its actor is gone; Ray will not restart it yet)")
        ray.get(mgr.kill_node.remote(victim))
        ok = 0
        for i in tqdm(range(args.during), desc=f"puts with {victim} down", unit="key"):
            kv.put(b"during:%d" % i, b"written while a node was down")
            ok += 1
        print(f"   {ok}/{args.during} writes acknowledged at W=2 (sloppy quorum: fallbacks keep hints)")
        st = kv.status()
        print_status(st)
        hints = sum(x.hints_pending or 0 for x in st.nodes if x.alive)
        print(f"   hints pending on the live nodes: {hints}")
        print(f"\n== restarting {victim}: it re-opens its LSM directory; the fallbacks hand the hints back")
        ray.get(mgr.restart_node.remote(victim))
        delivered = _wait(lambda: sum(x.hints_pending or 0 for x in kv.status().nodes) == 0, 60)
        st = kv.status()
        print_status(st)
        print(f"   hints delivered: {'yes' if delivered else 'not yet'}")
        back = kv.get_many([b"during:%d" % i for i in range(args.during)], consistency="all")
        print(f"   {len(back)}/{args.during} of those keys read back at R=N=3 (every replica answers)")

        print("\n== a conflict: two writers update the same version concurrently")
        base = kv.put(b"cart", b"apple")
        kv.put(b"cart", b"apple,pear", context=base)
        kv.put(b"cart", b"apple,plum", context=base)
        try:
            kv.get(b"cart")
        except raykv.ConflictError as err:
            print(f"   get -> ConflictError with siblings {sorted(v.value for v in err.versions)}")
            merged = b",".join(sorted({p for v in err.versions for p in v.value.split(b",")}))
            kv.put(b"cart", merged, context=err.context)
        print(f"   merged and written back with the merged context: get -> {kv.get(b'cart')!r}")

        print("\n== the ring (256 virtual nodes per unit of weight)")
        st = kv.status()
        ring = Ring([NodeInfo(x.node_id, x.weight, x.datacenter, x.ray_node_id) for x in st.nodes],
                    kv.config.tokens_per_node)
        rows = [[k.decode(), ", ".join(ring.preference_list(k, 3))] for k in (b"user:1", b"cart", b"key:000042")]
        _print_table("preference lists (first = coordinator's primary)", ["key", "replicas"], rows)
        _print_table("ownership", ["node", "owns"],
                     [[nid, f"{f * 100:.1f}%"] for nid, f in sorted(ring.ownership().items())])
        print(f"\ndemo finished in {time.monotonic() - t_start:.0f} s")
        return 0
    finally:
        if kv is not None:
            try:
                kv.shutdown()
            except Exception as e:  # pragma: no cover
                print(f"shutdown: {e}", file=sys.stderr)
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def up(args) -> int:
    import raykv
    opts = {}
    if args.max_value_bytes:
        opts["max_value_bytes"] = args.max_value_bytes
    if args.fsync:
        opts["fsync"] = args.fsync
    kv = raykv.start(name=args.name, nodes=args.nodes, replicas=args.replicas, read_quorum=args.r,
                     write_quorum=args.w, data_dir=args.data_dir, address=args.address,
                     autoscale=args.autoscale, **opts)
    print_status(kv.status())
    return 0


def status(args) -> int:
    import raykv
    print_status(raykv.connect(args.name, address=args.address).status())
    return 0


def down(args) -> int:
    import raykv
    kv = raykv.connect(args.name, address=args.address)
    kv.shutdown()
    print(f"store {args.name!r} stopped; its data stays in {kv.data_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        if len(argv) < 2 or argv[1] not in ("engine", "cluster"):
            print("usage: raykv bench {engine,cluster} [options]", file=sys.stderr)
            return 2
        if argv[1] == "engine":
            from raykv.bench.engine import main as bench_main
        else:
            from raykv.bench.cluster import main as bench_main
        return bench_main(argv[2:]) or 0
    p = argparse.ArgumentParser(prog="raykv", description="raykv: a Dynamo-style key-value store on Ray")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="embedded 5-node store: writes, a node failure, hints, a conflict, the ring")
    d.add_argument("--nodes", type=int, default=5)
    d.add_argument("--keys", type=int, default=5000)
    d.add_argument("--single", type=int, default=300)
    d.add_argument("--during", type=int, default=500)
    d.set_defaults(fn=demo)
    u = sub.add_parser("up", help="create (or re-open) a named store on a running Ray cluster")
    u.add_argument("--address", default="auto")
    u.add_argument("--name", default="default")
    u.add_argument("--nodes", type=int, default=5)
    u.add_argument("--replicas", "-n", type=int, default=3)
    u.add_argument("-r", type=int, default=2, help="default read quorum R")
    u.add_argument("-w", type=int, default=2, help="default write quorum W")
    u.add_argument("--data-dir", default=None)
    u.add_argument("--max-value-bytes", type=int, default=None)
    u.add_argument("--fsync", choices=("periodic", "batch", "always", "never"), default=None,
                   help="commit-log fsync policy of the storage nodes (default periodic: every 0.1 s, "
                        "acks after the append; batch: acks after a group-commit fsync)")
    u.add_argument("--autoscale", action="store_true",
                   help="scale storage machines with traffic through Ray's autoscaler")
    u.set_defaults(fn=up)
    for name, fn, text in (("status", status, "nodes, liveness, ownership, hints pending, disk"),
                           ("down", down, "stop a store's actors (data stays on disk)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--address", default="auto")
        s.add_argument("--name", default="default")
        s.set_defaults(fn=fn)
    sub.add_parser("bench", help="raykv bench {engine,cluster} ...: benchmarks against baselines")
    args = p.parse_args(argv)
    from raykv.errors import RayKVError
    try:
        return args.fn(args)
    except RayKVError as e:
        print(f"raykv: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except ConnectionError as e:
        print(f"raykv: cannot reach a Ray cluster ({e}); start one with `ray start --head` "
              f"or pass --address", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
