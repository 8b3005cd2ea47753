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
Reads send ONE ``get_encoded`` per node; replies stay encoded until the quorum
is met, identical replies are decoded once, and ``repair_plan()`` names the
stale replicas once every replica answered (read repair).

A transport may cap the bytes of one message (``max_payload``; Ray: 90 KB,
because a larger argument or result goes through the object store and costs
about 2.5x more per call, measured): a node's share is then split into
several calls. Cost: O(keys x N) to plan; O(keys in the reply) per reply; no per-key work
once a key is decided, and an O(1) "decided?" check.
"""

from __future__ import annotations

from typing import Callable

from .config import StoreConfig
from .membership import Membership
from .quorum import Quorum, Tally, read_repair_plan, tally
from .codec import decode_siblings, encode_siblings
from .vclock import Sibling, live, reconcile
from ..errors import QuorumNotReached

Send = tuple  # (node_id, method, payload, tag): one call a driver makes for a round

READ_CHUNK_BYTES = 200     # assumed bytes per value read, to size read calls under ``max_payload``
READ_ATTEMPTS = 3        # a node whose read failed is asked again (reads are idempotent) up to this many times
WRITE_REROUTES = 2       # a replica whose write failed is re-routed to a fallback at most this many times


class Liveness(dict):
    """``is_up`` of each node, computed at most once per request (phi is O(1) but not free per key)."""

    def __init__(self, membership: Membership, now: float) -> None:
        super().__init__()
        self.m, self.now = membership, now

    def __missing__(self, node_id: str) -> bool:
        up = self[node_id] = self.m.is_up(node_id, self.now)
        return up


def merge_encoded(blobs) -> list[Sibling]:
    """``vclock.reconcile`` of encoded sibling sets (None/b"" = absent); identical bytes are decoded once."""
    distinct = {b for b in blobs if b}
    if not distinct:
        return []
    if len(distinct) == 1:
        return decode_siblings(distinct.pop())
    return reconcile(*(decode_siblings(b) for b in distinct))


def raise_failed(op: str, tallies: list) -> None:
    """``QuorumNotReached`` naming the first key whose quorum was not met (and how many failed), if any."""
    bad = [t for t in tallies if t.decision() != "ok"]
    if bad:
        t = bad[0]
        detail = t.missing() + (f"; {len(bad)} of {len(tallies)} keys failed" if len(tallies) > 1 else "")
        raise QuorumNotReached(op, t.acked, t.quorum.required, len(t.replicas), detail)


class _Round:
    """What reads and writes share: the view they were planned on, outstanding calls, decision counter."""

    def __init__(self, op: str, q: Quorum, membership: Membership, config: StoreConfig, now: float,
                 counters: dict, on_failure: Callable[[str], None]) -> None:
        self.op, self.q, self.m, self.config = op, q, membership, config
        self.counters, self.on_failure = counters, on_failure
        self.up = Liveness(membership, now)
        self.dc_of = membership.datacenter_of()
        self.tallies: list[Tally] = []
        self.undecided = 0          # keys whose tally still says "wait"
        self.outstanding = 0        # calls sent and not answered yet
        self.max_payload: int | None = None    # bytes per message, set by the driver from its transport

    @property
    def decided(self) -> bool:
        """Every key's quorum is met or lost, or nothing is left to wait for."""
        return self.undecided <= 0 or self.outstanding == 0

    def wanted(self) -> int:
        """A lower bound on the replies still needed to decide (at least 1): lets a driver wait for that many
        at once (``ray.wait(num_returns=...)``). Exact for one key in count mode; 1 otherwise."""
        if len(self.tallies) == 1 and self.q.mode == "count":
            t = self.tallies[0]
            return max(1, self.q.required - t.acked)
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
        if any(t.decision() != "ok" for t in self.tallies):
            self.counters["quorum_failures"] += 1
            raise_failed(self.op, self.tallies)


