"""The traffic-based scaling policy (pure) and the rate tracker (no Ray needed)."""

import pytest

import raykv
from raykv.actors.scaler import ScalePolicy, Scaler, decide, node_traffic

P = ScalePolicy(up_ops=1000, down_ops=100, min_machines=3, max_machines=8, cooldown=30)


def test_hot_store_asks_for_enough_machines():
    assert decide(3500, 3, P, 999) == 4          # 1167/machine > 1000: one more at least
    assert decide(7900, 3, P, 999) == 8          # enough to get under up_ops
    assert decide(50_000, 3, P, 999) == 8        # capped at max_machines
    assert decide(50_000, 8, P, 999) == 8        # at max_machines already: no ninth (it asked for 9)
    assert decide(50_000, 7, P, 999) == 8


def test_idle_store_shrinks_one_machine_at_a_time_down_to_the_minimum():
    assert decide(100, 6, P, 999) == 5
    assert decide(0, 3, P, 999) == 3


def test_hysteresis_band_and_cooldown_hold_steady():
    assert decide(4 * 500, 4, P, 999) == 4        # between down_ops and up_ops
    assert decide(50_000, 3, P, 10) == 3          # inside the cooldown
    assert decide(0, 2, P, 0) == 3                # below the minimum: always fix


def test_bad_policy_is_rejected():
    with pytest.raises(raykv.InvalidArgument, match="down_ops < up_ops"):
        ScalePolicy(up_ops=10, down_ops=10)
    with pytest.raises(raykv.InvalidArgument, match="min_machines"):
        ScalePolicy(min_machines=5, max_machines=4)


def test_rate_comes_from_cumulative_coordinator_counters(monkeypatch):
    calls = []
    import ray.autoscaler.sdk as sdk
    monkeypatch.setattr(sdk, "request_resources", lambda **kw: calls.append(kw))
    s = Scaler(ScalePolicy(up_ops=1000, down_ops=100, min_machines=3, max_machines=8, cooldown=0))
    st = lambda r, w: [{"coord_id": "c1", "counters": {"keys_read": r, "keys_written": w}}]  # noqa: E731
    assert s.step(st(0, 0), 3, now=0.0) == 3
    assert s.step(st(10_000, 5_000), 3, now=1.0) == 8      # 15k key ops/s over 3 machines
    assert s.rate == 15_000
    assert calls[-1] == {"bundles": [{"raykv_storage": 0.6}] * 8}
    assert s.step(st(10_000, 5_000), 8, now=2.0) == 7      # idle now: shrink


def test_a_pending_scale_up_is_not_cancelled_while_the_machine_starts(monkeypatch):
    """Between the request and the new machine's first storage node, the store still has ``machines`` machines;
    a rate inside the hysteresis band must keep the standing request, not shrink it back to ``machines``."""
    calls = []
    import ray.autoscaler.sdk as sdk
    monkeypatch.setattr(sdk, "request_resources", lambda **kw: calls.append(len(kw["bundles"])))
    s = Scaler(ScalePolicy(up_ops=1000, down_ops=100, min_machines=1, max_machines=8, cooldown=0))
    st = lambda w: [{"coord_id": "c1", "counters": {"keys_read": 0, "keys_written": w}}]  # noqa: E731
    s.step(st(0), 1, now=0.0)
    assert s.step(st(1_500), 1, now=1.0) == 2            # hot: ask for a second machine
    assert s.step(st(2_000), 1, now=2.0) == 1            # 500 ops/s: in the band, the machine is not there yet
    assert s.step(st(2_500), 2, now=3.0) == 2            # it arrived
    assert calls == [1, 2]                               # never back to 1 in between
    assert s.step(st(2_500), 2, now=4.0) == 1            # idle: shrink, which is a new request
    assert calls == [1, 2, 1]


def test_traffic_is_counted_at_the_storage_nodes_divided_by_n(monkeypatch):
    """Client-routed requests never touch a coordinator, so the rate comes from the nodes: each client key op
    reaches N replicas."""
    import ray.autoscaler.sdk as sdk
    monkeypatch.setattr(sdk, "request_resources", lambda **kw: None)
    s = Scaler(ScalePolicy(up_ops=1000, down_ops=100, min_machines=3, max_machines=8, cooldown=0))
    nodes = lambda g, p: [{"node_id": f"n{i}", "counters": {"gets": g, "puts": p}} for i in range(5)]  # noqa: E731
    assert node_traffic(nodes(30, 60), 3)[0]["counters"] == {"keys_read": 10.0, "keys_written": 20.0}
    s.step(node_traffic(nodes(0, 0), 3), 3, now=0.0)
    s.step(node_traffic(nodes(3_000, 6_000), 3), 3, now=1.0)     # 5 nodes x 9k replica ops / 3 = 15k key ops
    assert s.rate == 15_000


def test_each_coordinator_takes_the_datacenter_of_its_machine():
    from raykv.actors.manager import coordinator_config
    from raykv.cluster.config import StoreConfig
    nodes = {"n1": {"machine": "A", "datacenter": "us"}, "n2": {"machine": "A", "datacenter": "us"},
             "n3": {"machine": "B", "datacenter": "eu"}, "n4": {"machine": "C", "datacenter": "us"},
             "n5": {"machine": "C", "datacenter": "eu"}, "n6": {"machine": "D", "datacenter": None}}
    cfg = StoreConfig(replicas=3, dc_replicas={"us": 2, "eu": 1})
    assert coordinator_config(cfg, nodes, "A").local_datacenter == "us"
    assert coordinator_config(cfg, nodes, "B").local_datacenter == "eu"
    assert coordinator_config(cfg, nodes, "C").local_datacenter is None      # mixed machine: no guess
    assert coordinator_config(cfg, nodes, "D").local_datacenter is None
    fixed = cfg.with_(local_datacenter="eu")
    assert coordinator_config(fixed, nodes, "A").local_datacenter == "eu"    # the store's choice wins
