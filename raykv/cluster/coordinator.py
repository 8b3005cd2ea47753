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
fresh. Each key's preference list comes from the read ring (joining nodes
excluded); a replica believed down is replaced by the next healthy node on
the ring with a hint naming it (sloppy quorum), and a replica whose call fails
is retried the same way once. Acks are credited to the intended replica and
counted by ``quorum.tally`` (W, or local_quorum / each_quorum by datacenter).
Nodes that will own the key after a pending join/leave also receive the write,
best effort, uncounted. ``put_many`` sends ONE ``put_encoded`` per node (sibling
sets travel as ``vclock.encode_siblings`` bytes: C-speed pickling, no decode on
the node for a key it does not hold yet).

Reads ask all N replicas (one ``get_encoded`` per node for ``get_many``), return
after R replies with the ``vclock.sync`` of what came back, then in the
background wait for the rest and push the merge to stale replicas
(``quorum.read_repair_plan``). Cost per request: one message per replica node
and O(siblings^2) reconciliation per key.
"""

from __future__ import annotations

import asyncio
import random
from typing import Callable

from .config import StoreConfig
from .membership import Membership
from .quorum import Quorum, Tally, read_quorum, read_repair_plan, tally, write_quorum
from .ring import TOKEN_SPACE, key_token
from .transport import Transport
from .vclock import (DotMinter, Sibling, VClock, decode_siblings, encode_siblings, live,
                                  reconcile)
from ..errors import NodeUnavailable, QuorumNotReached, RayKVError

MAX_TOKEN = TOKEN_SPACE - 1
COUNTERS = ("ops", "gets", "puts", "keys_read", "keys_written", "read_repairs", "sloppy_writes", "write_retries",
            "quorum_failures", "node_failures", "refreshes", "scan_pages")


class _Fanout:
    """Outstanding replica calls of one request; callbacks update the decision state as replies land.

    ``undecided`` is the number of keys whose quorum is still "wait" (the callbacks decrement it), so
    checking whether the request is decided is O(1) per reply, not O(keys)."""

    def __init__(self, undecided: int) -> None:
        self.undecided = undecided
        self.pending: dict[int, asyncio.Future] = {}
        self.decided = False
        self._waiter: asyncio.Future | None = None
        self._seq = 0

    def launch(self, call, on_done: Callable[[object, BaseException | None], None]) -> None:
        """Track ``call`` (a future from ``Transport.call_future``, or a coroutine)."""
        self._seq += 1
        seq = self._seq
        fut = asyncio.ensure_future(call)
        self.pending[seq] = fut

        def done(f: asyncio.Future) -> None:
            self.pending.pop(seq, None)
            if f.cancelled():
                on_done(None, NodeUnavailable("cancelled"))
            else:
                exc = f.exception()
                on_done(None if exc else f.result(), exc)
            self.check()
        fut.add_done_callback(done)

    def check(self) -> None:
        if not self.pending or self.undecided <= 0:
            self.decided = True
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until decided (or every call returned), at most ``timeout`` seconds; one future + one timer."""
        self.check()
        if self.decided:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, lambda: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        finally:
            timer.cancel()

    async def wait_all(self, timeout: float) -> None:
        if self.pending:
            await asyncio.wait([f for _, f in sorted(self.pending.items())], timeout=timeout)


class _Liveness(dict):
    """``is_up`` of each node, computed at most once per request (phi is O(1) but not free per key)."""

    def __init__(self, membership: Membership, now: float) -> None:
        super().__init__()
        self.m, self.now = membership, now

    def __missing__(self, node_id: str) -> bool:
        up = self[node_id] = self.m.is_up(node_id, self.now)
        return up


