"""Membership: the gossiped cluster view and the phi-accrual failure detector.

Gossip state (Cassandra's ``EndpointState``, Riak's ring gossip, simplified):
each member has a ``MemberState`` = its ``NodeInfo``, the status it *declared*
(joining / alive / leaving / left), an ``incarnation`` bumped on every status
change and every restart (persisted by the node), and a ``heartbeat`` counter
bumped every gossip round. Two views merge entry-wise by the total order
``(incarnation, heartbeat, status rank, info)``: a join-semilattice, so merge is
commutative, associative and idempotent, and gossip converges.

``suspect`` and ``down`` are not gossiped: they are this observer's opinion,
from a phi-accrual detector fed by heartbeat increments (Hayashibara, Defago,
Yared, Katayama, "The phi accrual failure detector", SRDS 2004; Cassandra's
variant assumes exponential inter-arrival times: phi = dt / mean * log10(e)).
``status()`` folds both: a declared-alive member whose phi exceeds half the
threshold is ``suspect``, above the threshold ``down``. Time is passed in.

Ring membership: the ring is built from members in joining / alive / suspect /
down / leaving (down nodes keep their ranges; sloppy quorum routes around them;
``left`` members are removed). ``ring("read")`` leaves out joining nodes (they
serve no reads until they have streamed their ranges); ``ring("future")`` leaves
out leaving nodes (where the data is going). Rings are immutable and cached
process-wide by their member set, so every view with the same members shares one.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .ring import NodeInfo, Ring

DECLARED = ("joining", "alive", "leaving", "left")
STATUSES = ("joining", "alive", "suspect", "down", "leaving", "left")
_RANK = {s: i for i, s in enumerate(DECLARED)}
_RING_STATUSES = {
    "all": ("joining", "alive", "leaving"),
    "read": ("alive", "leaving"),
    "future": ("joining", "alive"),
}
_RING_CACHE: dict[tuple, Ring] = {}


def cached_ring(infos: list[NodeInfo], tokens_per_node: int) -> Ring:
    """Process-wide cache of immutable rings by member set (cost of a miss: O(members * tokens) hashing)."""
    key = (tokens_per_node, tuple(sorted((i.node_id, i.weight, i.datacenter or "", i.host or "") for i in infos)))
    ring = _RING_CACHE.get(key)
    if ring is None:
        if len(_RING_CACHE) > 256:
            _RING_CACHE.clear()
        ring = _RING_CACHE[key] = Ring(sorted(infos, key=lambda i: i.node_id), tokens_per_node=tokens_per_node)
    return ring


@dataclass(frozen=True)
class MemberState:
    """One member's gossiped state; ordered by (incarnation, heartbeat, status rank, info)."""

    info: NodeInfo
    status: str
    incarnation: int
    heartbeat: int

    def order(self) -> tuple:
        i = self.info
        return (self.incarnation, self.heartbeat, _RANK[self.status], i.weight, i.datacenter or "", i.host or "")

    def to_wire(self) -> tuple:
        i = self.info
        return (i.node_id, i.weight, i.datacenter, i.host, self.status, self.incarnation, self.heartbeat)

    @classmethod
    def from_wire(cls, w) -> "MemberState":
        node_id, weight, dc, host, status, inc, hb = w
        if status not in _RANK:
            raise ValueError(f"unknown member status {status!r}")
        return cls(NodeInfo(node_id, float(weight), dc, host), status, int(inc), int(hb))


def removed(entry: tuple) -> tuple:
    """The wire entry that removes a member that cannot leave by itself (dead for good: Cassandra's
    ``removenode``): status "left" at a higher incarnation, so it wins every merge (``MemberState.order``)
    and spreads by gossip. The member's ranges pass to their next owners; anti-entropy refills them."""
    st = MemberState.from_wire(entry)
    return MemberState(st.info, "left", st.incarnation + 1, 0).to_wire()


