"""The public value types a ``KV`` hands back: ``Version``, ``Versioned``, ``NodeStatus``, ``ClusterStatus``.

Plain data, no Ray: ``status_from`` builds a ``ClusterStatus`` from the dict
the store's manager actor returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raykv.cluster.config import StoreConfig


class Version:
    """Opaque causal context of a write (a dotted version vector); pass it back as ``context=`` to supersede."""

    __slots__ = ("_vc", "_dot")

    def __init__(self, clock) -> None:
        self._vc, self._dot = clock, None

    @classmethod
    def _of_blind(cls, dot: tuple[str, int], stamp: float, _new=object.__new__) -> "Version":
        """The version of a blind write: its clock is its dot alone, built on first use (``put_many`` returns
        one per key, and most are never looked at)."""
        v = _new(cls)
        v._vc, v._dot = None, (dot, stamp)
        return v

    @property
    def _clock(self):
        vc = self._vc
        if vc is None:
            from raykv.cluster.vclock import VClock
            (actor, n), stamp = self._dot
            vc = self._vc = VClock._raw({actor: n}, {actor: stamp})
        return vc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._clock == other._clock

    def __hash__(self) -> int:
        return hash(self._clock)

    def __repr__(self) -> str:
        return f"Version({self._clock!r})"

    def __reduce__(self):
        return (Version, (self._clock,))

    def to_bytes(self) -> bytes:
        """Compact wire form (e.g. to hand a context to another process or an HTTP client)."""
        return self._clock.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Version":
        from raykv.cluster.vclock import VClock
        return cls(VClock.from_bytes(data))


@dataclass(frozen=True)
class Versioned:
    """One version of a key: its value and the context that supersedes exactly it."""

    value: bytes
    context: Version


@dataclass
class NodeStatus:
    """One storage node as ``status()`` sees it (``alive=False``: it did not answer in time).

    ``keys`` is the engine's upper estimate, like Cassandra's partition-count estimate: it counts every
    stored entry (shadowed versions, tombstones, the node's hints and metadata) until compaction drops the
    shadowed ones. ``disk_bytes`` is the tables plus the live write-ahead log; ``hints_pending`` is exact."""

    node_id: str
    actor_name: str
    alive: bool
    datacenter: str | None
    weight: float
    ray_node_id: str | None
    keys: int | None
    disk_bytes: int | None
    hints_pending: int | None
    ownership: float = 0.0
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class ClusterStatus:
    """Nodes, liveness, ring ownership (fraction of the token circle owned as primary) and per-node stats."""

    name: str
    replicas: int
    read_quorum: int
    write_quorum: int
    data_dir: str
    nodes: list[NodeStatus]
    ownership: dict[str, float]
    coordinator: dict | None = field(default=None, repr=False)

    @property
    def alive(self) -> int:
        return sum(n.alive for n in self.nodes)

    def table(self) -> str:
        head = f"{'node':6} {'alive':5} {'dc':8} {'weight':>6} {'owns':>6} {'keys':>8} {'disk':>10} {'hints':>6}  ray node"
        rows = [head, "-" * len(head)]
        for n in self.nodes:
            rows.append(f"{n.node_id:6} {'yes' if n.alive else 'NO':5} {str(n.datacenter or '-'):8} {n.weight:6.2f} "
                        f"{n.ownership * 100:5.1f}% {_fmt(n.keys):>8} {_fmt(n.disk_bytes):>10} "
                        f"{_fmt(n.hints_pending):>6}  {(n.ray_node_id or '?')[:12]}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return (f"store {self.name!r}: {self.alive}/{len(self.nodes)} nodes alive, N={self.replicas} "
                f"R={self.read_quorum} W={self.write_quorum}, data in {self.data_dir}\n" + self.table())


def _fmt(v) -> str:
    return "?" if v is None else str(v)


def status_from(raw: dict) -> ClusterStatus:
    """A ``ClusterStatus`` from the manager's status dict (nodes sorted n1, n2, ..., n10)."""
    cfg: StoreConfig = raw["config"]
    nodes_raw = sorted(raw["nodes"], key=lambda s: (len(s["node_id"]), s["node_id"]))
    ownership = _ownership(raw, nodes_raw, cfg)
    nodes = []
    for s in nodes_raw:
        known = {"node_id", "actor_name", "alive", "datacenter", "weight", "ray_node_id", "keys",
                 "disk_bytes", "hints_pending"}
        nodes.append(NodeStatus(
            node_id=s["node_id"], actor_name=s.get("actor_name") or "", alive=bool(s.get("alive")),
            datacenter=s.get("datacenter"), weight=float(s.get("weight") or 1.0), ray_node_id=s.get("ray_node_id"),
            keys=s.get("keys"), disk_bytes=s.get("disk_bytes"), hints_pending=s.get("hints_pending"),
            ownership=ownership.get(s["node_id"], 0.0), extra={k: v for k, v in s.items() if k not in known}))
    return ClusterStatus(name=raw["name"], replicas=cfg.replicas, read_quorum=cfg.read_quorum,
                         write_quorum=cfg.write_quorum, data_dir=raw["data_dir"], nodes=nodes,
                         ownership=ownership, coordinator=raw.get("coordinator"))


def _ownership(raw: dict, nodes_raw: list, cfg: StoreConfig) -> dict[str, float]:
    coord = raw.get("coordinator") or {}
    if isinstance(coord.get("ownership"), dict):
        return dict(coord["ownership"])
    try:
        from raykv.cluster.ring import NodeInfo, Ring
        ring = Ring([NodeInfo(s["node_id"], float(s.get("weight") or 1.0), s.get("datacenter"))
                     for s in nodes_raw], cfg.tokens_per_node)
        return ring.ownership()
    except Exception:
        return {}
