"""StorageNode on the simulator: reconciling writes, reads, paging, Merkle anti-entropy, join/leave, restart."""

from __future__ import annotations

import asyncio

import pytest

from raykv.cluster.ring import key_token
from raykv.cluster.transport import Transport
from raykv.cluster.vclock import Sibling, VClock
from raykv.errors import InvalidArgument
from raykv.sim.simulation import SIM_CONFIG, Simulation

NO_AE = SIM_CONFIG.with_(anti_entropy_interval=1e9)


class Idle(Transport):
    """A transport for a node driven by hand: it never sends anything."""

    async def call(self, node_id, method, *args, timeout):
        raise AssertionError("no calls expected")

    def now(self):
        return 0.0

    async def sleep(self, seconds):
        pass

    def spawn(self, coro):
        coro.close()


def sib(actor, n, value=b"v", ctx=None):
    ctx = ctx or {}
    return Sibling((actor, n), VClock(ctx, {a: 0.0 for a in ctx}), value, 1.0)


def test_put_batch_reconciles_keeps_concurrent_siblings_and_is_idempotent():
    sim = Simulation(seed=1, nodes=3, config=NO_AE)

    async def body():
        node = sim.nodes["n0"]
        a, b = sib("x", 1, b"a"), sib("y", 1, b"b")
        assert await node.rpc_put_batch([(b"k", [a]), (b"k", [b])]) == [True, True]
        assert {s.value for s in (await node.rpc_get_batch([b"k"]))[0]} == {b"a", b"b"}
        await node.rpc_put_batch([(b"k", [a])])              # a duplicate delivery changes nothing
        assert len(node.backend.get(b"k")) == 2
        c = sib("z", 1, b"c", ctx={"x": 1, "y": 1})          # a write that read both supersedes both
        await node.rpc_put_batch([(b"k", [c])])
        assert [s.value for s in node.backend.get(b"k")] == [b"c"]
        await node.rpc_put_batch([(b"k", [a])])              # an old version arriving late is obsolete
        assert [s.value for s in node.backend.get(b"k")] == [b"c"]
        assert await node.rpc_get_batch([b"absent"]) == [[]]
    sim.run_booted(body)


def test_a_hinted_item_is_stored_as_a_hint_not_as_data():
    sim = Simulation(seed=1, nodes=3, config=NO_AE)

    async def body():
        node = sim.nodes["n0"]
        assert await node.rpc_put_batch([(b"k", [sib("x", 1)], "n1")]) == [True]
        assert node.backend.get(b"k") == [] and node.backend.hint_count() == 1
        await node.rpc_put_batch([(b"k2", [sib("x", 2)], "n0")])   # a hint naming ourselves is plain data
        assert node.backend.get(b"k2")
    sim.run_booted(body)


def test_fetch_range_pages_by_token():
    sim = Simulation(seed=1, nodes=3, config=NO_AE)

    async def body():
        node = sim.nodes["n0"]
        await node.rpc_put_batch([(b"key%d" % i, [sib("x", i + 1)]) for i in range(25)])
        got, cursor = [], 2**64 - 1          # (MAX, MAX] == whole ring
        lo, hi = 0, 2**64 - 1
        while True:
            items, nxt = await node.rpc_fetch_range(lo, hi, 7)
            got += [k for k, _ in items]
            assert len(items) <= 7
            if nxt is None:
                break
            lo = nxt
        assert sorted(got) == sorted(b"key%d" % i for i in range(25))
        assert [key_token(k) for k in got] == sorted(key_token(k) for k in got)
    sim.run_booted(body)


