"""Datacenter labels on real Ray: replicas spread per dc_replicas; a whole DC down keeps local_quorum working."""

import pytest
import ray

import raykv
from raykv.actors.client import get_manager

pytestmark = pytest.mark.ray


def test_replicas_per_datacenter_and_losing_a_whole_datacenter(ray_session, store_dir):
    kv = raykv.start(name="dcs", nodes=6, replicas=3, read_quorum=2, write_quorum=2, data_dir=store_dir,
                     datacenters=["us", "us", "us", "eu", "eu", "eu"], dc_replicas={"us": 2, "eu": 1},
                     local_datacenter="us", request_timeout=2.0)
    st = kv.status()
    assert {n.node_id: n.datacenter for n in st.nodes} == {"n1": "us", "n2": "us", "n3": "us",
                                                            "n4": "eu", "n5": "eu", "n6": "eu"}
    kv.put(b"k", b"v", consistency="each_quorum")
    holders = []
    for n in st.nodes:
        h = ray.get_actor(n.actor_name, namespace="raykv")
        if ray.get(h.call.remote("get_batch", [b"k"]))[0]:
            holders.append(n.datacenter)
    assert sorted(holders) == ["eu", "us", "us"]

    mgr = get_manager("dcs")
    for nid in ("n4", "n5", "n6"):                      # the whole eu datacenter goes down
        ray.get(mgr.kill_node.remote(nid))
    for i in range(50):
        kv.put(b"dc%d" % i, b"x", consistency="local_quorum")
    assert all(kv.get(b"dc%d" % i, consistency="local_quorum") == b"x" for i in range(50))
    with pytest.raises(raykv.QuorumNotReached):         # hints held in "us" do not count for "eu"
        kv.put(b"each", b"x", consistency="each_quorum")
    kv.shutdown()
