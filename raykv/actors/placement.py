"""Where actors go: Ray machines carrying the ``raykv_storage`` resource when any exist, else any machine.

Pure functions of ``ray.nodes()`` plus the options builder; the store manager
uses them to spread storage nodes over machines (least-loaded first) and to put
one coordinator on each machine that hosts storage. Affinity is *soft*: an actor
whose machine died restarts on another eligible machine (its data directory is
then refilled by hinted handoff and anti-entropy if that machine cannot see it).
"""

from __future__ import annotations

from collections import Counter

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raykv.actors.names import STORAGE_RESOURCE

STORAGE_SHARE = 0.001   # of the raykv_storage resource per storage actor: many nodes fit on one machine


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def storage_machines() -> list[str]:
    """Ray node ids eligible for storage: those with ``raykv_storage`` if any have it, else all alive ones."""
    nodes = alive_nodes()
    tagged = [n["NodeID"] for n in nodes if n.get("Resources", {}).get(STORAGE_RESOURCE, 0) > 0]
    return sorted(tagged) if tagged else sorted(n["NodeID"] for n in nodes)


def cluster_has_storage_resource() -> bool:
    return any(n.get("Resources", {}).get(STORAGE_RESOURCE, 0) > 0 for n in alive_nodes())


def pick_machine(load: dict[str, int], machines: list[str] | None = None) -> str:
    """The eligible machine hosting the fewest storage nodes (ties: by id, deterministic)."""
    machines = machines if machines is not None else storage_machines()
    counts = Counter({m: 0 for m in machines})
    for m, c in load.items():
        if m in counts:
            counts[m] += c
    return min(machines, key=lambda m: (counts[m], m))


def storage_options(ray_node_id: str | None) -> dict:
    """``.options()`` for a storage actor: the storage resource when the cluster has it, soft affinity."""
    opts: dict = {}
    if cluster_has_storage_resource():
        opts["resources"] = {STORAGE_RESOURCE: STORAGE_SHARE}
    if ray_node_id:
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray_node_id, soft=True)
    return opts
