"""StorageNode: the replica-side logic of one storage node.

Plain class, no Ray. The Ray actor (raykv/actors/storage_node.py) and the
simulator both wrap it: they construct it, call ``await node.start()`` once,
call ``await node.tick()`` periodically, and route transport calls for method
``m`` to ``await node.rpc_<m>(*args)``.

What it does:
- applies writes by reconciling with what is stored (``vclock.sync``): a
  write is idempotent (the dot is the write id) and never drops a concurrent
  sibling; a write carrying a hint target is kept as a durable hint instead;
- gossips its membership view with one random peer per ``gossip_interval``
  (heartbeat + phi-accrual detector, raykv/cluster/membership.py);
- replays hints to targets its detector sees up (raykv/cluster/hints.py);
- runs Merkle anti-entropy with one peer per ``anti_entropy_interval``,
  peers in rotation (raykv/cluster/antientropy.py), postponed while the node
  serves more than ``AE_BUSY_KEYS`` client keys per interval (at most
  ``AE_MAX_DEFER`` intervals in a row: a Merkle round reads every shared key,
  and in-flight writes look like differences), and every few rounds
  drops garbage: tombstones past ``tombstone_grace`` and copies of ranges it
  no longer replicates, once their owners hold them (raykv/cluster/garbage.py);
- joins by pulling its ranges before serving reads, leaves by pushing them
  (raykv/cluster/streaming.py).

Durable state lives in the backend: data, hints, and meta "member" =
"status incarnation" so a restart resumes its status with a higher incarnation.

RPC surface (transport method -> ``rpc_<method>``): put_batch(items),
get_batch(keys), put_encoded(items), get_encoded(keys) (the same with sibling
sets as ``codec.encode_siblings`` bytes: what coordinators use), put_blind(payload)
(a bulk blind write as columns, ``codec.BlindBatch``), gossip(view), fetch_range(lo, hi, limit), ae_tree(arcs,
depth), ae_fetch(arcs, diff), leave(), status(). ``items`` are
``(key, siblings)`` or ``(key, siblings, hint_target)`` tuples;
put_batch answers one bool per item (False: a hint refused, Overloaded).
"""

from __future__ import annotations

import random
import threading
from itertools import islice

from . import antientropy, garbage, streaming
from .backend import VersionedBackend
from .config import StoreConfig
from .hints import hint_batch, pending_targets, retire_delivered, store_hint
from .membership import Membership
from .ring import NodeInfo, key_token
from .transport import Transport
from .codec import decode_siblings, encode_siblings, read_blind_wire
from .vclock import sync
from ..errors import InvalidArgument, NodeUnavailable, Overloaded, RayKVError


def merge_encoded(held: bytes | None, blob: bytes | None) -> bytes | None:
    """The encoded sibling set to store for a key holding ``held`` that receives ``blob``, or None when nothing
    changes. Fast paths: a key we do not hold stores the bytes as they came, and bytes equal to what we hold
    change nothing; only a real merge decodes (``vclock.sync``, re-encoded)."""
    if not held:
        return blob or None
    if not blob or blob == held:
        return None
    old = decode_siblings(held)
    new = sync(old, decode_siblings(blob))
    return encode_siblings(new) if new != old else None


GC_EVERY = 4          # maintenance rounds between garbage collections (each scans every key once)
AE_BUSY_KEYS = 20_000  # client keys served in one anti-entropy interval above which the round is postponed
AE_MAX_DEFER = 2       # ... but at most this many intervals in a row (repair still runs every 3 intervals)
COUNTERS = ("ops", "puts", "internal_puts", "gets", "keys_written", "hints_written", "hints_refused",
            "hints_delivered", "gossip_rounds", "anti_entropy_rounds", "anti_entropy_repairs", "streamed_in",
            "streamed_out", "join_repairs", "restarts", "tombstones_collected", "handoff_keys", "anti_entropy_deferred")
