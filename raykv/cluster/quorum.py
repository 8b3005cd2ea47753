"""Per-request consistency levels, their validation, the quorum decision for one request, and read repair.

References: DeCandia et al., "Dynamo" (SOSP 2007) section 4.5 (R + W > N,
sloppy quorum, read repair); Cassandra consistency levels ONE / QUORUM / ALL /
LOCAL_QUORUM / EACH_QUORUM (majority = floor(RF/2) + 1 per datacenter);
riak_kv ``riak_kv_get_fsm`` (read repair of replicas whose reply is stale).

Everything here is a pure function of its inputs: the coordinator feeds a
``Tally`` with acks and failures as replies arrive and asks ``decision()``
after each one; it answers "fail" as soon as success has become impossible,
so a request never waits for a timeout it cannot survive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .config import StoreConfig
from .vclock import Sibling, reconcile
from ..errors import InvalidArgument

PRESETS = ("one", "quorum", "all", "local_quorum", "each_quorum")
MODES = ("count", "local_quorum", "each_quorum")


def majority(n: int) -> int:
    """floor(n/2) + 1: the smallest count that intersects any other majority of n."""
    return n // 2 + 1


@dataclass(frozen=True)
class Quorum:
    """What one request needs: ``required`` acks out of ``n`` replicas (mode "count"), a majority of the local
    datacenter's replicas ("local_quorum"), or a majority in every datacenter ("each_quorum")."""

    n: int
    required: int
    mode: str = "count"
    local_dc: str | None = None
    dc_replicas: dict | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgument(f"quorum mode must be one of {MODES}, got {self.mode!r}")

    def __hash__(self) -> int:
        dc = tuple(sorted(self.dc_replicas.items())) if self.dc_replicas else None
        return hash((self.n, self.required, self.mode, self.local_dc, dc))

    def dc_required(self) -> dict[str, int]:
        """Acks needed per datacenter (empty in "count" mode)."""
        if self.mode == "local_quorum":
            return {self.local_dc: self.required}
        if self.mode == "each_quorum":
            return {dc: majority(k) for dc, k in self.dc_replicas.items()}
        return {}


def validate_request(label: str, explicit, consistency, n: int) -> None:
    """Check a request's explicit ``r``/``w`` or preset name against N; ``InvalidArgument`` with the fix.

    Needs no datacenter knowledge, so the API facade runs it before anything crosses the network.
    """
    if explicit is not None and consistency is not None:
        raise InvalidArgument(f"give either {label}={explicit!r} or consistency={consistency!r}, not both")
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int):
            raise InvalidArgument(f"{label} must be an integer between 1 and N={n}, got {explicit!r}")
        if explicit < 1:
            raise InvalidArgument(f"{label}={explicit} is not allowed: {label} must be at least 1 "
                                  f"(use consistency='one' for the fastest setting)")
        if explicit > n:
            raise InvalidArgument(f"{label}={explicit} exceeds the number of replicas N={n}; "
                                  f"use a value between 1 and {n} (or consistency='all')")
    elif consistency is not None and (not isinstance(consistency, str) or consistency.lower() not in PRESETS):
        raise InvalidArgument(f"unknown consistency {consistency!r}; use one of {', '.join(PRESETS)} "
                              f"or an explicit {label}")


