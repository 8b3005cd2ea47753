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


def test_a_corrupt_data_file_is_reported_with_file_and_offset_and_the_store_keeps_serving(ray_session, store_dir):
    import glob
    import os

    kv = raykv.start(name="corrupt", nodes=3, replicas=3, read_quorum=2, write_quorum=2, data_dir=store_dir)
    for i in range(30):
        kv.put(b"c%02d" % i, b"value-%d" % i, w=3)
    mgr = get_manager("corrupt")
    ray.get(mgr.kill_node.remote("n1"))                     # abrupt: the writes live only in n1's WAL
    logs = sorted(glob.glob(os.path.join(store_dir, "n1", "**", "*.log"), recursive=True),
                  key=os.path.getsize)
    assert logs, os.listdir(os.path.join(store_dir, "n1"))
    wal = logs[-1]
    with open(wal, "r+b") as f:                              # flip a byte inside the first record
        f.seek(12)
        b = f.read(1)
        f.seek(12)
        f.write(bytes([b[0] ^ 0xFF]))
    ray.get(mgr.restart_node.remote("n1"))
    n1 = next(n for n in kv.status().nodes if n.node_id == "n1")
    assert not n1.alive
    err = n1.extra.get("error", "")
    assert "corrupt data in" in err and os.path.basename(wal) in err and "byte offset" in err, err
    assert all(kv.get(b"c%02d" % i) == b"value-%d" % i for i in range(30))   # R=2 from n2 and n3
    kv.put(b"after", b"x")                                    # W=2 via n2, n3 (+ a fallback hint)
    assert kv.get(b"after") == b"x"
    kv.shutdown()