class WriteRound(_Round):
    """One write request: ``entries`` are (key, new Sibling); every replica gets the key's encoded sibling."""

    def __init__(self, op: str, entries: list[tuple[bytes, Sibling]], q: Quorum, membership: Membership,
                 config: StoreConfig, now: float, counters: dict, on_failure: Callable[[str], None]) -> None:
        super().__init__(op, q, membership, config, now, counters, on_failure)
        self.entries = entries
        self.blobs = [encode_siblings([sib]) for _key, sib in entries]
        self.plain = [(key, blob) for (key, _sib), blob in zip(entries, self.blobs)]   # shared by every payload
        self.used: list[set | None] = []           # per key: replicas and fallbacks already tried (lazily)
        self.reroutes: dict[tuple[int, str], int] = {}
        counters["ops"] += 1
        counters["puts"] += 1
        counters["keys_written"] += len(entries)

    def route(self, key: bytes, replica: str, used: set) -> tuple[str | None, str | None]:
        """(target, hint): the next healthy fallback of ``key`` not in ``used``, with a hint naming ``replica``;
        one in ``replica``'s datacenter first (a hint held elsewhere does not count for ``local_quorum``)."""
        ring = self.m.ring("read")
        fallbacks = ring.fallbacks(key, self.config.replicas, used, self.config.dc_replicas)
        dc = self.dc_of.get(replica)
        for f in sorted(fallbacks, key=lambda f: self.dc_of.get(f) != dc):     # stable: ring order within each
            if self.up[f]:
                used.add(f)
                return f, replica
        return None, None

    def start(self) -> list[Send]:
        """Plan: each key to its preference list, a replica believed down replaced by a hinted fallback;
        nodes that will own the key after a pending join/leave get a best-effort, uncounted copy."""
        cfg, m, up = self.config, self.m, self.up
        read_ring, future_ring = m.ring("read"), m.ring("future")
        pending_owners = future_ring is not read_ring
        n, dcr = cfg.replicas, cfg.dc_replicas
        groups: dict[str, list] = {}
        self.undecided = len(self.entries)
        for i, (key, _sib) in enumerate(self.entries):
            pref = read_ring.preference_list(key, n, dcr)
            t = tally(self.q, pref, self.dc_of)
            self.tallies.append(t)
            self.used.append(None)
            for r in pref:
                if up[r]:
                    target, hint = r, None
                else:
                    if self.used[i] is None:
                        self.used[i] = set(pref)
                    target, hint = self.route(key, r, self.used[i])
                if target is None:
                    t.fail(r)
                    continue
                self.counters["sloppy_writes"] += hint is not None
                groups.setdefault(target, []).append((i, r, hint))
            if t.decision() != "wait":
                self.undecided -= 1
            if pending_owners:
                for extra in future_ring.preference_list(key, n, dcr):
                    if extra not in pref:
                        groups.setdefault(extra, []).append((i, None, None))
        return self._sends(groups)

    def _sends(self, groups: dict[str, list]) -> list[Send]:
        out = []
        cap = self.max_payload
        for node, slots in groups.items():
            for part in (self._split(slots) if cap else (slots,)):
                payload = [self.plain[i] if hint is None else (self.entries[i][0], self.blobs[i], hint)
                           for i, _r, hint in part]
                out.append((node, "put_encoded", payload, (node, part)))
        self.outstanding += len(out)
        return out

    def _split(self, slots: list) -> list[list]:
        """``slots`` cut into runs whose payload stays under ``max_payload`` bytes (at least one item each)."""
        parts, cur, size, cap, plain = [], [], 0, self.max_payload, self.plain
        for slot in slots:
            key, blob = plain[slot[0]]
            n = len(key) + len(blob) + 24
            if cur and size + n > cap:
                parts.append(cur)
                cur, size = [], 0
            cur.append(slot)
            size += n
        parts.append(cur)
        return parts

    def on_reply(self, tag, res, exc: BaseException | None) -> list[Send]:
        """Credit acks to the intended replicas; re-route the failed share (at most ``WRITE_REROUTES`` times)."""
        self.outstanding -= 1
        node, slots = tag
        if exc is not None:
            self.failed_node(node)
        q, dc_of = self.q, self.dc_of
        regroup: dict[str, list] = {}
        for j, (i, r, hint) in enumerate(slots):
            if r is None:
                continue                       # best-effort copy for a pending owner
            t = self.tallies[i]
            waiting = t.decision() == "wait"
            if exc is None and res[j]:
                if hint is not None and q.mode != "count" and dc_of.get(node) != dc_of.get(r):
                    t.fail(r)                  # a hint held in another datacenter: stored, but it does not
                else:                          # count towards r's datacenter (Cassandra's rule for *_QUORUM)
                    t.ack(r)
                if waiting and t.decision() != "wait":
                    self.undecided -= 1
                continue
            tries = self.reroutes.get((i, r), 0)
            target = None
            if tries < WRITE_REROUTES and waiting:
                self.reroutes[(i, r)] = tries + 1
                if self.used[i] is None:
                    self.used[i] = set(t.replicas)
                target, hint2 = self.route(self.entries[i][0], r, self.used[i])
            if target is None:
                t.fail(r)
                if waiting and t.decision() != "wait":
                    self.undecided -= 1
            else:
                self.counters["write_retries"] += 1
                self.counters["sloppy_writes"] += hint2 is not None
                regroup.setdefault(target, []).append((i, r, hint2))
        return self._sends(regroup)


