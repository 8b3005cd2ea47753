"""Anti-entropy: Merkle-tree repair between two replicas of the same token arcs (Dynamo section 4.7).

One exchange between node A and peer B covers every ring segment that both
replicate ("shared arcs", computed from A's ring view). A builds a MerkleTree
over (token, key, sibling_digest) of its keys in those arcs, B builds the same
over its own keys in the arcs A names (so a disagreement about the ring costs
extra repair traffic, never a wrong answer), the roots are compared, and on a
mismatch ``diff`` yields the token sub-arcs whose leaves differ. A fetches B's
keys there, merges both ways with ``vclock.sync`` (a repair is a reconciling
write, so concurrent siblings survive), writes locally what changed for it and
pushes to B what changed for B. Equal roots cost two tree builds and one call.

Trees span the whole circle (0, 2**64 - 1] with ``depth`` levels (config.extra
"merkle_depth", default 10), so one exchange per peer pair suffices whatever
the number of virtual nodes. Building a tree reads every key of the shared
arcs: O(keys) per exchange, like Cassandra's validation compaction.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from .merkle import MerkleTree, sibling_digest
from .ring import TOKEN_SPACE, Ring, key_token
from .vclock import sync
from ..errors import NodeUnavailable, RayKVError

if TYPE_CHECKING:
    from .node import StorageNode

LO, HI = 0, TOKEN_SPACE - 1
DEFAULT_DEPTH = 10       # Merkle tree levels unless config.extra["merkle_depth"] says otherwise


def merkle_depth(config) -> int:
    """The Merkle tree depth a store uses (``config.extra["merkle_depth"]``, default ``DEFAULT_DEPTH``)."""
    return int(config.extra.get("merkle_depth", DEFAULT_DEPTH))
_SEGMENTS: dict[tuple, list] = {}


def segment_replicas(ring: Ring, n: int, dc_replicas: dict | None) -> list[tuple[int, int, tuple[str, ...]]]:
    """(lo, hi, replicas) per ring segment, cached per (ring, n). O(segments) on a miss."""
    key = (id(ring), n, tuple(sorted((dc_replicas or {}).items())))
    hit = _SEGMENTS.get(key)
    if hit is not None and hit[0] is ring:
        return hit[1]
    segs = [(lo, hi, tuple(ring.replicas_for_range(lo, hi, n, dc_replicas))) for lo, hi, _ in ring.ranges()]
    if len(_SEGMENTS) > 256:
        _SEGMENTS.clear()
    _SEGMENTS[key] = (ring, segs)
    return segs


def shared_arcs(ring: Ring, a: str, b: str, n: int, dc_replicas: dict | None = None) -> list[tuple[int, int]]:
    """Segments that both ``a`` and ``b`` replicate, adjacent ones merged (fewer range scans)."""
    out: list[list[int]] = []
    for lo, hi, reps in segment_replicas(ring, n, dc_replicas):
        if a in reps and b in reps:
            if out and out[-1][1] == lo:
                out[-1][1] = hi
            else:
                out.append([lo, hi])
    if len(out) > 1 and out[-1][1] == out[0][0]:      # the last arc runs into the first across the wrap
        out[0][0] = out.pop()[0]
    if len(out) == 1 and out[0][0] == out[0][1]:
        return [(0, 0)]
    return [(lo, hi) for lo, hi in out]


def items_in(backend, arcs: list[tuple[int, int]], now: float | None = None, grace: float = 0.0):
    """(token, key, siblings) of every key of ``arcs``; with ``now``, keys that are garbage (dead past the
    tombstone grace, see garbage.collectable) are left out, so repair never resurrects a collected key."""
    from .garbage import collectable
    for lo, hi in arcs:
        for key, sibs in backend.iter_range(lo, hi):
            if now is not None and collectable(sibs, now, grace):
                continue
            yield key_token(key), key, sibs


def build_tree(backend, arcs: list[tuple[int, int]], depth: int, now: float | None = None,
               grace: float = 0.0) -> MerkleTree:
    items = ((t, k, sibling_digest(s)) for t, k, s in items_in(backend, arcs, now, grace))
    return MerkleTree.build(LO, HI, items, depth=depth)


class ArcSet:
    """Sorted disjoint non-wrapping arcs (lo, hi] (a Merkle diff) with O(log n) membership."""

    def __init__(self, arcs: list[tuple[int, int]]) -> None:
        self.arcs = sorted(arcs, key=lambda a: a[1])
        self._his = [hi for _, hi in self.arcs]

    def __contains__(self, token: int) -> bool:
        i = bisect_left(self._his, token)
        return i < len(self.arcs) and self.arcs[i][0] < token

    def __bool__(self) -> bool:
        return bool(self.arcs)


def fetch_diff(backend, arcs: list[tuple[int, int]], diff: list[tuple[int, int]], now: float | None = None,
               grace: float = 0.0) -> list[tuple[bytes, list]]:
    """Keys of ``arcs`` whose token falls in the differing sub-arcs ``diff``."""
    inside = ArcSet(diff)
    return [(k, s) for t, k, s in items_in(backend, arcs, now, grace) if t in inside]


async def exchange(node: "StorageNode", peer: str, arcs: list[tuple[int, int]], depth: int) -> int:
    """One Merkle exchange with ``peer`` over ``arcs``; returns the number of keys repaired (either side)."""
    timeout = node.config.request_timeout
    now, grace = node.transport.now(), node.config.tombstone_grace
    mine_tree = build_tree(node.backend, arcs, depth, now, grace)
    theirs_tree = MerkleTree.from_bytes(await node.transport.call(peer, "ae_tree", arcs, depth, timeout=timeout))
    if mine_tree.root == theirs_tree.root:
        return 0
    diff = mine_tree.diff(theirs_tree)
    if not diff:
        return 0
    theirs = dict(await node.transport.call(peer, "ae_fetch", arcs, diff, timeout=timeout))
    mine = dict(fetch_diff(node.backend, arcs, diff, now, grace))
    local, push = [], []
    for key in sorted(set(mine) | set(theirs)):
        m, t = mine.get(key, []), theirs.get(key, [])
        merged = sync(m, t)
        if merged != m:
            local.append((key, merged))
        if merged != t:
            push.append((key, merged, None))
    if local:
        node.apply_local(local)
    if push:
        acks = await node.transport.call(peer, "put_batch", push, timeout=timeout)
        if not all(acks):
            raise NodeUnavailable(f"anti-entropy push to {peer} was not fully acknowledged")
    return len(local) + len(push)


async def anti_entropy_round(node: "StorageNode", peers: list[str] | None = None) -> int:
    """One exchange with every up peer that shares arcs with ``node`` (or only with ``peers``); returns keys
    repaired. Peers that cannot be reached are skipped (the next round retries)."""
    m = node.membership
    ring = m.ring("read")
    me = node.node_id
    if me not in ring:
        return 0
    n, dcr = node.config.replicas, node.config.dc_replicas
    depth = merkle_depth(node.config)
    repaired = 0
    now = node.transport.now()
    for peer in sorted(ring.nodes):
        if peer == me or not m.is_up(peer, now) or (peers is not None and peer not in peers):
            continue
        arcs = shared_arcs(ring, me, peer, n, dcr)
        if not arcs:
            continue
        try:
            repaired += await exchange(node, peer, arcs, depth)
        except RayKVError:
            continue
    node.counters["anti_entropy_rounds"] += 1
    node.counters["anti_entropy_repairs"] += repaired
    return repaired
