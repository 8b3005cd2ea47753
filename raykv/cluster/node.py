"""StorageNode: the replica-side logic of one storage node (CONTRACT STUB, to be implemented).

Plain class, no Ray. The Ray actor (raykv/actors/storage_node.py) and the
simulator both wrap it: they construct it, call ``await node.start()`` once,
call ``await node.tick()`` periodically, and route transport calls for method
``m`` to ``await node.rpc_<m>(*args)``.
"""

from __future__ import annotations

import random

from raykv.cluster.backend import VersionedBackend
from raykv.cluster.config import StoreConfig
from raykv.cluster.transport import Transport


class StorageNode:
    """Applies versioned writes, serves reads, keeps hints, gossips, repairs and streams ranges."""

    def __init__(self, node_id: str, backend: VersionedBackend, transport: Transport,
                 config: StoreConfig, *, weight: float = 1.0, datacenter: str | None = None,
                 host: str | None = None, seeds: list[str] = (), rng: random.Random | None = None) -> None:
        """``seeds``: node ids to gossip with first (empty for the very first node). ``host`` is the
        machine id used to spread replicas over distinct machines (the Ray node id on Ray)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Recover membership from the backend's metadata (or join through ``seeds``)."""

    async def tick(self) -> None:
        """One round of periodic work, each part on its own interval: gossip, failure detection,
        hint replay, anti-entropy, join/leave streaming."""

    # --- RPCs: transport method "x" runs rpc_x ---
    async def rpc_put_batch(self, items: list) -> list:
        """items: [(key, [Sibling,...]), ...] -> per-item ack (True)."""

    async def rpc_get_batch(self, keys: list[bytes]) -> list:
        """-> [[Sibling,...] per key]."""

    async def rpc_gossip(self, view: dict) -> dict:
        """Merge the caller's membership view, return ours."""

    async def rpc_leave(self) -> None:
        """Start leaving: stream every range to its new owner, then mark ourselves left."""

    async def rpc_status(self) -> dict:
        """{'node_id', 'alive', 'datacenter', 'weight', 'host', 'keys', 'disk_bytes', 'hints_pending', ...}."""