def removal(views: list[list[tuple]], node_id: str) -> tuple | None:
    """``removed`` of the newest entry for ``node_id`` in any of ``views`` (live members' gossip views, wire
    form), or None when no view names it. The newest, not the first found: views can disagree for a gossip
    round or two (a status change bumps the incarnation), and a removal built on an older view's entry may tie
    on incarnation with the newer one and lose to its heartbeat; the node then stays a member ("down")
    everywhere and its ranges never pass on (the likely cause of an intermittent test, session 8)."""
    entries = [MemberState.from_wire(w) for v in views for w in v if w[0] == node_id]
    if not entries:
        return None
    return removed(max(entries, key=MemberState.order).to_wire())


def merge_views(a: dict[str, MemberState], b: dict[str, MemberState]) -> dict[str, MemberState]:
    """Entry-wise max by ``MemberState.order``: commutative, associative, idempotent. O(|a| + |b|)."""
    out = dict(a)
    for node_id, st in b.items():
        cur = out.get(node_id)
        if cur is None or st.order() > cur.order():
            out[node_id] = st
    return dict(sorted(out.items()))


class PhiAccrualDetector:
    """Per-node inter-arrival window of heartbeats; ``phi(node, now)`` = suspicion level (Cassandra's exponential model).

    Intervals longer than ``max_interval`` are not learned (a restart or partition must not teach the
    detector that long silences are normal). A node never heard from is measured from when it was first seen,
    with ``initial_interval`` as the mean. O(1) per heartbeat and per phi.
    """

    PHI_FACTOR = 1.0 / math.log(10.0)

    def __init__(self, *, window: int = 100, initial_interval: float = 1.0, max_interval: float = 10.0,
                 min_mean: float = 0.05) -> None:
        self.window, self.initial_interval = window, initial_interval
        self.max_interval, self.min_mean = max_interval, min_mean
        self._last: dict[str, float] = {}
        self._intervals: dict[str, deque] = {}
        self._sums: dict[str, float] = {}

    def heartbeat(self, node_id: str, now: float) -> None:
        last = self._last.get(node_id)
        self._last[node_id] = now
        if last is None:
            self._intervals[node_id] = deque([self.initial_interval])
            self._sums[node_id] = self.initial_interval
            return
        dt = now - last
        if 0 < dt <= self.max_interval:
            q = self._intervals[node_id]
            q.append(dt)
            self._sums[node_id] += dt
            if len(q) > self.window:
                self._sums[node_id] -= q.popleft()

    def seen(self, node_id: str, now: float) -> None:
        """Start the clock for a node we learned of but have no heartbeat from yet."""
        if node_id not in self._last:
            self.heartbeat(node_id, now)

    def mean(self, node_id: str) -> float:
        q = self._intervals.get(node_id)
        if not q:
            return self.initial_interval
        return max(self.min_mean, self._sums[node_id] / len(q))

    def phi(self, node_id: str, now: float) -> float:
        last = self._last.get(node_id)
        if last is None:
            return 0.0
        return max(0.0, now - last) / self.mean(node_id) * self.PHI_FACTOR

    def forget(self, node_id: str) -> None:
        self._last.pop(node_id, None)
        self._intervals.pop(node_id, None)
        self._sums.pop(node_id, None)


