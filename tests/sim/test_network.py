"""The simulated network's faults do what they say: partitions (halves, isolate, bridge), drops, duplicates,
crashes that cancel a node's work, skewed clocks."""

from __future__ import annotations

import asyncio
import random

import pytest

from raykv.errors import NodeUnavailable
from raykv.sim.loop import VirtualTimeLoop
from raykv.sim.network import Faults, SimNetwork


class Echo:
    def __init__(self):
        self.calls = 0

    async def rpc_echo(self, x):
        self.calls += 1
        return x

    async def rpc_slow(self):
        await asyncio.sleep(100.0)
        self.calls += 1


def make(faults=None):
    loop = VirtualTimeLoop()
    net = SimNetwork(loop, random.Random(1), faults)
    nodes = {n: Echo() for n in ("a", "b", "c")}
    for n, h in nodes.items():
        net.register(n, h)
    return loop, net, nodes


def test_partitions_halves_isolate_bridge():
    loop, net, _ = make()
    net.partition(["a"], ["b", "c"])
    assert not net.reachable("a", "b") and net.reachable("b", "c") and net.reachable("a", "client")
    net.partition(["a", "b"], ["b", "c"])          # b bridges
    assert net.reachable("a", "b") and net.reachable("b", "c") and not net.reachable("a", "c")
    net.heal()
    assert net.reachable("a", "c")

    async def go():
        net.partition(["a"], ["b", "c"])
        with pytest.raises(NodeUnavailable):
            await net.transport("a").call("b", "echo", 1, timeout=0.5)
        assert await net.transport("b").call("c", "echo", 2, timeout=0.5) == 2
    loop.run_until_complete(go())
    loop.close()


def test_drops_and_duplicates():
    loop, net, nodes = make(Faults(drop=0.3, duplicate=0.3))

    async def go():
        ok = failed = 0
        for i in range(200):
            try:
                assert await net.transport("a").call("b", "echo", i, timeout=0.1) == i
                ok += 1
            except NodeUnavailable:
                failed += 1
        return ok, failed
    ok, failed = loop.run_until_complete(go())
    loop.close()
    assert 40 < failed < 160 and ok > 40
    assert nodes["b"].calls > ok                    # duplicated requests ran twice (and lost replies)


def test_crash_cancels_in_flight_work_and_skew_applies():
    loop, net, nodes = make()
    net.skew["b"] = 250.0

    async def go():
        t = net.transport("a")
        task = asyncio.ensure_future(t.call("b", "slow", timeout=500.0))
        await asyncio.sleep(1.0)
        net.crash("b")
        with pytest.raises(NodeUnavailable):
            await task
        assert net.transport("b").now() - t.now() == pytest.approx(250.0)
    loop.run_until_complete(go())
    loop.close()
    assert nodes["b"].calls == 0                    # the handler never finished: its task was cancelled
