"""The public API of DESIGN.md section 2, end to end on real Ray actors (one 5-node store per module)."""

import asyncio
import threading
import time

import pytest

import raykv
from raykv.cluster.node import ENGINE_STATS

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def kv(ray_session, tmp_path_factory):
    kv = raykv.start(name="api", nodes=5, replicas=3, read_quorum=2, write_quorum=2,
                     data_dir=str(tmp_path_factory.mktemp("api")), max_value_bytes=4096)
    yield kv
    kv.shutdown()


def test_put_get_and_absent_keys(kv):
    ctx = kv.put(b"k", b"v")
    assert isinstance(ctx, raykv.Version)
    assert kv.get(b"k") == b"v"
    assert kv.get("k") == b"v", "str keys are UTF-8 encoded"
    kv.put("ключ", b"unicode")
    assert kv.get("ключ".encode()) == b"unicode"
    with pytest.raises(KeyError):
        kv.get(b"never-written")
    assert kv.get(b"never-written", default=None) is None
    assert kv.get(b"never-written", r=1, default=b"d") == b"d"


def test_context_supersedes_and_siblings_are_kept(kv):
    base = kv.put(b"cart", b"apple")
    newer = kv.put(b"cart", b"apple,pear", context=base)
    assert kv.get(b"cart") == b"apple,pear"
    kv.put(b"cart", b"apple,plum", context=base)          # concurrent with `newer`
    with pytest.raises(raykv.ConflictError) as e:
        kv.get(b"cart")
    err = e.value
    assert sorted(v.value for v in err.versions) == [b"apple,pear", b"apple,plum"]
    assert "2 concurrent versions" in str(err) and "context=err.context" in str(err)
    assert len(kv.get_versions(b"cart")) == 2
    kv.put(b"cart", b"apple,pear,plum", context=err.context)
    assert kv.get(b"cart") == b"apple,pear,plum"
    assert [v.value for v in kv.get_versions(b"cart")] == [b"apple,pear,plum"]
    assert newer != base


def test_blind_writes_of_different_values_become_siblings(kv):
    kv.put(b"blind", b"one")
    kv.put(b"blind", b"two")
    with pytest.raises(raykv.ConflictError):
        kv.get(b"blind")
    kv[b"blind"] = b"three"           # dict sugar: read-modify-write, supersedes what it read
    assert kv[b"blind"] == b"three"


def test_delete(kv):
    kv.put(b"gone", b"x")
    kv.delete(b"gone")
    with pytest.raises(KeyError):
        kv.get(b"gone")
    assert b"gone" not in kv
    ctx = kv.put(b"gone2", b"x")
    kv.delete(b"gone2", context=ctx)
    assert kv.get(b"gone2", default=None) is None
    kv.delete(b"never-there")         # deleting an absent key is fine


def test_dict_sugar(kv):
    kv[b"d1"] = b"1"
    kv["d2"] = b"2"
    assert kv[b"d1"] == b"1" and kv[b"d2"] == b"2"
    assert b"d1" in kv and b"nope" not in kv
    del kv[b"d1"]
    assert b"d1" not in kv
    with pytest.raises(KeyError):
        kv[b"d1"]


def test_put_many_get_many(kv):
    items = {b"m%04d" % i: b"v%d" % i for i in range(1500)}
    versions = kv.put_many(items, w=2)
    assert set(versions) == set(items) and all(isinstance(v, raykv.Version) for v in versions.values())
    got = kv.get_many(list(items) + [b"absent"])
    assert got == items
    assert kv.get_many([]) == {}
    assert kv.put_many([(b"pair", b"p")]) and kv.get(b"pair") == b"p"


def test_items_yields_every_live_key_once(kv):
    kv.put_many({b"it%03d" % i: b"x" for i in range(300)})
    kv.delete(b"it000")
    keys = [k for k, _ in kv.items(page_size=64)]
    assert len(keys) == len(set(keys)), "a key came twice"
    mine = {k for k in keys if k.startswith(b"it")}
    assert mine == {b"it%03d" % i for i in range(1, 300)}
    assert set(kv.keys()) == set(keys)