def _quorum(config: StoreConfig, label: str, default: int, explicit: int | None, consistency: str | None,
            local_dc: str | None) -> Quorum:
    n = config.replicas
    validate_request(label, explicit, consistency, n)
    if explicit is not None:
        return Quorum(n, explicit, "count")
    if consistency is None:
        return Quorum(n, default, "count")
    level = consistency.lower()
    if level == "one":
        return Quorum(n, 1, "count")
    if level == "quorum":
        return Quorum(n, majority(n), "count")
    if level == "all":
        return Quorum(n, n, "count")
    dcs = config.dc_replicas
    if not dcs:
        raise InvalidArgument(f"consistency={level!r} needs datacenters: start the store with "
                              f"dc_replicas={{'dc1': 2, 'dc2': 1}} (replicas per datacenter)")
    if level == "local_quorum":
        dc = local_dc if local_dc is not None else config.local_datacenter
        if dc is None:
            raise InvalidArgument("consistency='local_quorum' needs the coordinator's datacenter: "
                                  "set local_datacenter in the store config or pass local_dc")
        if dc not in dcs:
            raise InvalidArgument(f"local datacenter {dc!r} holds no replicas (dc_replicas={dcs}); "
                                  f"use one of {sorted(dcs)}")
        return Quorum(n, majority(dcs[dc]), "local_quorum", dc, dict(dcs))
    return Quorum(n, sum(majority(k) for k in dcs.values()), "each_quorum", None, dict(dcs))


def read_quorum(config: StoreConfig, r: int | None = None, consistency: str | None = None,
                local_dc: str | None = None) -> Quorum:
    """The read quorum for one request: explicit ``r``, a preset, or the store's default R.
    Raises ``InvalidArgument`` (R > N, R < 1, both r and consistency, unknown preset, dc preset without DCs)."""
    return _quorum(config, "r", config.read_quorum, r, consistency, local_dc)


def write_quorum(config: StoreConfig, w: int | None = None, consistency: str | None = None,
                 local_dc: str | None = None) -> Quorum:
    """The write quorum for one request: explicit ``w``, a preset, or the store's default W.
    Raises ``InvalidArgument`` (W > N, W = 0, negative, both w and consistency, unknown preset...)."""
    return _quorum(config, "w", config.write_quorum, w, consistency, local_dc)


class Tally:
    """Decision state of one request: feed it acks and failures, ask ``decision()``. O(1) per event.

    In "count" mode any asked node's ack counts (fallbacks of a sloppy quorum included); in the datacenter
    modes an ack counts toward its node's datacenter (``dc_of``). A node's first report wins; later reports
    of the same node and reports of nodes never asked are ignored.
    """

    def __init__(self, quorum: Quorum, replicas: list[str], dc_of: Mapping[str, str | None]) -> None:
        self.quorum = quorum
        self.replicas: list[str] = []
        self._dc_of = dc_of              # shared with the caller, read-only; copied before the first change
        self._own_dc = False
        need = quorum.__dict__.get("_need")
        if need is None:                 # cached on the (frozen) quorum: one computation per request
            need = quorum.dc_required()
            object.__setattr__(quorum, "_need", need)
        self._need = need
        self._pending: dict[str | None, int] = {}
        self._acked_dc: dict[str | None, int] = {}
        self._state: dict[str, str] = {}
        self.acked = 0
        self.failed = 0
        self.acked_nodes: list[str] = []
        self.failed_nodes: list[str] = []
        for r in replicas:
            self.add_replica(r)

    def add_replica(self, node_id: str, datacenter: str | None = None) -> None:
        """Ask one more node (a sloppy-quorum fallback); no-op when already asked."""
        if node_id in self._state:
            return
        if datacenter is not None or node_id not in self._dc_of:
            if not self._own_dc:
                self._dc_of, self._own_dc = dict(self._dc_of), True
            self._dc_of[node_id] = datacenter
        self._state[node_id] = "pending"
        self.replicas.append(node_id)
        dc = self._dc_of[node_id]
        self._pending[dc] = self._pending.get(dc, 0) + 1

    def _report(self, node_id: str, outcome: str) -> bool:
        if self._state.get(node_id) != "pending":
            return False
        self._state[node_id] = outcome
        self._pending[self._dc_of[node_id]] -= 1
        return True

    def ack(self, node_id: str) -> None:
        if self._report(node_id, "ack"):
            self.acked += 1
            self.acked_nodes.append(node_id)
            dc = self._dc_of[node_id]
            self._acked_dc[dc] = self._acked_dc.get(dc, 0) + 1

    def fail(self, node_id: str) -> None:
        if self._report(node_id, "fail"):
            self.failed += 1
            self.failed_nodes.append(node_id)

    @property
    def pending(self) -> int:
        return len(self.replicas) - self.acked - self.failed

    def decision(self) -> str:
        """"ok" once the quorum is met, "fail" as soon as it can no longer be met, else "wait"."""
        if not self._need:
            if self.acked >= self.quorum.required:
                return "ok"
            return "fail" if self.acked + self.pending < self.quorum.required else "wait"
        done = True
        for dc, need in self._need.items():
            got = self._acked_dc.get(dc, 0)
            if got >= need:
                continue
            if got + self._pending.get(dc, 0) < need:
                return "fail"
            done = False
        return "ok" if done else "wait"

    def missing(self) -> str:
        """Human-readable account of what is still missing (for ``QuorumNotReached`` details)."""
        if not self._need:
            return f"{self.acked}/{self.quorum.required} acks, {self.failed} failed, {self.pending} pending"
        return ", ".join(f"{dc}: {self._acked_dc.get(dc, 0)}/{need}" for dc, need in self._need.items())


