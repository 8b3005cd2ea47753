"""Driver-side Ray plumbing for the ``KV`` facade: find the store, pick coordinators, batch requests.

``StoreClient`` owns the handles (manager, coordinators) and issues every
``.remote()`` the facade needs; ``Coalescer`` turns concurrent single-key
requests from many threads or asyncio tasks into one batched coordinator call
(``get_many``/``put_many``), leader/follower style: the first caller of an idle
group sends its request at once (no added latency when alone), callers that
arrive while ``max_in_flight`` batches are out queue up and go in the next
batch together. The pending queue is bounded (``Overloaded`` beyond it).

Costs: one Ray call per batch (~0.7 ms + the coordinator's fan-out); a
coordinator that died is skipped and the request retried on the next one.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError, RayTaskError

from raykv.actors.names import NAMESPACE, meta_name, unwrap
from raykv.errors import NodeUnavailable, Overloaded, StoreNotFound

try:
    from ray.exceptions import ActorUnavailableError
except ImportError:  # pragma: no cover
    ActorUnavailableError = RayActorError

_RETRYABLE = (RayActorError, ActorUnavailableError)
RETRY_FOR = 15.0          # seconds a request keeps retrying while every coordinator is down


def get_manager(store: str):
    """Handle of the store's manager actor; ``StoreNotFound`` when there is none."""
    try:
        return ray.get_actor(meta_name(store), namespace=NAMESPACE)
    except ValueError:
        raise StoreNotFound(f"no raykv store named {store!r} in Ray namespace {NAMESPACE!r} of this cluster; "
                            f"create it with raykv.start(name={store!r}, ...) or `raykv up --name {store}`, "
                            f"or check the address you connected to") from None


def rget(ref, timeout: float | None = None):
    """``ray.get`` that re-raises the remote ``RayKVError`` itself instead of Ray's wrapper."""
    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as e:
        raise unwrap(e) from None


async def rawait(ref):
    try:
        return await ref
    except RayTaskError as e:
        raise unwrap(e) from None


ROUTED = frozenset({"get", "put", "get_many", "get_values", "put_many", "put_many_versions"})   # what the driver-side router runs itself
ROUTINGS = ("client", "coordinator")


class StoreClient:
    """Handles for one store, refreshed from its manager; request routing with failover.

    ``routing="client"`` (default): reads and writes are coordinated in this process by a
    ``raykv.actors.router.ClientRouter`` (straight to the replicas, one Ray hop); scans and admin go to the
    coordinator actors. ``routing="coordinator"``: every request goes to a coordinator actor (two hops; the
    driver then needs no view of the ring, e.g. a thin client on a busy head node)."""

    def __init__(self, store: str, routing: str = "client") -> None:
        from raykv.errors import InvalidArgument
        if routing not in ROUTINGS:
            raise InvalidArgument(f"routing must be one of {ROUTINGS}, got {routing!r}")
        self.store, self.routing = store, routing
        self.manager = get_manager(store)
        self.router = None
        self.refresh()
        if routing == "client":
            from raykv.actors.router import ClientRouter
            self.router = ClientRouter(store, self.desc["config"], sorted(self.desc["nodes"]))

    def refresh(self) -> dict:
        self.desc = rget(self.manager.describe.remote())
        here = ray.get_runtime_context().get_node_id()
        coords = []
        for machine, name in sorted(self.desc["coordinators"].items()):
            try:
                coords.append((machine == here, ray.get_actor(name, namespace=NAMESPACE)))
            except ValueError:
                continue
        if not coords:
            raise StoreNotFound(f"store {self.store!r} has no coordinator actors; it is shutting down or broken")
        local = [h for is_local, h in coords if is_local]
        remote = [h for is_local, h in coords if not is_local]
        random.shuffle(remote)
        self.coordinators = local + remote
        if self.router is not None:           # learn of added nodes now, not one gossip round later
            with self.router.mu:
                self.router.coord.seeds = sorted(set(self.router.coord.seeds) | set(self.desc["nodes"]))
            self.router.refresh()
        return self.desc

    def _order(self) -> list:
        return list(self.coordinators)

    def call(self, method: str, *args, timeout: float | None = None, **kwargs) -> Any:
        """Blocking coordinator call with failover: the next coordinator when one died, and while every
        coordinator is down (restarting), retries with backoff for up to ``RETRY_FOR`` seconds.
        A retried write may have run once already: it then leaves an identical sibling, which reads collapse."""
        if self.router is not None and method in ROUTED:
            return getattr(self.router, method)(*args, **kwargs)
        deadline = time.monotonic() + RETRY_FOR
        delay, last = 0.1, None
        while True:
            for h in self._order():
                try:
                    return rget(getattr(h, method).remote(*args, **kwargs), timeout=timeout)
                except _RETRYABLE as e:
                    last = e
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(1.0, delay * 2)
            self._try_refresh()
        raise NodeUnavailable(f"no coordinator of store {self.store!r} answered {method!r} "
                              f"({type(last).__name__}) for {RETRY_FOR}s; check `raykv status --name {self.store}`")

    async def acall(self, method: str, *args, **kwargs) -> Any:
        if self.router is not None and method in ROUTED:
            return await self.router.acall(method, *args, **kwargs)
        deadline = time.monotonic() + RETRY_FOR
        delay, last = 0.1, None
        while True:
            for h in self._order():
                try:
                    return await rawait(getattr(h, method).remote(*args, **kwargs))
                except _RETRYABLE as e:
                    last = e
            if time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
            self._try_refresh()
        raise NodeUnavailable(f"no coordinator of store {self.store!r} answered {method!r} "
                              f"({type(last).__name__}) for {RETRY_FOR}s")

    def _try_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:   # the manager may be restarting too; keep the handles we have
            pass

    def admin(self, method: str, *args, timeout: float | None = None, **kwargs) -> Any:
        return rget(getattr(self.manager, method).remote(*args, **kwargs), timeout=timeout)


