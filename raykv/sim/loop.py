"""VirtualTimeLoop: an asyncio event loop whose clock is virtual and jumps to the next timer.

Nothing ever blocks on real time: when no callback is ready, ``select(timeout)``
advances the virtual clock by ``timeout`` (the delay to the earliest timer) and
returns no I/O events. Ready callbacks run FIFO and timers pop from a heap by
(when, insertion), so a run is a pure function of the code and its seeded
randomness: same seed, same interleaving. Same technique as CPython's own
``asyncio.test_utils.TestLoop`` and FoundationDB's deterministic simulation.

Cost: one Python-level iteration of ``BaseEventLoop._run_once`` per step, no
syscalls; a simulated second of a 5-node cluster costs ~1 ms of CPU.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events


class SimulationDeadlock(RuntimeError):
    """The loop has nothing ready and no timer: every task waits on something that never comes."""


class VirtualTimeLoop(asyncio.base_events.BaseEventLoop):
    """asyncio loop with a virtual clock starting at ``start``; no I/O, no threads."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._vtime = float(start)
        self._selector = self          # BaseEventLoop._run_once calls self._selector.select(timeout)
        self.steps = 0

    def time(self) -> float:
        return self._vtime

    # --- the fake selector ---
    def select(self, timeout: float | None):
        self.steps += 1
        if timeout is None:
            raise SimulationDeadlock("no ready callback and no timer: the simulated run cannot progress")
        if timeout > 0:
            self._vtime += timeout
        return []

    def _process_events(self, event_list) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def close(self) -> None:
        # cancel leftovers quietly so "Task was destroyed but it is pending" never fires
        tasks = [t for t in asyncio.all_tasks(self) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks and not self.is_running():
            self.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        super().close()