class ReadRound(_Round):
    """One read request over ``keys`` (distinct): every replica asked, decided after R replies per key."""

    def __init__(self, op: str, keys: list[bytes], q: Quorum, membership: Membership, config: StoreConfig,
                 now: float, counters: dict, on_failure: Callable[[str], None]) -> None:
        super().__init__(op, q, membership, config, now, counters, on_failure)
        self.keys = keys
        self.replies: list[dict[str, bytes | None]] = [{} for _ in keys]
        self.attempts: dict[str, int] = {}
        counters["ops"] += 1
        counters["gets"] += 1
        counters["keys_read"] += len(keys)

    def start(self) -> list[Send]:
        cfg = self.config
        ring = self.m.ring("read")
        n, dcr = cfg.replicas, cfg.dc_replicas
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(self.keys):
            pref = ring.preference_list(key, n, dcr)
            self.tallies.append(tally(self.q, pref, self.dc_of))
            for node in pref:
                groups.setdefault(node, []).append(i)
        self.undecided = sum(t.decision() == "wait" for t in self.tallies)
        step = max(1, self.max_payload // READ_CHUNK_BYTES) if self.max_payload else None
        return [self._ask(node, idx[lo:lo + step] if step else idx, 1)
                for node, idx in groups.items() for lo in range(0, len(idx), step or len(idx))]

    def _ask(self, node: str, idx: list[int], attempt: int) -> Send:
        self.attempts[node] = max(self.attempts.get(node, 0), attempt)
        self.outstanding += 1
        return (node, "get_encoded", [self.keys[i] for i in idx], (node, idx, attempt))

    def on_reply(self, tag, res, exc: BaseException | None) -> list[Send]:
        """Record a node's encoded answers; a failed call is made again (``READ_ATTEMPTS``) while it matters."""
        self.outstanding -= 1
        node, idx, attempt = tag
        if exc is not None:
            self.failed_node(node)
            if attempt < READ_ATTEMPTS and any(self.tallies[i].decision() == "wait" for i in idx):
                return [self._ask(node, idx, attempt + 1)]
        for j, i in enumerate(idx):
            t = self.tallies[i]
            waiting = t.decision() == "wait"
            if exc is None:
                self.replies[i][node] = res[j]
                t.ack(node)
            else:
                t.fail(node)
            if waiting and t.decision() != "wait":
                self.undecided -= 1
        return []

    def result(self, now: float, raw: bool = False) -> dict[bytes, list[Sibling]]:
        """The reconciled siblings of every key from the replies so far (live ones only unless ``raw``)."""
        out = {}
        for key, rep in zip(self.keys, self.replies):
            merged = merge_encoded(rep.values())
            out[key] = merged if raw else live(merged, now)
        return out

    def repair_plan(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """{stale node: [(key, merged encoded siblings)]}; keys whose replicas answered identical bytes cost
        one comparison. Meant for when the round is ``complete``."""
        pushes: dict[str, list] = {}
        for key, rep in zip(self.keys, self.replies):
            if len(rep) < 2:
                continue
            blobs = iter(rep.values())
            first = next(blobs)
            if all(b == first for b in blobs):
                continue
            merged, stale = read_repair_plan({node: decode_siblings(b) if b else [] for node, b in rep.items()})
            if stale:
                blob = encode_siblings(merged)
                for node in stale:
                    pushes.setdefault(node, []).append((key, blob))
        return pushes
