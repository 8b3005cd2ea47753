"""Membership: gossip state merge (a semilattice), phi-accrual detector, status folding, rings by status."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raykv.cluster.membership import MemberState, Membership, PhiAccrualDetector, merge_views, removal, removed
from raykv.cluster.ring import NodeInfo

STATUS = st.sampled_from(["joining", "alive", "leaving", "left"])
ENTRY = st.builds(lambda nid, s, inc, hb, w: MemberState(NodeInfo(nid, w), s, inc, hb),
                  st.sampled_from(["a", "b", "c", "d"]), STATUS, st.integers(0, 3), st.integers(0, 5),
                  st.sampled_from([1.0, 2.0]))
VIEW = st.lists(ENTRY, max_size=6).map(lambda es: {e.info.node_id: e for e in es})


@settings(max_examples=200, deadline=None)
@given(VIEW, VIEW, VIEW)
def test_merge_is_a_semilattice(a, b, c):
    assert merge_views(a, b) == merge_views(b, a)
    assert merge_views(merge_views(a, b), c) == merge_views(a, merge_views(b, c))
    assert merge_views(a, a) == dict(sorted(a.items()))
    m = merge_views(a, b)
    for nid in m:   # the merge keeps the newest of each entry
        assert all(m[nid].order() >= v[nid].order() for v in (a, b) if nid in v)


def test_wire_round_trip():
    s = MemberState(NodeInfo("n1", 2.0, "dc1", "h1"), "leaving", 4, 17)
    assert MemberState.from_wire(s.to_wire()) == s


def test_phi_grows_with_silence_and_learns_the_rhythm():
    d = PhiAccrualDetector(initial_interval=1.0)
    t = 0.0
    for _ in range(50):
        d.heartbeat("x", t)
        t += 0.5
    assert abs(d.mean("x") - 0.5) < 0.05
    assert d.phi("x", t) < 1.0
    assert d.phi("x", t + 5.0) > 4.0 > d.phi("x", t + 1.0)
    assert d.phi("x", t + 20.0) > 8.0
    # a long silence is not learned as normal
    d.heartbeat("x", t + 100.0)
    assert d.mean("x") < 0.6
    assert d.phi("never-seen", 1e9) == 0.0


def _ms(nid, status="alive", **kw):
    return Membership(NodeInfo(nid, host=nid), status=status, incarnation=1, tokens_per_node=8, **kw)


def test_gossip_spreads_and_detector_folds_into_status():
    a, b = _ms("a"), _ms("b")
    a.merge(b.view(), now=0.0)
    b.merge(a.view(), now=0.0)
    assert sorted(a.members) == sorted(b.members) == ["a", "b"]
    for i in range(1, 20):          # b keeps beating and a keeps hearing it
        b.beat()
        a.merge(b.view(), now=i * 0.5)
    assert a.status("b", 10.0) == "alive" and a.is_up("b", 10.0)
    assert a.status("b", 15.0) == "suspect"     # phi = 5.5 s / 0.53 s mean * log10(e) ~ 4.5
    assert a.status("b", 30.0) == "down" and not a.is_up("b", 30.0)
    b.beat()
    a.merge(b.view(), now=30.0)     # heard again
    assert a.status("b", 30.1) == "alive"
    a.suspect("b", 31.0)            # direct evidence (a call timed out)
    assert a.status("b", 31.0) == "down"
    b.beat()
    a.merge(b.view(), now=32.0)
    assert a.status("b", 32.0) == "alive"


def test_restart_refutes_a_stale_incarnation():
    a, b = _ms("a"), _ms("b")
    for _ in range(5):
        b.declare("alive")         # b is at incarnation 6
    a.merge(b.view(), 0.0)
    b2 = _ms("b")                  # b restarted having lost its state: incarnation 1
    b2.merge(a.view(), 1.0)
    assert b2.me.incarnation > 6
    a.merge(b2.view(), 2.0)
    assert a.members["b"].incarnation == b2.me.incarnation


def test_rings_by_status():
    a = _ms("a")
    views = [_ms("j", "joining"), _ms("l", "leaving"), _ms("x", "left"), _ms("b")]
    for v in views:
        a.merge(v.view(), 0.0)
    assert sorted(a.ring("all").nodes) == ["a", "b", "j", "l"]
    assert sorted(a.ring("read").nodes) == ["a", "b", "l"]       # joining nodes serve no reads yet
    assert sorted(a.ring("future").nodes) == ["a", "b", "j"]     # where data is going
    assert a.ring("read") is a.ring("read")                       # cached
    assert a.status("x", 0.0) == "left"


def test_down_nodes_keep_their_ranges():
    a, b = _ms("a"), _ms("b")
    a.merge(b.view(), 0.0)
    assert a.status("b", 1000.0) == "down"
    assert "b" in a.ring("read").nodes


def test_a_removed_member_is_left_everywhere_and_stale_gossip_does_not_bring_it_back():
    from raykv.cluster.membership import Membership, removed
    a = Membership(None, tokens_per_node=8)
    view = [("n%d" % i, 1.0, None, None, "alive", 3, 40) for i in range(1, 5)]
    a.merge(view, 0.0)
    assert "n2" in a.ring("read").nodes
    gone = removed(view[1])
    assert gone[4] == "left" and gone[5] == 4
    a.merge([gone], 1.0)
    assert a.declared("n2") == "left" and "n2" not in a.ring("read").nodes
    a.merge([("n2", 1.0, None, None, "alive", 3, 99)], 2.0)         # an old heartbeat still circulating
    assert a.declared("n2") == "left"


def test_a_removal_is_built_on_the_newest_view_so_it_wins_everywhere():
    """The manager removes a dead node from the gossip views of the live ones. Right after the node turned
    alive (incarnation 0 -> 1) one view may still hold it joining at incarnation 0: a removal built on that
    entry (incarnation 1, heartbeat 0) loses to the alive one (incarnation 1, heartbeat 7), and the node would
    stay a member everywhere (the likely cause of tests/ray/test_failures.py's intermittent failure). Built on
    the newest entry it wins."""
    info = NodeInfo("n3", 1.0)
    old = MemberState(info, "joining", 0, 12).to_wire()
    new = MemberState(info, "alive", 1, 7).to_wire()
    other = MemberState(NodeInfo("n1", 1.0), "alive", 1, 40).to_wire()
    views = [[other, old], [new, other], [other]]
    assert removal([], "n3") is None and removal([[other]], "n3") is None
    gone = MemberState.from_wire(removal(views, "n3"))
    assert gone.status == "left" and gone.incarnation == 2
    for v in views:
        merged = merge_views({MemberState.from_wire(w).info.node_id: MemberState.from_wire(w) for w in v},
                             {"n3": gone})
        assert merged["n3"].status == "left"
    stale = MemberState.from_wire(removed(old))         # what the first view's entry gave
    assert stale.order() < MemberState.from_wire(new).order()
