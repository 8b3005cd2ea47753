"""Client-driven coordination on real Ray (raykv.actors.router): requests go from the driver straight to the
replicas, the coordinator actors are not on the path, failures fall back to sloppy quorum, reads repair."""

import asyncio
import os
import signal
import time

import pytest
import ray

import raykv
from raykv.actors.client import get_manager
from raykv.cluster.ring import NodeInfo, Ring
from raykv.cluster.codec import decode_siblings, encode_siblings
from raykv.cluster.vclock import DotMinter, Sibling
from tests.ray.conftest import wait_for

pytestmark = pytest.mark.ray


def coordinator_puts(kv) -> int:
    return sum(ray.get(c.status.remote())["counters"]["puts"] for c in kv._client.coordinators)


def replicas_of(kv, key) -> list[str]:
    st = kv.status()
    ring = Ring([NodeInfo(n.node_id, n.weight, n.datacenter, n.ray_node_id) for n in st.nodes],
                kv.config.tokens_per_node)
    return ring.preference_list(key, kv.config.replicas, kv.config.dc_replicas)


def node_call(kv, node_id, method, *args):
    h = ray.get_actor(f"raykv:{kv.name}:node:{node_id}", namespace="raykv")
    return ray.get(h.call.remote(method, *args), timeout=30)


def _dead(kv, node_id) -> bool:
    try:
        node_call(kv, node_id, "status")
        return False
    except Exception:   # noqa: BLE001 - no actor, or it died
        return True


def test_client_routing_skips_the_coordinator_actors_and_coordinator_routing_uses_them(ray_session, store_dir):
    kv = raykv.start(name="route", nodes=4, data_dir=store_dir)
    try:
        assert kv._client.routing == "client" and kv._client.router is not None
        before = coordinator_puts(kv)
        kv.put(b"a", b"1")
        kv.put_many({b"b%d" % i: b"x" for i in range(50)})
        assert kv.get(b"a") == b"1" and len(kv.get_many([b"b%d" % i for i in range(50)])) == 50
        assert asyncio.run(kv.aget(b"a")) == b"1"
        assert coordinator_puts(kv) == before                           # nothing went through a coordinator
        counters = kv._client.router.coord.counters
        assert counters["puts"] >= 2 and counters["keys_read"] >= 51

        via = raykv.connect(name="route", routing="coordinator")
        assert via._client.router is None
        via.put(b"c", b"3")
        assert coordinator_puts(kv) == before + 1
        assert kv.get(b"c") == b"3" and via.get(b"a") == b"1"          # one store, either way in
        with pytest.raises(raykv.InvalidArgument, match="routing must be"):
            raykv.connect(name="route", routing="direct")
    finally:
        kv.shutdown()


def test_client_routing_rides_out_a_dead_replica_and_repairs_a_stale_one_on_read(ray_session, store_dir):
    kv = raykv.start(name="route2", nodes=5, data_dir=store_dir, request_timeout=2.0, hint_replay_interval=0.5,
                     anti_entropy_interval=3600.0)
    try:
        mgr = get_manager("route2")
        key = b"hot"
        reps = replicas_of(kv, key)
        ray.get(mgr.kill_node.remote(reps[0]))
        wait_for(lambda: _dead(kv, reps[0]), 30, what=f"{reps[0]} dead")     # ray.kill returns before the kill
        for i in range(20):                                             # W=3 with a replica down: sloppy quorum
            kv.put(b"k%d" % i, b"v", w=3)
        kv.put(key, b"v1", w=3)
        assert kv._client.router.coord.counters["sloppy_writes"] + \
            kv._client.router.coord.counters["write_retries"] > 0
        ray.get(mgr.restart_node.remote(reps[0]))
        wait_for(lambda: sum(n.hints_pending or 0 for n in kv.status().nodes) == 0, 60, what="hints handed back")

        # one replica gets a newer version behind the store's back; a read at R=N brings the others up to date
        newer = Sibling(dot=DotMinter("test").mint(key, None), context=decode_siblings(
            node_call(kv, reps[1], "get_encoded", [key])[0])[0].clock, value=b"v2", timestamp=time.time())
        node_call(kv, reps[1], "put_encoded", [(key, encode_siblings([newer]))])
        assert kv.get(key, r=3) == b"v2"

        def repaired():
            return all([s.value for s in decode_siblings(node_call(kv, n, "get_encoded", [key])[0])] == [b"v2"]
                       for n in reps)
        wait_for(repaired, 20, what="read repair of the stale replicas")
        assert kv._client.router.coord.counters["read_repairs"] >= 2
    finally:
        kv.shutdown()