def test_ttl_expires(kv):
    kv.put(b"short", b"x", ttl=0.5)
    kv.put(b"long", b"x", ttl=60)
    assert kv.get(b"short") == b"x"
    time.sleep(1.2)
    with pytest.raises(KeyError):
        kv.get(b"short")
    assert kv.get(b"long") == b"x"


def test_put_many_ttl_expires_every_key_and_overwrites_keep_siblings_rules(kv):
    """A bulk write travels as columns (``put_blind``): its TTL must reach every replica, and a bulk blind
    overwrite is a concurrent version of what is there (siblings), as a blind single put would be."""
    short = {b"pm-short%03d" % i: b"s%d" % i for i in range(150)}
    kv.put_many(short, ttl=0.5)
    kv.put_many({b"pm-long%03d" % i: b"l" for i in range(150)}, ttl=60)
    assert kv.get_many(list(short), r=3) == short
    time.sleep(1.2)
    assert kv.get_many(list(short), r=3) == {}
    assert len(kv.get_many([b"pm-long%03d" % i for i in range(150)], r=3)) == 150
    kv.put(b"pm-shared", b"theirs")
    kv.put_many({b"pm-shared": b"mine"})                 # blind: concurrent with what is there
    with pytest.raises(raykv.ConflictError) as e:
        kv.get(b"pm-shared", r=3)
    assert sorted(v.value for v in e.value.versions) == [b"mine", b"theirs"]


def test_consistency_presets_and_per_request_quorums(kv):
    for preset in ("one", "quorum", "all"):
        # R + W > N for each pair below (a W=1 put read at R=1 may ask a replica the write has not reached yet)
        kv.put(b"c-" + preset.encode(), b"v", consistency=preset)
        assert kv.get(b"c-" + preset.encode(), consistency="all") == b"v"
        kv.put(b"a-" + preset.encode(), b"v", consistency="all")
        assert kv.get(b"a-" + preset.encode(), consistency=preset) == b"v"
    kv.put(b"w3", b"v", w=3)
    assert kv.get(b"w3", r=3) == b"v"
    assert kv.get(b"w3", r=1) == b"v"
    with pytest.raises(raykv.InvalidArgument, match="datacenter"):
        kv.put(b"x", b"v", consistency="local_quorum")   # the coordinator's check, through Ray, unwrapped


def test_errors_through_the_real_store(kv):
    with pytest.raises(raykv.ValueTooLarge, match="4097 bytes, the store allows at most 4096"):
        kv.put(b"big", b"v" * 4097)
    with pytest.raises(raykv.KeyTooLarge, match="at most 1024"):
        kv.put(b"k" * 1025, b"v")
    with pytest.raises(raykv.InvalidKey):
        kv.get(42)
    with pytest.raises(raykv.InvalidArgument, match="r=4 exceeds"):
        kv.get(b"k", r=4)
    with pytest.raises(raykv.InvalidArgument, match="at least 1"):
        kv.put(b"k", b"v", w=0)
    with pytest.raises(raykv.InvalidArgument, match="unknown consistency"):
        kv.get(b"k", consistency="majority")
    with pytest.raises(raykv.InvalidArgument, match="ttl"):
        kv.put(b"k", b"v", ttl=0)
    with pytest.raises(raykv.StoreNotFound, match="no raykv store named 'nosuchstore'"):
        raykv.connect("nosuchstore")


def test_async_twins(kv):
    async def main():
        ctx = await kv.aput(b"a1", b"x")
        assert await kv.aget(b"a1") == b"x"
        assert await kv.aget(b"a-missing", default=None) is None
        vs = await kv.aget_versions(b"a1")
        assert [v.value for v in vs] == [b"x"] and vs[0].context == ctx
        await kv.aput_many({b"a2": b"2", b"a3": b"3"})
        assert await kv.aget_many([b"a2", b"a3", b"zz"]) == {b"a2": b"2", b"a3": b"3"}
        await kv.adelete(b"a1")
        assert not await kv.acontains(b"a1")
        return await asyncio.gather(*(kv.aput(b"ac%d" % i, b"v") for i in range(200)))

    assert len(asyncio.run(main())) == 200
    assert len(kv.get_many([b"ac%d" % i for i in range(200)])) == 200


