"""SimNetwork and SimTransport: a seeded, fault-injecting, in-process network on virtual time.

Every ``Transport.call`` becomes a request message and a reply message, each
with its own random delay (so messages reorder), each possibly dropped
(``Faults.drop``) or, for requests, duplicated (``Faults.duplicate``: the
handler runs twice, the second reply is discarded). A partition assigns nodes
to groups; a message crosses only between nodes sharing a group (a node in two
groups is a bridge; a node in none reaches everyone, e.g. an unpartitioned
client). A message that cannot be delivered is lost silently and the caller
sees ``NodeUnavailable`` when its timeout fires, as on a real network.

``crash(node)`` cancels every task the node runs (handlers, ticks, spawned
work): its in-memory state is gone, its backend (the disk) is kept by the
harness. Each participant has a clock skew: ``now()`` = virtual time + epoch +
skew. Every send, delivery, drop and crash is folded into a running blake2b
``trace_hash``: same seed, same hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass
from typing import Any, Awaitable

from raykv.cluster.transport import Transport
from raykv.errors import NodeUnavailable, RayKVError

EPOCH = 1_750_000_000.0


@dataclass
class Faults:
    """Network fault rates and delays (seconds of virtual time)."""

    drop: float = 0.0            # probability each message (request or reply) is lost
    duplicate: float = 0.0       # probability a request is delivered twice
    min_delay: float = 0.0005
    max_delay: float = 0.005


class SimNetwork:
    """Registry of simulated endpoints and the rules messages between them obey."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random, faults: Faults | None = None) -> None:
        self.loop, self.rng = loop, rng
        self.faults = faults or Faults()
        self.handlers: dict[str, Any] = {}         # node id -> object with rpc_* methods
        self.tasks: dict[str, dict] = {}           # node id -> {seq: running task} (cancelled on crash, in seq order)
        self.down: set[str] = set()                # crashed endpoints (their pending replies are dropped)
        self.errors: list[BaseException] = []      # unexpected exceptions of background tasks (bugs)
        self._seq = 0
        self.groups: dict[str, frozenset] = {}     # partition membership
        self.skew: dict[str, float] = {}
        self._hash = hashlib.blake2b(digest_size=16)
        self.events = 0
        self.messages = 0

    # --- trace ---
    def log(self, *parts: Any) -> None:
        self.events += 1
        self._hash.update(repr((round(self.loop.time(), 9),) + parts).encode())

    @property
    def trace_hash(self) -> str:
        return self._hash.hexdigest()

    # --- endpoints ---
    def register(self, node_id: str, handler: Any) -> None:
        self.handlers[node_id] = handler
        self.down.discard(node_id)
        self.tasks.setdefault(node_id, {})
        self.log("register", node_id)

    def transport(self, node_id: str) -> "SimTransport":
        self.skew.setdefault(node_id, 0.0)
        return SimTransport(self, node_id)

    def spawn(self, owner: str, coro: Awaitable[Any]) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._seq += 1
        seq = self._seq
        bag = self.tasks.setdefault(owner, {})
        bag[seq] = task
        task.add_done_callback(lambda t: (bag.pop(seq, None), self._check(t)))
        return task

    def _check(self, task: asyncio.Task) -> None:
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and not isinstance(exc, RayKVError):
                self.errors.append(exc)

    def crash(self, node_id: str) -> None:
        """Node loses its in-memory state: handler unregistered, every task it runs cancelled."""
        self.handlers.pop(node_id, None)
        self.down.add(node_id)
        for _seq, task in sorted(self.tasks.pop(node_id, {}).items()):
            task.cancel()
        self.tasks[node_id] = {}
        self.log("crash", node_id)

    # --- partitions ---
    def partition(self, *groups) -> None:
        """Each argument is an iterable of node ids; a node listed in two groups bridges them."""
        self.groups = {}
        for gi, group in enumerate(groups):
            for nid in group:
                self.groups[nid] = self.groups.get(nid, frozenset()) | {gi}
        self.log("partition", tuple(tuple(sorted(g)) for g in groups))

    def heal(self) -> None:
        self.groups = {}
        self.log("heal")

    def reachable(self, a: str, b: str) -> bool:
        ga, gb = self.groups.get(a), self.groups.get(b)
        return ga is None or gb is None or bool(ga & gb)

    # --- messages ---
    def _delay(self) -> float:
        f = self.faults
        return f.min_delay + self.rng.random() * (f.max_delay - f.min_delay)

    def _lost(self) -> bool:
        return self.faults.drop > 0 and self.rng.random() < self.faults.drop

    def send(self, src: str, dst: str, method: str, args: tuple, reply: asyncio.Future) -> None:
        self.messages += 1
        copies = 2 if self.faults.duplicate > 0 and self.rng.random() < self.faults.duplicate else 1
        for c in range(copies):
            if self._lost():
                self.log("drop-req", src, dst, method)
                continue
            self.loop.call_later(self._delay(), self._deliver, src, dst, method, args, reply, c)

    def _deliver(self, src, dst, method, args, reply, copy) -> None:
        handler = self.handlers.get(dst)
        if handler is None or not self.reachable(src, dst):
            self.log("lost-req", src, dst, method)
            return
        self.log("deliver", src, dst, method, copy)
        self.spawn(dst, self._serve(handler, src, dst, method, args, reply, copy))

    async def _serve(self, handler, src, dst, method, args, reply, copy) -> None:
        try:
            result = await getattr(handler, "rpc_" + method)(*args)
            outcome = (True, result)
        except RayKVError as e:
            outcome = (False, e)
        if copy or self._lost():
            return
        self.loop.call_later(self._delay(), self._reply, src, dst, reply, outcome)

    def _reply(self, src, dst, reply, outcome) -> None:
        if reply.done() or not self.reachable(src, dst) or src in self.down:
            return
        self.log("reply", src, dst, outcome[0])
        if outcome[0]:
            reply.set_result(outcome[1])
        else:
            reply.set_exception(outcome[1])


class SimTransport(Transport):
    """One participant's handle on the simulated network: call, skewed now(), virtual sleep, owned spawn."""

    def __init__(self, net: SimNetwork, node_id: str) -> None:
        self.net, self.node_id = net, node_id

    async def call(self, node_id: str, method: str, *args: Any, timeout: float) -> Any:
        loop = self.net.loop
        reply = loop.create_future()
        self.net.send(self.node_id, node_id, method, args, reply)
        timer = loop.call_later(timeout, _expire, reply, node_id, method, timeout)
        try:
            return await reply
        finally:
            timer.cancel()

    def now(self) -> float:
        return EPOCH + self.net.loop.time() + self.net.skew.get(self.node_id, 0.0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        return self.net.spawn(self.node_id, coro)


def _expire(reply: asyncio.Future, node_id: str, method: str, timeout: float) -> None:
    if not reply.done():
        reply.set_exception(NodeUnavailable(f"{method} on {node_id}: no reply within {timeout:.3g}s (simulated)"))
