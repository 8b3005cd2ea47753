"""Garbage a storage node may drop: tombstones past their grace period, and copies of ranges it no longer
replicates once their owners hold them (riak_core ownership handoff; Cassandra ``gc_grace_seconds`` and
``nodetool cleanup``).

Tombstones: a key whose every sibling is a tombstone or an expired TTL version,
older than ``config.tombstone_grace`` seconds by the node's clock, is removed.
Safe as long as anti-entropy (or read repair) reached every replica within the
grace period, the same contract as Cassandra's: a replica that missed the
delete for longer than the grace could resurrect the old value.

Foreign ranges: after a join or leave a node keeps the keys of arcs it no
longer replicates (streaming copies, it never moves). When the membership is
stable (nobody joining or leaving) and every replica of such an arc is up, the
node pushes its keys there (a reconciling write) and, once every replica
acknowledged, removes each key whose stored siblings did not change meanwhile.
Nothing is dropped before N replicas hold it. Cost: one range scan per foreign
arc per round, O(keys held outside our ranges).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .antientropy import segment_replicas
from .vclock import Sibling
from ..errors import RayKVError

if TYPE_CHECKING:
    from .node import StorageNode

BATCH = 500


def collectable(siblings: list[Sibling], now: float, grace: float) -> bool:
    """True when every sibling is dead (tombstone or expired) since more than ``grace`` seconds."""
    if not siblings:
        return False
    for s in siblings:
        if s.value is not None and not s.expired(now):
            return False
        died = s.timestamp if s.value is None else s.expires_at
        if died is None or now - died < grace:
            return False
    return True


def collect_tombstones(node: "StorageNode") -> int:
    """Remove dead keys past the grace period from our backend; returns how many. O(keys)."""
    now, grace = node.transport.now(), node.config.tombstone_grace
    dead = [key for key, sibs in node.backend.iter_range(0, 0) if collectable(sibs, now, grace)]
    removed = 0
    for key in dead:
        with node.write_lock:                  # re-checked under the lock: a write may have landed since
            if collectable(node.backend.get(key), now, grace):
                node.backend.remove(key)
                removed += 1
    node.counters["tombstones_collected"] += removed
    return removed


async def hand_off_foreign(node: "StorageNode") -> int:
    """Push keys of arcs we do not replicate to their replicas, then drop our copies; returns keys dropped."""
    m = node.membership
    if m.node_ids(("joining", "leaving")):
        return 0                                   # membership in motion: streaming owns these copies
    ring = m.ring("read")
    me, now = node.node_id, node.transport.now()
    if me not in ring.nodes:
        return 0
    dropped = 0
    for lo, hi, reps in segment_replicas(ring, node.config.replicas, node.config.dc_replicas):
        if me in reps or not reps:
            continue
        items = list(node.backend.iter_range(lo, hi))
        if not items or not all(m.is_up(r, now) for r in reps):
            continue
        for start in range(0, len(items), BATCH):
            batch = items[start:start + BATCH]
            try:
                for r in reps:
                    acks = await node.transport.call(r, "put_batch", [(k, s) for k, s in batch],
                                                     timeout=node.config.request_timeout)
                    if not all(acks):
                        raise RayKVError(f"{r} refused part of a handoff batch")
            except RayKVError:
                return dropped
            for key, sibs in batch:
                with node.write_lock:
                    if node.backend.get(key) == sibs:
                        node.backend.remove(key)
                        dropped += 1
    node.counters["handoff_keys"] += dropped
    return dropped