def test_concurrent_single_key_requests_are_coalesced(kv):
    group = kv._put_group(None, None, None)
    before_batches, before_items = group.batches, group.items
    errors = []

    def writer(t):
        try:
            for i in range(50):
                kv.put(b"co-%d-%d" % (t, i), b"v")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    items, batches = group.items - before_items, group.batches - before_batches
    assert items == 800
    assert batches < items / 2, f"{items} concurrent puts took {batches} coordinator calls"
    assert len(kv.get_many([b"co-%d-%d" % (t, i) for t in range(16) for i in range(50)])) == 800


def test_status(kv):
    st = kv.status()
    assert isinstance(st, raykv.ClusterStatus)
    assert len(st.nodes) == 5 and st.alive == 5
    assert (st.replicas, st.read_quorum, st.write_quorum) == (3, 2, 2)
    n = st.nodes[0]
    assert n.node_id == "n1" and n.actor_name == "raykv:api:node:n1" and n.alive
    assert n.weight == 1.0 and n.datacenter is None and n.ray_node_id
    assert n.keys > 0 and n.disk_bytes >= 0 and n.hints_pending == 0
    import ray
    assert ray.get_actor(n.actor_name, namespace="raykv")
    assert abs(sum(st.ownership.values()) - 1.0) < 1e-6
    assert sum(x.keys for x in st.nodes) >= 3 * 1500, "every key is stored N=3 times"
    assert "n1" in str(st)
    eng = n.extra["engine"]        # the storage engine's stats, per node
    assert set(eng) == set(ENGINE_STATS)
    assert eng["memtable_bytes"] > 0 and eng["cache_hits"] >= 0 and eng["immutable_memtables"] >= 0


def test_add_and_remove_node_keep_every_key(kv):
    data = {b"el%04d" % i: b"v%d" % i for i in range(600)}
    kv.put_many(data)
    new = kv.add_node(weight=1.0)
    assert new == "n6"
    st = kv.status()
    assert {n.node_id for n in st.nodes} == {"n1", "n2", "n3", "n4", "n5", "n6"}
    from tests.ray.conftest import wait_for
    wait_for(lambda: kv.status().ownership.get("n6", 0) > 0.05, 30, what="n6 owning part of the ring")
    wait_for(lambda: next(n for n in kv.status().nodes if n.node_id == "n6").keys > 0, 30,
             what="ranges streamed to n6")
    assert kv.get_many(list(data), consistency="all") == data
    kv.remove_node("n2")
    assert "n2" not in {n.node_id for n in kv.status().nodes}
    assert kv.get_many(list(data)) == data
    with pytest.raises(raykv.InvalidArgument, match="no node 'n2'"):
        kv.remove_node("n2")


def test_transport_maps_failures(kv):
    from raykv.actors.transport import RayTransport

    async def main():
        t = RayTransport("api")
        with pytest.raises(raykv.InvalidArgument, match="no RPC 'nope'"):      # remote RayKVError, as is
            await t.call("n1", "nope", timeout=5)
        with pytest.raises(raykv.NodeUnavailable, match="no actor"):
            await t.call("n99", "get_batch", [b"k"], timeout=5)
        with pytest.raises(raykv.NodeUnavailable, match="did not answer"):
            await t.call("n1", "get_batch", [b"k"], timeout=1e-6)
        reply = await t.call("n1", "get_batch", [b"k"], timeout=5)
        assert isinstance(reply, list) and len(reply) == 1
        full = RayTransport("api", max_pending=0)
        with pytest.raises(raykv.Overloaded, match="max_pending=0"):
            await full.call("n1", "get_batch", [b"k"], timeout=5)

    asyncio.run(main())
