"""StorageNodeActor: the Ray shell around ``raykv.cluster.node.StorageNode``.

Detached, named ``raykv:<store>:node:<id>`` in namespace ``raykv``,
``max_restarts=-1``: a crash (SIGKILL, OOM, machine loss) restarts the actor,
which re-runs ``__init__``, re-opens ``LSMBackend(data_dir/<id>)`` (WAL replay)
and recovers membership from the backend's metadata. ``num_cpus=0`` so a small
machine hosts many nodes; placed by ``raykv.actors.placement``.

It is an async actor: RPCs (``call(method, *args)`` -> ``await node.rpc_<method>(*args)``)
interleave on one event loop, and a background task runs ``await node.tick()``
every ``TICK`` seconds (gossip, failure detection, hint replay, anti-entropy,
range streaming; the logic keeps each part on its own interval) and exports
metrics. Task retries are off (``max_task_retries=0``): a call to a dead node
fails fast with ``NodeUnavailable`` and the coordinator's sloppy quorum takes over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import random
import time

import ray

from raykv.actors.metrics import Metrics
from raykv.actors.process import tune_gc
from raykv.actors.names import node_name
from raykv.actors.transport import RayTransport
from raykv.errors import InvalidArgument, NodeUnavailable, RayKVError

log = logging.getLogger(__name__)

TICK = 0.1               # seconds between node.tick() calls
EXPORT_EVERY = 5.0       # seconds between metrics exports
UNGATED = ("gossip", "status")   # may run before start() finished (start may itself gossip with peers)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10_000)
class StorageNodeActor:
    """One storage node: LSM-backed replica logic behind a single ``call`` entry point."""

    def __init__(self, store: str, node_id: str, data_dir: str, config, *, weight: float = 1.0,
                 datacenter: str | None = None, seeds: list[str] = (), lsm_opts: dict | None = None) -> None:
        from raykv.cluster.lsm_backend import LSMBackend
        from raykv.cluster.node import StorageNode

        self.store, self.node_id, self.config = store, node_id, config
        self.path = os.path.join(data_dir, node_id)
        self.ray_node_id = ray.get_runtime_context().get_node_id()
        self.started_at = time.time()
        self.open_error: RayKVError | None = None
        os.makedirs(self.path, exist_ok=True)
        opts = {"fsync": config.fsync, "memtable_bytes": config.memtable_bytes, "cache_bytes": config.cache_bytes}
        opts.update(lsm_opts or {})
        try:
            self.backend = LSMBackend(self.path, **opts)
        except RayKVError as e:
            # e.g. CorruptionError(path, offset): stay up so status() can say which file and where; every
            # RPC fails with this error (peers route around us); a restart tries again.
            log.error("storage node %s cannot open %s: %s", node_id, self.path, e)
            self.open_error = e
            return
        self.transport = RayTransport(store)
        self.node = StorageNode(node_id, self.backend, self.transport, config, weight=weight,
                                datacenter=datacenter, host=self.ray_node_id, seeds=list(seeds),
                                rng=random.Random())
        self.metrics = Metrics(store, "node", node_id)
        self.ready = asyncio.Event()
        self.start_error: BaseException | None = None
        self._loop_task = asyncio.get_running_loop().create_task(self._run())
        tune_gc()

    async def _run(self) -> None:
        try:
            await self.node.start()
        except Exception as e:  # surfaced to callers; the loop keeps trying
            log.exception("storage node %s failed to start", self.node_id)
            self.start_error = e
        self.ready.set()
        last_export = 0.0
        while True:
            try:
                await self.node.tick()
            except Exception:
                log.exception("storage node %s: tick failed", self.node_id)
            now = time.monotonic()
            if now - last_export >= EXPORT_EVERY:
                last_export = now
                try:
                    self.metrics.export({**getattr(self.node, "counters", {}),
                                         **{"transport_" + k: v for k, v in self.transport.counters.items()}},
                                        {"hints_pending": self.backend.hint_count()})
                except Exception:
                    log.exception("metrics export failed")
            await asyncio.sleep(TICK)

    async def call(self, method: str, *args):
        """Transport entry point: ``await node.rpc_<method>(*args)``."""
        if self.open_error is not None:
            raise self.open_error
        if method not in UNGATED and not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), self.config.request_timeout)
            except asyncio.TimeoutError:
                raise NodeUnavailable(f"storage node {self.node_id!r} is still starting") from None
        fn = getattr(self.node, "rpc_" + method, None)
        if fn is None:
            raise InvalidArgument(f"storage node has no RPC {method!r}")
        t0 = time.perf_counter()
        try:
            return await fn(*args)
        finally:
            self.metrics.observe(method, time.perf_counter() - t0)

    async def call_packed(self, blob: bytes) -> bytes:
        """``call`` with the arguments and the result pickled at each end (``transport.pack_call``): one bytes
        object crosses Ray instead of, say, 1,000 (key, bytes) tuples, which Ray's msgpack path walks item by
        item (measured: a 1,000-item call 2.0 ms plain, 0.9 ms packed). The caller is a raykv driver or actor
        of the same Ray cluster, whose arguments Ray would unpickle anyway."""
        method, args = pickle.loads(blob)
        return pickle.dumps(await self.call(method, *args), protocol=5)

    async def status(self) -> dict:
        """The node's ``rpc_status()`` plus where it runs (actor name, Ray node id, pid, path)."""
        if self.open_error is not None:
            return {"node_id": self.node_id, "alive": False, "status": "failed", "error": str(self.open_error),
                    "actor_name": node_name(self.store, self.node_id), "ray_node_id": self.ray_node_id,
                    "pid": os.getpid(), "path": self.path, "keys": None, "disk_bytes": None,
                    "hints_pending": None, "open_error": str(self.open_error)}
        st = dict(await self.node.rpc_status())
        st.update(actor_name=node_name(self.store, self.node_id), ray_node_id=self.ray_node_id,
                  pid=os.getpid(), path=self.path, started_at=self.started_at,
                  start_error=repr(self.start_error) if self.start_error else None)
        return st

    async def leave(self) -> None:
        """Hand every range to its new owners and leave the ring (``rpc_leave``); returns when done."""
        if self.open_error is not None:
            raise self.open_error
        await self.ready.wait()
        await self.node.rpc_leave()

    async def close(self) -> None:
        """Stop ticking and close the backend (flush); used by an orderly shutdown before ``ray.kill``."""
        if self.open_error is not None:
            return
        self._loop_task.cancel()
        try:
            self.backend.close()
        except Exception:
            log.exception("closing backend of %s", self.node_id)

    async def pid(self) -> int:
        return os.getpid()
