"""Coordinator on the simulator: quorums, siblings, contexts, deletes, TTL, sloppy quorum, read repair,
batching (one call per replica node), scans, datacenter presets."""

from __future__ import annotations

import asyncio

import pytest

from raykv.cluster.vclock import merged_context
from raykv.errors import InvalidArgument, QuorumNotReached
from raykv.sim.simulation import SIM_CONFIG, Simulation

NO_AE = SIM_CONFIG.with_(anti_entropy_interval=1e9)


def calls_of(c, method: str | None = None) -> list:
    """Spy on the coordinator's transport: the list it returns gets ``(node, method, args)`` of every call it
    makes from now on (of ``method`` only, when given)."""
    seen, real = [], c.transport.call

    async def spy(node, m, *args, timeout):
        if method is None or m == method:
            seen.append((node, m, args))
        return await real(node, m, *args, timeout=timeout)
    c.transport.call = spy
    return seen


def values(sibs):
    return sorted(s.value for s in sibs)


def test_put_get_context_and_siblings():
    sim = Simulation(seed=1, config=NO_AE)
    c, d = sim.coordinator("c0"), sim.coordinator("c1")

    async def body():
        assert await c.get(b"k") == []
        ctx = await c.put(b"k", b"v1")
        assert values(await c.get(b"k")) == [b"v1"]
        await c.put(b"k", b"v2", context=ctx)                   # read-modify-write supersedes
        assert values(await d.get(b"k", r=3)) == [b"v2"]
        await d.put(b"k", b"blind")                              # no context: concurrent, never an overwrite
        sibs = await c.get(b"k", r=3)
        assert values(sibs) == [b"blind", b"v2"]
        await c.put(b"k", b"merged", context=merged_context(sibs))
        assert values(await d.get(b"k", r=3)) == [b"merged"]
        assert c.actor != d.actor and c.actor.startswith("c0.")
    sim.run_booted(body)