class CountTally:
    """``Tally`` for "count" mode (any W/R of N, no datacenters) in a few ints: what coordinators create per key.

    Same interface and decisions as ``Tally`` (tests/cluster/test_quorum.py checks them against each other);
    ~4x cheaper to create, because a batch of 1000 keys creates 1000 of them.
    """

    __slots__ = ("quorum", "replicas", "acked", "failed", "acked_nodes", "failed_nodes", "_required")

    def __init__(self, quorum: Quorum, replicas: list[str], dc_of: Mapping[str, str | None] | None = None) -> None:
        self.quorum = quorum
        self._required = quorum.required
        self.replicas = list(dict.fromkeys(replicas))
        self.acked = self.failed = 0
        self.acked_nodes: list[str] = []
        self.failed_nodes: list[str] = []

    def add_replica(self, node_id: str, datacenter: str | None = None) -> None:
        if node_id not in self.replicas:
            self.replicas.append(node_id)

    def ack(self, node_id: str) -> None:
        if node_id in self.replicas and node_id not in self.acked_nodes and node_id not in self.failed_nodes:
            self.acked += 1
            self.acked_nodes.append(node_id)

    def fail(self, node_id: str) -> None:
        if node_id in self.replicas and node_id not in self.acked_nodes and node_id not in self.failed_nodes:
            self.failed += 1
            self.failed_nodes.append(node_id)

    @property
    def pending(self) -> int:
        return len(self.replicas) - self.acked - self.failed

    def decision(self) -> str:
        if self.acked >= self._required:
            return "ok"
        return "fail" if len(self.replicas) - self.failed < self._required else "wait"

    def missing(self) -> str:
        return f"{self.acked}/{self._required} acks, {self.failed} failed, {self.pending} pending"


def tally(quorum: Quorum, replicas: list[str], dc_of: Mapping[str, str | None]) -> Tally | CountTally:
    """The cheapest tally that decides ``quorum``: ``CountTally`` in "count" mode, else ``Tally``."""
    if quorum.mode == "count":
        return CountTally(quorum, replicas)
    return Tally(quorum, replicas, dc_of)


def read_repair_plan(replies: Mapping[str, list[Sibling]]) -> tuple[list[Sibling], list[str]]:
    """Merge the replies of one read and name the replicas to repair.

    Returns (``vclock`` sync of every reply, node ids whose reply differs from it: missing a sibling of the
    merge or still holding one the merge made obsolete). Pushing the merge to those nodes converges them.
    O(total siblings^2) for the merge, O(siblings) per reply for the check.
    """
    merged = reconcile(*replies.values())
    want = {s.dot for s in merged}
    stale = [node for node, sibs in replies.items() if {s.dot for s in sibs} != want]
    return merged, stale
