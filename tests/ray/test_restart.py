"""A store outlives its actors: re-open on the same data_dir after shutdown or a crash; a second driver connects."""

import pytest
import ray

import raykv
from raykv.actors.client import get_manager
from tests.ray.conftest import run_driver

pytestmark = pytest.mark.ray


def test_shutdown_then_start_on_the_same_data_dir_reopens_everything(ray_session, store_dir):
    kv = raykv.start(name="reopen", nodes=4, replicas=3, data_dir=store_dir, resolver="lww")
    data = {b"r%04d" % i: b"v%d" % i for i in range(800)}
    kv.put_many(data)
    kv.put(b"single", b"s", ttl=3600)
    kv.add_node()                                   # membership changes are remembered too
    kv.shutdown()
    with pytest.raises(raykv.StoreNotFound):
        raykv.connect("reopen")

    kv = raykv.start(name="reopen", nodes=4, replicas=3, data_dir=store_dir)
    assert sorted(n.node_id for n in kv.status().nodes) == ["n1", "n2", "n3", "n4", "n5"]
    assert kv.get_many(list(data), consistency="all") == data
    assert kv.get(b"single") == b"s"
    assert kv._resolver == "lww", "the resolver is persisted with the store"
    with pytest.raises(raykv.InvalidArgument, match="holds store 'reopen', not 'other'"):
        raykv.start(name="other", nodes=4, data_dir=store_dir)
    kv.shutdown()
    with pytest.raises(raykv.InvalidArgument, match="replicas N=3"):
        raykv.start(name="reopen", nodes=4, replicas=2, read_quorum=1, write_quorum=1, data_dir=store_dir)


def test_a_crash_of_every_actor_loses_no_acknowledged_write(ray_session, store_dir):
    kv = raykv.start(name="crashall", nodes=3, replicas=3, data_dir=store_dir)
    data = {b"c%04d" % i: b"v%d" % i for i in range(500)}
    kv.put_many(data, w=3)
    for i in range(50):
        kv.put(b"one%d" % i, b"x")
    # no orderly shutdown: every actor is killed at once, memtables are not flushed (the WAL must serve)
    mgr = get_manager("crashall")
    for n in ("n1", "n2", "n3"):
        ray.kill(ray.get_actor(f"raykv:crashall:node:{n}", namespace="raykv"), no_restart=True)
    for c in ray.get(mgr.describe.remote())["coordinators"].values():
        ray.kill(ray.get_actor(c, namespace="raykv"), no_restart=True)
    ray.kill(mgr, no_restart=True)

    kv = raykv.start(name="crashall", nodes=3, replicas=3, data_dir=store_dir)
    assert kv.get_many(list(data), r=3) == data
    assert all(kv.get(b"one%d" % i, r=3) == b"x" for i in range(50))
    kv.shutdown()


def test_a_second_driver_process_reaches_the_store_with_connect(ray_session, store_dir):
    kv = raykv.start(name="shared", nodes=3, replicas=3, data_dir=store_dir)
    kv.put(b"from-first", b"1")
    address = ray.get_runtime_context().gcs_address
    out = run_driver(f"""
import raykv
kv = raykv.connect("shared", address={address!r})
assert kv.get(b"from-first") == b"1"
kv.put(b"from-second", b"2")
print("nodes", len(kv.status().nodes))
try:
    raykv.connect("not-here", address={address!r})
except raykv.StoreNotFound as e:
    print("notfound", e)
""")
    assert "nodes 3" in out and "notfound no raykv store named 'not-here'" in out
    assert kv.get(b"from-second") == b"2"
    kv.shutdown()
