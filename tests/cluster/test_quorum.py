"""Properties of raykv.cluster.quorum: presets, validation errors, the decision function, read repair plans."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from raykv.cluster.config import StoreConfig
from raykv.cluster.quorum import (MODES, PRESETS, SLOT_BITS, KeyTallies, Quorum, Tally, majority, read_quorum,
                                  read_repair_plan, write_quorum)
from raykv.cluster.vclock import Sibling, VClock, merged_context, sync
from raykv.errors import InvalidArgument

CFG = StoreConfig(replicas=3, read_quorum=2, write_quorum=2)
DC_CFG = StoreConfig(replicas=5, read_quorum=3, write_quorum=3, dc_replicas={"us": 3, "eu": 2},
                     local_datacenter="us")


def test_presets_and_defaults():
    assert read_quorum(CFG) == Quorum(3, 2, "count")
    assert write_quorum(CFG.with_(write_quorum=3)).required == 3
    assert [read_quorum(CFG, consistency=c).required for c in ("one", "quorum", "all")] == [1, 2, 3]
    assert write_quorum(CFG, consistency="QUORUM").required == 2
    assert read_quorum(StoreConfig(replicas=5, read_quorum=3, write_quorum=3), consistency="quorum").required == 3
    assert write_quorum(CFG, w=3) == Quorum(3, 3, "count")
    lq = read_quorum(DC_CFG, consistency="local_quorum")
    assert (lq.mode, lq.local_dc, lq.required) == ("local_quorum", "us", 2)
    assert read_quorum(DC_CFG, consistency="local_quorum", local_dc="eu").required == 2
    eq = write_quorum(DC_CFG, consistency="each_quorum")
    assert eq.mode == "each_quorum" and eq.dc_required() == {"us": 2, "eu": 2}
    assert set(PRESETS) == {"one", "quorum", "all", "local_quorum", "each_quorum"}


@pytest.mark.parametrize("call, fragment", [
    (lambda: read_quorum(CFG, r=4), "exceeds the number of replicas N=3"),
    (lambda: write_quorum(CFG, w=0), "w=0 is not allowed"),
    (lambda: write_quorum(CFG, w=-1), "at least 1"),
    (lambda: read_quorum(CFG, r=True), "must be an integer"),
    (lambda: read_quorum(CFG, r=2.0), "must be an integer"),
    (lambda: read_quorum(CFG, r=2, consistency="one"), "not both"),
    (lambda: read_quorum(CFG, consistency="most"), "unknown consistency 'most'"),
    (lambda: read_quorum(CFG, consistency="local_quorum"), "needs datacenters"),
    (lambda: write_quorum(CFG, consistency="each_quorum"), "needs datacenters"),
    (lambda: read_quorum(DC_CFG.with_(local_datacenter=None), consistency="local_quorum"), "local_datacenter"),
    (lambda: read_quorum(DC_CFG, consistency="local_quorum", local_dc="asia"), "holds no replicas"),
    (lambda: Quorum(3, 2, "weird"), "mode"),
])
def test_validation_errors_are_clear(call, fragment):
    with pytest.raises(InvalidArgument) as e:
        call()
    assert fragment in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 7), st.data())
def test_count_decision_matches_brute_force(n, data):
    required = data.draw(st.integers(1, n))
    replicas = [f"n{i}" for i in range(n)]
    t = Tally(Quorum(n, required), replicas, {})
    events = data.draw(st.lists(st.tuples(st.sampled_from(replicas + ["stranger"]), st.booleans()), max_size=12))
    acked, failed = set(), set()
    for node, ok in events:
        if node != "stranger" and node not in acked | failed:
            (acked if ok else failed).add(node)
        t.ack(node) if ok else t.fail(node)
        expect = ("ok" if len(acked) >= required else
                  "fail" if n - len(failed) < required else "wait")
        assert t.decision() == expect
        assert (t.acked, t.failed) == (len(acked), len(failed))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.sampled_from(MODES), st.data())
def test_key_tallies_decide_exactly_like_one_tally_per_key(n, mode, data):
    """A round's struct-of-arrays ``KeyTallies`` (count mode: three int lists, no object per key; ``ack_slots``,
    the hot path, included) agrees with one ``Tally`` per key on every event sequence, duplicates included."""
    dcs = {"a": n - n // 2, "b": n // 2} if n > 1 else {"a": 1}
    if mode == "count":
        q = Quorum(n, data.draw(st.integers(1, n)))
    elif mode == "local_quorum":
        q = Quorum(n, majority(dcs["a"]), mode, "a", dcs)
    else:
        q = Quorum(n, sum(majority(k) for k in dcs.values()), mode, None, dcs)
    keys = data.draw(st.integers(1, 4))
    prefs = [tuple(f"n{i}" for i in range(data.draw(st.integers(0, n)))) for _ in range(keys)]
    dc_of = {f"n{i}": ("a" if i < dcs["a"] else "b") for i in range(n)}
    full = [Tally(q, list(p), dc_of) for p in prefs]
    vec = KeyTallies(q, prefs, dc_of)
    events = data.draw(st.lists(st.tuples(st.integers(0, keys - 1), st.integers(0, n), st.sampled_from(
        ("ack", "fail", "ack_slots"))), max_size=20))
    for i, j, what in events:
        if j >= len(prefs[i]):
            continue
        slot = i << SLOT_BITS | j
        node = prefs[i][j]
        if what == "fail":
            full[i].fail(node)
            vec.report(slot, False)
        else:
            full[i].ack(node)
            vec.ack_slots([slot]) if what == "ack_slots" else vec.report(slot, True)
        assert [vec.decision(k) for k in range(keys)] == [t.decision() for t in full]
        assert vec.undecided == sum(t.decision() == "wait" for t in full)
        assert vec.not_ok() == [k for k, t in enumerate(full) if t.decision() != "ok"]
        assert [vec.acks(k) for k in range(keys)] == [t.acked for t in full]
        assert [vec.missing(k) for k in range(keys)] == [t.missing() for t in full]


def test_key_tallies_ack_slots_credits_a_whole_reply():
    q = Quorum(3, 2)
    prefs = [("a", "b", "c")] * 4 + [("a",)]            # the last key has fewer replicas than W: failed at once
    vec = KeyTallies(q, prefs, {})
    assert vec.undecided == 4 and vec.decision(4) == "fail"
    vec.ack_slots([i << SLOT_BITS | 0 for i in range(4)])             # node a answered for keys 0-3
    assert vec.undecided == 4
    vec.ack_slots([i << SLOT_BITS | 0 for i in range(4)])             # a duplicate reply counts nothing
    assert vec.undecided == 4 and vec.acks(0) == 1
    vec.ack_slots([i << SLOT_BITS | 2 for i in range(3)])             # node c for keys 0-2
    assert vec.undecided == 1 and vec.not_ok() == [3, 4]
    assert vec.missing(3) == "1/2 acks, 0 failed, 2 pending"
    wide = KeyTallies(Quorum(64, 64), [tuple(f"n{j}" for j in range(64))], {})     # 6 position bits: N <= 64
    wide.ack_slots(list(range(64)))
    assert wide.decision(0) == "ok" and wide.undecided == 0
    with pytest.raises(InvalidArgument, match="at most 64 replicas"):
        KeyTallies(Quorum(65, 1), [tuple(f"n{j}" for j in range(65))], {})


def test_fail_is_declared_as_soon_as_success_is_impossible():
    t = Tally(Quorum(3, 2), ["a", "b", "c"], {})
    t.fail("a")
    assert t.decision() == "wait"
    t.fail("b")
    assert t.decision() == "fail"                 # c alone cannot make 2
    t2 = Tally(Quorum(3, 3), ["a", "b"], {})      # ring smaller than N
    assert t2.decision() == "fail"
    t3 = Tally(Quorum(3, 2), ["a", "b", "c"], {})
    t3.fail("a"), t3.fail("b")
    t3.add_replica("fallback")                    # sloppy quorum widens the request
    assert t3.decision() == "wait"
    t3.ack("c"), t3.ack("fallback")
    assert t3.decision() == "ok" and t3.acked_nodes == ["c", "fallback"]


def test_local_quorum_counts_only_local_acks():
    q = write_quorum(DC_CFG, consistency="local_quorum")
    dc_of = {"u1": "us", "u2": "us", "u3": "us", "e1": "eu", "e2": "eu"}
    t = Tally(q, list(dc_of), dc_of)
    t.ack("e1"), t.ack("e2")
    assert t.decision() == "wait"                # eu acks do not count toward us
    t.ack("u1")
    assert t.decision() == "wait"
    t.fail("u2")
    t.ack("u3")
    assert t.decision() == "ok"
    # a whole remote DC down does not matter
    t = Tally(q, list(dc_of), dc_of)
    t.fail("e1"), t.fail("e2"), t.ack("u1"), t.ack("u2")
    assert t.decision() == "ok"
    t = Tally(q, list(dc_of), dc_of)
    t.fail("u1"), t.fail("u2")
    assert t.decision() == "fail"


def test_each_quorum_needs_every_datacenter():
    q = write_quorum(DC_CFG, consistency="each_quorum")
    dc_of = {"u1": "us", "u2": "us", "u3": "us", "e1": "eu", "e2": "eu"}
    t = Tally(q, list(dc_of), dc_of)
    for node in ("u1", "u2", "u3", "e1"):
        t.ack(node)
    assert t.decision() == "wait"
    t.ack("e2")
    assert t.decision() == "ok"
    t = Tally(q, list(dc_of), dc_of)
    t.ack("u1"), t.ack("u2"), t.fail("e1")
    assert t.decision() == "fail"                # eu cannot reach 2 any more
    assert "eu: 0/2" in t.missing()


def test_every_count_quorum_intersects_when_r_plus_w_exceeds_n():
    for n in range(1, 6):
        for r, w in itertools.product(range(1, n + 1), repeat=2):
            if r + w > n:
                for rs in itertools.combinations(range(n), r):
                    for ws in itertools.combinations(range(n), w):
                        assert set(rs) & set(ws)


def _s(actor, n, ctx=None, value=b"v"):
    return Sibling((actor, n), ctx or VClock(), value, float(n))


def test_read_repair_plan_merges_and_names_stale_replicas():
    a1 = _s("a", 1)
    b1 = _s("b", 1)                              # concurrent with a1
    newer = _s("c", 1, merged_context([a1]))     # supersedes a1
    replies = {"n1": [a1], "n2": sync([a1], [b1]), "n3": [newer], "n4": sync([b1], [newer])}
    merged, stale = read_repair_plan(replies)
    assert merged == [b1, newer]
    assert stale == ["n1", "n2", "n3"]           # n4 already holds exactly the merge
    merged, stale = read_repair_plan({"x": [a1], "y": [a1]})
    assert merged == [a1] and stale == []
    assert read_repair_plan({"x": [], "y": [a1]}) == ([a1], ["x"])
    assert read_repair_plan({}) == ([], [])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["n1", "n2", "n3"]),
                       st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 4)), max_size=4), min_size=1))
def test_read_repair_converges(raw):
    replies = {node: sync([], [_s(a, k) for a, k in dots]) for node, dots in raw.items()}
    merged, stale = read_repair_plan(replies)
    repaired = {node: (sync(sibs, merged) if node in stale else sibs) for node, sibs in replies.items()}
    assert all(s == merged for s in repaired.values())
    assert read_repair_plan(repaired)[1] == []
