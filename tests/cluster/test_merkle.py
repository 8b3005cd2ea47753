"""Properties of raykv.cluster.merkle: equal data <=> equal roots, diff finds exactly the differing leaves."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from raykv.cluster.merkle import MerkleTree, sibling_digest
from raykv.cluster.ring import TOKEN_SPACE, in_arc, key_token
from raykv.cluster.vclock import Sibling, VClock, merged_context, sync

arcs = st.one_of(
    st.tuples(st.integers(0, TOKEN_SPACE - 1), st.integers(0, TOKEN_SPACE - 1)),     # random, may wrap
    st.just((0, 0)), st.just((123, 123)),                                               # whole circle
    st.just((TOKEN_SPACE - 10, 20)), st.just((5, 9)),                                   # tiny arcs
)


def _items(data: dict[bytes, bytes]):
    return [(key_token(k), k, v) for k, v in data.items()]


def _keys_in(lo, hi, rng, n):
    out = {}
    while len(out) < n:
        k = b"k%d" % rng.randrange(10**9)
        if in_arc(key_token(k), lo, hi):
            out[k] = b"d" + k
    return out


def test_equal_data_equal_roots_in_any_order():
    data = {b"k%d" % i: b"v%d" % i for i in range(500)}
    items = _items(data)
    a = MerkleTree.build(0, 0, items)
    b = MerkleTree.build(0, 0, list(reversed(items)))
    assert a.root == b.root and a.diff(b) == [] and a == b and a.count == 500
    c = MerkleTree.build(0, 0, _items({**data, b"k1": b"changed"}))
    assert c.root != a.root
    assert MerkleTree.build(0, 0, []).root == MerkleTree.build(0, 0, []).root


@settings(max_examples=80, deadline=None)
@given(arcs, st.integers(0, 8), st.integers(0, 2**32), st.integers(0, 40), st.integers(0, 8))
def test_diff_is_exact_at_leaf_granularity(arc, depth, seed, n, changes):
    lo, hi = arc
    rng = random.Random(seed)
    width = (hi - lo) % TOKEN_SPACE or TOKEN_SPACE
    offsets = {rng.randrange(width) for _ in range(n)}          # synthetic tokens inside the arc
    base = {(lo + 1 + o) % TOKEN_SPACE: b"d" for o in offsets}
    other = dict(base)
    for t in rng.sample(sorted(base), min(changes, len(base))):
        if rng.random() < 0.5:
            del other[t]
        else:
            other[t] = b"new"
    for _ in range(changes % 3):
        other[(lo + 1 + rng.randrange(width)) % TOKEN_SPACE] = b"added"
    a_items = [(t, b"t%d" % t, v) for t, v in base.items()]
    b_items = [(t, b"t%d" % t, v) for t, v in other.items()]
    a = MerkleTree.build(lo, hi, a_items, depth)
    b = MerkleTree.build(lo, hi, b_items, depth)
    da = {t: (k, v) for t, k, v in a_items}
    db = {t: (k, v) for t, k, v in b_items}
    differing = {t for t in set(da) | set(db) if da.get(t) != db.get(t)}
    diff = a.diff(b)
    assert diff == b.diff(a)
    assert (diff == []) == (not differing) == (a.root == b.root)
    for t in differing:                                 # nothing differing is missed
        assert any(in_arc(t, x, y) for x, y in diff)
    leaves_hit = {a.bucket(t) for t in differing}
    covered = sum((y - x) % TOKEN_SPACE or TOKEN_SPACE for x, y in diff)
    expect = sum(a._leaf_width(i) for i in leaves_hit)
    assert covered == expect                            # and only differing leaves are reported
    for x, y in diff:
        assert in_arc(y, lo, hi) and (x == lo or in_arc(x, lo, hi))


@settings(max_examples=40, deadline=None)
@given(arcs, st.integers(0, 12))
def test_leaves_partition_the_arc(arc, depth):
    lo, hi = arc
    t = MerkleTree.build(lo, hi, [], depth)
    width = (hi - lo) % TOKEN_SPACE or TOKEN_SPACE
    pos = lo
    total = 0
    for i in range(0, 1 << depth, max(1, (1 << depth) // 64)):
        x, y = t.leaf_range(i)
        total += t._leaf_width(i)
        assert (y - x) % TOKEN_SPACE == t._leaf_width(i) % TOKEN_SPACE
    assert t.leaf_range(0)[0] == lo and t.leaf_range((1 << depth) - 1)[1] == hi
    if (1 << depth) <= 64:
        assert total == width
    for i in range(1, min(1 << depth, 64)):
        assert t.leaf_range(i)[0] == t.leaf_range(i - 1)[1]
    if width < TOKEN_SPACE:
        with pytest.raises(ValueError):
            t.bucket(lo)                                # lo itself is outside (lo, hi]
    assert t.bucket(hi) == (1 << depth) - 1 or t._leaf_width((1 << depth) - 1) == 0


def test_wire_roundtrip_and_compactness():
    rng = random.Random(7)
    data = _keys_in(100, 2**63, rng, 40)
    t = MerkleTree.build(100, 2**63, _items(data))
    blob = t.to_bytes()
    back = MerkleTree.from_bytes(blob)
    assert back == t and back.count == 40 and back.diff(t) == []
    assert len(blob) < 40 * 16 + 128 + 64                   # bitmap + non-empty leaves only
    full = MerkleTree.build(0, 0, _items({b"k%d" % i: b"v" for i in range(20000)}))
    assert len(full.to_bytes()) <= 16 * 1024 + 128 + 64
    assert MerkleTree.from_bytes(full.to_bytes()).root == full.root
    for bad in (blob[:-1], blob + b"x", b"", b"\x09" + blob[1:]):
        with pytest.raises(ValueError):
            MerkleTree.from_bytes(bad)
    with pytest.raises(ValueError):
        t.diff(MerkleTree.build(100, 2**63, [], depth=9))
    with pytest.raises(ValueError):
        MerkleTree.build(0, 10, [(11, b"k", b"d")])


def test_anti_entropy_round_converges_replicas():
    rng = random.Random(3)
    lo, hi = 2**60, 2**62
    truth = _keys_in(lo, hi, rng, 300)
    r1 = dict(truth)
    r2 = dict(truth)
    for k in rng.sample(sorted(truth), 30):
        del r2[k]
    for k in rng.sample(sorted(truth), 10):
        r1[k] = b"newer"
    t1, t2 = MerkleTree.build(lo, hi, _items(r1)), MerkleTree.build(lo, hi, _items(r2))
    diff = t1.diff(t2)
    moved = {k for k in r1 if any(in_arc(key_token(k), x, y) for x, y in diff)}
    assert len(moved) < 120                              # only the differing leaves travel
    for k in moved:
        r2[k] = r1[k]
    assert MerkleTree.build(lo, hi, _items(r2)).root == t1.root


def test_build_cost():
    items = _items({b"key-%d" % i: b"0123456789abcdef" for i in range(20000)})
    start = time.perf_counter()
    MerkleTree.build(0, 0, items, depth=10)
    assert time.perf_counter() - start < 2.0             # ~60 ms measured


def _s(actor, n, value=b"v", ctx=None):
    return Sibling((actor, n), ctx or VClock(), value, 1.0)


def test_sibling_digest_is_order_independent_and_sensitive():
    a, b = _s("a", 1), _s("b", 1, b"w")
    assert sibling_digest([a, b]) == sibling_digest([b, a])
    assert sibling_digest([a]) != sibling_digest([a, b])
    assert sibling_digest([a]) != sibling_digest([_s("a", 1, b"other")])
    assert sibling_digest([_s("a", 1, None)]) != sibling_digest([_s("a", 1, b"")])    # tombstone != empty value
    assert sibling_digest([a]) != sibling_digest([_s("a", 2)])
    assert len(sibling_digest([])) == 16
    newer = _s("c", 1, b"x", merged_context([a]))
    assert sibling_digest(sync([a], [newer])) == sibling_digest([newer])
