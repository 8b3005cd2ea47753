"""Hinted handoff: bounded durable hints, the delete-only-if-unchanged replay rule, end to end on the sim."""

from __future__ import annotations

import asyncio

import pytest

from raykv.cluster.hints import Hint, hint_batch, pending_targets, retire_delivered, store_hint
from raykv.cluster.memory_backend import MemoryBackend
from raykv.cluster.vclock import Sibling, VClock
from raykv.errors import Overloaded
from raykv.sim.simulation import SIM_CONFIG, Simulation


def sib(actor, n, value=b"v", ctx=None):
    ctx = ctx or {}
    return Sibling((actor, n), VClock(ctx, {a: 0.0 for a in ctx}), value, 1.0)


def test_hints_are_bounded():
    b = MemoryBackend()
    store_hint(b, 2, "x", b"k1", [sib("c", 1)])
    store_hint(b, 2, "x", b"k2", [sib("c", 2)])
    with pytest.raises(Overloaded):
        store_hint(b, 2, "y", b"k3", [sib("c", 3)])
    store_hint(b, 2, "x", b"k1", [sib("c", 4)])          # merging into a held hint is always allowed
    assert b.hint_count() == 2
    assert {s.dot for s in b.get_hint("x", b"k1")} == {("c", 1), ("c", 4)}
    assert pending_targets(b) == {"x": 2}


def test_no_hints_held_means_no_scan(tmp_path, monkeypatch):
    """Asked every replay interval: with no hint held, the hint range of the LSM is not scanned (a scan sorts the
    memtable's new keys)."""
    from raykv.cluster.lsm_backend import LSMBackend
    with LSMBackend(str(tmp_path)) as b:
        b.put(b"k", [sib("c", 1)])

        def scan(*_a):
            raise AssertionError("hint range scanned")
        monkeypatch.setattr(b, "iter_hints", scan)
        assert pending_targets(b) == {}
        monkeypatch.undo()
        store_hint(b, 10, "x", b"k", [sib("c", 2)])
        assert pending_targets(b) == {"x": 1}


def test_a_hint_that_changed_during_replay_is_kept():
    b = MemoryBackend()
    store_hint(b, 10, "x", b"k1", [sib("c", 1)])
    store_hint(b, 10, "x", b"k2", [sib("c", 2)])
    sent = hint_batch(b, "x", 10)
    assert [h.key for h in sent] == [b"k1", b"k2"]
    store_hint(b, 10, "x", b"k2", [sib("c", 3)])          # a newer write arrived while the replay was in flight
    assert retire_delivered(b, sent) == 1
    assert b.hint_count() == 1 and b.get_hint("x", b"k2") is not None
    assert isinstance(sent[0], Hint)


def _run(sim, coro):
    return sim.run(coro)


def test_sloppy_write_leaves_a_durable_hint_that_is_replayed_when_the_target_returns():
    sim = Simulation(seed=3, nodes=5, config=SIM_CONFIG.with_(anti_entropy_interval=1e9))
    c = sim.coordinator("c0")

    async def main():
        await sim.boot()
        key = b"hinted"
        pref = sim._ring().preference_list(key, 3)
        owner = pref[0]
        sim.crash(owner)
        await sim.wait_until(lambda: not c.membership.is_up(owner, c.transport.now()), 30)
        await c.put(key, b"v", w=3)                       # W=3 with a replica down: only a hint makes it
        holders = [n for n, b in sim.backends.items() if b.hint_count()]
        assert len(holders) == 1 and holders[0] not in pref
        assert sim.backends[owner].get(key) == []
        holder = holders[0]
        sim.crash(holder)                                  # the hint survives its holder's crash (durable)
        sim.restart(holder)
        sim.restart(owner)
        assert await sim.wait_until(lambda: sim.hints_pending() == 0, 30)
        assert [s.value for s in sim.backends[owner].get(key)] == [b"v"]
        assert sum(n.counters["hints_delivered"] for n in sim.nodes.values()) >= 1
    _run(sim, main())
    sim.close()


def test_hint_overflow_makes_the_sloppy_write_fail():
    sim = Simulation(seed=4, nodes=4, config=SIM_CONFIG.with_(max_hints=0, anti_entropy_interval=1e9))
    c = sim.coordinator("c0")

    async def main():
        await sim.boot()
        owner = sim._ring().preference_list(b"k", 3)[0]
        sim.crash(owner)
        await sim.wait_until(lambda: not c.membership.is_up(owner, c.transport.now()), 30)
        from raykv.errors import QuorumNotReached
        with pytest.raises(QuorumNotReached):
            await c.put(b"k", b"v", w=3)
        assert sum(n.counters["hints_refused"] for n in sim.nodes.values()) >= 1
        await c.put(b"k", b"v", w=2)                       # W=2 does not need the hint
    _run(sim, main())
    sim.close()


def test_hints_for_a_node_that_left_go_to_the_current_replicas():
    sim = Simulation(seed=5, nodes=5, config=SIM_CONFIG.with_(anti_entropy_interval=1e9))

    async def main():
        await sim.boot()
        await sim.leave("n3")
        holder = sim.nodes["n0"]
        holder.backend.add_hint("n3", b"orphan", [sib("c", 1, b"x")])
        assert await sim.wait_until(lambda: holder.backend.hint_count() == 0, 30)
        ring = sim._ring()
        assert "n3" not in ring.nodes
        assert all(sim.backends[n].get(b"orphan") for n in ring.preference_list(b"orphan", 3))
    _run(sim, main())
    sim.close()


def test_a_leaving_node_hands_its_hints_over():
    sim = Simulation(seed=6, nodes=5, config=SIM_CONFIG.with_(anti_entropy_interval=1e9))

    async def main():
        await sim.boot()
        sim.crash("n1")                                     # the hint's target is down
        await sim.wait_until(lambda: not sim.nodes["n3"].membership.is_up("n1", sim.nodes["n3"].transport.now()), 30)
        sim.nodes["n3"].backend.add_hint("n1", b"k", [sib("c", 1, b"x")])
        await sim.leave("n3")
        assert sim.backends["n3"].hint_count() == 0
        assert sum(b.hint_count() for b in sim.backends.values()) == 1   # someone else holds it now
        sim.restart("n1")
        assert await sim.wait_until(lambda: sim.hints_pending() == 0, 30)
        assert [s.value for s in sim.backends["n1"].get(b"k")] == [b"x"]
    _run(sim, main())
    sim.close()