class Membership:
    """One process's view of the cluster: gossiped member states + local failure detector + ring cache.

    ``self_id`` is None for an observer (a coordinator): it merges views but owns no entry.
    """

    def __init__(self, self_info: NodeInfo | None, *, tokens_per_node: int = 256, phi_threshold: float = 8.0,
                 gossip_interval: float = 0.5, status: str = "joining", incarnation: int = 0) -> None:
        self.self_id = self_info.node_id if self_info else None
        self.tokens_per_node = tokens_per_node
        self.phi_threshold = phi_threshold
        self.detector = PhiAccrualDetector(initial_interval=max(2 * gossip_interval, 0.05),
                                           max_interval=max(20 * gossip_interval, 5.0))
        self.members: dict[str, MemberState] = {}
        self.version = 0                       # bumped when the ring-relevant part changes
        self._suspected: dict[str, float] = {}  # node -> time of a direct failure (call timed out)
        self._memo: tuple[int, dict] = (-1, {})   # (version, {purpose: ring, "dc": ...}) computed for that version
        if self_info is not None:
            self.members[self_info.node_id] = MemberState(self_info, status, incarnation, 0)

    # --- own state ---
    @property
    def me(self) -> MemberState:
        return self.members[self.self_id]

    def beat(self) -> None:
        m = self.me
        self.members[self.self_id] = MemberState(m.info, m.status, m.incarnation, m.heartbeat + 1)

    def declare(self, status: str) -> None:
        if status not in _RANK:
            raise ValueError(f"cannot declare status {status!r}")
        m = self.me
        self.members[self.self_id] = MemberState(m.info, status, m.incarnation + 1, 0)
        self.version += 1

    # --- gossip ---
    def view(self) -> list[tuple]:
        return [st.to_wire() for _, st in sorted(self.members.items())]

    def merge(self, wire: list[tuple], now: float) -> list[str]:
        """Merge a peer's view; feed the detector with heartbeat progress. Returns node ids whose status changed."""
        changed = []
        for w in wire:
            st = MemberState.from_wire(w)
            nid = st.info.node_id
            cur = self.members.get(nid)
            if nid == self.self_id:
                if st.order() > cur.order():   # a stale incarnation of ours is circulating: refute it
                    self.members[nid] = MemberState(cur.info, cur.status, st.incarnation + 1, 0)
                    self.version += 1
                continue
            if cur is None or st.order() > cur.order():
                self.members[nid] = st
                if cur is None or cur.status != st.status or cur.info != st.info:
                    changed.append(nid)
                self.detector.heartbeat(nid, now)
                self._suspected.pop(nid, None)
        if changed:
            self.version += 1
        return changed

    def suspect(self, node_id: str, now: float) -> None:
        """Direct evidence: a call to ``node_id`` failed. Treated as down until its heartbeat advances."""
        self._suspected[node_id] = now

    # --- queries ---
    def declared(self, node_id: str) -> str | None:
        st = self.members.get(node_id)
        return st.status if st else None

    def status(self, node_id: str, now: float) -> str:
        """Declared status folded with this observer's detector: may answer suspect or down."""
        st = self.members.get(node_id)
        if st is None:
            return "left"
        if st.status == "left" or node_id == self.self_id:
            return st.status
        if node_id in self._suspected:
            return "down"
        phi = self.detector.phi(node_id, now)
        if phi >= self.phi_threshold:
            return "down"
        if phi >= self.phi_threshold / 2:
            return "suspect"
        return st.status

    def is_up(self, node_id: str, now: float) -> bool:
        return self.status(node_id, now) in ("joining", "alive", "leaving", "suspect")

    def node_ids(self, statuses=("joining", "alive", "leaving")) -> list[str]:
        return [nid for nid, st in self.members.items() if st.status in statuses]

    def infos(self) -> dict[str, NodeInfo]:
        return {nid: st.info for nid, st in self.members.items()}

    def _memoized(self) -> dict:
        """What this view's ``version`` determines, computed once per version: every request asks for it."""
        if self._memo[0] != self.version:
            self._memo = (self.version, {})
        return self._memo[1]

    def datacenter_of(self) -> dict[str, str | None]:
        """{node: datacenter} of every member; shared by the callers of one version: read it, don't change it."""
        memo = self._memoized()
        dc = memo.get("dc")
        if dc is None:
            dc = memo["dc"] = {nid: st.info.datacenter for nid, st in self.members.items()}
        return dc

    def ring(self, purpose: str = "all") -> Ring:
        """Ring over members by declared status (see module doc). O(1) once per ``version``: a dict lookup
        (before it, a walk of the members and a process-wide cache lookup, ~4 us a call, twice a write)."""
        memo = self._memoized()
        ring = memo.get(purpose)
        if ring is None:
            statuses = _RING_STATUSES[purpose]
            ring = memo[purpose] = cached_ring([st.info for st in self.members.values() if st.status in statuses],
                                               self.tokens_per_node)
        return ring
