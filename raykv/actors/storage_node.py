"""StorageNodeActor: the Ray shell around ``raykv.cluster.node.StorageNode``.

Detached, named ``raykv:<store>:node:<id>`` in namespace ``raykv``,
``max_restarts=-1``: a crash (SIGKILL, OOM, machine loss) restarts the actor,
which re-runs ``__init__``, re-opens ``LSMBackend(data_dir/<id>)`` (WAL replay)
and recovers membership from the backend's metadata. ``num_cpus=0`` so a small
machine hosts many nodes; placed by ``raykv.actors.placement``.

It is a threaded actor (sync methods, ``MAX_THREADS`` at once), with its own
asyncio event loop on one more thread. The data RPCs (``StorageNode.SERVED``:
``put_encoded``, ``put_blind``, ``get_encoded``, ``put_batch``, ``get_batch``) run right in
Ray's calling thread through ``node.serve``: they never await, and the node's
``write_lock`` serializes every read-merge-write of the backend. Everything
else (gossip, anti-entropy, streaming, status) runs on the event loop
(``run_coroutine_threadsafe``), where a background task runs ``await
node.tick()`` every ``TICK`` seconds (gossip, failure detection, hint replay,
anti-entropy, range streaming; the logic keeps each part on its own interval)
and exports metrics. Why threads: a call into an async actor costs more.
Measured with three do-nothing replicas, wait for two: 2.34x a raw round trip
async, 1.86x threaded. Task retries are off (``max_task_retries=0``): a call
to a dead node fails fast with ``NodeUnavailable`` and the coordinator's
sloppy quorum takes over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import random
import threading
import time

import ray

from raykv.actors.metrics import Metrics, with_transport
from raykv.actors.process import tune_gc
from raykv.actors.names import node_name
from raykv.actors.transport import RayTransport
from raykv.errors import InvalidArgument, NodeUnavailable, RayKVError

log = logging.getLogger(__name__)

TICK = 0.1               # seconds between node.tick() calls
UNGATED = ("gossip", "status")   # may run before start() finished (start may itself gossip with peers)
MAX_THREADS = 32         # calls served at once; a call waiting on the event loop (streaming, status) holds one


async def _node_loop(actor: "StorageNodeActor") -> None:
    """The node's background life on its event loop: ``start()``, then ``tick()`` every ``TICK`` s and metrics.
    A module function, not a method: one ``async def`` method would make Ray treat the actor as async."""
    try:
        await actor.node.start()
    except Exception as e:  # surfaced to callers; the loop keeps trying
        log.exception("storage node %s failed to start", actor.node_id)
        actor.start_error = e
    actor.ready.set()
    while True:
        try:
            await actor.node.tick()
        except Exception:
            log.exception("storage node %s: tick failed", actor.node_id)
        if actor.metrics.due():
            try:
                actor.metrics.export(with_transport(getattr(actor.node, "counters", {}), actor.transport.counters),
                                     {"hints_pending": actor.backend.hint_count()})
            except Exception:
                log.exception("metrics export failed")
        await asyncio.sleep(TICK)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=MAX_THREADS)
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
        opts = {"fsync": config.fsync, "fsync_interval": config.fsync_interval, "memtable_bytes": config.memtable_bytes,
                "cache_bytes": config.cache_bytes}
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
        self.ready = threading.Event()
        self.start_error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self._loop_task = None
        threading.Thread(target=self._run_loop, name=f"raykv-node-{node_id}", daemon=True).start()
        tune_gc()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._loop_task = self.loop.create_task(_node_loop(self))
        self.loop.run_forever()

    def _on_loop(self, coro, timeout: float | None = None):
        """Run ``coro`` on the node's event loop and wait for it from this (Ray) thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, method: str, *args):
        """Transport entry point: ``node.serve`` in this thread for the data RPCs, else ``rpc_<method>`` on the
        event loop."""
        if self.open_error is not None:
            raise self.open_error
        if method not in UNGATED and not self.ready.is_set():
            if not self.ready.wait(self.config.request_timeout):
                raise NodeUnavailable(f"storage node {self.node_id!r} is still starting")
        t0 = time.perf_counter()
        try:
            if method in self.node.SERVED:
                return self.node.serve(method, *args)
            fn = getattr(self.node, "rpc_" + method, None)
            if fn is None:
                raise InvalidArgument(f"storage node has no RPC {method!r}")
            return self._on_loop(fn(*args))
        finally:
            self.metrics.observe(method, time.perf_counter() - t0)

    @ray.method(enable_task_events=False)
    def call_packed(self, blob: bytes) -> bytes:
        """``call`` with the arguments and the result pickled at each end (``transport.pack_call``): one bytes
        object crosses Ray instead of, say, 1,000 (key, bytes) tuples, which Ray's msgpack path walks item by
        item (measured: a 1,000-item call 2.0 ms plain, 0.9 ms packed). The caller is a raykv driver or actor
        of the same Ray cluster, whose arguments Ray would unpickle anyway.

        No task events: this is the data path (thousands of calls a second), which Ray's task-event buffer and
        the GCS would otherwise record one by one for the dashboard's task list. Measured on a 5-call fan-out
        of 600-item payloads: 4% less machine CPU, 6% less wall (docs/benchmarks.md, "Session 7")."""
        method, args = pickle.loads(blob)
        return pickle.dumps(self.call(method, *args), protocol=5)

    def status(self) -> dict:
        """The node's ``rpc_status()`` plus where it runs (actor name, Ray node id, pid, path)."""
        if self.open_error is not None:
            return {"node_id": self.node_id, "alive": False, "status": "failed", "error": str(self.open_error),
                    "actor_name": node_name(self.store, self.node_id), "ray_node_id": self.ray_node_id,
                    "pid": os.getpid(), "path": self.path, "keys": None, "disk_bytes": None,
                    "hints_pending": None, "open_error": str(self.open_error)}
        st = dict(self._on_loop(self.node.rpc_status()))
        st.update(actor_name=node_name(self.store, self.node_id), ray_node_id=self.ray_node_id,
                  pid=os.getpid(), path=self.path, started_at=self.started_at,
                  start_error=repr(self.start_error) if self.start_error else None)
        return st

    def leave(self) -> None:
        """Hand every range to its new owners and leave the ring (``rpc_leave``); returns when done."""
        if self.open_error is not None:
            raise self.open_error
        self.ready.wait()
        self._on_loop(self.node.rpc_leave())

    def close(self) -> None:
        """Stop ticking and close the backend (flush); used by an orderly shutdown before ``ray.kill``."""
        if self.open_error is not None:
            return
        if self._loop_task is not None:
            self.loop.call_soon_threadsafe(self._loop_task.cancel)
        try:
            self.backend.close()
        except Exception:
            log.exception("closing backend of %s", self.node_id)

    def pid(self) -> int:
        return os.getpid()
