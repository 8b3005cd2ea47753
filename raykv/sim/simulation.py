"""Simulation: a seeded in-process cluster (storage nodes + coordinators) on the fault-injecting network.

Usage (see docs/simulation.md)::

    sim = Simulation(seed=7, nodes=5, faults=Faults(drop=0.02, duplicate=0.02), skew=300.0)
    async def scenario():
        await sim.boot()
        c = sim.coordinator("c0")
        await c.put(b"k", b"v")
        sim.crash("n1"); sim.partition(["n0", "n2"], ["n3", "n4"])
        ...
        k = await sim.settle()          # heal, restart, hints delivered, anti-entropy until converged
    sim.run(scenario())
    print(sim.trace_hash)               # same seed -> same hash

Everything random (network delays and faults, node and coordinator rngs,
clock skews) derives from ``seed``; the virtual-time loop makes the
interleaving a function of the seed alone.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

from raykv.cluster.antientropy import build_tree, merkle_depth, shared_arcs
from raykv.cluster.config import StoreConfig
from raykv.cluster.coordinator import Coordinator
from raykv.cluster.memory_backend import MemoryBackend
from raykv.cluster.membership import cached_ring
from raykv.cluster.node import StorageNode
from raykv.cluster.ring import NodeInfo
from raykv.sim.loop import VirtualTimeLoop
from raykv.sim.network import Faults, SimNetwork

SIM_CONFIG = StoreConfig(
    replicas=3, read_quorum=2, write_quorum=2, tokens_per_node=16, request_timeout=0.4,
    gossip_interval=0.2, phi_threshold=8.0, hint_replay_interval=0.5, anti_entropy_interval=3.0,
    extra={"merkle_depth": 6},
)


class Simulation:
    """A whole cluster in one process on virtual time; every helper is deterministic given ``seed``."""

    def __init__(self, seed: int, nodes: int = 5, config: StoreConfig | None = None, faults: Faults | None = None,
                 skew: float = 0.0, datacenters: list[str] | None = None, tick: float = 0.1) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.loop = VirtualTimeLoop()
        self.net = SimNetwork(self.loop, random.Random(self.rng.getrandbits(64)), faults)
        self.config = (config or SIM_CONFIG).validate()
        self.skew_bound = skew
        self.tick = tick
        self.backends: dict[str, MemoryBackend] = {}
        self.nodes: dict[str, StorageNode] = {}
        self.specs: dict[str, dict] = {}
        self.coordinators: dict[str, Coordinator] = {}
        self._incarnations: dict[str, int] = {}
        for i in range(nodes):
            dc = datacenters[i % len(datacenters)] if datacenters else None
            self.specs[f"n{i}"] = {"weight": 1.0, "datacenter": dc, "host": f"h{i}"}

    # ------------------------------------------------------------------ running
    def run(self, coro: Awaitable[Any]) -> Any:
        """Run ``coro`` to completion on the virtual loop; re-raise any bug seen in background tasks."""
        try:
            result = self.loop.run_until_complete(coro)
        except BaseException as e:
            self.close()
            if self.net.errors and not isinstance(e, KeyboardInterrupt):
                raise self.net.errors[0] from e     # a bug in a background task explains the failure
            raise
        self.check_errors()
        return result

    def run_booted(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Boot the cluster, run ``fn()`` to completion on the virtual loop, then close the loop."""
        async def main():
            await self.boot()
            return await fn()
        try:
            return self.run(main())
        finally:
            self.close()

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.close()

    def check_errors(self) -> None:
        if self.net.errors:
            raise self.net.errors[0]

    def now(self) -> float:
        return self.loop.time()

    @property
    def trace_hash(self) -> str:
        return self.net.trace_hash

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 60.0, step: float = 0.1) -> bool:
        deadline = self.now() + timeout
        while not pred():
            if self.now() >= deadline:
                return False
            await asyncio.sleep(step)
        return True

    # ------------------------------------------------------------------ nodes
    def _skew(self, pid: str) -> None:
        if pid not in self.net.skew:
            self.net.skew[pid] = self.rng.uniform(-self.skew_bound, self.skew_bound) if self.skew_bound else 0.0

    def start_node(self, node_id: str, seeds: list[str] | None = None) -> StorageNode:
        spec = self.specs.setdefault(node_id, {"weight": 1.0, "datacenter": None, "host": node_id})
        backend = self.backends.setdefault(node_id, MemoryBackend())
        inc = self._incarnations[node_id] = self._incarnations.get(node_id, 0) + 1
        self._skew(node_id)
        if seeds is None:
            seeds = [nid for nid in sorted(self.specs) if nid != node_id and nid in self.nodes] or []
        node = StorageNode(node_id, backend, self.net.transport(node_id), self.config, seeds=seeds,
                           rng=random.Random(f"{self.seed}/{node_id}/{inc}"), **spec)
        self.nodes[node_id] = node
        self.net.register(node_id, node)
        self.net.spawn(node_id, self._drive(node))
        return node

    async def _drive(self, node: StorageNode) -> None:
        await node.start()
        while True:
            await node.tick()
            await asyncio.sleep(self.tick)

    def add_node(self, node_id: str, weight: float = 1.0, datacenter: str | None = None) -> StorageNode:
        self.specs[node_id] = {"weight": weight, "datacenter": datacenter, "host": f"h-{node_id}"}
        return self.start_node(node_id)

    def crash(self, node_id: str) -> None:
        """Kill ``node_id``: in-memory state and tasks gone, backend kept."""
        self.net.crash(node_id)
        self.nodes.pop(node_id, None)

    def restart(self, node_id: str) -> StorageNode:
        return self.start_node(node_id)

    def crashed(self) -> list[str]:
        return [nid for nid in sorted(self.specs) if nid not in self.nodes]

    async def leave(self, node_id: str) -> None:
        await self.nodes[node_id].rpc_leave()

    # ------------------------------------------------------------------ network
    def partition(self, *groups) -> None:
        self.net.partition(*groups)

    def isolate(self, node_id: str) -> None:
        others = [p for p in sorted(set(self.specs) | set(self.coordinators)) if p != node_id]
        self.net.partition([node_id], others)

    def heal(self) -> None:
        self.net.heal()

    # ------------------------------------------------------------------ clients
    def coordinator(self, name: str) -> Coordinator:
        if name not in self.coordinators:
            self._skew(name)
            self.coordinators[name] = Coordinator(name, self.net.transport(name), self.config,
                                                  seeds=sorted(self.specs),
                                                  rng=random.Random(f"{self.seed}/coord/{name}"))
            self.net.spawn(name, self._drive_coordinator(self.coordinators[name]))
        return self.coordinators[name]

    async def _drive_coordinator(self, coord: Coordinator) -> None:
        """What the Ray coordinator actor does: refresh the view every gossip interval."""
        while True:
            await coord.refresh()
            await asyncio.sleep(self.config.gossip_interval)

    # ------------------------------------------------------------------ whole-cluster helpers
    def members(self) -> list[str]:
        """Node ids that are in the ring (not left), by the nodes' own declared status."""
        return [nid for nid, node in sorted(self.nodes.items()) if node.status_name != "left"]

    def all_see_all(self) -> bool:
        """Every running node and coordinator sees every running non-left node as up and alive."""
        live = [nid for nid in self.members() if self.nodes[nid].status_name == "alive"]
        if len(live) != len(self.members()):
            return False
        observers = [n for n in self.nodes.values() if n.membership is not None] + list(self.coordinators.values())
        for obs in observers:
            m, t = obs.membership, obs.transport.now()
            for nid in live:
                if m.declared(nid) != "alive" or m.status(nid, t) != "alive":
                    return False
        return True

    async def boot(self, timeout: float = 60.0) -> None:
        """Start every node (the first alone, the others joining through it) and wait until all are alive
        in every view."""
        first, *rest = sorted(self.specs)
        self.start_node(first, seeds=[])
        for nid in rest:
            self.start_node(nid, seeds=[first])
        await self.refresh_coordinators()
        if not await self.wait_until(self._ready, timeout):
            raise AssertionError(f"seed {self.seed}: cluster did not boot within {timeout}s virtual")

    def _ready(self) -> bool:
        if not self.all_see_all():
            return False
        return all(len(c.membership.members) >= len(self.members()) for c in self.coordinators.values())

    async def refresh_coordinators(self) -> None:
        for name in sorted(self.coordinators):
            await self.coordinators[name].refresh()

    def hints_pending(self) -> int:
        return sum(b.hint_count() for b in self.backends.values())

    def _ring(self):
        infos = [NodeInfo(nid, **self.specs[nid]) for nid in self.members()]
        return cached_ring(infos, self.config.tokens_per_node)

    def converged(self) -> bool:
        """Every replica of every key holds the same sibling set (what equal Merkle roots over the arcs two
        replicas share certify; compared directly here, which is cheaper and names no hash collision)."""
        ring = self._ring()
        n, dcr = self.config.replicas, self.config.dc_replicas
        keys = set()
        for nid in ring.nodes:
            keys.update(k for k, _ in self.backends[nid].iter_range(0, 0))
        for key in sorted(keys):
            reps = ring.preference_list(key, n, dcr)
            first = self.backends[reps[0]].get(key)
            if any(self.backends[r].get(key) != first for r in reps[1:]):
                return False
        return True

    def merkle_converged(self) -> bool:
        """Equal Merkle roots for every pair of replicas over every arc both replicate."""
        ring = self._ring()
        ids = sorted(ring.nodes)
        depth = merkle_depth(self.config)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                arcs = shared_arcs(ring, a, b, self.config.replicas, self.config.dc_replicas)
                if arcs and build_tree(self.backends[a], arcs, depth).root != \
                        build_tree(self.backends[b], arcs, depth).root:
                    return False
        return True

    async def anti_entropy(self, max_rounds: int = 20) -> int | None:
        """Run explicit anti-entropy rounds (every node, in id order) until ``converged()``; returns the number
        of rounds K it took (0 if already converged), None if not within ``max_rounds``."""
        for k in range(max_rounds + 1):
            if self.converged():
                return k
            if k == max_rounds:
                break
            for nid in sorted(self.nodes):
                node = self.nodes.get(nid)
                if node is not None and node.status_name in ("alive", "leaving"):
                    await node.anti_entropy_round()
        return None

    async def settle(self, max_rounds: int = 20, timeout: float = 120.0) -> int | None:
        """Heal the network, restart crashed nodes, wait for everyone to see everyone, for hints to drain,
        then anti-entropy to convergence. Returns K (anti-entropy rounds needed), None on failure."""
        self.heal()
        for nid in self.crashed():
            if self.specs[nid].get("left"):
                continue
            self.restart(nid)
        await self.wait_until(self._ready, timeout)
        await self.refresh_coordinators()
        await self.wait_until(lambda: self.hints_pending() == 0, timeout)
        return await self.anti_entropy(max_rounds)
