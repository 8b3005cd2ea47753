"""StoreManager: the small named actor ``raykv:<store>:meta`` that knows what a store is made of.

It holds the store record (validated ``StoreConfig``, the cloudpickled
resolver, the storage node list with weight/datacenter/machine) and persists it
to ``data_dir/store.json`` + ``data_dir/resolver.pkl`` (temp file, fsync,
rename), so ``raykv.start`` on the same ``data_dir`` re-opens the store and a
restarted manager finds everything again. It creates the storage node actors
(spread over machines by ``placement``) and one coordinator per machine hosting
storage, adds and removes nodes, aggregates ``status()``, and shuts the store
down. It is NOT on the data path: reads and writes go facade -> coordinator ->
storage nodes, so its loss stops only administration, never traffic.

Automatic join: every ``WATCH_EVERY`` seconds, a Ray machine carrying the
``raykv_storage`` resource that hosts no storage node of this store gets one
(this is how a machine added by Ray's autoscaler joins the ring).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import tempfile
import time

import ray

from raykv.actors import placement
from raykv.actors.coordinator import CoordinatorActor
from raykv.actors.names import NAMESPACE, coord_name, node_name
from raykv.actors.storage_node import StorageNodeActor
from raykv.cluster.config import StoreConfig
from raykv.errors import InvalidArgument, NodeUnavailable

log = logging.getLogger(__name__)

RECORD = "store.json"
RESOLVER = "resolver.pkl"
WATCH_EVERY = 2.0
STATUS_TIMEOUT = 3.0


def _atomic_write(path: str, data: bytes) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_record(data_dir: str) -> dict | None:
    """The persisted store record of ``data_dir``, or None when it holds no store."""
    p = os.path.join(data_dir, RECORD)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=100)
class StoreManager:
    """Administration of one store: membership record, placement, add/remove, status, shutdown."""

    def __init__(self, store: str, data_dir: str, config: StoreConfig | None = None,
                 resolver_blob: bytes | None = None, nodes: int = 0, weights: list | None = None,
                 datacenters: list | None = None, auto_join: bool = True, autoscale: dict | None = None) -> None:
        self.store, self.data_dir = store, os.path.abspath(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        rec = load_record(self.data_dir)
        if rec is None:
            if config is None:
                raise InvalidArgument(f"data_dir {self.data_dir} holds no store and no config was given")
            rec = {"name": store, "config": dataclasses.asdict(config), "nodes": {}, "next_id": 1,
                   "auto_join": auto_join, "autoscale": autoscale, "draining": [], "created": time.time()}
            self.rec = rec
            for i in range(nodes):
                self._new_node_entry((weights or [1.0] * nodes)[i], (datacenters or [None] * nodes)[i])
        else:
            self.rec = rec
            if config is not None:   # re-open: keep membership, take the caller's tunables (same N)
                old = StoreConfig.from_record(rec["config"])
                if config.replicas != old.replicas:
                    raise InvalidArgument(f"data_dir {self.data_dir} holds store {rec['name']!r} with replicas "
                                          f"N={old.replicas}; re-open it with replicas={old.replicas}")
                rec["config"] = dataclasses.asdict(config)
        rp = os.path.join(self.data_dir, RESOLVER)
        if resolver_blob is not None:
            _atomic_write(rp, resolver_blob)
        self.resolver_blob = resolver_blob
        if self.resolver_blob is None and os.path.exists(rp):
            with open(rp, "rb") as f:
                self.resolver_blob = f.read()
        if autoscale is not None:
            rec["autoscale"] = autoscale
        rec.setdefault("draining", [])
        self._remap_machines()
        self.config = StoreConfig.from_record(rec["config"])
        self.scaler = None
        if rec.get("autoscale") is not None:
            from raykv.actors.scaler import ScalePolicy, Scaler
            self.scaler = Scaler(ScalePolicy(**rec["autoscale"]))
        self._save()
        self.nodes: dict[str, object] = {}
        self.coords: dict[str, object] = {}
        self._lock = asyncio.Lock()
        self._ensure_actors()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    # --- record ---
    def _new_node_entry(self, weight: float, datacenter: str | None, machine: str | None = None) -> str:
        node_id = f"n{self.rec['next_id']}"
        self.rec["next_id"] += 1
        load: dict[str, int] = {}
        for e in self.rec["nodes"].values():
            load[e["machine"]] = load.get(e["machine"], 0) + 1
        machine = machine or placement.pick_machine(load)
        self.rec["nodes"][node_id] = {"weight": float(weight), "datacenter": datacenter, "machine": machine}
        return node_id

    def _remap_machines(self) -> None:
        """Nodes recorded on machines that are gone (a new Ray cluster, a lost machine) get a live one."""
        alive = set(placement.storage_machines())
        load: dict[str, int] = {}
        for e in self.rec["nodes"].values():
            if e["machine"] in alive:
                load[e["machine"]] = load.get(e["machine"], 0) + 1
        for e in self.rec["nodes"].values():
            if e["machine"] not in alive:
                e["machine"] = placement.pick_machine(load)
                load[e["machine"]] = load.get(e["machine"], 0) + 1

    def _save(self) -> None:
        _atomic_write(os.path.join(self.data_dir, RECORD), json.dumps(self.rec, indent=1).encode())

    # --- actors ---
    def _node_handle(self, node_id: str):
        e = self.rec["nodes"][node_id]
        seeds = [n for n in self.rec["nodes"] if n != node_id]
        opts = placement.storage_options(e["machine"])
        return StorageNodeActor.options(name=node_name(self.store, node_id), namespace=NAMESPACE,
                                        lifetime="detached", get_if_exists=True, **opts).remote(
            self.store, node_id, self.data_dir, self.config, weight=e["weight"],
            datacenter=e["datacenter"], seeds=seeds)

    def _ensure_actors(self) -> None:
        for node_id in self.rec["nodes"]:
            if node_id not in self.nodes:
                self.nodes[node_id] = self._node_handle(node_id)
        machines = sorted({e["machine"] for e in self.rec["nodes"].values()}) or placement.storage_machines()[:1]
        for m in machines:
            if m not in self.coords:
                alive = {n["NodeID"] for n in placement.alive_nodes()}
                strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(m, soft=True) \
                    if m in alive else None
                opts = {"scheduling_strategy": strategy} if strategy else {}
                self.coords[m] = CoordinatorActor.options(
                    name=coord_name(self.store, m), namespace=NAMESPACE, lifetime="detached",
                    get_if_exists=True, **opts).remote(self.store, self._coord_config(m), list(self.rec["nodes"]))

    def _coord_config(self, machine: str) -> StoreConfig:
        return coordinator_config(self.config, self.rec["nodes"], machine)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY)
            try:
                if not placement.cluster_has_storage_resource():
                    continue
                if self.rec.get("auto_join", True):
                    await self._auto_join()
                if self.scaler is not None:
                    await self._autoscale()
            except Exception:
                log.exception("store %s: watcher", self.store)

    async def _auto_join(self) -> None:
        """A machine carrying ``raykv_storage`` that hosts no node of this store gets one."""
        hosting = {e["machine"] for e in self.rec["nodes"].values()}
        for m in placement.storage_machines():
            if m not in hosting and m not in self.rec["draining"]:
                log.info("store %s: machine %s carries %s and hosts no node; adding one",
                         self.store, m, placement.STORAGE_RESOURCE)
                await self.add_node(machine=m)

    async def _autoscale(self) -> None:
        """Traffic-based scaling: ask Ray's autoscaler for machines, or drain one machine when idle."""
        sts = await asyncio.gather(*(h.status.remote() for h in self.nodes.values()), return_exceptions=True)
        from raykv.actors.scaler import node_traffic
        cs = node_traffic([st for st in sts if isinstance(st, dict)], self.config.replicas)
        alive = set(placement.storage_machines())
        hosting = sorted({e["machine"] for e in self.rec["nodes"].values()} & alive)
        want = self.scaler.step(cs, len(hosting), time.monotonic())
        if want < len(hosting):
            load = {m: [n for n, e in self.rec["nodes"].items() if e["machine"] == m] for m in hosting}
            victim = min(hosting, key=lambda m: (len(load[m]), m))
            if len(self.rec["nodes"]) - len(load[victim]) < self.config.replicas:
                return
            log.info("store %s: low traffic (%.0f key ops/s); draining machine %s", self.store,
                     self.scaler.rate, victim)
            self.rec["draining"].append(victim)
            self._save()
            for node_id in load[victim]:
                await self.remove_node(node_id)

    # --- API ---
    async def describe(self) -> dict:
        """Everything a facade needs: config, resolver blob, node ids, coordinator actor names."""
        return {"name": self.store, "data_dir": self.data_dir, "config": self.config,
                "resolver_blob": self.resolver_blob, "nodes": dict(self.rec["nodes"]),
                "coordinators": {m: coord_name(self.store, m) for m in self.coords}}

    async def wait_ready(self, timeout: float = 60.0) -> dict:
        """Wait until every node answers status and every coordinator sees every node in its ring."""
        deadline = time.monotonic() + timeout
        want = set(self.rec["nodes"])
        last = None
        while time.monotonic() < deadline:
            try:
                sts = await asyncio.gather(*(h.status.remote() for h in self.nodes.values()))
                cs = await asyncio.gather(*(c.status.remote() for c in self.coords.values()))
                last = cs
                failed = {s["node_id"] for s in sts if s.get("open_error")}   # reported by status(), not fatal
                if all(_ring_members(c) >= want - failed for c in cs) and \
                        all(s.get("start_error") is None for s in sts):
                    return {"nodes": len(sts), "coordinators": len(cs)}
            except Exception as e:
                last = e
            await asyncio.sleep(0.2)
        raise NodeUnavailable(f"store {self.store!r} did not converge within {timeout}s (last: {last!r})")

    async def add_node(self, weight: float = 1.0, datacenter: str | None = None, machine: str | None = None) -> str:
        async with self._lock:
            node_id = self._new_node_entry(weight, datacenter, machine)
            self._save()
            self._ensure_actors()
            await self.nodes[node_id].status.remote()
            await asyncio.gather(*(c.add_node.remote(node_id) for c in self.coords.values()),
                                 return_exceptions=True)
            return node_id

    async def remove_node(self, node_id: str, timeout: float = 600.0) -> None:
        async with self._lock:
            if node_id not in self.rec["nodes"]:
                raise InvalidArgument(f"store {self.store!r} has no node {node_id!r}; "
                                      f"nodes are {sorted(self.rec['nodes'])}")
            if len(self.rec["nodes"]) - 1 < self.config.replicas:
                raise InvalidArgument(f"removing {node_id!r} would leave fewer nodes than replicas "
                                      f"N={self.config.replicas}; add a node first")
            h = self.nodes.get(node_id)
            if h is not None and await self._answers(h):
                await asyncio.wait_for(h.leave.remote(), timeout)    # decommission: stream its ranges away
                await self._stop(h)
            else:
                await self._remove_dead(node_id, h)                   # removenode: the others take over
            del self.rec["nodes"][node_id]
            self.nodes.pop(node_id, None)
            self._save()
            self._retire_coordinators()

    def _retire_coordinators(self) -> None:
        """Stop the coordinator of each machine that hosts no storage node any more (one always stays). A
        drained machine keeps none of this store's actors, so Ray's autoscaler can reclaim it once idle (the
        real-autoscaler test found a drained machine kept forever by its coordinator). A client holding that
        coordinator fails over to the next (``StoreClient.call``)."""
        hosting = {e["machine"] for e in self.rec["nodes"].values()}
        for m in [m for m in self.coords if m not in hosting]:
            if len(self.coords) <= 1:
                return
            try:
                ray.kill(self.coords.pop(m), no_restart=True)
            except Exception:   # noqa: BLE001 - already gone
                pass

    @staticmethod
    async def _answers(h) -> bool:
        try:
            await asyncio.wait_for(h.status.remote(), STATUS_TIMEOUT)
            return True
        except Exception:   # noqa: BLE001 - dead, restarting forever, or its machine is gone
            return False

    async def _remove_dead(self, node_id: str, h) -> None:
        """A node that cannot leave by itself: stop its actor for good, then gossip a "left" entry for it at a
        higher incarnation than any live view holds (``membership.removal``) to every live node. Its ranges
        pass to their next owners and Merkle anti-entropy copies the data there from the surviving replicas
        (N-1 copies until then)."""
        from raykv.cluster.membership import removal
        if h is not None:
            ray.kill(h, no_restart=True)
        live = {nid: x for nid, x in self.nodes.items() if nid != node_id}
        views = await asyncio.gather(*(x.call.remote("gossip", []) for x in live.values()), return_exceptions=True)
        entry = removal([v for v in views if isinstance(v, list)], node_id)
        if entry is None:
            raise NodeUnavailable(f"no live storage node of store {self.store!r} answered with {node_id!r} "
                                  f"in its view; retry when the store is reachable")
        gone = [entry]
        acks = await asyncio.gather(*(x.call.remote("gossip", gone) for x in live.values()), return_exceptions=True)
        failed = {nid: a for nid, a in zip(live, acks) if isinstance(a, BaseException)}
        if len(failed) == len(live):
            raise NodeUnavailable(f"no live storage node of store {self.store!r} took the removal of {node_id!r}: "
                                  f"{failed}; retry when the store is reachable")
        if failed:      # gossip carries it to them from the others
            log.warning("store %s: removal of %s not delivered to %s", self.store, node_id, sorted(failed))
        log.warning("store %s: removed dead node %s; anti-entropy re-replicates its ranges", self.store, node_id)

    async def kill_node(self, node_id: str, restart: bool = False) -> None:
        """Kill a node's actor at once (no flush): a crash. ``restart=True`` lets Ray restart it at once
        (like a process crash); otherwise it stays down until ``restart_node``."""
        if node_id not in self.nodes:
            raise InvalidArgument(f"store {self.store!r} has no running node {node_id!r}")
        ray.kill(self.nodes[node_id], no_restart=not restart)
        if not restart:
            self.nodes.pop(node_id, None)
            await self._wait_gone(node_name(self.store, node_id))

    @staticmethod
    async def _wait_gone(name: str, timeout: float = 10.0) -> None:
        """``ray.kill`` returns before the actor is dead; wait until its name is free (so a restart creates a
        new actor instead of finding the dying one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                return
            await asyncio.sleep(0.05)

    async def restart_node(self, node_id: str) -> None:
        """Bring a node killed with ``kill_node`` back: a new actor re-opens ``data_dir/<id>``."""
        if node_id not in self.rec["nodes"]:
            raise InvalidArgument(f"store {self.store!r} has no node {node_id!r}")
        self.nodes.pop(node_id, None)
        self._ensure_actors()
        await self.nodes[node_id].status.remote()

    async def _stop(self, h) -> None:
        try:
            await asyncio.wait_for(h.close.remote(), 10.0)
        except Exception:
            pass
        ray.kill(h, no_restart=True)

    async def status(self) -> dict:
        """Per-node status (alive=False when a node does not answer) and the coordinators' ring view."""
        async def one(node_id, h):
            e = self.rec["nodes"][node_id]
            try:
                if h is None:
                    raise NodeUnavailable(f"{node_id} was killed")
                st = await asyncio.wait_for(h.status.remote(), STATUS_TIMEOUT)
                st["alive"] = bool(st.get("alive", True))
            except Exception as ex:
                st = {"node_id": node_id, "alive": False, "error": type(ex).__name__,
                      "actor_name": node_name(self.store, node_id), "ray_node_id": None,
                      "keys": None, "disk_bytes": None, "hints_pending": None}
            st.setdefault("node_id", node_id)
            st.setdefault("weight", e["weight"])
            st.setdefault("datacenter", e["datacenter"])
            return st
        nodes = await asyncio.gather(*(one(n, self.nodes.get(n)) for n in self.rec["nodes"]))
        coord = None
        for c in self.coords.values():
            try:
                coord = await asyncio.wait_for(c.status.remote(), STATUS_TIMEOUT)
                break
            except Exception:
                continue
        return {"name": self.store, "data_dir": self.data_dir, "nodes": nodes, "coordinator": coord,
                "config": self.config}

    async def shutdown(self) -> None:
        """Close and kill every node and coordinator of the store (data stays in ``data_dir``)."""
        self._task.cancel()
        await asyncio.gather(*(self._stop(h) for h in self.nodes.values()), return_exceptions=True)
        for c in self.coords.values():
            ray.kill(c, no_restart=True)
        self.nodes.clear()
        self.coords.clear()


def coordinator_config(config: StoreConfig, nodes: dict, machine: str) -> StoreConfig:
    """The config for the coordinator on ``machine``: its ``local_datacenter`` (for ``local_quorum``) is the
    datacenter of the storage nodes on that machine when they all share one and the store did not fix it."""
    dcs = {e["datacenter"] for e in nodes.values() if e["machine"] == machine} - {None}
    if config.local_datacenter is None and len(dcs) == 1:
        return config.with_(local_datacenter=dcs.pop())
    return config


def _ring_members(coord_status: dict) -> set:
    """Node ids a coordinator's status reports as alive members of its ring."""
    members = coord_status.get("members") or {}
    return {nid for nid, m in members.items()
            if (m.get("status") if isinstance(m, dict) else m) in ("alive", "leaving")}
