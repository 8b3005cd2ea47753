"""The six fault scenarios of issue 3 as functions of a seed; tests run them over many seeds.

Each ``run_<name>(seed, ...)`` builds a Simulation, drives clients and faults,
heals, checks its property and returns a dict of measurements (``K`` = anti-
entropy rounds to convergence, ``trace`` = trace hash, ...). A violated
property raises ``AssertionError`` naming the seed; replay it with
``python -m raykv.sim.scenarios <name> <seed>`` (see docs/simulation.md).

Defaults: 5 nodes, N=3, R=2, W=2, tens of keys, seconds of virtual time,
message drop/duplication/reordering on.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from raykv.cluster.vclock import merged_context
from raykv.errors import QuorumNotReached
from raykv.sim.network import Faults
from raykv.sim.simulation import Simulation

FAULTS = Faults(drop=0.02, duplicate=0.02, min_delay=0.0005, max_delay=0.01)


def _sim(seed: int, skew: float, **kw) -> Simulation:
    return Simulation(seed, nodes=kw.pop("nodes", 5), faults=kw.pop("faults", FAULTS), skew=skew, **kw)


async def _chaos(sim: Simulation, rng: random.Random, stop: asyncio.Event, clients: list[str],
                 crashes: bool = True, partitions: bool = True) -> None:
    """Random faults until ``stop``: at most one node crashed at a time (never more than N-W replicas of a
    key down), partitions into halves / one isolated / a bridge, heals and restarts."""
    ids = sorted(sim.specs)
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        roll = rng.random()
        down = sim.crashed()
        if crashes and roll < 0.3:
            if down:
                sim.restart(down[0])
            else:
                sim.crash(rng.choice(ids))
        elif partitions and roll < 0.6:
            shape = rng.choice(("halves", "isolate", "bridge"))
            shuffled = ids[:]
            rng.shuffle(shuffled)
            if shape == "halves":
                cut = rng.randint(1, len(ids) - 1)
                a, b = shuffled[:cut], shuffled[cut:]
            elif shape == "isolate":
                a, b = shuffled[:1], shuffled[1:]
            else:
                a, b = shuffled[:3], shuffled[2:]       # shuffled[2] bridges both sides
            for c in clients:
                (a if rng.random() < 0.5 else b).append(c)
            sim.partition(a, b)
        else:
            sim.heal()


async def read_back(coord, keys, attempts: int = 3) -> dict:
    """R=N raw read of ``keys`` as a patient client does it: retried on QuorumNotReached."""
    for i in range(attempts):
        try:
            return await coord.get_raw(sorted(keys), r=3)
        except QuorumNotReached:
            if i == attempts - 1:
                raise
            await asyncio.sleep(1.0)


def _finish(sim: Simulation, out: dict) -> dict:
    out.update(seed=sim.seed, trace=sim.trace_hash, virtual_seconds=round(sim.now(), 3),
               messages=sim.net.messages)
    sim.close()
    return out


# ---------------------------------------------------------------- 1. no acknowledged write lost
def run_no_acked_write_lost(seed: int, *, keys: int = 30, skew: float = 0.0, bulk: int = 0) -> dict:
    """``bulk`` > 0: the keys are written ``bulk`` at a time with ``put_many`` (RPC ``put_blind``, hinted copies
    as ``put_encoded``); a batch counts as acknowledged only when ``put_many`` returned."""
    sim = _sim(seed, skew)
    rng = random.Random(seed * 7 + 1)
    c = sim.coordinator("c0")
    acked: dict[bytes, bytes] = {}

    async def main():
        await sim.boot()
        stop = asyncio.Event()
        chaos = asyncio.ensure_future(_chaos(sim, rng, stop, ["c0"]))
        step = bulk or 1
        for lo in range(0, keys, step):
            batch = {b"k%d" % i: b"v%d-%d" % (i, seed) for i in range(lo, min(lo + step, keys))}
            try:
                if bulk:
                    await c.put_many(list(batch.items()))
                else:
                    (key, val), = batch.items()
                    await c.put(key, val)
                acked.update(batch)
            except QuorumNotReached:
                pass
            await asyncio.sleep(rng.uniform(0.0, 0.15))
        stop.set()
        await chaos
        k = await sim.settle()
        assert k is not None, f"seed {seed}: replicas did not converge"
        def lost(got: dict) -> list:
            return [key for key, val in acked.items() if val not in [s.value for s in got.get(key, [])]]
        missing = lost(await read_back(c, acked))
        assert not missing, f"seed {seed}: acknowledged writes lost: {missing}"
        if bulk:        # and as a bulk read sees them: R replicas per key asked, spares if one fails
            missing = lost(await c.get_many(sorted(acked)))
            assert not missing, f"seed {seed}: acknowledged writes missing from get_many: {missing}"
        return k

    k = sim.run(main())
    return _finish(sim, {"K": k, "acked": len(acked), "attempted": keys})


# ---------------------------------------------------------------- 2. no concurrent write dropped
def run_no_concurrent_write_dropped(seed: int, *, keys: int = 8, skew: float = 0.0, resolver=None) -> dict:
    """Two writers, one on each side of a partition, update the same keys (read-modify-write with the context
    they read, R=W=1). After healing, every acknowledged value is a sibling of its key unless another
    acknowledged write's context covered it (a causal overwrite); with a callable ``resolver`` (values ->
    bytes, joined by b",") every such value is in the resolved value. ``resolver="lww"`` keeps only the
    newest timestamp: the one mode allowed to lose, and the result reports how many values it dropped."""
    sim = _sim(seed, skew)
    rng = random.Random(seed * 7 + 2)
    a, b = sim.coordinator("ca"), sim.coordinator("cb")
    acked: dict[bytes, set] = {}                    # key -> values acknowledged
    attempted: dict[bytes, set] = {}                # key -> values written (acknowledged or not)
    seen: dict[bytes, set] = {}                     # value -> values its writer had (transitively) read

    async def writer(coord, tag: bytes, rounds: int):
        for r in range(rounds):
            key = b"k%d" % rng.randrange(keys)
            try:
                sibs = await coord.get(key, r=1)
            except QuorumNotReached:
                continue
            ctx = merged_context(sibs) if sibs else None
            val = tag + b"%d" % r
            seen[val] = {s.value for s in sibs}.union(*(seen.get(s.value, set()) for s in sibs))
            attempted.setdefault(key, set()).add(val)     # an unacknowledged write may still land
            try:
                await coord.put(key, val, context=ctx, w=1)
                acked.setdefault(key, set()).add(val)
            except QuorumNotReached:
                pass
            await asyncio.sleep(rng.uniform(0.0, 0.1))

    async def main():
        await sim.boot()
        ids = sorted(sim.specs)
        cut = rng.randint(2, len(ids) - 2)
        sim.partition(ids[:cut] + ["ca"], ids[cut:] + ["cb"])
        await asyncio.gather(writer(a, b"A", 12), writer(b, b"B", 12))
        k = await sim.settle()
        assert k is not None, f"seed {seed}: replicas did not converge"
        got = await read_back(a, acked)
        lost_total = 0
        for key, vals in sorted(acked.items()):
            sibs = got.get(key, [])
            present = {s.value for s in sibs}
            # an acknowledged value may be gone only if some write (acknowledged or not) had read it
            replaced = set().union(*(seen[w] for w in attempted[key]))
            must = vals - replaced
            if resolver == "lww":
                winner = max(sibs, key=lambda s: (s.timestamp, s.dot)).value
                assert winner in attempted[key], f"seed {seed}: lww picked a value nobody wrote"
                lost_total += len(must & present) - 1 if winner in must else len(must & present)
                continue
            if resolver is not None:
                present = set(resolver(sorted(present)).split(b","))
            missing = must - present
            assert not missing, f"seed {seed}: concurrent writes dropped on {key!r}: {sorted(missing)}"
        return k, lost_total

    k, lost = sim.run(main())
    return _finish(sim, {"K": k, "keys": len(acked), "lww_lost_values": lost})


# ---------------------------------------------------------------- 3. convergence
def run_convergence(seed: int, *, keys: int = 40, skew: float = 0.0) -> dict:
    """Writes under partitions + drops with hints disabled (max_hints=0: only anti-entropy repairs), then
    heal and count anti-entropy rounds K until every pair of replicas has equal Merkle roots."""
    from raykv.sim.simulation import SIM_CONFIG
    sim = _sim(seed, skew, config=SIM_CONFIG.with_(max_hints=0, anti_entropy_interval=1e9))
    rng = random.Random(seed * 7 + 3)
    c = sim.coordinator("c0")

    async def main():
        await sim.boot()
        ids = sorted(sim.specs)
        for i in range(keys):
            if i % 10 == 0:
                victim = rng.choice(ids)
                sim.partition([victim], [x for x in ids if x != victim] + ["c0"])
            try:
                await c.put(b"k%d" % i, b"v%d" % i, w=1)
            except QuorumNotReached:
                pass
        diverged = not sim.converged()
        k = await sim.settle(max_rounds=10)
        assert k is not None, f"seed {seed}: no convergence within 10 anti-entropy rounds"
        assert sim.merkle_converged(), f"seed {seed}: replicas agree key by key but Merkle roots differ"
        return k, diverged

    k, diverged = sim.run(main())
    return _finish(sim, {"K": k, "diverged_before": diverged})


# ---------------------------------------------------------------- 4. bounded siblings
def run_bounded_siblings(seed: int, *, rmw: int = 1000, writers: int = 3, skew: float = 0.0) -> dict:
    """One client doing ``rmw`` read-modify-writes ends with one version; ``writers`` concurrent blind writers
    on one key leave at most ``writers`` siblings once each writes back with its read context."""
    sim = _sim(seed, skew, faults=Faults(drop=0.0, duplicate=0.02))
    rng = random.Random(seed * 7 + 4)
    c = sim.coordinator("c0")
    cs = [sim.coordinator(f"w{i}") for i in range(writers)]

    async def main():
        await sim.boot()
        for i in range(rmw):
            sibs = await c.get(b"counter", r=2)
            ctx = merged_context(sibs) if sibs else None
            await c.put(b"counter", b"%d" % i, context=ctx, w=2)
        await sim.settle()
        for node in sorted(sim.nodes):
            stored = sim.backends[node].get(b"counter")
            assert len(stored) <= 1, f"seed {seed}: {len(stored)} versions after {rmw} RMWs on {node}"
        final = await c.get(b"counter", r=3)
        assert [s.value for s in final] == [b"%d" % (rmw - 1)], f"seed {seed}: final {final}"

        async def w(coord, tag):
            for r in range(5):
                sibs = await coord.get(b"shared", r=2)
                await coord.put(b"shared", tag + b"%d" % r, context=merged_context(sibs) if sibs else None)
                await asyncio.sleep(rng.uniform(0, 0.02))
        await asyncio.gather(*(w(coord, b"w%d." % i) for i, coord in enumerate(cs)))
        await sim.settle()
        sibs = await c.get(b"shared", r=3)
        assert 1 <= len(sibs) <= writers, f"seed {seed}: {len(sibs)} siblings from {writers} writers"
        return len(sibs)

    n_sibs = sim.run(main())
    return _finish(sim, {"siblings": n_sibs})


# ---------------------------------------------------------------- 6. join and leave
def run_join_leave(seed: int, *, keys: int = 40, skew: float = 0.0) -> dict:
    """Writers keep writing while one node joins (crashing mid-stream in half the seeds) and another leaves;
    nothing acknowledged is lost and the final ring is balanced (each member owns within 2x of the mean, at the sim's 16 tokens per node)."""
    sim = _sim(seed, skew)
    rng = random.Random(seed * 7 + 6)
    c = sim.coordinator("c0")
    acked: dict[bytes, bytes] = {}

    async def writer():
        for i in range(keys):
            key, val = b"k%d" % i, b"v%d" % i
            try:
                await c.put(key, val)
                acked[key] = val
            except QuorumNotReached:
                pass
            await asyncio.sleep(rng.uniform(0.0, 0.1))

    async def membership():
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        sim.add_node("n5")
        if rng.random() < 0.5:                       # crash the newcomer mid-stream; it restarts and re-streams
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            sim.crash("n5")
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            sim.restart("n5")
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        leaver = rng.choice(["n1", "n2", "n3"])
        await sim.leave(leaver)
        return leaver

    async def main():
        await sim.boot()
        _, leaver = await asyncio.gather(writer(), membership())
        sim.specs[leaver]["left"] = True
        k = await sim.settle()
        assert k is not None, f"seed {seed}: replicas did not converge"
        members = sim.members()
        assert "n5" in members and leaver not in members, f"seed {seed}: members {members}"
        got = await read_back(c, acked)
        lost = [key for key, val in acked.items() if val not in [s.value for s in got.get(key, [])]]
        assert not lost, f"seed {seed}: writes lost across join/leave: {lost}"
        own = sim._ring().ownership()
        ratio = max(own.values()) / (sum(own.values()) / len(own))
        assert ratio < 2.0, f"seed {seed}: unbalanced ring after join/leave: max/mean ownership {ratio:.2f}"
        return k, ratio

    k, ratio = sim.run(main())
    return _finish(sim, {"K": k, "acked": len(acked), "max_over_mean": round(ratio, 3)})


SCENARIOS = {
    "no_acked_write_lost": run_no_acked_write_lost,
    "no_concurrent_write_dropped": run_no_concurrent_write_dropped,
    "convergence": run_convergence,
    "bounded_siblings": run_bounded_siblings,
    "join_leave": run_join_leave,
}


def bench(seeds: int = 50) -> dict[str, dict]:
    """Seeds per second of each scenario, by wall clock and by this process's CPU time."""
    out = {}
    for name, fn in SCENARIOS.items():
        kw = {"rmw": 30} if name == "bounded_siblings" else {}
        w0, c0 = time.perf_counter(), time.process_time()
        for seed in range(seeds):
            fn(seed, **kw)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out[name] = {"seeds": seeds, "wall_s": round(wall, 2), "seeds_per_s_wall": round(seeds / wall, 1),
                     "seeds_per_s_cpu": round(seeds / cpu, 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m raykv.sim.scenarios NAME SEED [SKEW]``: replay one seed and print its measurements;
    ``python -m raykv.sim.scenarios bench [SEEDS]``: seeds per second of every scenario."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        for name, row in bench(int(argv[1]) if len(argv) > 1 else 50).items():
            print(f"{name:30s} {row}")
        return
    name, seed = argv[0], int(argv[1])
    skew = float(argv[2]) if len(argv) > 2 else 0.0
    t0 = time.perf_counter()
    print(SCENARIOS[name](seed, skew=skew), f"{time.perf_counter() - t0:.3f}s")


if __name__ == "__main__":
    main()