class _Slot:
    """One waiting request: its item, its outcome, and how to wake its caller (thread or event loop)."""

    __slots__ = ("item", "outcome", "lead", "_ev", "_loop", "_fut")

    def __init__(self, item, loop: asyncio.AbstractEventLoop | None) -> None:
        self.item, self.outcome, self.lead, self._loop = item, None, False, loop
        if loop is None:
            self._ev = threading.Event()
        else:
            self._fut = loop.create_future()

    def wake(self) -> None:
        if self._loop is None:
            self._ev.set()
            return
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:      # direct: the waiter runs on the very next loop iteration (before a yielding leader)
            if not self._fut.done():
                self._fut.set_result(None)
        else:
            self._loop.call_soon_threadsafe(lambda f=self._fut: f.done() or f.set_result(None))

    def wait(self) -> None:
        self._ev.wait()
        self._ev.clear()

    async def await_(self) -> None:
        await self._fut
        self._fut = self._loop.create_future()


class Coalescer:
    """Batches concurrent single-key requests of one kind (same options) into one batched call.

    ``send_one(item)`` / ``send_many(items)`` return an awaitable/ref-like for
    ``resolve``; ``split(items, result)`` maps a batched result to one outcome
    per item (``(True, value)`` or ``(False, exception)``). ``key_of`` names the
    item's key: one batch never holds the same key twice.
    """

    def __init__(self, send_one: Callable, send_many: Callable, split: Callable, key_of: Callable, *,
                 max_in_flight: int = 2, max_batch: int = 1000, max_pending: int = 100_000) -> None:
        self.send_one, self.send_many, self.split, self.key_of = send_one, send_many, split, key_of
        self.max_in_flight, self.max_batch, self.max_pending = max_in_flight, max_batch, max_pending
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._in_flight = 0
        self.batches = 0
        self.items = 0
        self._woken = 0

    def _solo(self) -> bool:
        """Whether a caller may send its request alone, right now, with no slot: nothing is waiting, a batch
        may start and no callers were just woken by one (they are about to send again: better together). The
        usual case for a lone caller. It then holds a place in flight until ``_release``."""
        with self._lock:
            if self._pending or self._woken or self._in_flight >= self.max_in_flight:
                return False
            self._in_flight += 1
            self.batches += 1
            self.items += 1
            return True

    def _enqueue(self, slot: _Slot) -> bool:
        with self._lock:
            if len(self._pending) >= self.max_pending:
                raise Overloaded(f"{len(self._pending)} requests already waiting in this client "
                                 f"(max_pending={self.max_pending}); retry with backoff")
            self._pending.append(slot)
            if self._in_flight < self.max_in_flight:
                self._in_flight += 1
                return True
            return False

    def _take(self) -> list[_Slot]:
        with self._lock:
            batch, seen, rest = [], set(), []
            for s in self._pending:
                k = self.key_of(s.item)
                if len(batch) < self.max_batch and k not in seen:
                    seen.add(k)
                    batch.append(s)
                else:
                    rest.append(s)
            self._pending = rest
            if not batch:
                self._in_flight -= 1
            return batch

    def _release(self) -> None:
        """Leave leadership; hand it to the oldest waiter if any requests are still pending."""
        with self._lock:
            for s in self._pending:
                if not s.lead:
                    s.lead = True
                    s.wake()
                    return
            self._in_flight -= 1

    def _deliver(self, batch: list[_Slot], result, me: _Slot) -> None:
        if isinstance(result, BaseException):
            outcomes = [(False, result)] * len(batch)
        elif len(batch) == 1:
            outcomes = [(True, result)]
        else:
            outcomes = self.split([s.item for s in batch], result)
        self.batches += 1
        self.items += len(batch)
        self._woken = len(batch) - 1          # other callers this batch answers (they may call again at once)
        for s, o in zip(batch, outcomes):
            s.outcome = o
            if s is not me:
                s.wake()

    def _send(self, batch):
        if len(batch) == 1:
            return self.send_one(batch[0].item)
        return self.send_many([s.item for s in batch])

    def run(self, item):
        """Blocking: the outcome value, or raise its exception."""
        if self._solo():       # alone: no slot, no batch bookkeeping (~30 us a request on a loaded host)
            try:
                return self.send_one(item)()
            finally:
                self._release()
        me = _Slot(item, None)
        lead = self._enqueue(me)
        while me.outcome is None:
            if lead or me.lead:
                me.lead = lead = False
                while me.outcome is None:
                    if self._woken:    # let callers just woken by the previous batch re-enqueue first
                        self._woken = 0
                        time.sleep(0)  # (a lone caller skips it: measured ~80 us of GIL hand-off per call)
                    batch = self._take()
                    if not batch:
                        break
                    try:
                        result = self._send(batch)()
                    except BaseException as e:  # noqa: BLE001 - delivered to every waiter of the batch
                        result = e
                    self._deliver(batch, result, me)
                else:
                    self._release()
                continue
            me.wait()
        ok, value = me.outcome
        if not ok:
            raise value
        return value

    async def arun(self, item):
        """Async twin of ``run``: followers await, the leader awaits the batch."""
        if self._solo():
            try:
                return await self.send_one(item).aresult()
            finally:
                self._release()
        me = _Slot(item, asyncio.get_running_loop())
        lead = self._enqueue(me)
        while me.outcome is None:
            if lead or me.lead:
                me.lead = lead = False
                while me.outcome is None:
                    if self._woken:
                        self._woken = 0
                        await asyncio.sleep(0)     # let callers just woken by the previous batch re-enqueue first
                    batch = self._take()
                    if not batch:
                        break
                    try:
                        result = await self._send(batch).aresult()
                    except BaseException as e:  # noqa: BLE001
                        result = e
                    self._deliver(batch, result, me)
                else:
                    self._release()
                continue
            await me.await_()
        ok, value = me.outcome
        if not ok:
            raise value
        return value


class Pending:
    """A coordinator call not yet waited for: ``()`` blocks, ``aresult()`` awaits (with coordinator failover)."""

    def __init__(self, client: StoreClient, method: str, args: tuple, kwargs: dict) -> None:
        self.client, self.method, self.args, self.kwargs = client, method, args, kwargs

    def __call__(self):
        return self.client.call(self.method, *self.args, **self.kwargs)

    async def aresult(self):
        return await self.client.acall(self.method, *self.args, **self.kwargs)
