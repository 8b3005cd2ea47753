"""Coalescer (raykv.actors.client): concurrent single-key requests become batched calls.

No Ray here: the send functions are fakes that record every call and sleep
like a network round trip, so the tests show batching, ordering, error
delivery, unique keys per batch and the bounded queue.
"""

import asyncio
import threading
import time

import pytest

from raykv.actors.client import Coalescer
from raykv.errors import Overloaded


class FakeCall:
    def __init__(self, log, kind, payload, delay, fail=None):
        self.log, self.kind, self.payload, self.delay, self.fail = log, kind, payload, delay, fail

    def _result(self):
        self.log.append((self.kind, self.payload))
        if self.fail:
            raise self.fail
        if self.kind == "one":
            return self.payload.upper()
        return {k: k.upper() for k in self.payload}

    def __call__(self):
        time.sleep(self.delay)
        return self._result()

    async def aresult(self):
        await asyncio.sleep(self.delay)
        return self._result()


def make(delay=0.01, fail=None, **kw):
    log = []
    c = Coalescer(lambda k: FakeCall(log, "one", k, delay, fail),
                  lambda ks: FakeCall(log, "many", list(ks), delay, fail),
                  lambda ks, res: [(True, res[k]) for k in ks],
                  lambda k: k, **kw)
    return c, log


def test_a_lone_caller_sends_a_single_key_call_at_once():
    c, log = make()
    assert c.run("a") == "A"
    assert log == [("one", "a")]


def test_a_lone_callers_request_needs_no_slot_and_hands_over_to_those_who_queued_meanwhile(monkeypatch):
    """A lone caller sends at once without a waiting slot; callers that arrive while its call is out queue up
    and go together, in one batch, when it returns."""
    import raykv.actors.client as client_mod
    c, log = make(delay=0.1, max_in_flight=1)
    slots = []
    real_slot = client_mod._Slot
    monkeypatch.setattr(client_mod, "_Slot", lambda *a: slots.append(a) or real_slot(*a))
    assert c.run("alone") == "ALONE" and slots == []
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("a", c.run("a")))
    first.start()
    time.sleep(0.03)                    # "a" is out, alone
    late = [threading.Thread(target=lambda i=i: results.setdefault(i, c.run(f"k{i}"))) for i in range(5)]
    for t in late:
        t.start()
    for t in [first, *late]:
        t.join()
    assert results == {"a": "A", **{i: f"K{i}" for i in range(5)}}
    assert log[:2] == [("one", "alone"), ("one", "a")]
    assert [kind for kind, _ in log[2:]] == ["many"] and sorted(log[2][1]) == [f"k{i}" for i in range(5)]
    assert len(slots) == 5 and c.batches == 3 and c.items == 7


def test_concurrent_threads_are_batched_and_every_caller_gets_its_own_answer():
    c, log = make(delay=0.02, max_in_flight=1)
    results = {}

    def worker(i):
        results[i] = c.run(f"k{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"K{i}" for i in range(64)}
    assert c.items == 64
    assert c.batches < 64 / 4, f"64 concurrent requests took {c.batches} calls: not coalesced"
    assert any(kind == "many" for kind, _ in log)


def test_asyncio_callers_are_batched_too():
    c, log = make(delay=0.02, max_in_flight=1)

    async def main():
        return await asyncio.gather(*(c.arun(f"k{i}") for i in range(100)))

    out = asyncio.run(main())
    assert out == [f"K{i}" for i in range(100)]
    assert c.batches <= 10, c.batches


def test_a_batch_never_holds_the_same_key_twice():
    c, log = make(delay=0.02, max_in_flight=1)

    async def main():
        return await asyncio.gather(*(c.arun("same") for _ in range(10)), c.arun("other"))

    out = asyncio.run(main())
    assert out == ["SAME"] * 10 + ["OTHER"]
    for kind, payload in log:
        if kind == "many":
            assert len(payload) == len(set(payload)), payload


def test_errors_reach_every_caller_of_the_batch():
    c, log = make(delay=0.01, fail=RuntimeError("boom"), max_in_flight=1)
    errors = []

    def worker(i):
        try:
            c.run(f"k{i}")
        except RuntimeError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["boom"] * 20


def test_the_pending_queue_is_bounded():
    c, log = make(delay=0.2, max_in_flight=1, max_pending=5)

    async def main():
        return await asyncio.gather(*(c.arun(f"k{i}") for i in range(20)), return_exceptions=True)

    out = asyncio.run(main())
    over = [o for o in out if isinstance(o, Overloaded)]
    assert over and "max_pending=5" in str(over[0])
    assert [o for o in out if isinstance(o, str)]


def test_threads_and_asyncio_share_one_group():
    c, log = make(delay=0.02, max_in_flight=1)
    results = {}

    def worker(i):
        results[i] = c.run(f"t{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()

    async def main():
        return await asyncio.gather(*(c.arun(f"a{i}") for i in range(16)))

    out = asyncio.run(main())
    for t in threads:
        t.join()
    assert out == [f"A{i}" for i in range(16)]
    assert results == {i: f"T{i}" for i in range(16)}


@pytest.mark.parametrize("max_in_flight", [1, 2])
def test_async_callers_woken_by_a_batch_ride_the_next_one_together(max_in_flight):
    """Closed-loop async callers (each sends its next request as soon as the last returns) stay in full batches:
    callers woken by a finished batch re-enqueue before the next leader takes its batch (no 8, 1, 8, 1 pattern)."""
    c, log = make(delay=0.004, max_in_flight=max_in_flight)

    async def caller(ci):
        for i in range(20):
            assert await c.arun(f"c{ci}-{i}") == f"C{ci}-{i}"

    async def main():
        await asyncio.gather(*(caller(ci) for ci in range(8)))

    asyncio.run(main())
    sizes = [len(p) if kind == "many" else 1 for kind, p in log]
    assert sum(sizes) == 160
    assert sum(sizes) / len(sizes) >= 6, sizes