def _merge_encoded(blobs) -> list[Sibling]:
    """``vclock.reconcile`` of encoded sibling sets (None/b"" = absent); identical bytes are decoded once."""
    distinct = {b for b in blobs if b}
    if not distinct:
        return []
    if len(distinct) == 1:
        return decode_siblings(distinct.pop())
    return reconcile(*(decode_siblings(b) for b in distinct))


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

    # ------------------------------------------------------------------ membership
    async def refresh(self) -> None:
        """Pull the membership view from a storage node (gossip): a random up member, else the seeds."""
        m = self.membership
        now = self.transport.now()
        known = [nid for nid in m.node_ids() if m.is_up(nid, now)]
        self.rng.shuffle(known)
        candidates = known + [s for s in self.seeds if s not in known]
        for nid in candidates[:4]:
            try:
                view = await self.transport.call(nid, "gossip", m.view(), timeout=self.config.request_timeout)
            except NodeUnavailable:
                m.suspect(nid, self.transport.now())
                continue
            m.merge(view, self.transport.now())
            self._last_refresh = self.transport.now()
            self.counters["refreshes"] += 1
            return

    async def _ensure_view(self) -> None:
        if not self.membership.members:
            await self.refresh()
        elif self.transport.now() - self._last_refresh >= self.config.gossip_interval and not self._refreshing:
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

    async def put(self, key: bytes, value: bytes | None, *, context: VClock | None = None,
                  w: int | None = None, consistency: str | None = None, ttl: float | None = None,
                  timeout: float | None = None) -> VClock:
        """Write (value None = delete) after W acks; returns the new version's clock (the new context)."""
        q = write_quorum(self.config, w, consistency, self.config.local_datacenter)
        await self._ensure_view()
        sib = self._mint(key, value, context, ttl)
        await self._write("put", [(key, sib)], q, timeout)
        return sib.clock

    async def put_many(self, items: list[tuple[bytes, bytes | None]], *, w: int | None = None,
                       consistency: str | None = None, ttl: float | None = None) -> dict[bytes, VClock]:
        """Blind writes of many keys (each a new sibling), one ``put_encoded`` per replica node."""
        q = write_quorum(self.config, w, consistency, self.config.local_datacenter)
        await self._ensure_view()
        entries = [(key, self._mint(key, value, None, ttl)) for key, value in items]
        await self._write("put_many", entries, q, None)
        return {key: sib.clock for key, sib in entries}

    def _route(self, key: bytes, replica: str, used: set, up: "_Liveness",
               direct: bool = True) -> tuple[str | None, str | None]:
        """(target, hint): the replica itself when believed up (and ``direct``), else the next healthy
        fallback not in ``used`` (the preference list and fallbacks already tried) with a hint naming it."""
        if direct and up[replica]:
            return replica, None
        ring = self.membership.ring("read")
        for f in ring.fallbacks(key, self.config.replicas, used, self.config.dc_replicas):
            if up[f]:
                used.add(f)
                return f, replica
        return None, None

    async def _write(self, op: str, entries: list[tuple[bytes, Sibling]], q: Quorum, timeout: float | None) -> None:
        """Fan ``entries`` out, one ``put_encoded`` per node; each key's sibling is encoded once
        (``vclock.encode_siblings``) and the same bytes go to all of its replicas."""
        cfg, m = self.config, self.membership
        timeout = timeout or cfg.request_timeout
        up = _Liveness(m, self.transport.now())
        read_ring, future_ring = m.ring("read"), m.ring("future")
        pending_owners = future_ring is not read_ring
        dc_of = m.datacenter_of()
        n, dcr = cfg.replicas, cfg.dc_replicas
        tallies: list[Tally] = []
        used: list[set | None] = []
        retries: dict[tuple[int, str], int] = {}
        blobs = [encode_siblings([sib]) for _key, sib in entries]
        plain = [(key, blob) for (key, _sib), blob in zip(entries, blobs)]     # shared by every replica's payload
        self.counters["ops"] += 1
        self.counters["puts"] += 1
        self.counters["keys_written"] += len(entries)
        fan = _Fanout(len(entries))

        def settle(t: Tally, was_waiting: bool) -> None:
            if was_waiting and t.decision() != "wait":
                fan.undecided -= 1

        def send(groups: dict[str, list]) -> None:
            for node, slots in groups.items():
                payload = [plain[i] if hint is None else (entries[i][0], blobs[i], hint) for i, _r, hint in slots]
                fan.launch(self.transport.call_future(node, "put_encoded", payload, timeout=timeout),
                           lambda res, exc, node=node, slots=slots: on_reply(node, slots, res, exc))

        def on_reply(node: str, slots: list, res, exc) -> None:
            if exc is not None:
                self._failed(node)
                up[node] = False
            regroup: dict[str, list] = {}
            for j, (i, r, hint) in enumerate(slots):
                if r is None:
                    continue                       # best-effort copy for a pending owner
                t = tallies[i]
                waiting = t.decision() == "wait"
                if exc is None and res[j]:
                    if hint is not None and q.mode != "count" and dc_of.get(node) != dc_of.get(r):
                        t.fail(r)                  # a hint held in another datacenter: stored, but it does not
                    else:                          # count towards r's datacenter (Cassandra's rule for *_QUORUM)
                        t.ack(r)
                    settle(t, waiting)
                    continue
                tries = retries.get((i, r), 0)
                target = None
                if tries < 2 and waiting:
                    retries[(i, r)] = tries + 1
                    if used[i] is None:
                        used[i] = set(t.replicas)
                    target, hint2 = self._route(entries[i][0], r, used[i], up, direct=False)
                if target is None:
                    t.fail(r)
                    settle(t, waiting)
                else:
                    self.counters["write_retries"] += 1
                    self.counters["sloppy_writes"] += hint2 is not None
                    regroup.setdefault(target, []).append((i, r, hint2))
            send(regroup)

        groups: dict[str, list] = {}
        for i, (key, _sib) in enumerate(entries):
            pref = read_ring.preference_list(key, n, dcr)
            t = tally(q, pref, dc_of)
            tallies.append(t)
            used.append(None)
            for r in pref:
                if up[r]:
                    target, hint = r, None
                else:
                    if used[i] is None:
                        used[i] = set(pref)
                    target, hint = self._route(key, r, used[i], up, direct=False)
                if target is None:
                    t.fail(r)
                    continue
                self.counters["sloppy_writes"] += hint is not None
                groups.setdefault(target, []).append((i, r, hint))
            if t.decision() != "wait":
                fan.undecided -= 1
            if pending_owners:
                for extra in future_ring.preference_list(key, n, dcr):
                    if extra not in pref:
                        groups.setdefault(extra, []).append((i, None, None))
        send(groups)
        await fan.wait(2 * timeout)
        self._raise_failed(op, tallies)

    def _raise_failed(self, op: str, tallies: list[Tally]) -> None:
        bad = [t for t in tallies if t.decision() != "ok"]
        if bad:
            self.counters["quorum_failures"] += 1
            t = bad[0]
            detail = t.missing() + (f"; {len(bad)} of {len(tallies)} keys failed" if len(tallies) > 1 else "")
            raise QuorumNotReached(op, t.acked, t.quorum.required, len(t.replicas), detail)

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

    async def get_raw(self, keys: list[bytes], *, r: int | None = None, consistency: str | None = None,
                      timeout: float | None = None) -> dict[bytes, list[Sibling]]:
        """Reconciled siblings per key *including* tombstones and expired ones (tests, tools)."""
        return await self._read("get_raw", list(dict.fromkeys(keys)), r, consistency, timeout, raw=True)

    async def _read(self, op: str, keys: list[bytes], r, consistency, timeout, raw: bool = False):
        """Ask every replica with one ``get_encoded`` per node; replies stay encoded bytes until the quorum is
        met, and replicas that answered the same bytes are decoded once (the common case: no divergence)."""
        cfg, m = self.config, self.membership
        q = read_quorum(cfg, r, consistency, cfg.local_datacenter)
        await self._ensure_view()
        timeout = timeout or cfg.request_timeout
        ring = m.ring("read")
        dc_of = m.datacenter_of()
        n, dcr = cfg.replicas, cfg.dc_replicas
        self.counters["ops"] += 1
        self.counters["gets"] += 1
        self.counters["keys_read"] += len(keys)
        tallies: list[Tally] = []
        replies: list[dict[str, bytes | None]] = [{} for _ in keys]
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            pref = ring.preference_list(key, n, dcr)
            tallies.append(tally(q, pref, dc_of))
            for node in pref:
                groups.setdefault(node, []).append(i)
        fan = _Fanout(sum(t.decision() == "wait" for t in tallies))

        attempts: dict[str, int] = {}

        def ask(node: str, idx: list[int]) -> None:
            attempts[node] = attempts.get(node, 0) + 1
            fan.launch(self.transport.call_future(node, "get_encoded", [keys[i] for i in idx], timeout=timeout),
                       lambda res, exc: on_reply(node, idx, res, exc))

        def on_reply(node: str, idx: list[int], res, exc) -> None:
            if exc is not None:
                self._failed(node)
                if attempts[node] < 3 and any(tallies[i].decision() == "wait" for i in idx):
                    ask(node, idx)            # reads are idempotent: retried on a lost message
                    return
            for j, i in enumerate(idx):
                t = tallies[i]
                waiting = t.decision() == "wait"
                if exc is None:
                    replies[i][node] = res[j]
                    t.ack(node)
                else:
                    t.fail(node)
                if waiting and t.decision() != "wait":
                    fan.undecided -= 1

        for node, idx in groups.items():
            ask(node, idx)
        await fan.wait(3 * timeout)
        snapshot = [dict(rep) for rep in replies]
        self._raise_failed(op, tallies)
        self.transport.spawn(self._read_repair(keys, replies, fan, timeout))
        now = self.transport.now()
        out = {}
        for key, rep in zip(keys, snapshot):
            merged = _merge_encoded(rep.values())
            out[key] = merged if raw else live(merged, now)
        return out

    async def _read_repair(self, keys: list[bytes], replies: list[dict], fan: _Fanout, timeout: float) -> int:
        """After every replica answered (or timed out), push the merge to the stale ones, one call per node.
        Keys whose replicas all answered identical bytes are in sync and cost one comparison."""
        await fan.wait_all(timeout)
        pushes: dict[str, list] = {}
        for key, rep in zip(keys, replies):
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
        repaired = 0
        for node, items in pushes.items():
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
