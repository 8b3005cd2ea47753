"""Consistent hashing ring with virtual nodes, weights, host/datacenter-aware preference lists, movement plans.

References: Karger et al., "Consistent Hashing and Random Trees" (STOC 1997);
DeCandia et al., "Dynamo" (SOSP 2007) sections 4.2-4.3 (virtual nodes,
preference lists that skip positions so the N replicas are distinct physical
nodes); riak_core ``chash.erl`` / ``riak_core_apl.erl`` (preference list and
fallbacks walking the ring); Cassandra ``NetworkTopologyStrategy`` (replicas
per datacenter, distinct racks preferred).

Tokens live in [0, 2**64). A node with weight w owns round(tokens_per_node*w)
(at least 1) tokens, token j = ``key_token(f"{node_id}#{j}")``, so every
process computes the same ring from the same membership. A key with token t
belongs to the segment (prev, tok] of the first token tok >= t (wrapping),
whose owner is the key's primary; its replicas are the next distinct nodes
clockwise. An arc ``(lo, hi)`` always means lo < t <= hi, wrapping when
lo >= hi, and lo == hi means the whole circle.

Balance: with V tokens per node a node's share deviates from the mean by
about 1/sqrt(V) (~6% at V=256); docs/architecture.md records the measured
max/mean ownership.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np

from ..errors import InvalidArgument

TOKEN_SPACE = 2**64
VECTOR_MIN = 64      # keys from which ``preference_tuples`` finds segments with one numpy search
_blake2b = hashlib.blake2b


def key_token(key: bytes) -> int:
    """64-bit unsigned token of ``key``, identical in every process (blake2b, 8-byte digest). ~0.5 us."""
    return int.from_bytes(_blake2b(key, digest_size=8).digest(), "big")


def key_digests(keys: list[bytes]) -> list[bytes]:
    """The 8-byte blake2b digest of each key (its token as big-endian bytes), ~0.3 us a key: what
    ``Ring.preference_tuples`` places keys by, and what a round ships to the nodes so they need not hash the
    keys again (``lsm_backend.data_keys``)."""
    blake = _blake2b
    return [blake(key, digest_size=8).digest() for key in keys]


@lru_cache(maxsize=4096)
def _node_tokens(node_id: str, count: int) -> tuple[int, ...]:
    return tuple(key_token(f"{node_id}#{j}".encode()) for j in range(count))


@dataclass(frozen=True)
class NodeInfo:
    """A storage node as the ring sees it: id, relative capacity, datacenter label, machine (host) id."""

    node_id: str
    weight: float = 1.0
    datacenter: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class Transfer:
    """Stream the keys with lo < token <= hi from ``source`` (which held the arc in the old ring) to ``target``."""

    lo: int
    hi: int
    source: str
    target: str


def _dc_key(dc_replicas: dict[str, int] | None) -> tuple | None:
    return None if not dc_replicas else tuple(sorted(dc_replicas.items()))


class Ring:
    """Immutable token ring. Build once per membership change (O(T log T), T = total tokens); lookups are
    O(log T) bisect plus a cached preference list per (segment, n, dc placement)."""

    _TABLE_LIMIT = 64      # distinct (n, placement) tables kept; more (never seen in practice) start afresh

    def __init__(self, nodes: Iterable[NodeInfo] = (), tokens_per_node: int = 256) -> None:
        if tokens_per_node < 1:
            raise InvalidArgument(f"tokens_per_node must be >= 1, got {tokens_per_node}")
        self.tokens_per_node = tokens_per_node
        self.nodes: dict[str, NodeInfo] = {}
        for info in nodes:
            if not isinstance(info, NodeInfo):
                raise InvalidArgument(f"Ring nodes must be NodeInfo, got {type(info).__name__}")
            if info.weight <= 0:
                raise InvalidArgument(f"node {info.node_id!r} weight must be > 0, got {info.weight}")
            self.nodes[info.node_id] = info
        pairs = sorted((t, nid) for nid, info in self.nodes.items()
                       for t in _node_tokens(nid, self.token_count(info)))
        self._tokens: list[int] = [t for t, _ in pairs]
        self._owners: list[str] = [nid for _, nid in pairs]
        self._token_array: np.ndarray | None = None                  # built on the first bulk lookup
        self._pl_tables: dict[tuple, list] = {}     # (n, dc key) -> each segment's preference tuple, filled on use

    # ------------------------------------------------------------ membership

    def token_count(self, info: NodeInfo) -> int:
        """Tokens a node gets: round(tokens_per_node * weight), at least 1."""
        return max(1, round(self.tokens_per_node * info.weight))

    def tokens(self, node_id: str) -> list[int]:
        """The tokens of one node, sorted."""
        return sorted(_node_tokens(node_id, self.token_count(self.nodes[node_id])))

    def with_node(self, info: NodeInfo) -> "Ring":
        """A new ring with ``info`` added (or replaced when its id is already present)."""
        nodes = dict(self.nodes)
        nodes[info.node_id] = info
        return Ring(nodes.values(), self.tokens_per_node)

    def without_node(self, node_id: str) -> "Ring":
        """A new ring without ``node_id`` (no error when absent)."""
        return Ring((i for n, i in self.nodes.items() if n != node_id), self.tokens_per_node)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and self.nodes == other.nodes and self.tokens_per_node == other.tokens_per_node

    def __hash__(self) -> int:
        return hash((frozenset(self.nodes.items()), self.tokens_per_node))

    def __repr__(self) -> str:
        return f"Ring({len(self.nodes)} nodes, {len(self._tokens)} tokens)"

    # ------------------------------------------------------------ lookups

    def segment(self, token: int) -> int:
        """Index of the token that owns ``token`` (first token >= it, wrapping). O(log T)."""
        if not self._tokens:
            raise InvalidArgument("the ring has no nodes")
        i = bisect_left(self._tokens, token)
        return 0 if i == len(self._tokens) else i

    def primary(self, key: bytes) -> str:
        """The first replica of ``key``."""
        return self._owners[self.segment(key_token(key))]

    def _walk_from(self, idx: int) -> Iterator[str]:
        owners = self._owners
        total = len(owners)
        want = len(self.nodes)
        seen: set[str] = set()
        for k in range(total):
            o = owners[(idx + k) % total]
            if o not in seen:
                seen.add(o)
                yield o
                if len(seen) == want:
                    return

    def walk(self, token: int) -> Iterator[str]:
        """Distinct node ids clockwise from the first token >= ``token`` (wrapping); every node once."""
        if not self._tokens:
            return iter(())
        return self._walk_from(self.segment(token))

    def _table(self, n: int, dc_key: tuple | None) -> list:
        """The per-segment cache of preference tuples for ``n`` replicas and this placement (None: not yet)."""
        table = self._pl_tables.get((n, dc_key))
        if table is None:
            if len(self._pl_tables) >= self._TABLE_LIMIT:
                self._pl_tables.clear()
            table = self._pl_tables[(n, dc_key)] = [None] * len(self._tokens)
        return table

    def _select(self, idx: int, n: int, dc_key: tuple | None) -> tuple[str, ...]:
        table = self._table(n, dc_key)
        hit = table[idx]
        if hit is not None:
            return hit
        nodes = self.nodes
        if dc_key is None:
            quota = None
            target = min(n, len(nodes))
        else:
            quota = dict(dc_key)
            if sum(quota.values()) != n:
                raise InvalidArgument(f"dc_replicas {dict(dc_key)} must add up to n={n}")
            target = n
        chosen: list[str] = []
        used_hosts: set = set()
        skipped: list[str] = []
        for nid in self._walk_from(idx):
            if len(chosen) == target:
                break
            info = nodes[nid]
            if quota is not None and quota.get(info.datacenter, 0) <= 0:
                continue
            hk = info.host if info.host is not None else ("node", nid)
            if hk in used_hosts:
                skipped.append(nid)
                continue
            chosen.append(nid)
            used_hosts.add(hk)
            if quota is not None:
                quota[info.datacenter] -= 1
        for nid in skipped:                      # not enough distinct hosts: allow repeats, in ring order
            if len(chosen) == target:
                break
            dc = nodes[nid].datacenter
            if quota is not None:
                if quota.get(dc, 0) <= 0:
                    continue
                quota[dc] -= 1
            chosen.append(nid)
        out = table[idx] = tuple(chosen)
        return out

    def preference_list(self, key: bytes, n: int, dc_replicas: dict[str, int] | None = None) -> list[str]:
        """The ``n`` replicas of ``key``: distinct nodes clockwise from its token, primary first.

        Distinct ``host`` values are preferred (a later node on an already-used host is skipped while another
        host remains; only when there are fewer distinct hosts than ``n`` do hosts repeat). With ``dc_replicas``
        (e.g. {"dc1": 2, "dc2": 1}, summing to n) exactly that many are taken per datacenter, nodes of other
        datacenters are skipped. Returns fewer than ``n`` nodes when the ring (or a datacenter) has too few.
        Cost: blake2b + bisect + dict hit, about 1-2 us; a miss walks the ring once for that segment.
        """
        if not self._tokens:
            return []
        idx = bisect_left(self._tokens, key_token(key))
        if idx == len(self._tokens):
            idx = 0
        return list(self._select(idx, n, _dc_key(dc_replicas) if dc_replicas else None))

    def preference_tuples(self, keys: list[bytes], n: int, dc_replicas: dict[str, int] | None = None,
                          digests: list[bytes] | None = None) -> list[tuple[str, ...]]:
        """``preference_list`` of every key, as the ring's shared (immutable) tuples: keys of one segment get the
        same tuple object, so a caller can group keys by it. ``digests``: the keys' ``key_digests``, if the
        caller has them. From ``VECTOR_MIN`` keys: one numpy ``searchsorted`` of all the tokens and a table
        lookup per key (0.33 us a key with the hashing, nearly all of it); fewer keys: a bisect and a cache
        lookup each (0.6 us)."""
        tokens = self._tokens
        if not tokens:
            return [()] * len(keys)
        dk = _dc_key(dc_replicas) if dc_replicas else None
        if digests is None:
            digests = key_digests(keys)
        if len(keys) >= VECTOR_MIN:
            return self._preference_tuples_vector(digests, n, dk)
        last, table, select = len(tokens), self._table(n, dk), self._select
        from_bytes = int.from_bytes
        out = []
        for d in digests:
            idx = bisect_left(tokens, from_bytes(d, "big"))
            if idx == last:
                idx = 0
            p = table[idx]
            out.append(p if p is not None else select(idx, n, dk))
        return out

    def _preference_tuples_vector(self, digests: list[bytes], n: int, dk: tuple | None) -> list[tuple[str, ...]]:
        """``preference_tuples`` for a batch: the tokens as one big-endian uint64 array (the 8-byte digests
        joined), their segments by ``numpy.searchsorted`` (side "left": the first token >= t, as ``bisect_left``),
        and each segment's tuple from a per-(n, placement) table filled on first use."""
        tokens = self._token_array
        if tokens is None:
            tokens = self._token_array = np.array(self._tokens, dtype=np.uint64)
        seg = np.searchsorted(tokens, np.frombuffer(b"".join(digests), dtype=">u8"))
        seg[seg == len(tokens)] = 0
        segs = seg.tolist()
        out = list(map(self._table(n, dk).__getitem__, segs))
        if None in out:
            select = self._select
            for i, p in enumerate(out):
                if p is None:
                    out[i] = select(segs[i], n, dk)     # fills the table: later keys of that segment hit
        return out

    def preference_list_for_token(self, token: int, n: int, dc_replicas: dict[str, int] | None = None) -> list[str]:
        """``preference_list`` for a token instead of a key."""
        if not self._tokens:
            return []
        return list(self._select(self.segment(token), n, _dc_key(dc_replicas)))

    def fallbacks(self, key: bytes, n: int, exclude: set[str], dc_replicas: dict[str, int] | None = None) -> list[str]:
        """Sloppy-quorum targets: nodes after the preference list in ring order, minus ``exclude`` (and, with
        ``dc_replicas``, only nodes of those datacenters). The caller takes as many as it has replicas down,
        preferably of the down replica's datacenter. O(nodes)."""
        if not self._tokens:
            return []
        pref = set(self.preference_list(key, n, dc_replicas))
        dcs = set(dc_replicas) if dc_replicas else None
        out = []
        for nid in self.walk(key_token(key)):
            if nid in pref or nid in exclude:
                continue
            if dcs is not None and self.nodes[nid].datacenter not in dcs:
                continue
            out.append(nid)
        return out

    # ------------------------------------------------------------ ranges

    def _arc(self, idx: int) -> tuple[int, int]:
        return (self._tokens[idx - 1], self._tokens[idx])    # idx 0 wraps from the last token

    def ranges(self) -> list[tuple[int, int, str]]:
        """(lo, hi, primary owner) for each token's arc lo < t <= hi; together they cover the circle once."""
        return [(*self._arc(i), self._owners[i]) for i in range(len(self._tokens))]

    def replica_ranges(self, node_id: str, n: int, dc_replicas: dict[str, int] | None = None) -> list[tuple[int, int]]:
        """Arcs for which ``node_id`` is one of the ``n`` replicas, adjacent arcs merged (lo == hi: whole ring)."""
        dk = _dc_key(dc_replicas)
        arcs = [self._arc(i) for i in range(len(self._tokens)) if node_id in self._select(i, n, dk)]
        return _merge_arcs(arcs)

    def replicas_for_range(self, lo: int, hi: int, n: int, dc_replicas: dict[str, int] | None = None) -> list[str]:
        """Replicas of the arc (lo, hi], which must lie inside one ring segment (e.g. from ``ranges``,
        ``movement_plan`` or a Merkle diff of such an arc): the replicas of its upper end."""
        if not self._tokens:
            return []
        return list(self._select(self.segment(hi), n, _dc_key(dc_replicas)))

    def ownership(self) -> dict[str, float]:
        """Fraction of the circle each node owns as primary (sums to 1.0)."""
        share = dict.fromkeys(self.nodes, 0)
        for i in range(len(self._tokens)):
            lo, hi = self._arc(i)
            share[self._owners[i]] += (hi - lo) % TOKEN_SPACE or TOKEN_SPACE   # lo == hi: whole circle
        return {nid: s / TOKEN_SPACE for nid, s in share.items()}


