"""Failures on real Ray: SIGKILLed storage actors (and coordinator) mid workload, nodes down with sloppy quorum
and hinted handoff."""

import os
import signal
import threading
import time

import pytest
import ray

import raykv
from raykv.actors.client import get_manager
from raykv.cluster.ring import NodeInfo, Ring
from tests.ray.conftest import wait_for

pytestmark = pytest.mark.ray


def node_handle(kv, node_id):
    return ray.get_actor(f"raykv:{kv.name}:node:{node_id}", namespace="raykv")


def pid_of(kv, node_id):
    return ray.get(node_handle(kv, node_id).pid.remote(), timeout=30)


def hints_pending(kv):
    return sum(n.hints_pending or 0 for n in kv.status().nodes)


def replicas_holding(kv, key, node_ids):
    """Node ids whose local storage (not a hint) holds ``key``, asked directly."""
    out = []
    for nid in node_ids:
        sibs = ray.get(node_handle(kv, nid).call.remote("get_batch", [key]), timeout=30)[0]
        if sibs:
            out.append(nid)
    return out


def test_sigkilled_storage_actors_lose_no_acknowledged_write(ray_session, store_dir):
    kv = raykv.start(name="crash", nodes=5, replicas=3, read_quorum=2, write_quorum=2, data_dir=store_dir,
                     request_timeout=2.0, anti_entropy_interval=3.0)
    via_coord = raykv.connect(name="crash", routing="coordinator")     # the same store through its coordinator
    handles = {"client": kv, "coordinator": via_coord}
    acked: dict[bytes, bytes] = {}
    count = {"client": 0, "coordinator": 0}
    failures: list[Exception] = []
    stop = threading.Event()

    def writer(tag, routing):
        i = 0
        while not stop.is_set():
            key, value = b"w%d-%06d" % (tag, i), b"value-%d" % i
            try:
                handles[routing].put(key, value, w=2)
                acked[key] = value
                count[routing] += 1
            except raykv.RayKVError as e:
                failures.append(e)
            i += 1

    threads = [threading.Thread(target=writer, args=(t, ("client", "coordinator")[t % 2])) for t in range(4)]
    for t in threads:
        t.start()
    try:
        for victim in ("n2", "n4", "n1"):      # one at a time
            time.sleep(1.0)
            old = pid_of(kv, victim)
            before = dict(count)
            os.kill(old, signal.SIGKILL)
            new = wait_for(lambda: _safe_pid(kv, victim) not in (None, old) and _safe_pid(kv, victim), 60,
                           what=f"{victim} restarted by Ray")
            assert new != old
            for routing in count:
                wait_for(lambda: count[routing] > before[routing] + 25, 30,
                         what=f"{routing}-routed writes continuing around {victim}")
        # the (only) coordinator too: its clients retry until Ray has restarted it; client routing never noticed
        coord = via_coord._client.coordinators[0]
        old = ray.get(coord.status.remote())["pid"]
        before = dict(count)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: count["coordinator"] > before["coordinator"] + 50, 60,
                 what="coordinator-routed writes continuing after the coordinator crash")
        assert ray.get(coord.status.remote())["pid"] != old
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) > 500
    assert not failures, f"{len(failures)} writes failed at W=2 with one node down: {failures[:3]}"
    wait_for(lambda: hints_pending(kv) == 0, 60, what="hints handed back")
    keys = list(acked)
    got = {}
    for lo in range(0, len(keys), 1000):
        got.update(kv.get_many(keys[lo:lo + 1000], consistency="all"))
    missing = [k for k in keys if got.get(k) != acked[k]]
    assert not missing, f"{len(missing)} acknowledged writes not read back at R=N: {missing[:5]}"
    kv.shutdown()


def _safe_pid(kv, node_id):
    try:
        return ray.get(node_handle(kv, node_id).pid.remote(), timeout=2)
    except Exception:
        return None


