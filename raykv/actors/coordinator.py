"""CoordinatorActor: the Ray shell around ``raykv.cluster.coordinator.Coordinator``.

Async, stateless, detached, named ``raykv:<store>:coord:<ray node id prefix>``;
the store manager keeps one on every Ray machine that hosts storage, and the
``KV`` facade talks to the one on its own machine when there is one. Each
client request is one ``await`` on the logic, which fans out to the replicas
through ``RayTransport`` (awaited object refs, never ``ray.get`` in a loop), so
thousands of requests interleave on one event loop.

The logic's ``coord_id`` (the actor part of every dot it mints) is fresh on
every (re)start: a restarted coordinator can never reuse a dot. A background
task refreshes the membership view every ``config.gossip_interval`` seconds and
exports metrics. ``max_task_retries=0``: the facade decides on retries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid

import ray

from raykv.actors.metrics import Metrics, with_transport
from raykv.actors.process import tune_gc
from raykv.actors.transport import RayTransport
from raykv.types import Version

log = logging.getLogger(__name__)



@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10_000)
class CoordinatorActor:
    """Quorum fan-out for one store; any number of them can serve the same store."""

    def __init__(self, store: str, config, seeds: list[str]) -> None:
        from raykv.cluster.coordinator import Coordinator

        self.store, self.config = store, config
        self.ray_node_id = ray.get_runtime_context().get_node_id()
        self.coord_id = f"c{self.ray_node_id[:6]}{uuid.uuid4().hex[:10]}"
        self.transport = RayTransport(store)
        self.coord = Coordinator(self.coord_id, self.transport, config, seeds=list(seeds), rng=random.Random())
        self.metrics = Metrics(store, "coordinator", self.coord_id)
        self._task = asyncio.get_running_loop().create_task(self._run())
        tune_gc()

    async def _run(self) -> None:
        while True:
            try:
                await self.coord.refresh()
            except Exception:
                log.exception("coordinator %s: refresh failed", self.coord_id)
            if self.metrics.due():
                try:
                    self.metrics.export(with_transport(getattr(self.coord, "counters", {}), self.transport.counters))
                except Exception:
                    log.exception("metrics export failed")
            await asyncio.sleep(self.config.gossip_interval)

    async def _timed(self, op: str, coro):
        t0 = time.perf_counter()
        try:
            return await coro
        finally:
            self.metrics.observe(op, time.perf_counter() - t0)

    async def get(self, key: bytes, r=None, consistency=None, timeout=None):
        return await self._timed("get", self.coord.get(key, r=r, consistency=consistency, timeout=timeout))

    async def put(self, key: bytes, value, context=None, w=None, consistency=None, ttl=None, timeout=None):
        return await self._timed("put", self.coord.put(key, value, context=context, w=w, consistency=consistency,
                                                       ttl=ttl, timeout=timeout))

    async def get_many(self, keys: list, r=None, consistency=None):
        return await self._timed("get_many", self.coord.get_many(keys, r=r, consistency=consistency))

    async def get_values(self, keys: list, r=None, consistency=None):
        return await self._timed("get_many", self.coord.get_values(keys, r=r, consistency=consistency))

    async def put_many(self, items: list, w=None, consistency=None, ttl=None):
        return await self._timed("put_many", self.coord.put_many(items, w=w, consistency=consistency, ttl=ttl))

    async def put_many_versions(self, items: list, w=None, consistency=None, ttl=None):
        clocks = await self.put_many(items, w=w, consistency=consistency, ttl=ttl)
        return {k: Version(c) for k, c in clocks.items()}

    async def scan_page(self, cursor, limit: int):
        return await self._timed("scan_page", self.coord.scan_page(cursor, limit))

    async def refresh(self) -> None:
        await self.coord.refresh()

    async def add_node(self, node_id: str) -> None:
        await self.coord.add_node(node_id)

    async def status(self) -> dict:
        st = dict(await self.coord.status())
        st.update(coord_id=self.coord_id, ray_node_id=self.ray_node_id, pid=os.getpid(),
                  transport_pending=self.transport.pending)
        return st

    async def where(self) -> str:
        return self.ray_node_id
