"""Traffic-based scaling of storage machines through Ray's autoscaler.

``decide`` is a pure policy (state in, decision out): from the store's request
rate (key operations per second, counted where every request lands: the
storage nodes' ``counters``, replica operations divided by N, so traffic
coordinated in drivers and in coordinator actors both count)
and the number of storage machines, the number of machines it wants, with
hysteresis (``up_ops`` > ``down_ops`` per machine) and a cooldown between
changes. ``Scaler`` feeds it from node status and turns the decision
into ``ray.autoscaler.sdk.request_resources``: one bundle
``{"raykv_storage": BUNDLE}`` per wanted machine. Ray's autoscaler packs these
bundles against each machine's *total* resources, not what is free (a floor on
the cluster's shape), and a storage machine carries ``raykv_storage: 1``: a
bundle of 0.6 fits once per machine whether counted against the total or
against what the storage actors (0.001 each) leave free, so asking for ``k``
bundles means "k storage machines". (0.5, the first choice, fits twice on one
machine's total: the real-autoscaler test found that a hot store on one machine
never grew.) New machines join the ring by
the manager's auto-join; on a scale-down decision the manager drains
(``remove_node``, streaming) the storage nodes of one machine so Ray's
autoscaler can reclaim it once idle.
"""

from __future__ import annotations

from dataclasses import dataclass

from raykv.actors.names import STORAGE_RESOURCE

BUNDLE = 0.6     # in (0.5, 1 - the actors' shares]: exactly one per raykv_storage: 1 machine (see above)


@dataclass(frozen=True)
class ScalePolicy:
    """Thresholds in key operations per second per storage machine."""

    up_ops: float = 2000.0
    down_ops: float = 200.0
    min_machines: int = 3
    max_machines: int = 16
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        from raykv.errors import InvalidArgument
        if not 0 <= self.down_ops < self.up_ops:
            raise InvalidArgument(f"autoscale needs 0 <= down_ops < up_ops, got {self.down_ops} / {self.up_ops}")
        if not 1 <= self.min_machines <= self.max_machines:
            raise InvalidArgument(f"autoscale needs 1 <= min_machines <= max_machines, "
                                  f"got {self.min_machines} / {self.max_machines}")


def decide(ops_per_s: float, machines: int, policy: ScalePolicy, since_last_change: float) -> int:
    """Wanted number of storage machines (== ``machines`` means: do nothing). Cost: O(1)."""
    lo, hi = policy.min_machines, policy.max_machines
    if machines < lo:
        return lo
    if machines > hi:
        return hi
    if since_last_change < policy.cooldown:
        return machines
    per = ops_per_s / max(1, machines)
    if per > policy.up_ops:
        want = int(-(-ops_per_s // policy.up_ops))          # enough machines to fall under up_ops
        return min(hi, max(machines + 1, want))      # at max_machines already: stay there
    if per < policy.down_ops and machines > lo:
        return machines - 1
    return machines


def coordinator_key_ops(coord_statuses: list[dict]) -> float:
    """Total key operations a set of coordinator statuses has counted (keys read + keys written)."""
    total = 0.0
    for st in coord_statuses:
        c = st.get("counters", {}) or {}
        total += float(c.get("keys_read", 0)) + float(c.get("keys_written", 0))
    return total


def node_traffic(node_statuses: list[dict], replicas: int) -> list[dict]:
    """Storage node statuses as the cumulative client key-op counts ``Scaler.observe`` reads: each client key
    read or written reaches ``replicas`` nodes, so a node's ``gets``/``puts`` (keys) are divided by N."""
    out = []
    for st in node_statuses:
        c = st.get("counters", {}) or {}
        out.append({"coord_id": st.get("node_id", "?"),
                    "counters": {"keys_read": float(c.get("gets", 0)) / replicas,
                                 "keys_written": float(c.get("puts", 0)) / replicas}})
    return out


class Scaler:
    """Rate tracking over coordinator counters + ``request_resources``; the manager calls ``step`` periodically."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self._last_total: dict[str, float] = {}
        self._last_t: float | None = None
        self._last_change = float("-inf")
        self.rate = 0.0
        self.wanted: int | None = None

    def observe(self, coord_statuses: list[dict], now: float) -> float:
        """Update and return the request rate (key ops/s) from cumulative per-coordinator counters."""
        delta = 0.0
        for st in coord_statuses:
            ident = st.get("coord_id") or st.get("actor") or "?"
            total = coordinator_key_ops([st])
            prev = self._last_total.get(ident)
            if prev is not None and total >= prev:
                delta += total - prev
            self._last_total[ident] = total
        if self._last_t is not None and now > self._last_t:
            self.rate = delta / (now - self._last_t)
        self._last_t = now
        return self.rate

    def step(self, coord_statuses: list[dict], machines: int, now: float) -> int:
        """Observe, decide, and ask Ray's autoscaler for the wanted machine count when it changed."""
        self.observe(coord_statuses, now)
        want = decide(self.rate, machines, self.policy, now - self._last_change)
        if want != machines:
            self._last_change = now
        # "Do nothing" (want == machines) keeps the standing request: re-asking for ``machines`` while the
        # machine asked for is still starting would cancel that scale-up (seen with the real autoscaler: the
        # request flapped 1, 2, 1, 2 while a traffic dip crossed the band).
        if (want != machines or self.wanted is None) and want != self.wanted:
            self.wanted = want
            from ray.autoscaler.sdk import request_resources
            request_resources(bundles=[{STORAGE_RESOURCE: BUNDLE}] * want)
        return want
