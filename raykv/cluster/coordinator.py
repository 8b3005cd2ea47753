"""Coordinator: request-side logic: quorum fan-out, sloppy quorum, hinted writes, read repair, batching.

Plain class, no Ray. The async Ray coordinator actor wraps one; the simulator
drives several. State: a membership view (refreshed by gossiping with storage
nodes: ``refresh()``, also triggered lazily by requests) with its own
phi-accrual detector plus direct evidence (a call that timed out marks the
node down until its heartbeat advances), and the dot minter (``vclock.DotMinter``).
Its actor id is ``coord_id`` plus a random suffix drawn at construction, so a
restarted coordinator never reuses a dot (the dot is the write id: a retried
or duplicated write is idempotent at the replicas); the minter switches to a
fresh actor ``<actor>~g`` when a write's context does not cover the last dot
it minted for that key, so version-vector contexts never over-claim.

Writes (Dynamo section 4.5-4.6): the new version's context is the context the
client passed (None -> empty: a blind write is *concurrent* with what is
stored and becomes a sibling, never a silent overwrite), pruned; its dot is
fresh. Reads return after R replies with the ``vclock.sync`` of what came back,
then in the background wait for the rest and push the merge to stale replicas.

The fan-out itself (preference lists, sloppy quorum, hints, quorum counting,
read-repair plan) lives in ``rounds`` as plain callbacks: ``plan_put`` /
``plan_put_many`` / ``plan_read`` build a round without I/O, and ``_Driver``
runs it over the ``Transport``. The driver-side router in ``raykv.actors``
runs the very same rounds with ``ray.wait`` instead (client-driven
coordination). Cost per request: one message per replica node and
O(siblings^2) reconciliation per key.
"""

from __future__ import annotations

import asyncio
import random
from typing import Callable

from .config import StoreConfig
from .membership import Membership
from .quorum import Quorum, read_quorum, write_quorum
from .ring import TOKEN_SPACE, key_token
from .codec import BlindBatch, encode_siblings
from .latency import LatencyWindow
from .read_round import ReadRound, ReplySize
from .rounds import WriteRound
from .transport import Transport
from .vclock import DotMinter, Sibling, VClock, live, reconcile
from ..errors import NodeUnavailable, QuorumNotReached, RayKVError

MAX_TOKEN = TOKEN_SPACE - 1
FANOUT_READS = ("get", "get_many")   # the reads that ask R replicas (read_fanout="quorum"); get_raw asks all
TIMED = FANOUT_READS + ("put",)      # the requests whose recent durations set their speculative delay
SPECULATE_FALLBACK = 0.05   # seconds, speculative_retry "NNp" before the window has enough reads
SPECULATE_MIN = 0.002       # ... and its bounds: never speculate sooner (a storm of spare reads) ...
SPECULATE_MAX = 1.0         # ... nor later (a hung replica would cost this, not request_timeout)
COUNTERS = ("ops", "gets", "puts", "keys_read", "keys_written", "read_repairs", "sloppy_writes", "write_retries",
            "quorum_failures", "node_failures", "refreshes", "scan_pages", "speculative_reads",
            "speculative_writes")


class _Driver:
    """Runs one round over a ``Transport``: makes its sends, feeds each reply back, wakes waiters.

    One future per call (``Transport.call_future``), no task per call; ``until(pred, limit)`` is one future and
    one timer."""

    def __init__(self, transport: Transport, rnd, timeout: float) -> None:
        self.transport, self.rnd, self.timeout = transport, rnd, timeout
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []

    def launch(self, sends) -> None:
        for node, method, payload, tag in sends:
            fut = asyncio.ensure_future(self.transport.call_future(node, method, payload, timeout=self.timeout))
            fut.add_done_callback(lambda f, tag=tag: self._done(f, tag))

    def _done(self, f: asyncio.Future, tag) -> None:
        if f.cancelled():
            res, exc = None, NodeUnavailable("cancelled")
        else:
            exc = f.exception()
            res = None if exc else f.result()
        self.launch(self.rnd.on_reply(tag, res, exc))
        for pred, w in self._waiters:
            if not w.done() and pred():
                w.set_result(None)

    async def until(self, pred: Callable[[], bool], limit: float) -> None:
        """Until ``pred()`` holds (checked after every reply), at most ``limit`` seconds."""
        if pred():
            return
        loop = asyncio.get_running_loop()
        w = loop.create_future()
        entry = (pred, w)
        self._waiters.append(entry)
        timer = loop.call_later(limit, lambda: w.done() or w.set_result(None))
        try:
            await w
        finally:
            timer.cancel()
            self._waiters.remove(entry)


