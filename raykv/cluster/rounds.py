"""Request rounds: the fan-out of one read or write as plain callbacks, with no I/O of its own.

A round knows which node gets which keys, counts each key's replies against
its quorum, re-routes a failed replica's share to a fallback node with a hint
naming the replica (sloppy quorum, Dynamo section 4.6) and says when the request is
decided. It never sends anything: ``start()`` and ``on_reply()`` return the
calls to make, as ``(node, method, payload, tag)``, and a driver makes them and
hands each reply back with its tag. Two drivers exist: the async
``Coordinator`` (any ``Transport``: the simulator, or Ray inside a coordinator
actor) and the synchronous driver-side router (``raykv.actors.router``, one
``ray.wait`` loop, no coordinator hop: Dynamo section 6.4, client-driven
coordination). Both run exactly this logic.

Writes send ONE ``put_encoded`` per node: each key's new sibling is encoded
once (``codec.encode_siblings``) and the same bytes go to all its replicas.
Reads send ONE ``get_encoded`` per node (``read_round.ReadRound``, which builds
on ``_Round`` and the fan-out helpers here).

A transport may cap the bytes of one message (``max_payload``; Ray: 90 KB,
because a larger argument or result goes through the object store and costs
about 2.5x more per call, measured): a node's share is then split into
several calls. Cost: O(keys x N) to plan; O(keys in the reply) per reply; no per-key work
once a key is decided, and an O(1) "decided?" check.

Bulk requests are what the constant factors are for: a 1,000-key ``put_many`` is planned and counted in
about 3 ms of driver CPU. Keys are grouped by preference list (keys of one ring segment share the ring's
cached tuple), so a node's share grows by C-level list extends; each (key, replica) pair is one int, a
*slot* (``quorum.SLOT_BITS``), and a reply credits its slots to ``quorum.KeyTallies`` in one loop, with
no object per key. Measured on the bench's 1,000-key batches: driver main-thread CPU per ``put_many``
12-13 -> 5.5-6 ms, per ``get_many`` of absent keys 5.5-7.7 -> 3.9-4.6 ms (``Tally`` per key before).
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Callable, Sequence

from .config import StoreConfig
from .membership import Membership
from .ring import key_digests
from .quorum import POS_MASK, SLOT_BITS, KeyTallies, Quorum
from .codec import BLIND_ITEM_OVERHEAD, BlindBatch
from ..errors import QuorumNotReached

Send = tuple  # (node_id, method, payload, tag): one call a driver makes for a round

WRITE_REROUTES = 2       # a replica whose write failed is re-routed to a fallback at most this many times


class Liveness(dict):
    """``is_up`` of each node, computed at most once per request (phi is O(1) but not free per key)."""

    def __init__(self, membership: Membership, now: float) -> None:
        super().__init__()
        self.m, self.now = membership, now

    def __missing__(self, node_id: str) -> bool:
        up = self[node_id] = self.m.is_up(node_id, self.now)
        return up


def raise_failed(op: str, rounds: list) -> None:
    """``QuorumNotReached`` naming the first key (over ``rounds``) whose quorum was not met, and how many failed."""
    bad = [(rnd.tallies, i) for rnd in rounds if rnd.tallies is not None for i in rnd.tallies.not_ok()]
    if bad:
        t, i = bad[0]
        total = sum(len(rnd.tallies) for rnd in rounds if rnd.tallies is not None)
        detail = t.missing(i) + (f"; {len(bad)} of {total} keys failed" if total > 1 else "")
        raise QuorumNotReached(op, t.acks(i), t.required, len(t.prefs[i]), detail)


def bulk_write_rounds(items: list[tuple[bytes, bytes | None]], nodes: int, replicas: int, cap: int | None,
                      min_keys: int, max_keys: int) -> list[tuple[int, int]]:
    """A bulk write's ``items`` cut into rounds ``[lo, hi)`` of even size, each as large as keeps every node's
    expected share (``replicas / nodes`` of the round's keys) within one message of ``cap`` bytes, given a
    wire item of its key and value plus ``BLIND_ITEM_OVERHEAD`` (``codec.BlindBatch``), and within
    [min_keys, max_keys].

    Why: a Ray call costs ~0.65 ms of CPU whatever its size, so a 1,000-key write of 100-byte values at N=3 on
    5 nodes is one round of 5 calls, not 2 rounds of 5 (measured with the columnar wire, alternated: p50 per
    batch 15.4-18.8 -> 12.6-15.1 ms, docs/benchmarks.md "Session 4"). A node whose share comes out larger is
    split by ``WriteRound._cuts``; with values so large that a share overflows anyway, rounds of ``min_keys``
    still let the driver plan one round while the nodes write the previous one. O(1): the item size is
    estimated from the first 64 items."""
    if not items:
        return []
    size = max_keys
    if cap:
        sample = items[:64]
        per_key = BLIND_ITEM_OVERHEAD + sum(len(k) + (len(v) if v is not None else 0) for k, v in sample) / len(sample)
        share = min(1.0, replicas / max(1, nodes))
        size = min(max_keys, max(min_keys, int(cap / (per_key * share))))
    count = -(-len(items) // size)
    step = -(-len(items) // count)
    return [(lo, min(lo + step, len(items))) for lo in range(0, len(items), step)]


ENCODED_ITEM_OVERHEAD = 24   # bytes of a ``put_encoded`` item's pickle framing besides its key and bytes


def encoded_size(item: tuple) -> int:
    """Wire bytes of one ``put_encoded`` item, ``(key, bytes)`` or ``(key, bytes, hint target)``, about."""
    return len(item[0]) + len(item[1]) + ENCODED_ITEM_OVERHEAD


def payload_cuts(sizes: list[int], cap: int | None) -> list[tuple[int, int]]:
    """Items of ``sizes`` bytes cut into runs [lo, hi) of at most ``cap`` bytes each (at least one item each;
    one run without a cap). O(items)."""
    if not cap:
        return [(0, len(sizes))]
    acc = list(accumulate(sizes))
    cuts, lo, base = [], 0, 0
    while lo < len(sizes):
        hi = max(lo + 1, bisect_right(acc, base + cap, lo))
        cuts.append((lo, hi))
        base, lo = acc[hi - 1], hi
    return cuts


def _group(prefs: list[tuple]) -> dict[tuple, list[int]]:
    """{preference list: indices of the keys that have it}: keys of one ring segment share one."""
    by: dict[tuple, list[int]] = {}
    for i, p in enumerate(prefs):
        g = by.get(p)
        if g is None:
            by[p] = [i]
        else:
            g.append(i)
    return by


def _share(groups: dict[str, tuple[list, list]], node: str) -> tuple[list, list]:
    """``node``'s (key indices, slots) in ``groups``, created empty on first use."""
    g = groups.get(node)
    if g is None:
        g = groups[node] = ([], [])
    return g


def _fan(prefs: list[tuple], keep: Callable[[str], bool] | None = None) -> tuple[dict, list]:
    """Each key to every replica of its preference list: ({node: (key indices, slots)}, [(i, j, node) of the
    replicas ``keep`` rejected]). Grouped by preference list, so the per-node lists grow by C-level extends."""
    groups: dict[str, tuple[list, list]] = {}
    rejected = []
    for p, idx in _group(prefs).items():
        for j, node in enumerate(p):
            if keep is not None and not keep(node):
                rejected.extend((i, j, node) for i in idx)
                continue
            g = _share(groups, node)
            g[0].extend(idx)
            g[1].extend([i << SLOT_BITS | j for i in idx])
    return groups, rejected


class _Round:
    """What reads and writes share: the view they were planned on, outstanding calls, the keys' tallies."""

    def __init__(self, op: str, q: Quorum, membership: Membership, config: StoreConfig, now: float,
                 counters: dict, on_failure: Callable[[str], None]) -> None:
        self.op, self.q, self.m, self.config = op, q, membership, config
        self.counters, self.on_failure = counters, on_failure
        self.up = Liveness(membership, now)
        self.dc_of = membership.datacenter_of()
        self.tallies: KeyTallies | None = None    # set by start()
        self.outstanding = 0        # calls sent and not answered yet
        self.max_payload: int | None = None    # bytes per message, set by the driver from its transport

    @property
    def undecided(self) -> int:
        """Keys whose quorum is neither met nor lost yet."""
        return self.tallies.undecided if self.tallies is not None else 0

    @property
    def decided(self) -> bool:
        """Every key's quorum is met or lost, or nothing is left to wait for."""
        return self.undecided <= 0 or self.outstanding == 0

    def wanted(self) -> int:
        """A lower bound on the replies still needed to decide (at least 1): lets a driver wait for that many
        at once (``ray.wait(num_returns=...)``). Exact for one key in count mode; 1 otherwise."""
        t = self.tallies
        if t is not None and len(t) == 1 and self.q.mode == "count":
            return max(1, t.required - t.acks(0))
        return 1

    @property
    def complete(self) -> bool:
        """Every call was answered (or failed): what read repair waits for."""
        return self.outstanding == 0

    def failed_node(self, node: str) -> None:
        self.up[node] = False
        self.on_failure(node)

    def finish(self) -> None:
        """Raise ``QuorumNotReached`` if some key's quorum was not met."""
        if self.tallies is not None and self.tallies.not_ok():
            self.counters["quorum_failures"] += 1
            raise_failed(self.op, [self])


class WriteRound(_Round):
    """One write request: ``keys[i]`` gets the encoded sibling set ``blobs[i]`` (its new version) on every replica.

    Who is written when: with ``fanout`` unset, every replica at once (Dynamo, Cassandra). With ``fanout`` set
    (``Coordinator.plan_put``: a single-key put in count mode with ``write_fanout="quorum"``, the default), the
    first ``fanout`` (= W) replicas that are up, in ring order, up front; the others are *spares*. A key's next
    spare is written at once when a replica it was sent to fails, and every undecided key's next spare when the
    driver calls ``speculate()`` (``config.speculative_retry`` after the round started waiting). Once the round
    is decided the driver sends ``rest()``: every spare not written yet, not waited for. So every replica still
    gets the write, as with all N at once; what changes is that the Nth call leaves after the W acks instead of
    before them. Why: on a shared host the third call's send and the third replica's work are paid in the
    put's latency (3 calls, wait for 2: 2.06-2.19x a raw call; W first, then the third: 1.96-2.05x; measured
    alternated, docs/benchmarks.md "Session 9").
    A spare that is down gets its copy through a hinted fallback, like a down replica at ``start()``.

    A call's tag is ``(node, slots, hinted)``; ``slots`` None marks a best-effort copy to a pending owner."""

    def __init__(self, op: str, keys: list[bytes], blobs: list[bytes], q: Quorum, membership: Membership,
                 config: StoreConfig, now: float, counters: dict, on_failure: Callable[[str], None]) -> None:
        super().__init__(op, q, membership, config, now, counters, on_failure)
        self.keys, self.blobs = keys, blobs
        self.blind = blobs if isinstance(blobs, BlindBatch) else None    # columns: sent as ``put_blind``
        self.plain = None if self.blind is not None else list(zip(keys, blobs))   # (key, blob) items
        self.used: dict[int, set] = {}             # key index -> replicas and fallbacks already tried
        self.reroutes: dict[int, int] = {}         # slot -> times its write was re-routed
        self._sizes: list[int] | None = None
        self.digests: list[bytes] | None = None    # the keys' ``ring.key_digests``, set by start()
        self.fanout: int | None = None             # replicas written up front per key; None: all (set before start)
        self.speculated = False
        self._spares: list[Sequence[int]] | None = None   # per key: positions not written yet, in order (fanout only)
        counters["ops"] += 1
        counters["puts"] += 1
        counters["keys_written"] += len(keys)

    def route(self, i: int, replica: str) -> str | None:
        """The next healthy fallback of key ``i`` not tried yet, to hold a hint for ``replica``; one in
        ``replica``'s datacenter first (a hint held elsewhere does not count for ``local_quorum``)."""
        used = self.used.get(i)
        if used is None:
            used = self.used[i] = set(self.tallies.prefs[i])
        ring = self.m.ring("read")
        fallbacks = ring.fallbacks(self.keys[i], self.config.replicas, used, self.config.dc_replicas)
        dc = self.dc_of.get(replica)
        for f in sorted(fallbacks, key=lambda f: self.dc_of.get(f) != dc):     # stable: ring order within each
            if self.up[f]:
                used.add(f)
                return f
        return None

    def _reroute(self, slot: int, groups: dict) -> bool:
        """Send ``slot``'s write to a hinted fallback (added to ``groups``), or fail the slot if none is left."""
        i = slot >> SLOT_BITS
        target = self.route(i, self.tallies.prefs[i][slot & POS_MASK])
        if target is None:
            self.tallies.report(slot, False)
            return False
        self.counters["sloppy_writes"] += 1
        g = _share(groups, target)
        g[0].append(i)
        g[1].append(slot)
        return True

    def start(self) -> list[Send]:
        """Plan: each key to its preference list, a replica believed down replaced by a hinted fallback;
        nodes that will own the key after a pending join/leave get a best-effort, uncounted copy."""
        cfg, m = self.config, self.m
        read_ring, future_ring = m.ring("read"), m.ring("future")
        n, dcr = cfg.replicas, cfg.dc_replicas
        self.digests = key_digests(self.keys)
        prefs = read_ring.preference_tuples(self.keys, n, dcr, self.digests)
        self.tallies = KeyTallies(self.q, prefs, self.dc_of)
        if self.fanout is None:
            direct, down = _fan(prefs, self.up.__getitem__)
        else:
            direct, down = self._fan_first(prefs, self.fanout)
        hinted: dict[str, tuple[list, list]] = {}
        for i, j, _node in down:
            self._reroute(i << SLOT_BITS | j, hinted)
        sends = self._sends(direct, False) + self._sends(hinted, True)
        if future_ring is not read_ring:
            extra: dict[str, tuple[list, None]] = {}
            for i, fp in enumerate(future_ring.preference_tuples(self.keys, n, dcr, self.digests)):
                for node in fp:
                    if node not in prefs[i]:
                        extra.setdefault(node, ([], None))[0].append(i)
            sends += self._sends(extra, False)
        return sends

    def _fan_first(self, prefs: list[tuple], f: int) -> tuple[dict, list]:
        """Like ``_fan``, but each key to its first ``f`` replicas that are up (then the down ones, if fewer are
        up, as rejected positions for hinted fallbacks); records every key's other positions as its spares."""
        up = self.up
        groups: dict[str, tuple[list, list]] = {}
        down, spares = [], [None] * len(prefs)
        for p, idx in _group(prefs).items():
            order = range(len(p))
            if not all(map(up.__getitem__, p)):
                order = sorted(order, key=lambda j: not up[p[j]])          # stable: ring order among equals
            for j in order[:f]:
                if not up[p[j]]:
                    down.extend((i, j, p[j]) for i in idx)
                    continue
                g = _share(groups, p[j])
                g[0].extend(idx)
                g[1].extend([i << SLOT_BITS | j for i in idx])
            for i in idx:
                spares[i] = order[f:]
        self._spares = spares
        return groups, down

    def _spill(self, keys, every: bool) -> list[Send]:
        """The sends that write each key of ``keys`` to its next spare (all its spares left, with ``every``):
        the replica itself when it is up, else a hinted fallback for it."""
        t, spares = self.tallies, self._spares
        direct: dict[str, tuple[list, list]] = {}
        hinted: dict[str, tuple[list, list]] = {}
        for i in keys:
            sp = spares[i]
            while sp:
                j, sp = sp[0], sp[1:]
                spares[i] = sp
                slot, node = i << SLOT_BITS | j, t.prefs[i][j]
                if self.up[node]:
                    g = _share(direct, node)
                    g[0].append(i)
                    g[1].append(slot)
                else:
                    self._reroute(slot, hinted)
                if not every:
                    break
        return self._sends(direct, False) + self._sends(hinted, True)

    def speculate(self) -> list[Send]:
        """The calls that write every undecided key's next spare; at most once per round, nothing for a round
        that wrote every replica up front. For a driver whose round is not decided after
        ``config.speculative_retry`` seconds: a slow or silently dead replica costs that, not a timeout."""
        if self.speculated or self._spares is None or self.decided:
            return []
        self.speculated = True
        t = self.tallies
        sends = self._spill([i for i in range(len(self.keys)) if t.decision(i) == "wait"], False)
        if sends:
            self.counters["speculative_writes"] += 1
        return sends

    def rest(self) -> list[Send]:
        """Once decided: the calls that write every spare not written yet (a driver need not wait for them)."""
        if self._spares is None:
            return []
        return self._spill(range(len(self.keys)), True)

    def _sends(self, groups: dict[str, tuple[list, list | None]], hinted: bool) -> list[Send]:
        if not groups:
            return []
        out = []
        keys, blobs, prefs = self.keys, self.blobs, self.tallies.prefs
        cap = self.max_payload
        for node, (idx, slots) in groups.items():
            if not hinted and self.plain is not None and len(self.plain) == 1:
                # one key (a single put): nothing to cut, and every replica gets the very same payload object,
                # which a driver may then serialize once
                out.append((node, "put_encoded", self.plain, (node, slots, False)))
                continue
            if not hinted and self.blind is not None:
                payload = self.blind.wire(keys, idx, self.digests)
                if not cap or self.blind.wire_size(payload) <= cap:     # the usual share: one call, no cutting
                    out.append((node, "put_blind", payload, (node, slots, False)))
                    continue
            for lo, hi in self._cuts(idx):
                part = idx[lo:hi]
                part_slots = None if slots is None else slots[lo:hi]
                if hinted:      # (key, blob, the replica the fallback holds it for)
                    method = "put_encoded"
                    payload = [(keys[i], blobs[i], prefs[i][s & POS_MASK]) for i, s in zip(part, part_slots)]
                elif self.blind is not None:
                    method, payload = "put_blind", self.blind.wire(keys, part, self.digests)
                else:
                    method, payload = "put_encoded", list(map(self.plain.__getitem__, part))
                out.append((node, method, payload, (node, part_slots, hinted)))
        self.outstanding += len(out)
        return out

    def _cuts(self, idx: list[int]) -> list[tuple[int, int]]:
        """``idx`` cut into runs [lo, hi) whose payload stays under ``max_payload`` bytes (``payload_cuts``)."""
        cap = self.max_payload
        if not cap:
            return [(0, len(idx))]
        if self._sizes is None:
            if self.blind is not None:
                size = self.blind.size
                self._sizes = [len(k) + size(i) for i, k in enumerate(self.keys)]
            else:
                self._sizes = list(map(encoded_size, self.plain))
        return payload_cuts(list(map(self._sizes.__getitem__, idx)), cap)

    def on_reply(self, tag, res, exc: BaseException | None) -> list[Send]:
        """Credit acks to the intended replicas; re-route the failed share (at most ``WRITE_REROUTES`` times)."""
        self.outstanding -= 1
        node, slots, hinted = tag
        if slots is None:
            return []                          # best-effort copy for a pending owner
        t = self.tallies
        if exc is None and not hinted and all(res):
            t.ack_slots(slots)                 # the common reply: every item stored by its own replica
            return []
        if exc is not None:
            self.failed_node(node)
        count, dc_of, prefs = self.q.mode == "count", self.dc_of, t.prefs
        regroup: dict[str, tuple[list, list]] = {}
        short = []                              # keys a failure left short: their next spare is written too
        for k, s in enumerate(slots):
            if exc is None and res[k]:
                # a hint held in another datacenter is stored, but does not count towards its replica's
                # datacenter (Cassandra's rule for *_QUORUM)
                t.report(s, count or not hinted or dc_of.get(node) == dc_of.get(prefs[s >> SLOT_BITS][s & POS_MASK]))
                continue
            tries = self.reroutes.get(s, 0)
            if tries < WRITE_REROUTES and t.decision(s >> SLOT_BITS) == "wait":
                self.reroutes[s] = tries + 1
                short.append(s >> SLOT_BITS)
                if self._reroute(s, regroup):
                    self.counters["write_retries"] += 1
                continue
            t.report(s, False)
        sends = self._sends(regroup, True)
        if short and self._spares is not None:
            sends += self._spill([i for i in dict.fromkeys(short) if t.decision(i) == "wait"], False)
        return sends