# the storage engine's numbers a node's status carries (``LSMStore.stats``), as nodetool tablestats would
ENGINE_STATS = ("tables", "memtable_bytes", "immutable_memtables", "flushes", "compactions", "stalls",
                "cache_bytes", "cache_hits", "cache_misses", "wal_fsyncs")


class StorageNode:
    """Applies versioned writes, serves reads, keeps hints, gossips, repairs and streams ranges."""

    def __init__(self, node_id: str, backend: VersionedBackend, transport: Transport,
                 config: StoreConfig, *, weight: float = 1.0, datacenter: str | None = None,
                 host: str | None = None, seeds: list[str] = (), rng: random.Random | None = None) -> None:
        """``seeds``: node ids to gossip with first (empty for the very first node). ``host`` is the
        machine id used to spread replicas over distinct machines (the Ray node id on Ray)."""
        self.node_id = node_id
        self.backend, self.transport, self.config = backend, transport, config
        self.info = NodeInfo(node_id, float(weight), datacenter, host)
        self.seeds = [s for s in seeds if s != node_id]
        self.rng = rng or random.Random(node_id)
        self.membership: Membership | None = None
        self.counters: dict[str, int | float] = dict.fromkeys(COUNTERS, 0)
        self._due: dict[str, float] = {}
        self._busy: set[str] = set()
        self._status_since = 0.0
        self._rounds = 0
        self._fg_keys = 0          # client keys (put/get RPCs) served since the last anti-entropy decision
        # Every read-merge-write of the backend holds this lock: a threaded actor serves the data RPCs
        # (``serve``) in several threads beside the event loop that runs ``tick()``. Never held across an await,
        # nor across the fsync wait of a write (``apply_local*``: append under the lock, wait after it).
        self.write_lock = threading.RLock()
        self._ae_deferred = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Recover membership from the backend's metadata (or join through ``seeds``)."""
        raw = self.backend.meta_get("member")
        if raw:
            status, inc = raw.decode().split()
            incarnation = int(inc) + 1
            self.counters["restarts"] += 1
        else:
            status, incarnation = ("joining" if self.seeds else "alive"), 1
        cfg = self.config
        self.membership = Membership(self.info, tokens_per_node=cfg.tokens_per_node, phi_threshold=cfg.phi_threshold,
                                     gossip_interval=cfg.gossip_interval, status=status, incarnation=incarnation)
        self._persist()
        now = self.transport.now()
        self._status_since = now
        jitter = self.rng.random()
        self._due = {"gossip": now, "hints": now + jitter * cfg.hint_replay_interval,
                     "ae": now + (0.5 + jitter) * cfg.anti_entropy_interval}
        for seed in self.seeds:
            if await self._gossip_with(seed):
                break

    def _persist(self) -> None:
        me = self.membership.me
        self.backend.meta_put("member", f"{me.status} {me.incarnation}".encode())

    def declare(self, status: str) -> None:
        """Change our declared status (bumps the incarnation) and persist it before anyone hears of it."""
        self.membership.declare(status)
        self._persist()

    @property
    def status_name(self) -> str:
        return self.membership.me.status if self.membership else "starting"

    async def tick(self) -> None:
        """One round of periodic work, each part on its own interval: gossip, failure detection,
        hint replay, anti-entropy, join/leave streaming. Long work runs in the background."""
        if self.membership is None:
            return
        cfg, now = self.config, self.transport.now()
        if now >= self._due["gossip"]:
            self._due["gossip"] = now + cfg.gossip_interval
            self.membership.beat()             # our heartbeat advances even while a gossip call hangs
            self._background("gossip", self.gossip_round)
        status = self.status_name
        if now >= self._due["hints"]:          # a left node still hands over the hints it holds
            self._due["hints"] = now + cfg.hint_replay_interval
            self._background("hints", self.replay_hints)
        if status == "left":
            return
        if now >= self._due["ae"]:
            self._due["ae"] = now + cfg.anti_entropy_interval
            # Foreground traffic first: a Merkle round reads every shared key and, while writes are in flight,
            # sees their not-yet-replicated keys as differences; under heavy load it is postponed, boundedly.
            busy, self._fg_keys = self._fg_keys >= AE_BUSY_KEYS, 0
            if busy and self._ae_deferred < AE_MAX_DEFER:
                self._ae_deferred += 1
                self.counters["anti_entropy_deferred"] += 1
            elif status != "joining":
                self._ae_deferred = 0
                self._background("ae", self.maintenance_round)
        settled = now - self._status_since >= 3 * cfg.gossip_interval
        if status == "joining" and settled:
            self._background("stream", self._join)
        elif status == "leaving" and settled:
            self._background("stream", self._leave)

    def _background(self, name: str, fn) -> None:
        if name in self._busy:
            return
        self._busy.add(name)

        async def run():
            try:
                await fn()
            except RayKVError:
                pass
            finally:
                self._busy.discard(name)
        self.transport.spawn(run())

    async def _join(self) -> None:
        await streaming.join(self)

    async def _leave(self) -> None:
        await streaming.leave(self)

    # ------------------------------------------------------------------ gossip
    async def _gossip_with(self, peer: str) -> bool:
        """One view exchange; its timeout is at most 4 gossip intervals (a dead peer must not stall gossip)."""
        timeout = min(self.config.request_timeout, max(4 * self.config.gossip_interval, 0.05))
        try:
            reply = await self.transport.call(peer, "gossip", self.membership.view(), timeout=timeout)
        except RayKVError:
            return False
        self.membership.merge(reply, self.transport.now())
        return True

    async def gossip_round(self) -> None:
        """Exchange views with one random non-left peer (a seed if we know nobody); ``tick`` bumps our heartbeat."""
        m = self.membership
        self.counters["gossip_rounds"] += 1
        peers = [nid for nid in m.node_ids() if nid != self.node_id]
        if not peers:
            peers = self.seeds
        if peers:
            await self._gossip_with(self.rng.choice(peers))

    # ------------------------------------------------------------------ local writes
    def apply_local(self, items, merge: bool = True) -> int:
        """Reconcile ``(key, siblings[, ...])`` items into the backend in one batch; returns keys changed.
        Durable on return (per the backend's fsync policy). ``write_lock`` covers the read-merge-append only:
        the fsync wait (``backend.wait_durable``) comes after it is released, so concurrent writers of this
        node append meanwhile and share that fsync (group commit)."""
        pending: dict[bytes, list] = {}
        ticket = None
        with self.write_lock:
            for item in items:
                key, sibs = item[0], item[1]
                cur = pending[key] if key in pending else self.backend.get(key)
                new = sync(cur, sibs)
                if new != cur:
                    pending[key] = new
            if pending:
                ticket = self.backend.put_many_deferred(list(pending.items()))
        self.backend.wait_durable(ticket)
        if pending:
            self.counters["keys_written"] += len(pending)
        return len(pending)

    def apply_local_encoded(self, items, digests: bytes | None = None) -> int:
        """``apply_local`` for ``(key, encoded siblings[, ...])`` items (``codec.encode_siblings`` of a canonical
        set: one sibling, or the result of ``sync``/``reconcile``), per ``merge_encoded``. Returns keys changed;
        durable on return, the fsync wait outside ``write_lock`` as in ``apply_local``.
        Cost: one engine read per key (``backend.merge_many_encoded_deferred``; batched by the LSM backend: one
        engine view, each engine key built once), plus a decode/sync/encode per key that needs a merge, plus at
        most one fsync (shared with the node's concurrent writers under fsync="batch")."""
        with self.write_lock:
            written, ticket = self.backend.merge_many_encoded_deferred(items, merge_encoded, digests)
        self.backend.wait_durable(ticket)
        if written:
            self.counters["keys_written"] += written
        return written

    # ------------------------------------------------------------------ RPCs
    def _require_started(self) -> None:
        if self.membership is None:
            raise NodeUnavailable(f"storage node {self.node_id} is starting")

    SERVED = frozenset({"put_batch", "put_encoded", "put_blind", "get_batch", "get_encoded", "get_hashed"})

    def serve(self, method: str, *args):
        """The data RPCs (``SERVED``) run synchronously, in the caller's thread: they never await, and the
        backend and ``write_lock`` make them safe beside ``tick()``. A threaded actor calls this directly."""
        if method not in self.SERVED:
            raise ValueError(f"{method!r} is not a synchronous RPC")
        return getattr(self, "_" + method)(*args)

    async def rpc_put_batch(self, items: list) -> list:
        """items: [(key, [Sibling,...]) or (key, [Sibling,...], hint_target), ...] -> per-item bool.
        A node that has left the ring refuses writes (NodeUnavailable): the sender retries elsewhere."""
        return self._put_batch(items)

    def _put_batch(self, items: list) -> list:
        return self._accept_writes(items, list, self.apply_local, client=False)

    async def rpc_put_encoded(self, items: list) -> list:
        """``put_batch`` with each sibling set encoded (``codec.encode_siblings``): items are ``(key, bytes)``
        or ``(key, bytes, hint_target)``; per-item bool. What coordinators send: bytes pickle at C speed and a
        new key is stored without a decode/encode round trip (``apply_local_encoded``)."""
        return self._put_encoded(items)

    def _put_encoded(self, items: list) -> list:
        return self._accept_writes(items, decode_siblings, self.apply_local_encoded)

    async def rpc_put_blind(self, payload: tuple) -> list:
        """``put_encoded`` of a bulk blind write sent as columns (``codec.BlindBatch.wire``): the node encodes
        each key's sibling itself (``codec.read_blind_wire``, the same bytes), per-item bool. ~20% fewer
        bytes on the wire than ``(key, encoded)`` pairs, for about 0.2 us more per key here."""
        return self._put_blind(payload)

    def _put_blind(self, payload: tuple) -> list:
        items, digests = read_blind_wire(payload)
        # every item is a plain (key, bytes): the digests stay aligned with what ``apply`` gets
        return self._accept_writes(items, decode_siblings, lambda items: self.apply_local_encoded(items, digests))

    def _accept_writes(self, items: list, as_siblings, apply, client: bool = True) -> list:
        """The write intake both put RPCs share: an item naming another node as hint target is kept as a
        durable hint (False when the hint store is full), the rest go to ``apply`` as one batch of
        ``(key, payload)``; per-item ack, sent only once the write is durable per the fsync policy. ``apply``
        (``apply_local*``) holds ``write_lock`` for the read-merge-append only, not for the fsync wait, so a
        put arriving on another thread appends while this one waits, and both share one fsync.
        ``client``: the RPCs of client requests (``put_encoded``, ``put_blind``: coordinator and driver rounds,
        their hinted copies, read repair) count as ``puts``, the traffic that autoscaling and anti-entropy's
        back-off read; ``put_batch`` (streaming, hint replay, anti-entropy, GC) counts as ``internal_puts``:
        a drain's streaming once looked like client traffic and scaled the store straight back up."""
        self._require_started()
        if self.status_name == "left":
            raise NodeUnavailable(f"storage node {self.node_id} has left the ring")
        self.counters["ops"] += 1
        if client:
            self.counters["puts"] += len(items)
            self._fg_keys += len(items)
        else:
            self.counters["internal_puts"] += len(items)
        if set(map(len, items)) == {2}:
            # the common batch, no hint targets: hand the items over as they are, no per-item ack/tuple building
            apply(items)
            return [True] * len(items)
        acks, direct = [], []
        for item in items:
            hint = item[2] if len(item) > 2 else None
            if hint is not None and hint != self.node_id:
                try:
                    with self.write_lock:     # the count check and the add, together
                        store_hint(self.backend, self.config.max_hints, hint, item[0], as_siblings(item[1]))
                    self.counters["hints_written"] += 1
                    acks.append(True)
                except Overloaded:
                    self.counters["hints_refused"] += 1
                    acks.append(False)
                continue
            direct.append((item[0], item[1]))
            acks.append(True)
        if direct:
            apply(direct)
        return acks

    async def rpc_get_encoded(self, keys: list[bytes]) -> list:
        """``get_batch`` with each reply encoded as stored (None when absent): no decode on the node."""
        return self._get_encoded(keys)

    def _get_encoded(self, keys: list[bytes]) -> list:
        self._count_reads(keys)
        return self.backend.get_many_encoded(keys)     # one engine view for the batch (LSM backend)

    async def rpc_get_hashed(self, payload: tuple) -> list:
        """``get_encoded`` of ``(keys, digests)``: the keys' 8-byte blake2b digests joined, as the caller's ring
        lookup computed them, so the node does not hash the keys again (``lsm_backend.data_keys``, which
        checks the first and last). What read rounds send."""
        return self._get_hashed(payload)

    def _get_hashed(self, payload: tuple) -> list:
        if not (type(payload) is tuple and len(payload) == 2 and type(payload[0]) is list
                and type(payload[1]) is bytes):
            raise InvalidArgument("get_hashed payload must be a tuple (list of keys, their digests as bytes)")
        keys, digests = payload
        self._count_reads(keys)
        return self.backend.get_many_encoded(keys, digests)

    async def rpc_get_batch(self, keys: list[bytes]) -> list:
        """-> [[Sibling,...] per key] (tombstones and expired included; the coordinator filters)."""
        return self._get_batch(keys)

    def _get_batch(self, keys: list[bytes]) -> list:
        self._count_reads(keys)
        return [self.backend.get(k) for k in keys]

    def _count_reads(self, keys: list[bytes]) -> None:
        """The read intake both get RPCs share: started check and counters."""
        self._require_started()
        self.counters["ops"] += 1
        self.counters["gets"] += len(keys)
        self._fg_keys += len(keys)

    async def rpc_gossip(self, view: list) -> list:
        """Merge the caller's membership view, return ours."""
        self._require_started()
        self.membership.merge(view, self.transport.now())
        return self.membership.view()

    async def rpc_fetch_range(self, lo: int, hi: int, limit: int) -> tuple[list, int | None]:
        """A page of ``(key, siblings)`` with lo < token <= hi, by token; next cursor (a token) or None at the end."""
        self._require_started()
        items = list(islice(self.backend.iter_range(lo, hi), limit + 1))
        if len(items) <= limit:
            return items, None
        items = items[:limit]
        last = key_token(items[-1][0])
        return items, (None if last == hi else last)

    async def rpc_ae_tree(self, arcs: list, depth: int) -> bytes:
        """Merkle tree (bytes) of our keys in ``arcs`` (anti-entropy)."""
        self._require_started()
        return antientropy.build_tree(self.backend, [tuple(a) for a in arcs], depth, self.transport.now(),
                                      self.config.tombstone_grace).to_bytes()

    async def rpc_ae_fetch(self, arcs: list, diff: list) -> list:
        """Our ``(key, siblings)`` in ``arcs`` whose token lies in a differing sub-arc."""
        self._require_started()
        return antientropy.fetch_diff(self.backend, [tuple(a) for a in arcs], [tuple(d) for d in diff],
                                      self.transport.now(), self.config.tombstone_grace)

    async def rpc_leave(self) -> None:
        """Leave the ring: declare ``leaving`` (coordinators start writing to the new owners too), let ``tick``
        stream every range to its new owner, and return once we are ``left`` and every alive peer has our view
        (one gossip exchange each). A node still joining leaves at once. InvalidArgument for the last node."""
        self._require_started()
        others = [nid for nid in self.membership.node_ids(("alive",)) if nid != self.node_id]
        if not others:
            raise InvalidArgument(f"{self.node_id} is the last alive storage node; it cannot leave")
        if self.status_name in ("alive", "joining"):
            # A joining node owns nothing yet: coordinators sent it only uncounted extra copies, and what it
            # pulled are copies too. So it leaves at once, without streaming; its join task sees that and stops.
            self.declare("left" if self.status_name == "joining" else "leaving")
            self._status_since = self.transport.now()
        while self.status_name != "left":
            await self.transport.sleep(self.config.gossip_interval)
        # The caller stops this process next: tell the peers now rather than leave it to gossip, or a peer
        # that never heard "left" keeps us as a (future) owner until failure detection sorts it out.
        for peer in others:
            await self._gossip_with(peer)

    async def rpc_status(self) -> dict:
        """{'node_id', 'alive', 'status', 'datacenter', 'weight', 'host', 'keys', 'disk_bytes', 'hints_pending',
        'engine' (the storage engine's ``ENGINE_STATS``, when it has them), ...}."""
        st = self.backend.stats()
        status = self.status_name
        return {"node_id": self.node_id, "alive": status in ("alive", "leaving"), "status": status,
                "datacenter": self.info.datacenter, "weight": self.info.weight, "host": self.info.host,
                "keys": st.get("keys", 0), "disk_bytes": st.get("disk_bytes", 0),
                "hints_pending": self.backend.hint_count(), "counters": dict(self.counters),
                "engine": {k: st[k] for k in ENGINE_STATS if k in st},
                "members": {nid: self.membership.status(nid, self.transport.now())
                            for nid in self.membership.members} if self.membership else {}}

    # ------------------------------------------------------------------ background work
    async def replay_hints(self) -> int:
        """Deliver hints to every target the detector sees up; returns hints delivered (and removed)."""
        m, now = self.membership, self.transport.now()
        delivered = 0
        for target in pending_targets(self.backend):
            declared = m.declared(target)
            batch = hint_batch(self.backend, target, 256)
            if declared is None or declared == "left":
                delivered += await self._redirect_hints(batch)
                continue
            if not m.is_up(target, now):
                continue
            try:
                acks = await self.transport.call(target, "put_batch", [(h.key, list(h.siblings)) for h in batch],
                                                 timeout=self.config.request_timeout)
            except RayKVError:
                m.suspect(target, self.transport.now())
                continue
            if all(acks):
                with self.write_lock:
                    delivered += retire_delivered(self.backend, batch)
        self.counters["hints_delivered"] += delivered
        return delivered

    async def _redirect_hints(self, batch) -> int:
        """Hints for a node that left: deliver to each key's current replicas instead."""
        ring = self.membership.ring("future")
        done = []
        for h in batch:
            targets = ring.preference_list(h.key, self.config.replicas, self.config.dc_replicas)
            ok = bool(targets)
            for t in targets:
                try:
                    if t == self.node_id:
                        self.apply_local([(h.key, list(h.siblings))])
                    else:
                        acks = await self.transport.call(t, "put_batch", [(h.key, list(h.siblings))],
                                                         timeout=self.config.request_timeout)
                        ok = ok and all(acks)
                except RayKVError:
                    ok = False
            if ok:
                done.append(h)
        with self.write_lock:
            return retire_delivered(self.backend, done)

    async def anti_entropy_round(self) -> int:
        """One Merkle exchange with each up peer sharing ranges; returns keys repaired."""
        return await antientropy.anti_entropy_round(self)

    async def maintenance_round(self) -> int:
        """Periodic repair and cleanup, every ``anti_entropy_interval``: a Merkle exchange with the next peer
        in rotation (a full round over P peers costs P intervals, so a node's repair work stays O(keys /
        interval) whatever the cluster size), and every ``GC_EVERY`` rounds garbage collection (tombstones
        past grace, copies of ranges we no longer replicate; raykv/cluster/garbage.py). Returns keys repaired."""
        m = self.membership
        peers = sorted(nid for nid in m.ring("read").nodes if nid != self.node_id)
        self._rounds += 1
        repaired = 0
        if peers:
            peer = peers[self._rounds % len(peers)]
            repaired = await antientropy.anti_entropy_round(self, peers=[peer])
        if self._rounds % GC_EVERY == 0:
            garbage.collect_tombstones(self)
            await garbage.hand_off_foreign(self)
        return repaired