def test_delete_and_ttl():
    sim = Simulation(seed=2, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        ctx = await c.put(b"k", b"v")
        await c.put(b"k", None, context=ctx)                    # delete = tombstone
        assert await c.get(b"k", r=3) == []
        raw = await c.get_raw([b"k"], r=3)
        assert [s.value for s in raw[b"k"]] == [None]           # the tombstone is kept (for anti-entropy)
        await c.put(b"t", b"short", ttl=2.0)
        assert values(await c.get(b"t")) == [b"short"]
        await asyncio.sleep(2.5)
        assert await c.get(b"t") == []
    sim.run_booted(body)


def test_retried_write_is_idempotent_and_duplicates_are_harmless():
    from raykv.sim.network import Faults
    sim = Simulation(seed=3, config=NO_AE, faults=Faults(duplicate=0.5))
    c = sim.coordinator("c0")

    async def body():
        ctx = None
        for i in range(20):
            ctx = await c.put(b"k", b"%d" % i, context=ctx)
        await asyncio.sleep(1.0)
        for node in sim.backends.values():
            assert len(node.get(b"k")) <= 1
        assert values(await c.get(b"k", r=3)) == [b"19"]
    sim.run_booted(body)


def test_quorum_validation_and_failure():
    sim = Simulation(seed=4, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        with pytest.raises(InvalidArgument):
            await c.put(b"k", b"v", w=4)
        with pytest.raises(InvalidArgument):
            await c.get(b"k", r=0)
        with pytest.raises(InvalidArgument):
            await c.get(b"k", r=2, consistency="all")
        with pytest.raises(InvalidArgument):
            await c.get(b"k", consistency="local_quorum")       # no datacenters configured
        pref = sim._ring().preference_list(b"k", 3)
        sim.partition(pref[:2], [n for n in sim.specs if n not in pref[:2]] + ["c0"])
        await asyncio.sleep(0.1)
        with pytest.raises(QuorumNotReached) as e:
            await c.get(b"k", consistency="all")
        assert e.value.required == 3 and e.value.acked == 1
        assert c.counters["quorum_failures"] >= 1
        await c.get(b"k", consistency="one")
    sim.run_booted(body)


def test_sloppy_quorum_writes_through_a_partition():
    sim = Simulation(seed=5, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        pref = sim._ring().preference_list(b"k", 3)
        others = [n for n in sorted(sim.specs) if n not in pref]
        sim.partition(pref[:2], [pref[2]] + others + ["c0"])   # two of three replicas unreachable
        await c.put(b"k", b"v", w=2)                             # one replica + one fallback holding a hint
        assert c.counters["sloppy_writes"] >= 1
        assert sum(b.hint_count() for b in sim.backends.values()) >= 1
        sim.heal()
        assert await sim.wait_until(lambda: sim.hints_pending() == 0, 30)
        assert all(sim.backends[n].get(b"k") for n in pref)
    sim.run_booted(body)


def test_read_repair_fixes_a_stale_replica():
    sim = Simulation(seed=6, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        await c.put(b"k", b"v", w=3)
        stale = sim._ring().preference_list(b"k", 3)[1]
        sim.backends[stale].remove(b"k")
        assert values(await c.get(b"k", r=3)) == [b"v"]
        await asyncio.sleep(1.0)
        assert values(sim.backends[stale].get(b"k")) == [b"v"]
        assert c.counters["read_repairs"] >= 1
    sim.run_booted(body)


def test_batches_make_one_call_per_replica_node():
    sim = Simulation(seed=7, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        calls = calls_of(c)
        keys = [b"key%d" % i for i in range(100)]
        await c.put_many([(k, b"v" + k) for k in keys])
        puts = [n for n, m, _args in calls if m == "put_blind"]
        assert len(puts) == len(set(puts)) <= len(sim.specs)
        calls.clear()
        got = await c.get_many(keys + [b"missing"], r=3)
        gets = [n for n, m, _args in calls if m == "get_hashed"]
        assert len(gets) == len(set(gets)) <= len(sim.specs)
        assert sorted(got) == sorted(keys) and all(values(v) == [b"v" + k] for k, v in got.items())
    sim.run_booted(body)


@pytest.mark.parametrize("seed", range(8))
def test_bulk_read_asks_r_replicas_and_speculates_past_a_silent_one(seed):
    """``get_many`` asks R = 2 of the 3 replicas of each key. A replica that stops answering (isolated, not yet
    suspected) costs ``speculative_retry``, not ``request_timeout``: the round asks the spare replicas then.
    With speculation pushed past the timeout, the same read waits for the timeout before going to them."""
    sim = Simulation(seed=seed, config=NO_AE)
    c = sim.coordinator("c0")
    keys = [b"key%d" % i for i in range(60)]

    async def body():
        asks = calls_of(c, "get_hashed")
        await c.put_many([(k, b"v" + k) for k in keys], w=3)
        got = await c.get_many(keys)
        assert {k: values(v) for k, v in got.items()} == {k: [b"v" + k] for k in keys}
        assert sum(len(args[0][0]) for _n, _m, args in asks) == 2 * len(keys)      # R per key, not N
        assert c.counters["speculative_reads"] == 0

        victim = sim._ring().preference_list(keys[0], 3)[0]
        sim.isolate(victim)
        timings = []
        for spec in (c.config.speculative_retry, 10 * c.config.request_timeout):
            c.config = c.config.with_(speculative_retry=spec)
            t0 = sim.now()
            got = await c.get_many(keys)
            timings.append(sim.now() - t0)
            assert {k: values(v) for k, v in got.items()} == {k: [b"v" + k] for k in keys}
            c.membership = type(c.membership)(None, tokens_per_node=c.config.tokens_per_node)   # forget the failure
            await c.refresh()
        fast, slow = timings
        assert fast < c.config.request_timeout / 2, timings
        assert slow >= c.config.request_timeout, timings
        assert c.counters["speculative_reads"] == 1
    sim.run_booted(body)


@pytest.mark.parametrize("seed", range(6))
def test_bulk_read_speculates_after_the_99th_percentile_of_recent_reads(seed):
    """With ``speculative_retry="99p"`` (the default) a bulk read asks the spares once it has waited the 99th
    percentile of recent bulk reads: after fast reads, a replica that stops answering costs about that, well
    under the 0.05 s used before enough reads were seen (and than a fixed 0.05 s)."""
    from raykv.cluster.coordinator import SPECULATE_FALLBACK, SPECULATE_MIN
    sim = Simulation(seed=seed, config=NO_AE)
    c = sim.coordinator("c0")
    keys = [b"key%d" % i for i in range(60)]

    async def body():
        await c.put_many([(k, b"v" + k) for k in keys], w=3)
        assert c.speculative_delay() == SPECULATE_FALLBACK
        for _ in range(40):
            await c.get_many(keys)
        delay = c.speculative_delay()
        assert SPECULATE_MIN <= delay < SPECULATE_FALLBACK / 2, delay
        sim.isolate(sim._ring().preference_list(keys[0], 3)[0])
        before, t0 = c.counters["speculative_reads"], sim.now()
        got = await c.get_many(keys)
        took = sim.now() - t0
        assert {k: values(v) for k, v in got.items()} == {k: [b"v" + k] for k in keys}
        assert c.counters["speculative_reads"] == before + 1
        assert delay <= took < SPECULATE_FALLBACK, (delay, took)
    sim.run_booted(body)


@pytest.mark.parametrize("seed", range(6))
def test_single_key_get_asks_r_replicas_and_speculates_after_its_own_percentile(seed):
    """A ``get`` asks R = 2 of the 3 replicas (Cassandra; ``read_fanout="all"`` asks 3). A replica that stops
    answering costs about the 99th percentile of recent single-key gets (a window apart from bulk reads'),
    then the spare is asked, and the value comes back."""
    from raykv.cluster.coordinator import SPECULATE_FALLBACK
    sim = Simulation(seed=seed, config=NO_AE)
    c = sim.coordinator("c0")
    key = b"one-key"

    async def body():
        asks = calls_of(c, "get_hashed")
        await c.put(key, b"v", w=3)
        for _ in range(40):
            assert values(await c.get(key)) == [b"v"]
        spec = c.counters["speculative_reads"]        # a get slower than the p99 so far asks its spare: rare
        assert len(asks) == 2 * 40 + spec and spec <= 4, (len(asks), spec)
        assert len(c.latency["get"]) == 40 and len(c.latency["get_many"]) == 0
        delay = c.speculative_delay("get")
        assert delay < SPECULATE_FALLBACK / 2, delay
        sim.isolate(sim._ring().preference_list(key, 3)[0])
        t0 = sim.now()
        assert values(await c.get(key)) == [b"v"]
        took = sim.now() - t0
        assert c.counters["speculative_reads"] == spec + 1
        assert delay <= took < SPECULATE_FALLBACK, (delay, took)
        asks.clear()
        c.config = c.config.with_(read_fanout="all")
        sim.heal()
        await c.get(key)
        assert len(asks) == 3
    sim.run_booted(body)


@pytest.mark.parametrize("seed", range(6))
def test_single_key_put_writes_w_replicas_first_then_the_rest_and_speculates(seed):
    """A ``put`` writes W = 2 replicas up front and the third once they acked (``write_fanout="quorum"``), so
    every replica holds each write. A replica that stops answering costs about the 99th percentile of recent
    puts (their own window), then the spare is written, and the put succeeds."""
    from raykv.cluster.coordinator import SPECULATE_FALLBACK
    sim = Simulation(seed=seed, config=NO_AE)
    c = sim.coordinator("c0")
    keys = [b"put-%d" % i for i in range(40)]

    async def body():
        writes = calls_of(c, "put_encoded")
        for k in keys:
            await c.put(k, b"v" + k)
        await sim.sleep(1.0)                          # the third copies were not waited for: let them land
        # a put slower than every one before it (the p99 of a short window is its max) writes its spare early:
        # a few of 40; the spare is then spent, so each replica is still written exactly once
        spec = c.counters["speculative_writes"]
        assert len(writes) == 3 * 40 and spec <= 8, (len(writes), spec)
        assert len(c.latency["put"]) == 40
        for k in keys:
            for node in sim._ring().preference_list(k, 3):
                assert values(sim.nodes[node].backend.get(k)) == [b"v" + k], (k, node)
        delay = c.speculative_delay("put")
        assert delay < SPECULATE_FALLBACK / 2, delay
        first = sim._ring().preference_list(b"late", 3)[0]
        sim.isolate(first)
        t0 = sim.now()
        await c.put(b"late", b"v")
        took = sim.now() - t0
        assert c.counters["speculative_writes"] == spec + 1
        assert delay <= took < SPECULATE_FALLBACK, (delay, took)
    sim.run_booted(body)


def test_scan_pages_return_every_live_key_once():
    sim = Simulation(seed=8, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        keys = {b"key%d" % i for i in range(70)}
        await c.put_many([(k, b"v") for k in sorted(keys)])
        ctx = await c.put(b"gone", b"v")
        await c.put(b"gone", None, context=ctx)
        seen, cursor, pages = [], None, 0
        while True:
            page, cursor = await c.scan_page(cursor, 9)
            assert len(page) <= 9 + 3
            seen += [k for k, _ in page]
            pages += 1
            if cursor is None:
                break
        assert sorted(seen) == sorted(keys) and pages > 5
    sim.run_booted(body)


def test_local_and_each_quorum_with_datacenters():
    cfg = NO_AE.with_(dc_replicas={"us": 2, "eu": 1}, local_datacenter="us")
    sim = Simulation(seed=9, nodes=6, config=cfg, datacenters=["us", "eu"])
    c = sim.coordinator("c0")

    async def body():
        pref = sim._ring().preference_list(b"k", 3, cfg.dc_replicas)
        dcs = sorted(sim.specs[n]["datacenter"] for n in pref)
        assert dcs == ["eu", "us", "us"]
        eu = [n for n in sim.specs if sim.specs[n]["datacenter"] == "eu"]
        sim.partition([n for n in sim.specs if n not in eu] + ["c0"], eu)     # the whole eu datacenter is cut off
        await asyncio.sleep(0.1)
        await c.put(b"k", b"v", consistency="local_quorum")
        assert values(await c.get(b"k", consistency="local_quorum")) == [b"v"]
        with pytest.raises(QuorumNotReached):
            await c.get(b"k", consistency="each_quorum")
    sim.run_booted(body)


def test_status_reports_members_and_ownership():
    sim = Simulation(seed=10, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        st = await c.status()
        assert sorted(st["members"]) == sorted(sim.specs)
        assert all(m["status"] == "alive" for m in st["members"].values())
        assert abs(sum(st["ownership"].values()) - 1.0) < 1e-9
        assert "read_repairs" in c.counters and "sloppy_writes" in c.counters
    sim.run_booted(body)


def test_writes_reach_a_joining_node_before_it_serves_reads():
    sim = Simulation(seed=11, nodes=4, config=NO_AE.with_(gossip_interval=0.5))
    c = sim.coordinator("c0")

    async def body():
        new = sim.add_node("n9")
        assert await sim.wait_until(lambda: c.membership.declared("n9") == "joining", 10)
        assert new.status_name == "joining"
        future = c.membership.ring("future")
        key = next(b"j%d" % i for i in range(1000) if "n9" in future.preference_list(b"j%d" % i, 3))
        await c.put(key, b"v")
        await asyncio.sleep(0.05)
        assert values(new.backend.get(key)) == [b"v"]          # the future owner got the write, uncounted
        assert "n9" not in c.membership.ring("read").nodes     # but is not asked for reads yet
    sim.run_booted(body)


def test_scan_with_a_node_down_still_returns_every_key_in_few_rounds():
    sim = Simulation(seed=11, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        keys = {b"key%d" % i for i in range(120)}
        await c.put_many([(k, b"v") for k in sorted(keys)], w=3)
        calls = calls_of(c)
        sim.crash(sorted(sim.specs)[0])
        seen, cursor = [], None
        while True:
            page, cursor = await c.scan_page(cursor, 1000)
            seen += [k for k, _ in page]
            if cursor is None:
                break
        assert sorted(seen) == sorted(keys)
        # one call per node per page round, not one per ring segment
        assert sum(m == "fetch_range" for _n, m, _args in calls) <= 2 * len(sim.specs)
    sim.run_booted(body)


def test_scan_fails_when_every_replica_of_a_range_is_down():
    sim = Simulation(seed=12, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        await c.put_many([(b"key%d" % i, b"v") for i in range(50)])
        for node in sorted(sim.specs)[:3]:      # 3 of 5 down: some segment has all N=3 replicas down
            sim.crash(node)
        with pytest.raises(QuorumNotReached):
            cursor = None
            while True:
                _page, cursor = await c.scan_page(cursor, 1000)
                if cursor is None:
                    break
    sim.run_booted(body)


def test_each_quorum_does_not_count_fallbacks_in_another_datacenter():
    cfg = NO_AE.with_(dc_replicas={"us": 2, "eu": 1}, local_datacenter="us")
    sim = Simulation(seed=9, nodes=6, config=cfg, datacenters=["us", "eu"])
    c = sim.coordinator("c0")

    async def body():
        eu = [n for n in sim.specs if sim.specs[n]["datacenter"] == "eu"]
        sim.partition([n for n in sim.specs if n not in eu] + ["c0"], eu)     # the whole eu datacenter is cut off
        await asyncio.sleep(30)                    # long enough for the detector: writes go sloppy, with hints
        assert not any(c.membership.is_up(n, sim.now()) for n in eu)
        await c.put(b"k", b"v", consistency="local_quorum")
        with pytest.raises(QuorumNotReached):
            await c.put(b"k2", b"v", consistency="each_quorum")
        await c.put(b"k3", b"v", consistency="quorum")      # plain quorum: sloppy acks count (Dynamo)
    sim.run_booted(body)
