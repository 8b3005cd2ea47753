"""Properties of raykv.cluster.ring: balance, weights, minimal movement, preference lists, ranges, plans."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from raykv.cluster.ring import (
    TOKEN_SPACE, VECTOR_MIN, NodeInfo, Ring, Transfer, in_arc, key_token, movement_plan,
)
from raykv.errors import InvalidArgument

KEYS = [b"key-%d" % i for i in range(100_000)]


def _ring(n, tokens=256, **kw):
    return Ring([NodeInfo(f"node-{i}", **kw) for i in range(n)], tokens)


def test_key_token_is_blake2b_and_process_independent():
    expect = int.from_bytes(hashlib.blake2b(b"hello", digest_size=8).digest(), "big")
    assert key_token(b"hello") == expect and 0 <= expect < TOKEN_SPACE
    code = "from raykv.cluster.ring import key_token; print(key_token(b'hello'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert int(out) == expect


@pytest.mark.parametrize("nodes", [5, 10, 20])
def test_balance_at_256_tokens(nodes):
    own = _ring(nodes).ownership()
    assert abs(sum(own.values()) - 1.0) < 1e-9
    mean = 1 / nodes
    assert max(own.values()) / mean < 1.25          # measured 1.15 at 10 nodes (docs/architecture.md)
    assert min(own.values()) / mean > 0.75


def test_weights_are_proportional():
    r = Ring([NodeInfo("big", weight=2.0)] + [NodeInfo(f"n{i}") for i in range(4)], 256)
    assert len(r.tokens("big")) == 512 and len(r.tokens("n0")) == 256
    own = r.ownership()
    small = sum(own[f"n{i}"] for i in range(4)) / 4
    assert 1.7 < own["big"] / small < 2.3
    assert abs(own["big"] - 2 / 6) < 0.04
    with pytest.raises(InvalidArgument):
        Ring([NodeInfo("x", weight=0)])


def test_join_moves_keys_only_to_new_node_near_ideal():
    old = _ring(10)
    new = old.with_node(NodeInfo("node-10"))
    before = [old.primary(k) for k in KEYS]
    after = [new.primary(k) for k in KEYS]
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(a == "node-10" for _, a in moved)    # minimal movement: only TO the new node
    ideal = len(KEYS) / 11
    assert len(moved) <= 1.1 * ideal and len(moved) >= 0.9 * ideal, len(moved) / ideal


def test_join_movement_over_many_joins_averages_ideal():
    ratios = []
    ring = _ring(4)
    keys = KEYS[:20_000]
    for j in range(4, 12):
        new = ring.with_node(NodeInfo(f"node-{j}"))
        moved = sum(ring.primary(k) != new.primary(k) for k in keys)
        ratios.append(moved / (len(keys) / (j + 1)))
        ring = new
    assert 0.93 < sum(ratios) / len(ratios) < 1.07, ratios
    assert max(ratios) < 1.25, ratios


def test_preference_list_distinct_primary_first_and_cached_fast():
    r = _ring(10)
    for k in KEYS[:2000]:
        pl = r.preference_list(k, 3)
        assert len(pl) == 3 == len(set(pl))
        assert pl[0] == r.primary(k)
        assert pl == list(r.walk(key_token(k)))[:3]
    assert len(_ring(2).preference_list(b"x", 3)) == 2          # fewer nodes than n
    assert Ring().preference_list(b"x", 3) == []
    import timeit
    per_call = timeit.timeit(lambda: r.preference_list(b"hot-key", 3), number=20000) / 20000
    assert per_call < 20e-6                                     # ~1 us measured


@pytest.mark.parametrize("dc", [None, {"dc1": 2, "dc2": 1}])
def test_preference_tuples_bulk_path_agrees_with_preference_list(dc):
    """From ``VECTOR_MIN`` keys the segments come from one numpy search; the tuples must be exactly the
    per-key preference lists, also for keys whose token equals a ring token (bisect_left: that token's
    segment; the keys b"<node>#<j>" the tokens are made from) and keys past the last token (segment 0). Shared tuples: one object a segment."""
    nodes = [NodeInfo(f"n{i}", datacenter=None if dc is None else ("dc1" if i % 2 else "dc2")) for i in range(7)]
    r = Ring(nodes, 32)
    keys = KEYS[:3000]
    last = max(r._tokens)
    past = [k for k in KEYS[3000:60_000] if key_token(k) > last][:5]
    assert past, "some key hashes past the last token"
    on_token = [f"n{i}#{j}".encode() for i in range(7) for j in range(32)]    # the ring's own token names
    assert {key_token(k) for k in on_token} <= set(r._tokens)
    keys = keys + past + on_token
    bulk = r.preference_tuples(keys, 3, dc)
    assert len(keys) >= VECTOR_MIN
    assert [list(p) for p in bulk] == [r.preference_list(k, 3, dc) for k in keys]
    small = r.preference_tuples(keys[:VECTOR_MIN - 1], 3, dc)
    assert small == bulk[:VECTOR_MIN - 1]
    by_segment = {}
    for k, p in zip(keys, bulk):
        by_segment.setdefault(r.segment(key_token(k)), set()).add(id(p))
    assert all(len(ids) == 1 for ids in by_segment.values())
    assert Ring().preference_tuples(keys, 3) == [()] * len(keys)


def test_distinct_hosts_preferred_then_repeated():
    nodes = [NodeInfo(f"n{i}", host=f"h{i % 3}") for i in range(9)]
    r = Ring(nodes, 64)
    hosts = {n.node_id: n.host for n in nodes}
    for k in KEYS[:500]:
        assert len({hosts[x] for x in r.preference_list(k, 3)}) == 3
    two_hosts = Ring([NodeInfo(f"n{i}", host=f"h{i % 2}") for i in range(6)], 64)
    for k in KEYS[:500]:
        pl = two_hosts.preference_list(k, 3)
        assert len(set(pl)) == 3 and len({int(x[1:]) % 2 for x in pl}) == 2


def test_datacenter_placement_counts():
    nodes = [NodeInfo(f"a{i}", datacenter="dc1") for i in range(5)] + \
            [NodeInfo(f"b{i}", datacenter="dc2") for i in range(4)] + [NodeInfo("c0", datacenter="dc3")]
    r = Ring(nodes, 64)
    dc = {n.node_id: n.datacenter for n in nodes}
    for k in KEYS[:500]:
        pl = r.preference_list(k, 3, {"dc1": 2, "dc2": 1})
        assert sorted(dc[x] for x in pl) == ["dc1", "dc1", "dc2"] and len(set(pl)) == 3
        fb = r.fallbacks(k, 3, exclude={"a0"}, dc_replicas={"dc1": 2, "dc2": 1})
        assert not set(fb) & set(pl) and "a0" not in fb and "c0" not in fb
        assert len(fb) == 10 - 3 - 1 - ("a0" not in pl)   # minus pref, c0 (dc3), a0 unless in pref
    with pytest.raises(InvalidArgument):
        r.preference_list(b"x", 3, {"dc1": 1})


def test_fallbacks_follow_ring_order():
    r = _ring(8, 32)
    for k in KEYS[:200]:
        walk = list(r.walk(key_token(k)))
        pl = r.preference_list(k, 3)
        fb = r.fallbacks(k, 3, exclude={walk[4]})
        assert fb == [x for x in walk if x not in pl and x != walk[4]]


def test_ranges_cover_circle_and_match_primaries():
    r = _ring(6, 16)
    ranges = r.ranges()
    assert sum((hi - lo) % TOKEN_SPACE for lo, hi, _ in ranges) == TOKEN_SPACE
    for k in KEYS[:1000]:
        t = key_token(k)
        owners = [o for lo, hi, o in ranges if in_arc(t, lo, hi)]
        assert owners == [r.primary(k)]
    single = Ring([NodeInfo("only")], 1)
    assert single.ownership() == {"only": 1.0}
    lo, hi, o = single.ranges()[0]
    assert lo == hi and o == "only" and in_arc(12345, lo, hi)


ring_specs = st.lists(st.tuples(st.integers(0, 30), st.sampled_from([0.5, 1.0, 2.0]),
                                st.sampled_from([None, "h1", "h2", "h3"])), min_size=1, max_size=7, unique_by=lambda x: x[0])


def _from_spec(spec, tokens=8):
    return Ring([NodeInfo(f"n{i}", weight=w, host=h) for i, w, h in spec], tokens)


@settings(max_examples=60, deadline=None)
@given(ring_specs, st.integers(1, 4))
def test_replica_ranges_and_replicas_for_range_agree_with_preference_lists(spec, n):
    r = _from_spec(spec)
    rr = {nid: r.replica_ranges(nid, n) for nid in r.nodes}
    for k in KEYS[:300]:
        t = key_token(k)
        pl = r.preference_list(k, n)
        for nid in r.nodes:
            assert any(in_arc(t, lo, hi) for lo, hi in rr[nid]) == (nid in pl)
    for lo, hi, owner in r.ranges():
        reps = r.replicas_for_range(lo, hi, n)
        assert reps[0] == owner and reps == r.preference_list_for_token(hi, n)


@settings(max_examples=60, deadline=None)
@given(ring_specs, st.integers(1, 4), st.data())
def test_movement_plan_covers_exactly_the_gained_replicas(spec, n, data):
    old = _from_spec(spec)
    if data.draw(st.booleans()) or len(old) == 1:
        new = old.with_node(NodeInfo("joiner", weight=data.draw(st.sampled_from([0.5, 1.0, 2.0]))))
    else:
        new = old.without_node(data.draw(st.sampled_from(sorted(old.nodes))))
    plan = movement_plan(old, new, n)
    assert all(isinstance(t, Transfer) for t in plan)
    for k in KEYS[:300]:
        t = key_token(k)
        before, after = set(old.preference_list(k, n)), set(new.preference_list(k, n))
        hits = [x for x in plan if in_arc(t, x.lo, x.hi)]
        assert {x.target for x in hits} == after - before
        assert len(hits) == len(after - before)            # each gained replica streamed once
        for x in hits:
            assert x.source in before
            leaving = before - set(new.nodes)
            if leaving:
                assert x.source in leaving                 # the leaving node streams its own data away
    if "joiner" in new and all(h is None for _, _, h in spec):
        assert {x.target for x in plan} <= {"joiner"}       # a join only moves data TO the new node


def test_join_plan_targets_only_the_new_node_for_primaries():
    old = _ring(5, 64)
    new = old.with_node(NodeInfo("node-5"))
    plan = movement_plan(old, new, 1)
    assert plan and {x.target for x in plan} == {"node-5"}
    assert movement_plan(old, old, 3) == [] and movement_plan(Ring(), new, 3) == []


def test_ring_is_immutable_and_round_trips():
    r = _ring(4, 16)
    r2 = r.with_node(NodeInfo("x"))
    assert "x" in r2 and "x" not in r and len(r2) == 5 and len(r) == 4
    assert r2.without_node("x") == r and hash(r2.without_node("x")) == hash(r)
