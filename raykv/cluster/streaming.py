"""Range streaming for join and leave (riak_core handoff, Cassandra bootstrap/decommission, simplified).

Join: a node declares ``joining``; coordinators then send it the writes of the
ranges it will own (the "future" ring) on top of the current replicas, without
counting it toward W. After a settle delay (so those writes are flowing) it
pulls every arc of ``movement_plan(read ring, read ring + me)`` that targets
it, in pages, from one source (the planned one, else another current replica),
merging with ``vclock.sync``. Then it runs one Merkle exchange
(``antientropy.exchange``) with each other current replica over the arcs that
replica holds, so what only that replica has (a write that missed the source)
arrives too, for the price of two trees and the differences, not a second and
third full copy (pulling every arc from every replica streamed ~3x the data).
Only when every arc came from a source does it declare ``alive`` and start
serving reads; an exchange that fails is left to anti-entropy. A crash midway
loses nothing: the sources keep their data, the node restarts as ``joining``
(its status is persisted) and pulls again (pulls are reconciling writes).

Leave: a node declares ``leaving`` (still a replica for reads), pushes every
arc of ``movement_plan(read ring, read ring - me)`` to its new owner in pages,
hands every hint it holds to another up node, and declares ``left`` only when
every push was acknowledged; otherwise it retries on the next tick. Residual races (a write that reached only the old
owners while gossip was spreading) are closed by anti-entropy between the new
replicas. Sources keep their copies (streaming copies, it never moves);
``garbage.py`` drops them once their owners hold them (ownership handoff).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .antientropy import exchange, merkle_depth
from .membership import cached_ring
from .ring import movement_plan
from ..errors import NodeUnavailable, RayKVError

if TYPE_CHECKING:
    from .node import StorageNode

PAGE = 500


async def pull_arc(node: "StorageNode", source: str, lo: int, hi: int) -> int:
    """Page ``(lo, hi]`` from ``source`` into our backend; returns keys received. Raises NodeUnavailable."""
    got = 0
    cursor = lo
    while True:
        items, nxt = await node.transport.call(source, "fetch_range", cursor, hi, PAGE,
                                               timeout=node.config.request_timeout)
        if items:
            node.apply_local(items, merge=True)
            got += len(items)
        if nxt is None:
            return got
        cursor = nxt


async def push_arc(node: "StorageNode", target: str, lo: int, hi: int) -> int:
    """Send our keys of ``(lo, hi]`` to ``target`` in pages; returns keys sent. Raises NodeUnavailable."""
    sent = 0
    page: list = []
    for key, sibs in node.backend.iter_range(lo, hi):
        page.append((key, sibs, None))
        if len(page) >= PAGE:
            await _push(node, target, page)
            sent += len(page)
            page = []
    if page:
        await _push(node, target, page)
        sent += len(page)
    return sent


async def _push(node: "StorageNode", target: str, page: list) -> None:
    acks = await node.transport.call(target, "put_batch", page, timeout=node.config.request_timeout)
    if not all(acks):
        raise NodeUnavailable(f"{target} refused part of a streamed page")


async def join(node: "StorageNode") -> bool:
    """Pull our future ranges; declare alive on success, unless the node was told to leave meanwhile. Returns
    True when the node is alive."""
    m = node.membership
    old = m.ring("read")
    if node.node_id in old.nodes:
        return True
    new = cached_ring(list(old.nodes.values()) + [node.info], m.tokens_per_node)
    n, dcr = node.config.replicas, node.config.dc_replicas
    now = node.transport.now()
    checks: dict[str, list[tuple[int, int]]] = {}     # other replica -> arcs to compare with it (Merkle)
    for t in movement_plan(old, new, n, dcr):
        if node.status_name != "joining":      # told to leave meanwhile (rpc_leave): stop pulling
            return False
        if t.target != node.node_id:
            continue
        sources = [t.source] + [s for s in old.replicas_for_range(t.lo, t.hi, n, dcr) if s != t.source]
        pulled = None
        for src in sources:
            if src != t.source and not m.is_up(src, now):
                continue
            try:
                node.counters["streamed_in"] += await pull_arc(node, src, t.lo, t.hi)
                pulled = src
                break
            except RayKVError:
                continue
        if pulled is None:
            return False
        for other in sources:
            if other != pulled:
                checks.setdefault(other, []).append((t.lo, t.hi))
    depth = merkle_depth(node.config)
    for other, arcs in checks.items():
        if node.status_name != "joining":
            return False
        if not m.is_up(other, node.transport.now()):
            continue
        try:
            node.counters["join_repairs"] += await exchange(node, other, arcs, depth)
        except RayKVError:
            continue                           # anti-entropy compares these replicas later anyway
    if node.status_name != "joining":          # never "alive" over a later "left"
        return False
    node.declare("alive")
    return True


async def leave(node: "StorageNode") -> bool:
    """Push our ranges to their new owners; declare left on success."""
    m = node.membership
    old = m.ring("read")
    if node.node_id not in old.nodes:
        node.declare("left")
        return True
    new = old.without_node(node.node_id)
    n, dcr = node.config.replicas, node.config.dc_replicas
    for t in movement_plan(old, new, n, dcr):
        try:
            node.counters["streamed_out"] += await push_arc(node, t.target, t.lo, t.hi)
        except RayKVError:
            return False
    if not await hand_over_hints(node, new):
        return False
    node.declare("left")
    return True


async def hand_over_hints(node: "StorageNode", ring) -> bool:
    """Give every hint we hold to another up node (the first of the key's replicas in ``ring`` that is not us),
    as a hint for the same target, or as plain data when that node is the target; True when none is left."""
    m, now = node.membership, node.transport.now()
    n, dcr = node.config.replicas, node.config.dc_replicas
    for target, key, sibs in list(node.backend.iter_hints()):
        heirs = [r for r in ring.preference_list(key, n, dcr) + ring.fallbacks(key, n, set(), dcr)
                 if r != node.node_id and m.is_up(r, now)]
        for heir in heirs:
            try:
                acks = await node.transport.call(heir, "put_batch", [(key, sibs, target)],
                                                 timeout=node.config.request_timeout)
            except RayKVError:
                continue
            if all(acks):
                node.backend.remove_hint(target, key)
                break
        else:
            return False
    return True