def test_client_reads_and_puts_ask_r_or_w_replicas_and_speculate_past_a_stopped_one(ray_session, store_dir):
    """``get_many`` (and ``get``) from the driver asks R = 2 replicas per key (the nodes count the keys they are
    asked for).
    A replica whose process is stopped (SIGSTOP: alive to Ray, silent to us) costs ``speculative_retry``
    (0.05 s) and not ``request_timeout`` (10 s): the router asks the spares, a put writes its spare, and a
    refresh of the router's view takes the other node's answer."""
    kv = raykv.start(name="route3", nodes=5, data_dir=store_dir, request_timeout=10.0)
    keys = [b"b%d" % i for i in range(300)]
    stopped = None
    try:
        kv.put_many({k: b"v" + k for k in keys}, w=3)
        ids = [n.node_id for n in kv.status().nodes]

        def asked() -> int:
            return sum(node_call(kv, n, "status")["counters"]["gets"] for n in ids)
        before = asked()
        assert kv.get_many(keys) == {k: b"v" + k for k in keys}
        assert asked() - before == 2 * len(keys)
        counters = kv._client.router.coord.counters
        assert counters["speculative_reads"] == 0

        victim = replicas_of(kv, keys[0])[0]
        stopped = ray.get(
            ray.get_actor(f"raykv:{kv.name}:node:{victim}", namespace="raykv").pid.remote())
        os.kill(stopped, signal.SIGSTOP)
        for _ in range(2):          # each bulk read rests one node in turn: one of two asks the stopped one
            t0 = time.monotonic()
            assert kv.get_many(keys) == {k: b"v" + k for k in keys}
            took = time.monotonic() - t0
            assert took < 2.0, took                                    # request_timeout is 10 s
        assert counters["speculative_reads"] >= 1
        t0 = time.monotonic()                     # a single-key get asks R = 2 too, the stopped one first
        assert kv.get(keys[0]) == b"v" + keys[0]
        assert time.monotonic() - t0 < 2.0
        router = kv._client.router                # a view refresh asking the stopped node first is not held
        router.coord.gossip_targets = lambda: [victim] + [n for n in ids if n != victim][:3]
        t0 = time.monotonic()
        assert router.refresh() and time.monotonic() - t0 < 2.0
        del router.coord.gossip_targets
        fresh = next(k for k in (b"p%d" % i for i in range(1000)) if replicas_of(kv, k)[0] == victim)
        t0 = time.monotonic()                     # a single-key put writes W = 2 first, the stopped one first
        kv.put(fresh, b"new")
        assert time.monotonic() - t0 < 2.0
        assert counters["speculative_writes"] == 1
        assert kv.get(fresh) == b"new"
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        kv.shutdown()


def test_a_put_returns_after_w_replicas_and_its_other_copy_goes_out_behind_it(ray_session, store_dir):
    """A single-key put writes W = 2 replicas and returns; its third copy waits in the router's write-behind
    queue (held here: nothing sends it), so the third replica does not have it yet; the daemon's flush sends
    it, batched per node with the other puts' copies."""
    import collections

    kv = raykv.start(name="behind", nodes=5, data_dir=store_dir)
    try:
        router = kv._client.router
        held = []

        class Held(collections.deque):
            def extend(self, copies):
                held.extend(copies)

        router._behind = Held()
        keys = [b"w%d" % i for i in range(6)]
        for k in keys:
            kv.put(k, b"v" + k)
        third = {k: replicas_of(kv, k)[2] for k in keys}
        assert sorted((node, [item[0] for item in items]) for node, items in held) == \
            sorted((third[k], [k]) for k in keys)

        def stored(node, key):
            blob = node_call(kv, node, "get_encoded", [key])[0]
            return [s.value for s in decode_siblings(blob)] if blob else []
        for k in keys:
            assert stored(third[k], k) == []                       # not written before the flush
            assert [stored(n, k) for n in replicas_of(kv, k)[:2]] == [[b"v" + k]] * 2
        router._behind = collections.deque(held)
        router._flush_behind()
        assert not router._behind
        wait_for(lambda: all(stored(third[k], k) == [b"v" + k] for k in keys), 10, what="the copies past W")
    finally:
        kv.shutdown()


def test_client_routing_records_latencies_and_exports_counters(ray_session, store_dir, monkeypatch):
    """With client routing no coordinator sees the traffic, so the driver exports what a coordinator did."""
    import raykv.actors.router as router_mod
    seen = []

    from raykv.actors.metrics import Metrics

    class Recorder:
        due = Metrics.due              # the real export throttle
        _exported = 0.0

        def __init__(self, store, component, ident):
            seen.append(("new", store, component))

        def observe(self, method, seconds):
            seen.append(("observe", method))

        def export(self, counters, gauges=None):
            seen.append(("export", counters.get("puts"), counters.get("gets")))

    monkeypatch.setattr(router_mod, "Metrics", Recorder)
    kv = raykv.start(name="routemetrics", nodes=3, data_dir=store_dir)
    try:
        kv.put(b"a", b"1")
        kv.get(b"a")
        kv.put_many({b"b": b"2"})
        kv.get_many([b"a", b"b"])
    finally:
        kv.shutdown()
    assert ("new", "routemetrics", "client") in seen
    assert {e[1] for e in seen if e[0] == "observe"} >= {"put", "get", "put_many", "get_many"}
    assert seen[-1][0] == "export" and seen[-1][1] == 2 and seen[-1][2] == 2   # flushed at shutdown