def test_two_nodes_down_writes_at_w3_go_through_sloppy_quorum_and_hints_reach_the_replicas(ray_session, store_dir):
    kv = raykv.start(name="sloppy", nodes=5, replicas=3, read_quorum=2, write_quorum=3, data_dir=store_dir,
                     request_timeout=2.0, hint_replay_interval=0.5, anti_entropy_interval=3600.0)
    mgr = get_manager("sloppy")
    down = ["n2", "n4"]
    for nid in down:
        ray.get(mgr.kill_node.remote(nid))
    data = {b"s%04d" % i: b"v%d" % i for i in range(300)}
    for k, v in data.items():
        kv.put(k, v, w=3)                      # each succeeds though up to two of its replicas are down
    kv.put_many({b"batch%03d" % i: b"b" for i in range(100)}, w=3)
    st = kv.status()
    assert sorted(n.node_id for n in st.nodes if not n.alive) == down
    assert hints_pending(kv) > 0, "the fallbacks should hold hints for the dead replicas"

    for nid in down:
        ray.get(mgr.restart_node.remote(nid))
    wait_for(lambda: hints_pending(kv) == 0, 60, what="every hint delivered")
    st = kv.status()
    assert all(n.alive for n in st.nodes)
    delivered = sum(n.extra.get("counters", {}).get("hints_delivered", 0) for n in st.nodes)
    assert delivered > 0

    ring = Ring([NodeInfo(n.node_id, n.weight, n.datacenter, n.ray_node_id) for n in st.nodes],
                kv.config.tokens_per_node)
    ids = [n.node_id for n in st.nodes]
    checked = 0
    for key in list(data)[:60]:
        pref = ring.preference_list(key, 3)
        if not set(pref) & set(down):
            continue
        holders = replicas_holding(kv, key, ids)
        assert set(pref) <= set(holders), f"{key!r}: replicas {pref}, held by {holders}"
        checked += 1
    assert checked > 10
    assert kv.get_many(list(data), consistency="all") == data

    for nid in ("n1", "n2", "n3", "n4"):          # one node left: no quorum of 2 can be reached
        ray.get(mgr.kill_node.remote(nid))
    with pytest.raises(raykv.QuorumNotReached, match=r"put: only [01] of 3 replicas answered, 2 required") as e:
        kv.put(b"s0001", b"new", w=2)
    assert e.value.acked < 2 and (e.value.required, e.value.asked) == (2, 3)
    assert "consistency='one'" in str(e.value)
    with pytest.raises(raykv.QuorumNotReached, match=r"required"):
        kv.get(b"s0001", r=3)
    kv.shutdown()


def test_a_dead_node_is_removed_and_anti_entropy_restores_n_copies(ray_session, store_dir):
    """``remove_node`` of a node that is down for good (Cassandra's removenode): no streaming from it; its
    ranges pass to their next owners and Merkle anti-entropy copies them from the surviving replicas."""
    kv = raykv.start(name="removedead", nodes=5, replicas=3, read_quorum=2, write_quorum=3, data_dir=store_dir,
                     request_timeout=2.0, anti_entropy_interval=0.5)
    mgr = get_manager("removedead")
    data = {b"r%04d" % i: b"v%d" % i for i in range(200)}
    kv.put_many(data, w=3)
    ray.get(mgr.kill_node.remote("n3"))
    kv.remove_node("n3")
    st = kv.status()
    assert sorted(n.node_id for n in st.nodes) == ["n1", "n2", "n4", "n5"] and all(n.alive for n in st.nodes)
    ring = Ring([NodeInfo(n.node_id, n.weight, n.datacenter, n.ray_node_id) for n in st.nodes],
                kv.config.tokens_per_node)

    def fully_replicated():
        return all(len(replicas_holding(kv, k, ring.preference_list(k, 3))) == 3 for k in list(data)[::10])
    try:
        wait_for(fully_replicated, 90, every=1.0, what="anti-entropy restoring 3 copies on the 4 remaining nodes")
    except AssertionError as e:     # intermittent in full suites (2 of 7 on 2026-11-27): say what each node saw
        views = {}
        for n in ring.nodes:
            s = ray.get(node_handle(kv, n).status.remote(), timeout=30)
            entry = [w for w in ray.get(node_handle(kv, n).call.remote("gossip", []), timeout=30) if w[0] == "n3"]
            views[n] = (s["status"], {c: s["counters"][c] for c in ("anti_entropy_rounds", "anti_entropy_repairs",
                                                                    "anti_entropy_deferred")}, s["members"], entry)
        short = {k: replicas_holding(kv, k, ring.preference_list(k, 3)) for k in list(data)[::10]}
        raise AssertionError(f"{e}; per node (status, counters, members, n3's entry): {views}; holders of short keys: "
                             f"{ {k: v for k, v in short.items() if len(v) < 3} }") from None
    assert kv.get_many(list(data), consistency="all") == data
    kv.put(b"after", b"x", w=3)                          # N=3 on the four remaining nodes
    kv.shutdown()