def _merge_arcs(arcs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge arcs given in ring order whose ends touch; a full circle becomes (t, t)."""
    out: list[list[int]] = []
    for lo, hi in arcs:
        if out and out[-1][1] == lo:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    if len(out) > 1 and out[-1][1] == out[0][0]:
        out[0][0] = out[-1][0]
        out.pop()
    return [(lo, hi) for lo, hi in out]


def in_arc(token: int, lo: int, hi: int) -> bool:
    """True iff lo < token <= hi on the circle (wrapping when lo >= hi; lo == hi is the whole circle)."""
    if lo < hi:
        return lo < token <= hi
    return token > lo or token <= hi


def movement_plan(old: Ring, new: Ring, n: int, dc_replicas: dict[str, int] | None = None) -> list[Transfer]:
    """Transfers that give every replica in ``new`` the arcs it did not replicate in ``old``.

    Walks the elementary arcs between the union of both rings' tokens; for each replica gained, the source is
    an old replica of the arc: a node leaving the ring when it held the arc (it streams its data away),
    otherwise the old primary-first replica. Contiguous transfers with the same (source, target) are merged.
    O(T) plus one cached preference list per segment. Empty when either ring is empty.
    """
    if not old._tokens or not new._tokens:
        return []
    dk = _dc_key(dc_replicas)
    bounds = sorted(set(old._tokens) | set(new._tokens))
    per_pair: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for i, hi in enumerate(bounds):
        lo = bounds[i - 1]
        before = old._select(old.segment(hi), n, dk)
        after = new._select(new.segment(hi), n, dk)
        gained = [t for t in after if t not in before]
        if not gained:
            continue
        leaving = [s for s in before if s not in new.nodes]
        source = leaving[0] if leaving else before[0]
        for target in gained:
            per_pair.setdefault((source, target), []).append((lo, hi))
    out = [Transfer(lo, hi, src, dst) for (src, dst), arcs in per_pair.items() for lo, hi in _merge_arcs(arcs)]
    out.sort(key=lambda t: (t.hi, t.source, t.target))
    return out
