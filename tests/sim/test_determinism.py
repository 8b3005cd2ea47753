"""Same seed, same run: the trace hash (every send, delivery, drop, crash, partition) is identical."""

from __future__ import annotations

import os
import subprocess
import sys

from raykv.sim import scenarios
from raykv.sim.loop import SimulationDeadlock, VirtualTimeLoop

import asyncio
import pytest


@pytest.mark.parametrize("name", sorted(scenarios.SCENARIOS))
def test_same_seed_same_trace(name):
    kw = {"rmw": 20} if name == "bounded_siblings" else {}
    a = scenarios.SCENARIOS[name](11, **kw)
    b = scenarios.SCENARIOS[name](11, **kw)
    c = scenarios.SCENARIOS[name](12, **kw)
    assert a == b
    assert a["trace"] != c["trace"]


def test_same_trace_across_processes_and_hash_seeds():
    """String hashing is randomized per process: the simulation must not depend on set/dict-of-str order."""
    code = ("from raykv.sim import scenarios; "
            "print(scenarios.run_no_acked_write_lost(5)['trace'])")
    outs = set()
    for hashseed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        outs.add(out.stdout.strip())
    assert len(outs) == 1, outs


def test_virtual_time_jumps_and_deadlock_is_reported():
    loop = VirtualTimeLoop()

    async def nap():
        await asyncio.sleep(3600.0)
        return loop.time()
    assert loop.run_until_complete(nap()) == pytest.approx(3600.0)

    async def stuck():
        await loop.create_future()
    with pytest.raises(SimulationDeadlock):
        loop.run_until_complete(stuck())
    loop.close()