def test_anti_entropy_repairs_a_wiped_replica_both_ways():
    sim = Simulation(seed=2, nodes=4, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        for i in range(40):
            await c.put(b"k%d" % i, b"v%d" % i, w=3)
        victim = "n1"
        held = [k for k, _ in sim.backends[victim].iter_range(0, 0)]
        assert held
        for k in held:
            sim.backends[victim].remove(k)                  # the disk lost its data
        await sim.nodes["n2"].rpc_put_batch([(b"only-n2", [sib("q", 1)])])   # and n2 has a key nobody else has
        assert not sim.converged()
        rounds = await sim.anti_entropy(max_rounds=5)
        assert rounds is not None and rounds <= 2
        assert sorted(k for k, _ in sim.backends[victim].iter_range(0, 0)) == sorted(held) or \
            set(held) <= {k for k, _ in sim.backends[victim].iter_range(0, 0)}
        assert sum(n.counters["anti_entropy_repairs"] for n in sim.nodes.values()) >= len(held)
        pref = sim._ring().preference_list(b"only-n2", 3)
        assert all(sim.backends[n].get(b"only-n2") for n in pref if n != "n2")
    sim.run_booted(body)


def test_join_streams_ranges_before_serving_reads():
    sim = Simulation(seed=5, nodes=4, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        for i in range(60):
            await c.put(b"k%d" % i, b"v%d" % i)
        new = sim.add_node("n9")
        await asyncio.sleep(0.05)
        assert new.status_name == "joining"
        assert "n9" not in new.membership.ring("read").nodes       # no reads before streaming
        assert await sim.wait_until(lambda: new.status_name == "alive", 30)
        ring = sim._ring()
        mine = [b"k%d" % i for i in range(60) if "n9" in ring.preference_list(b"k%d" % i, 3)]
        assert mine and all(sim.backends["n9"].get(k) for k in mine)
        # each arc streamed from one replica (every arc from every replica streamed ~3x these keys)
        assert len(mine) <= new.counters["streamed_in"] < 1.5 * len(mine), new.counters
    sim.run_booted(body)


@pytest.mark.parametrize("seed", range(6))
def test_join_gets_what_only_one_replica_holds_through_a_merkle_exchange(seed):
    """A joining node pulls each arc from one replica, then compares the arc with the others (Merkle): a key
    that only one old replica holds (a write that missed the rest) still reaches the new node when it
    replicates that key, whichever replica the arc was pulled from."""
    sim = Simulation(seed=seed, nodes=4, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        for i in range(40):
            await c.put(b"k%d" % i, b"v%d" % i)
        old = sim._ring()
        lone = {}
        for i in range(120):                                 # keys that reached one replica only, each a different one
            key = b"lone%d" % i
            holder = old.preference_list(key, 3)[i % 3]
            await sim.nodes[holder].rpc_put_batch([(key, [sib("lone", i + 1)])])
            lone[key] = holder
        new = sim.add_node("n9")
        assert await sim.wait_until(lambda: new.status_name == "alive", 30)
        ring = sim._ring()
        mine = [k for k in lone if "n9" in ring.preference_list(k, 3)]
        assert len(mine) >= 10
        missing = [k for k in mine if not sim.backends["n9"].get(k)]
        assert not missing, f"{len(missing)} of {len(mine)} lone keys never reached the joining node"
        assert new.counters["join_repairs"] > 0
    sim.run_booted(body)


def test_a_crash_mid_join_loses_nothing_and_restreams():
    sim = Simulation(seed=6, nodes=4, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        for i in range(60):
            await c.put(b"k%d" % i, b"v%d" % i)
        new = sim.add_node("n9")
        await asyncio.sleep(0.3)
        sim.crash("n9")
        assert sim.backends["n9"].meta_get("member").startswith(b"joining")
        await asyncio.sleep(1.0)
        node = sim.restart("n9")
        assert await sim.wait_until(lambda: node.status_name == "alive", 30)
        ring = sim._ring()
        for i in range(60):
            k = b"k%d" % i
            for r in ring.preference_list(k, 3):
                if r == "n9":
                    assert sim.backends["n9"].get(k), k
        assert node.counters["restarts"] == 1
    sim.run_booted(body)


@pytest.mark.parametrize("seed", range(8))
def test_a_node_told_to_leave_while_it_streams_its_join_leaves_and_loses_nothing(seed):
    """Found by the real-autoscaler test: a machine added and drained at once. The join's end used to declare
    the node alive over its ``leaving``, and ``rpc_leave`` then waited forever. A joining node owns nothing yet
    (its copies were uncounted extras), so it leaves at once."""
    sim = Simulation(seed=seed, nodes=4, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        for i in range(60):
            await c.put(b"k%d" % i, b"v%d" % i, w=3)
        new = sim.add_node("n9")
        assert await sim.wait_until(lambda: "stream" in new._busy, 30)     # the join is pulling its ranges
        assert new.status_name == "joining"
        await asyncio.wait_for(new.rpc_leave(), 30)
        assert new.status_name == "left"
        peers = [n for nid, n in sim.nodes.items() if nid != "n9"]
        assert all(n.membership.declared("n9") == "left" for n in peers)    # told before rpc_leave returned
        await asyncio.sleep(2.0)                                            # the join task has ended by now
        assert new.status_name == "left"
        ring = sim._ring()
        assert "n9" not in ring.nodes
        for i in range(60):
            k = b"k%d" % i
            assert all(sim.backends[r].get(k) for r in ring.preference_list(k, 3)), k
    sim.run_booted(body)


def test_leave_pushes_ranges_then_marks_left():
    sim = Simulation(seed=7, nodes=5, config=NO_AE)
    c = sim.coordinator("c0")

    async def body():
        for i in range(60):
            await c.put(b"k%d" % i, b"v%d" % i, w=3)
        await sim.leave("n3")
        assert sim.nodes["n3"].status_name == "left"
        assert all(sim.nodes[nid].membership.declared("n3") == "left" for nid in ("n0", "n1", "n2", "n4"))
        ring = sim._ring()
        assert "n3" not in ring.nodes
        for i in range(60):
            k = b"k%d" % i
            assert all(sim.backends[r].get(k) for r in ring.preference_list(k, 3)), k
        assert sim.nodes["n3"].counters["streamed_out"] > 0
        for nid in ("n0", "n1", "n2"):
            await sim.leave(nid)
        with pytest.raises(InvalidArgument):
            await sim.nodes["n4"].rpc_leave()             # the last node cannot leave
    sim.run_booted(body)


def test_restart_resumes_status_with_a_higher_incarnation():
    sim = Simulation(seed=8, nodes=3, config=NO_AE)

    async def body():
        before = sim.nodes["n1"].membership.me.incarnation
        sim.crash("n1")
        node = sim.restart("n1")
        await asyncio.sleep(0.5)
        assert node.status_name == "alive"
        assert node.membership.me.incarnation > before
        st = await node.rpc_status()
        assert {"node_id", "alive", "datacenter", "weight", "host", "keys", "disk_bytes",
                "hints_pending"} <= set(st)
        assert st["alive"] and st["node_id"] == "n1"
    sim.run_booted(body)


def test_gossip_detects_a_crashed_node():
    sim = Simulation(seed=9, nodes=4, config=NO_AE)

    async def body():
        sim.crash("n3")
        obs = sim.nodes["n0"]
        assert await sim.wait_until(lambda: obs.membership.status("n3", obs.transport.now()) == "down", 60)
        sim.restart("n3")
        assert await sim.wait_until(lambda: obs.membership.status("n3", obs.transport.now()) == "alive", 60)
    sim.run_booted(body)


def test_tombstones_are_collected_after_the_grace_period():
    from raykv.cluster.garbage import collectable
    sim = Simulation(seed=10, nodes=4, config=SIM_CONFIG.with_(tombstone_grace=3.0, anti_entropy_interval=1.0))
    c = sim.coordinator("c0")

    async def body():
        ctx = await c.put(b"doomed", b"v", w=3)
        await c.put(b"doomed", None, context=ctx, w=3)
        await c.put(b"kept", b"v", w=3)
        await asyncio.sleep(0.5)
        assert sum(1 for b in sim.backends.values() if b.get(b"doomed")) == 3     # tombstones within grace
        assert await sim.wait_until(lambda: not any(b.get(b"doomed") for b in sim.backends.values()), 20)
        assert sum(1 for b in sim.backends.values() if b.get(b"kept")) == 3
        assert sum(n.counters["tombstones_collected"] for n in sim.nodes.values()) >= 3
    sim.run_booted(body)
    live, dead = sib("x", 1, b"v"), sib("x", 2, None)
    assert not collectable([live], 100.0, 1.0) and collectable([dead], 100.0, 1.0)
    assert not collectable([dead], 1.5, 1.0) and not collectable([], 100.0, 1.0)


def test_old_owners_hand_off_and_drop_ranges_they_no_longer_replicate():
    sim = Simulation(seed=11, nodes=4, config=SIM_CONFIG.with_(anti_entropy_interval=1.0))
    c = sim.coordinator("c0")

    async def body():
        keys = [b"k%d" % i for i in range(80)]
        await c.put_many([(k, b"v") for k in keys], w=3)
        sim.add_node("n9")
        assert await sim.wait_until(lambda: sim.nodes["n9"].status_name == "alive", 30)
        ring = sim._ring()

        def placed_exactly():
            return all(bool(sim.backends[n].get(k)) == (n in ring.preference_list(k, 3))
                       for k in keys for n in ring.nodes)
        assert await sim.wait_until(placed_exactly, 30)
        assert sum(n.counters["handoff_keys"] for n in sim.nodes.values()) > 0
        got = await c.get_many(keys, r=3)
        assert len(got) == len(keys)
    sim.run_booted(body)


def test_encoded_rpcs_reconcile_like_put_batch_and_read_back_stored_bytes():
    from raykv.cluster.codec import decode_siblings, encode_siblings
    sim = Simulation(seed=11, nodes=3, config=NO_AE)

    async def body():
        node = sim.nodes["n0"]
        a, b = sib("x", 1, b"a"), sib("y", 1, b"b")
        assert await node.rpc_get_encoded([b"k"]) == [None]
        assert await node.rpc_put_encoded([(b"k", encode_siblings([a]))]) == [True]
        assert await node.rpc_get_encoded([b"k"]) == [encode_siblings([a])]     # a new key: stored as sent
        await node.rpc_put_encoded([(b"k", encode_siblings([b])), (b"k", encode_siblings([a]))])
        assert {s.value for s in decode_siblings((await node.rpc_get_encoded([b"k"]))[0])} == {b"a", b"b"}
        c = sib("z", 1, b"c", ctx={"x": 1, "y": 1})              # supersedes both
        await node.rpc_put_encoded([(b"k", encode_siblings([c]))])
        await node.rpc_put_encoded([(b"k", encode_siblings([a]))])  # a late duplicate of an obsolete write
        assert [s.value for s in (await node.rpc_get_batch([b"k"]))[0]] == [b"c"]
        assert await node.rpc_put_encoded([(b"h", encode_siblings([a]), "n1")]) == [True]   # sloppy: a hint
        assert await node.rpc_get_encoded([b"h"]) == [None] and sim.backends["n0"].get_hint("n1", b"h") == [a]
    sim.run_booted(body)


def test_client_writes_count_as_traffic_and_internal_copies_do_not():
    """``puts`` (what autoscaling reads as traffic) counts client RPCs only; streaming, hint replay and
    anti-entropy arrive as ``put_batch`` and count as ``internal_puts``."""
    from raykv.cluster.codec import encode_siblings
    sim = Simulation(seed=12, nodes=3, config=NO_AE)

    async def body():
        node = sim.nodes["n0"]
        before = dict(node.counters)
        await node.rpc_put_encoded([(b"a", encode_siblings([sib("x", 1)])), (b"b", encode_siblings([sib("x", 2)]))])
        await node.rpc_put_batch([(b"c", [sib("y", 1)])])
        assert node.counters["puts"] - before["puts"] == 2
        assert node.counters["internal_puts"] - before["internal_puts"] == 1
    sim.run_booted(body)


def test_put_blind_stores_what_put_encoded_would_and_merges_with_what_is_there():
    """``put_blind`` (a bulk blind write as columns) is ``put_encoded`` of each key's encoded sibling: a new key
    is stored byte for byte as ``encode_siblings`` gives it, an existing one is merged (a concurrent version
    stays a sibling), and a malformed payload is refused whole with ``ValueError``."""
    from raykv.cluster.codec import BlindBatch, decode_siblings, encode_siblings
    from raykv.cluster.ring import key_digests
    from raykv.errors import InvalidArgument
    sim = Simulation(seed=13, nodes=3, config=NO_AE)

    async def body():
        node = sim.nodes["n0"]
        old = sib("x", 1, b"old")
        await node.rpc_put_encoded([(b"b", encode_siblings([old]))])
        batch = BlindBatch([("d1", 7), ("d1", 8), ("d1", 9)], [b"A", b"B", None], 5.0)
        assert await node.rpc_put_blind(batch.wire([b"a", b"b", b"t"], [0, 1, 2])) == [True] * 3
        assert await node.rpc_get_encoded([b"a", b"t"]) == [batch[0], batch[2]]     # stored as sent
        assert {s.value for s in decode_siblings((await node.rpc_get_encoded([b"b"]))[0])} == {b"old", b"B"}
        assert node.serve("put_blind", batch.wire([b"a", b"c"], [1])) == [True]     # the threaded actor's path
        with pytest.raises(ValueError):
            await node.rpc_put_blind([(b"z", encode_siblings([old]))])
        assert await node.rpc_get_encoded([b"z"]) == [None]
        # what rounds send: the keys' digests ride along (put_blind's sixth field, get_hashed)
        keys = [b"d", b"e"]
        digests = b"".join(key_digests(keys))
        assert node.serve("put_blind", batch.wire(keys, [0, 1], key_digests(keys))) == [True, True]
        assert node.serve("get_hashed", (keys, digests)) == await node.rpc_get_encoded(keys) == [batch[0], batch[1]]
        with pytest.raises(InvalidArgument):
            node.serve("get_hashed", keys)
    sim.run_booted(body)


def test_anti_entropy_yields_to_heavy_client_traffic_but_only_for_a_bounded_number_of_rounds():
    from raykv.cluster.node import AE_BUSY_KEYS, AE_MAX_DEFER
    sim = Simulation(seed=12, nodes=3, config=NO_AE)

    async def body():
        node = sim.nodes["n0"]
        launched = []
        node._background = lambda name, fn: launched.append(name)
        rounds = []
        for _ in range(2 * (AE_MAX_DEFER + 1)):
            await node.rpc_get_batch([b"k"] * AE_BUSY_KEYS)      # a busy interval
            node._due["ae"] = 0.0                                # anti-entropy is due now
            launched.clear()
            await node.tick()
            rounds.append("ae" in launched)
        assert rounds == ([False] * AE_MAX_DEFER + [True]) * 2
        assert node.counters["anti_entropy_deferred"] == 2 * AE_MAX_DEFER
        node._due["ae"] = 0.0                                    # a quiet interval: runs at once
        launched.clear()
        await node.tick()
        assert "ae" in launched
    sim.run_booted(body)


def test_encoded_rpcs_over_the_lsm_backend_match_the_memory_backend(tmp_path):
    """The LSM backend takes the batched paths (merge_many_encoded, get_many_encoded); the memory backend the
    per-key ones: the same random bulk traffic gives the same acks, stored siblings, hints and counters."""
    import random

    from raykv.cluster.lsm_backend import LSMBackend
    from raykv.cluster.memory_backend import MemoryBackend
    from raykv.cluster.node import StorageNode
    from raykv.cluster.codec import decode_siblings, encode_siblings

    lsm = LSMBackend(str(tmp_path / "lsm"), fsync="never", memtable_bytes=16 << 10)
    nodes = [StorageNode("n0", b, Idle(), NO_AE) for b in (lsm, MemoryBackend())]
    rnd = random.Random(4)
    keys = [b"k%d" % i for i in range(300)]

    async def body():
        for node in nodes:
            await node.start()
        for round_ in range(30):
            items = []
            for j in range(rnd.choice([1, 3, 40, 200])):
                key = rnd.choice(keys)
                ctx = {"x": rnd.randrange(1, 4)} if rnd.random() < 0.3 else None
                s = sib(rnd.choice("xyz"), rnd.randrange(1, 6), rnd.choice([b"a", b"b", None]), ctx=ctx)
                blob = encode_siblings([s])
                r = rnd.random()
                items.append((key, blob, "n1") if r < 0.05 else (key, blob, "n0") if r < 0.1 else (key, blob))
            acks = [await node.rpc_put_encoded(list(items)) for node in nodes]
            assert acks[0] == acks[1] == [True] * len(items)
            ask = rnd.sample(keys, 50)
            got = [await node.rpc_get_encoded(ask) for node in nodes]
            assert [g and decode_siblings(g) for g in got[0]] == [g and decode_siblings(g) for g in got[1]]
        assert nodes[0].counters == nodes[1].counters and nodes[0].counters["keys_written"] > 0
        assert sorted(lsm.iter_hints()) == sorted(nodes[1].backend.iter_hints())
    asyncio.run(body())
    lsm.close()


def test_data_rpcs_served_from_many_threads_lose_no_concurrent_sibling(tmp_path):
    """A threaded storage actor runs ``serve`` in several threads beside the event loop's own writes
    (anti-entropy, streaming: ``apply_local``). Concurrent blind writes of one key must all stay siblings:
    every read-merge-write holds ``node.write_lock``; without it, two threads read the same stored set and
    the later write drops the other's sibling."""
    import threading

    from raykv.cluster.lsm_backend import LSMBackend
    from raykv.cluster.node import StorageNode
    from raykv.cluster.codec import decode_siblings, encode_siblings

    backend = LSMBackend(str(tmp_path / "lsm"), fsync="never")
    node = StorageNode("n0", backend, Idle(), NO_AE)
    asyncio.run(node.start())
    writers, per = 6, 60
    start = threading.Barrier(writers + 1)

    def encoded_writer(w):
        start.wait()
        for i in range(per):
            node.serve("put_encoded", [(b"hot", encode_siblings([sib(f"w{w}", i + 1, b"%d" % i)]))])

    def loop_writer():
        start.wait()
        for i in range(per):
            node.apply_local([(b"hot", [sib("loop", i + 1, b"L")])])

    threads = [threading.Thread(target=encoded_writer, args=(w,)) for w in range(writers - 1)]
    threads.append(threading.Thread(target=loop_writer))
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    held = decode_siblings(node.serve("get_encoded", [b"hot"])[0])
    # blind writes (empty contexts) supersede nothing: every one of them is still a sibling
    want = {(f"w{w}", i + 1) for w in range(writers - 1) for i in range(per)} | {("loop", i + 1) for i in range(per)}
    assert {s.dot for s in held} == want
    backend.close()


@pytest.mark.parametrize("method", ["put_encoded", "put_batch"])
def test_a_put_waiting_for_its_fsync_does_not_hold_the_write_lock(tmp_path, fsync_gate, method):
    """fsync="batch": thread A's put blocks in the group-commit fsync; thread B's put of another key must still
    get its append done meanwhile (read-merge-append under ``write_lock``, the fsync wait after it), so the two
    can share an fsync. Both ack only once the fsync is over."""
    import threading
    import time

    from raykv.cluster.codec import encode_siblings
    from raykv.cluster.lsm_backend import LSMBackend
    from raykv.cluster.node import StorageNode

    backend = LSMBackend(str(tmp_path / "lsm"), fsync="batch")
    node = StorageNode("n0", backend, Idle(), NO_AE)
    asyncio.run(node.start())
    entered, release = fsync_gate.arm()

    def item(key, actor):
        s = sib(actor, 1, b"value-" + key)
        return (key, encode_siblings([s]) if method == "put_encoded" else [s])

    acks = {}

    def put(key, actor):
        acks[key] = node.serve(method, [item(key, actor)])

    a = threading.Thread(target=put, args=(b"a", "x"), daemon=True)
    b = threading.Thread(target=put, args=(b"b", "y"), daemon=True)
    try:
        a.start()
        assert entered.wait(5), "A never reached its fsync"
        b.start()
        deadline = time.monotonic() + 5
        while node.serve("get_encoded", [b"b"]) == [None] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert node.serve("get_encoded", [b"b"]) != [None], "B could not append while A waited for its fsync"
        assert node.serve("get_encoded", [b"a"]) != [None]
        b.join(0.1)
        assert a.is_alive() and b.is_alive() and acks == {}, "a put acked before its fsync"
    finally:
        release.set()
        a.join(10)
        b.join(10)
    assert acks == {b"a": [True], b"b": [True]}
    wal = backend.db._wal
    assert wal._synced == wal.written                 # everything acked is synced
    backend.close()