class Coordinator:
    """Routes one client request to the key's replicas and decides when it has succeeded."""

    def __init__(self, coord_id: str, transport: Transport, config: StoreConfig, *,
                 seeds: list[str], rng: random.Random | None = None) -> None:
        self.coord_id, self.transport, self.config = coord_id, transport, config
        self.rng = rng or random.Random()
        self.actor = f"{coord_id}.{self.rng.getrandbits(40):010x}"
        self.minter = DotMinter(self.actor)
        self.last_dot = None
        self.seeds = list(seeds)
        self.membership = Membership(None, tokens_per_node=config.tokens_per_node,
                                     phi_threshold=config.phi_threshold, gossip_interval=config.gossip_interval)
        self.counters: dict[str, int | float] = dict.fromkeys(COUNTERS, 0)
        self._last_refresh = float("-inf")
        self._refreshing = False
        self._rests = 0                     # bulk read rounds planned: which node rests next (``ReadRound.rest``)
        self.reply_size = ReplySize()       # bytes per key of read replies, to size read calls
        # durations of recent requests that asked R (W) replicas first, per op: a bulk read takes ~5x a get
        self.latency = {op: LatencyWindow() for op in TIMED}   # (speculative_retry "NNp")

    # ------------------------------------------------------------------ membership
    async def refresh(self) -> None:
        """Pull the membership view from a storage node (gossip): a random up member, else the seeds."""
        for nid in self.gossip_targets():
            try:
                view = await self.transport.call(nid, "gossip", self.membership.view(),
                                                 timeout=self.config.request_timeout)
            except NodeUnavailable:
                self.membership.suspect(nid, self.transport.now())
                continue
            self.absorb_view(view)
            return

    def gossip_targets(self) -> list[str]:
        """Up to 4 nodes to pull the view from, in order: up members in random order, then the seeds."""
        m, now = self.membership, self.transport.now()
        known = [nid for nid in m.node_ids() if m.is_up(nid, now)]
        self.rng.shuffle(known)
        return (known + [s for s in self.seeds if s not in known])[:4]

    def absorb_view(self, view: list) -> None:
        """Merge a view a storage node answered to ``gossip``."""
        self.membership.merge(view, self.transport.now())
        self._last_refresh = self.transport.now()
        self.counters["refreshes"] += 1

    def view_age(self) -> float:
        """Seconds since the last successful refresh (inf before the first)."""
        return self.transport.now() - self._last_refresh

    async def _ensure_view(self) -> None:
        if not self.membership.members:
            await self.refresh()
        elif self.view_age() >= self.config.gossip_interval and not self._refreshing:
            self._refreshing = True

            async def bg():
                try:
                    await self.refresh()
                finally:
                    self._refreshing = False
            self.transport.spawn(bg())

    async def add_node(self, node_id: str) -> None:
        """Learn of a new storage node (e.g. started by the manager): keep it as a seed and gossip with it."""
        if node_id not in self.seeds:
            self.seeds.append(node_id)
        try:
            view = await self.transport.call(node_id, "gossip", self.membership.view(),
                                             timeout=self.config.request_timeout)
            self.membership.merge(view, self.transport.now())
        except NodeUnavailable:
            pass

    def _failed(self, node_id: str) -> None:
        self.counters["node_failures"] += 1
        self.membership.suspect(node_id, self.transport.now())

    # ------------------------------------------------------------------ writes
    def _mint(self, key: bytes, value: bytes | None, context: VClock | None, ttl: float | None) -> Sibling:
        """A new version of ``key``. The dot comes from ``vclock.DotMinter``: one global counter, but a fresh
        actor whenever this write's context does not cover the last dot we minted for the key, so a context
        entry actor:n never claims a write of the key its reader did not see."""
        now = self.transport.now()
        ctx = (context or VClock()).prune(now)
        dot = self.minter.mint(key, context)
        self.last_dot = dot
        return Sibling(dot=dot, context=ctx, value=value, timestamp=now,
                       expires_at=(now + ttl) if ttl is not None else None)

    def plan_put(self, key: bytes, value: bytes | None, *, context: VClock | None = None, w: int | None = None,
                 consistency: str | None = None, ttl: float | None = None) -> tuple[WriteRound, VClock]:
        """A write round for one key (value None = delete) and the new version's clock. No I/O."""
        q = write_quorum(self.config, w, consistency, self.config.local_datacenter)
        sib = self._mint(key, value, context, ttl)
        rnd = self._round(WriteRound, "put", [key], [encode_siblings([sib])], q=q)
        if q.mode == "count" and self.config.write_fanout == "quorum":
            rnd.fanout = q.required          # W replicas first, the spares after the acks or on a failure
        return rnd, sib.clock

    def plan_put_many(self, items: list[tuple[bytes, bytes | None]], *, w: int | None = None,
                      consistency: str | None = None, ttl: float | None = None) -> tuple[WriteRound, dict]:
        """``plan_blind`` and {key: new clock}. No I/O."""
        rnd, dots, now = self.plan_blind(items, w=w, consistency=consistency, ttl=ttl)
        raw = VClock._raw
        # a blind write's clock is just its dot: built directly, not by VClock.add on an empty context
        return rnd, {key: raw({a: n}, {a: now}) for key, (a, n) in zip(rnd.keys, dots)}

    def plan_blind(self, items: list[tuple[bytes, bytes | None]], *, w: int | None = None,
                   consistency: str | None = None, ttl: float | None = None) -> tuple[WriteRound, list, float]:
        """A write round of blind writes (each a new sibling with an empty context), its dots (one per key, in
        order) and their timestamp: each key's new clock is {actor: n} stamped ``now``, which a driver may build
        once the round is on its way. No I/O. Dots are minted in one pass (``DotMinter.mint_blind``) and kept as
        columns (``codec.BlindBatch``): no ``Sibling`` object is built, and each replica encodes its own share
        (RPC ``put_blind``)."""
        q = write_quorum(self.config, w, consistency, self.config.local_datacenter)
        now = self.transport.now()
        keys = [k for k, _ in items]
        generation = self.minter.generation
        dots = self.minter.mint_blind(keys)
        if dots:
            self.last_dot = dots[-1]
        # no new generation during the batch: every dot has the actor it started with (BlindBatch's short wire)
        one = dots[0][0] if dots and self.minter.generation == generation else None
        blobs = BlindBatch(dots, [v for _, v in items], now, (now + ttl) if ttl is not None else None, actor=one)
        return self._round(WriteRound, "put_many", keys, blobs, q=q), dots, now

    def plan_read(self, op: str, keys: list[bytes], *, r: int | None = None,
                  consistency: str | None = None, values: bool = False) -> ReadRound:
        """A read round over distinct ``keys`` (``values``: for ``ReadRound.values``). No I/O."""
        q = read_quorum(self.config, r, consistency, self.config.local_datacenter)
        rnd = self._round(ReadRound, op, keys, q=q)
        rnd.reply_size = self.reply_size
        if values:
            rnd.want_values()
        if op in FANOUT_READS and q.mode == "count" and self.config.read_fanout == "quorum":
            rnd.fanout = q.required          # R replicas per key, spares on failure or after speculative_retry
            if op == "get_many" and q.required < self.config.replicas:
                nodes = sorted(self.membership.ring("read").nodes)
                if nodes:                    # each bulk read round rests the next node in turn
                    rnd.rest = nodes[self._rests % len(nodes)]
                    self._rests += 1
        return rnd

    def speculative_delay(self, op: str = "get_many") -> float:
        """Seconds a round of ``op`` (``TIMED``: "get", "get_many", "put") that asked R (W) replicas waits
        before asking spare ones (``config.speculative_retry``): fixed, or the configured percentile of recent
        requests of that op (``latency[op]``) within [``SPECULATE_MIN``, ``SPECULATE_MAX``],
        ``SPECULATE_FALLBACK`` until enough were seen."""
        spec = self.config.speculative_retry
        if not isinstance(spec, str):
            return float(spec)
        v = self.latency[op].percentile(float(spec[:-1]))
        return SPECULATE_FALLBACK if v is None else min(SPECULATE_MAX, max(SPECULATE_MIN, v))

    def _round(self, cls, op: str, *what, q: Quorum):
        rnd = cls(op, *what, q, self.membership, self.config, self.transport.now(), self.counters, self._failed)
        rnd.max_payload = getattr(self.transport, "max_payload", None)
        return rnd

    async def put(self, key: bytes, value: bytes | None, *, context: VClock | None = None,
                  w: int | None = None, consistency: str | None = None, ttl: float | None = None,
                  timeout: float | None = None) -> VClock:
        """Write (value None = delete) after W acks; returns the new version's clock (the new context)."""
        write_quorum(self.config, w, consistency, self.config.local_datacenter)    # bad input fails before I/O
        await self._ensure_view()
        rnd, clock = self.plan_put(key, value, context=context, w=w, consistency=consistency, ttl=ttl)
        await self._write(rnd, timeout)
        return clock

    async def put_many(self, items: list[tuple[bytes, bytes | None]], *, w: int | None = None,
                       consistency: str | None = None, ttl: float | None = None) -> dict[bytes, VClock]:
        """Blind writes of many keys (each a new sibling), one ``put_blind`` per replica node (a hinted copy as
        ``put_encoded``)."""
        write_quorum(self.config, w, consistency, self.config.local_datacenter)
        await self._ensure_view()
        rnd, clocks = self.plan_put_many(items, w=w, consistency=consistency, ttl=ttl)
        await self._write(rnd, None)
        return clocks

    async def _write(self, rnd: WriteRound, timeout: float | None) -> None:
        timeout = timeout or self.config.request_timeout
        d = _Driver(self.transport, rnd, timeout)
        t0 = self.transport.now()
        d.launch(rnd.start())
        if rnd.fanout is not None:
            await d.until(lambda: rnd.decided, self.speculative_delay("put"))
            d.launch(rnd.speculate())
        await d.until(lambda: rnd.decided, 2 * timeout)
        if rnd.fanout is not None:
            self.latency["put"].add(self.transport.now() - t0)
            d.launch(rnd.rest())             # the replicas not written yet: not waited for
        rnd.finish()

    # ------------------------------------------------------------------ reads
    async def get(self, key: bytes, *, r: int | None = None, consistency: str | None = None,
                  timeout: float | None = None) -> list[Sibling]:
        """Live siblings of ``key`` (tombstones/expired removed; [] when absent), after R replies; read repair in background."""
        return (await self._read("get", [key], r, consistency, timeout))[key]

    async def get_many(self, keys: list[bytes], *, r: int | None = None,
                       consistency: str | None = None) -> dict[bytes, list[Sibling]]:
        """Live siblings per key (only keys that have some), one ``get_encoded`` per replica node."""
        got = await self._read("get_many", list(dict.fromkeys(keys)), r, consistency, None)
        return {k: v for k, v in got.items() if v}

    async def get_values(self, keys: list[bytes], *, r: int | None = None, consistency: str | None = None
                         ) -> tuple[dict[bytes, bytes], dict[bytes, list[Sibling]]]:
        """``get_many`` as ``ReadRound.values``: ({key: value} of keys with one live version, {key: siblings} of
        keys with several). What ``KV.get_many`` uses: no ``Sibling`` built for the usual key."""
        return await self._read("get_many", list(dict.fromkeys(keys)), r, consistency, None, values=True)

    async def get_raw(self, keys: list[bytes], *, r: int | None = None, consistency: str | None = None,
                      timeout: float | None = None) -> dict[bytes, list[Sibling]]:
        """Reconciled siblings per key *including* tombstones and expired ones (tests, tools)."""
        return await self._read("get_raw", list(dict.fromkeys(keys)), r, consistency, timeout, raw=True)

    async def _read(self, op: str, keys: list[bytes], r, consistency, timeout, raw: bool = False,
                    values: bool = False):
        """Run a read round: return after R replies per key, then read repair in the background."""
        read_quorum(self.config, r, consistency, self.config.local_datacenter)
        await self._ensure_view()
        rnd = self.plan_read(op, keys, r=r, consistency=consistency, values=values)
        timeout = timeout or self.config.request_timeout
        d = _Driver(self.transport, rnd, timeout)
        t0 = self.transport.now()
        d.launch(rnd.start())
        if rnd.fanout is not None:
            await d.until(lambda: rnd.decided, self.speculative_delay(op))
            d.launch(rnd.speculate())
        await d.until(lambda: rnd.decided, 3 * timeout)
        if rnd.fanout is not None:
            self.latency[op].add(self.transport.now() - t0)
        rnd.finish()
        out = rnd.values(self.transport.now()) if values else rnd.result(self.transport.now(), raw)
        self.transport.spawn(self._read_repair(rnd, d, timeout))
        return out

    async def _read_repair(self, rnd: ReadRound, d: "_Driver", timeout: float) -> int:
        """After every replica answered (or timed out), push the merge to the stale ones, one call per node."""
        await d.until(lambda: rnd.complete, timeout)
        repaired = 0
        for node, items in rnd.repair_plan().items():
            try:
                await self.transport.call(node, "put_encoded", items, timeout=timeout)
                repaired += len(items)
            except RayKVError:
                self._failed(node)
        self.counters["read_repairs"] += repaired
        return repaired

    # ------------------------------------------------------------------ scans
    async def scan_page(self, cursor: bytes | None, limit: int) -> tuple[list[tuple[bytes, list[Sibling]]], bytes | None]:
        """A page of live keys for ``items()``, in token order; cursor None starts, returned None ends.

        The cursor is the last token covered (8 bytes). Every up node is asked, in parallel, for its keys after
        the cursor (one ``fetch_range`` call per node per round, not per ring segment); the answers are merged
        (so a key held by any answering replica is seen) and cut at the smallest token where a node's page ended.
        ``QuorumNotReached`` when no replica of some ring segment in the page answered. Keys written during a
        scan may or may not appear; a key present throughout appears exactly once.
        Cost per page: one round of parallel calls, about ``limit`` keys read per node.
        """
        await self._ensure_view()
        m, cfg = self.membership, self.config
        ring = m.ring("read")
        if not len(ring):
            return [], None
        pos = -1 if cursor is None else int.from_bytes(cursor, "big")
        out: list[tuple[bytes, list[Sibling]]] = []
        self.counters["scan_pages"] += 1
        while pos < MAX_TOKEN and len(out) < limit:
            lo = MAX_TOKEN if pos < 0 else pos     # (MAX, MAX] is the whole ring, from token 0
            want = limit - len(out)
            now = self.transport.now()
            nodes = [n for n in ring.nodes if m.is_up(n, now)] or list(ring.nodes)
            replies = await asyncio.gather(*(self.transport.call(n, "fetch_range", lo, MAX_TOKEN, want,
                                                                 timeout=cfg.request_timeout) for n in nodes),
                                           return_exceptions=True)
            pages, answered, cut = [], set(), MAX_TOKEN
            for node, reply in zip(nodes, replies):
                if isinstance(reply, NodeUnavailable):
                    self._failed(node)
                    continue
                if isinstance(reply, BaseException):
                    raise reply
                items, nxt = reply
                pages.append(items)
                answered.add(node)
                if nxt is not None:
                    cut = min(cut, nxt)
            self._check_scan_coverage(ring, answered, pos, cut)
            merged: dict[bytes, list[Sibling]] = {}
            for items in pages:
                for key, sibs in items:
                    if key_token(key) <= cut:
                        merged[key] = reconcile(merged.get(key, []), sibs)
            for key in sorted(merged, key=lambda k: (key_token(k), k)):
                vis = live(merged[key], now)
                if vis:
                    out.append((key, vis))
            pos = cut
        return out, (None if pos >= MAX_TOKEN else pos.to_bytes(8, "big"))

    def _check_scan_coverage(self, ring, answered: set, pos: int, cut: int) -> None:
        """Raise ``QuorumNotReached`` if some ring segment overlapping (pos, cut] has no answering replica."""
        if len(answered) == len(ring.nodes):
            return
        cfg = self.config
        for lo, hi, _owner in ring.ranges():
            overlaps = (hi > pos and lo < cut) if lo < hi else (hi > pos or cut > lo)   # lo >= hi: the wrapping arc
            if not overlaps:
                continue
            reps = ring.preference_list_for_token(hi, cfg.replicas, cfg.dc_replicas)
            if not answered.intersection(reps):
                raise QuorumNotReached("scan", 0, 1, len(reps), f"no replica of token range ending {hi} answered")

    # ------------------------------------------------------------------ status
    async def status(self) -> dict:
        """Membership as this coordinator sees it, ring ownership, counters."""
        await self._ensure_view()
        m, now = self.membership, self.transport.now()
        ring = m.ring("read")
        return {"coord_id": self.coord_id, "actor": self.actor,
                "members": {nid: {"status": m.status(nid, now), "datacenter": st.info.datacenter,
                                  "weight": st.info.weight, "host": st.info.host}
                            for nid, st in m.members.items()},
                "ownership": ring.ownership() if len(ring) else {},
                "counters": dict(self.counters)}
