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

from collections import Counter
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


SLOT_BITS = 6                       # a slot is (key index << SLOT_BITS) | position in the key's replica list
POS_MASK = (1 << SLOT_BITS) - 1     # so N is at most 64


class KeyTallies:
    """The quorum decision of every key of one request, fed by *slots*: ``i << SLOT_BITS | j`` = key ``i``'s
    replica at position ``j`` of its preference list ``prefs[i]``.

    "count" mode keeps the state of all keys in three parallel lists of ints (acks, failures, a bitmask of the
    positions that reported): a 1,000-key batch costs three list allocations, not 1,000 objects, and
    ``ack_slots`` credits a whole reply in one tight loop. The datacenter modes keep one ``Tally`` per key.
    Both decide exactly like ``Tally`` (tests/cluster/test_quorum.py checks it). ``undecided`` counts the keys
    whose decision is still "wait". A position's first report wins; later ones are ignored. O(1) per event.
    """

    __slots__ = ("quorum", "prefs", "required", "acked", "failed", "seen", "undecided", "_tallies")

    def __init__(self, quorum: Quorum, prefs: list[tuple[str, ...]], dc_of: Mapping[str, str | None]) -> None:
        self.quorum, self.prefs = quorum, prefs
        self.required = req = quorum.required
        n = len(prefs)
        sizes = Counter(map(len, prefs))          # C-level: no per-key Python work when every key has N replicas
        if sizes and max(sizes) > POS_MASK + 1:
            raise InvalidArgument(f"at most {POS_MASK + 1} replicas per key")
        if quorum.mode == "count":
            self._tallies = None
            self.acked, self.failed, self.seen = [0] * n, [0] * n, [0] * n
            self.undecided = sum(c for size, c in sizes.items() if size >= req)   # fewer replicas than W: failed
        else:
            self._tallies = [Tally(quorum, list(p), dc_of) for p in prefs]
            self.undecided = sum(t.decision() == "wait" for t in self._tallies)

    def __len__(self) -> int:
        return len(self.prefs)

    def decision(self, i: int) -> str:
        """"ok", "fail" (can no longer succeed) or "wait", for key ``i``."""
        if self._tallies is not None:
            return self._tallies[i].decision()
        if self.acked[i] >= self.required:
            return "ok"
        return "fail" if len(self.prefs[i]) - self.failed[i] < self.required else "wait"

    def report(self, slot: int, ok: bool) -> None:
        """One replica's outcome for one key: an ack (``ok``) or a failure."""
        i, j = slot >> SLOT_BITS, slot & POS_MASK
        was = self.decision(i) == "wait"
        if self._tallies is not None:
            t = self._tallies[i]
            (t.ack if ok else t.fail)(self.prefs[i][j])
        else:
            bit = 1 << j
            if self.seen[i] & bit:
                return
            self.seen[i] |= bit
            if ok:
                self.acked[i] += 1
            else:
                self.failed[i] += 1
        if was and self.decision(i) != "wait":
            self.undecided -= 1

    def ack_slots(self, slots: list[int]) -> None:
        """``report(slot, True)`` for every slot of a reply: the hot path, one loop with no calls in count mode."""
        if self._tallies is not None:
            for s in slots:
                self.report(s, True)
            return
        acked, seen, req = self.acked, self.seen, self.required
        done = 0
        for s in slots:
            i = s >> SLOT_BITS
            bit = 1 << (s & POS_MASK)
            m = seen[i]
            if m & bit:
                continue
            seen[i] = m | bit
            a = acked[i] = acked[i] + 1
            done += a == req            # reaching the quorum is the only way out of "wait" by an ack
        self.undecided -= done

    def acks(self, i: int) -> int:
        return self._tallies[i].acked if self._tallies is not None else self.acked[i]

    def not_ok(self) -> list[int]:
        """Indices of the keys whose decision is not "ok"."""
        if self._tallies is None:
            req = self.required
            return [i for i, a in enumerate(self.acked) if a < req]
        return [i for i, t in enumerate(self._tallies) if t.decision() != "ok"]

    def missing(self, i: int) -> str:
        """Human-readable account of what key ``i`` still misses (``Tally.missing``)."""
        if self._tallies is not None:
            return self._tallies[i].missing()
        a, f = self.acked[i], self.failed[i]
        return f"{a}/{self.required} acks, {f} failed, {len(self.prefs[i]) - a - f} pending"


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
