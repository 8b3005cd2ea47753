"""Coordinator: request-side logic: quorum fan-out, sloppy quorum, read repair (CONTRACT STUB).

Plain class, no Ray. The async Ray coordinator actor wraps one; the simulator
drives several. Stateless apart from its membership view (refreshed by
gossiping with storage nodes) and the counter of the dots it mints (its actor
id is unique per process start, so a restart never reuses a dot).
"""

from __future__ import annotations

import random

from raykv.cluster.config import StoreConfig
from raykv.cluster.transport import Transport
from raykv.cluster.vclock import Sibling, VClock


class Coordinator:
    """Routes one client request to the key's replicas and decides when it has succeeded."""

    def __init__(self, coord_id: str, transport: Transport, config: StoreConfig, *,
                 seeds: list[str], rng: random.Random | None = None) -> None:
        raise NotImplementedError

    async def refresh(self) -> None:
        """Pull the membership view from a storage node (gossip)."""

    async def get(self, key: bytes, *, r: int | None = None, consistency: str | None = None,
                  timeout: float | None = None) -> list[Sibling]:
        """Live siblings of ``key`` (tombstones/expired removed; [] when absent), after R replies; read repair in background."""

    async def put(self, key: bytes, value: bytes | None, *, context: VClock | None = None,
                  w: int | None = None, consistency: str | None = None, ttl: float | None = None,
                  timeout: float | None = None) -> VClock:
        """Write (value None = delete) after W acks; returns the new version's clock (the new context)."""

    async def get_many(self, keys: list[bytes], *, r: int | None = None,
                       consistency: str | None = None) -> dict[bytes, list[Sibling]]:
        """One call per replica, not one per key."""

    async def put_many(self, items: list[tuple[bytes, bytes | None]], *, w: int | None = None,
                       consistency: str | None = None, ttl: float | None = None) -> dict[bytes, VClock]:
        """One call per replica, not one per key."""

    async def scan_page(self, cursor: bytes | None, limit: int) -> tuple[list[tuple[bytes, list[Sibling]]], bytes | None]:
        """A page of live keys for ``items()``; cursor None starts, returned None ends."""

    async def add_node(self, node_id: str) -> None: ...
    async def status(self) -> dict: ...
