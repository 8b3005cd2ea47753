"""ClientRouter: the coordinator logic run in the driver itself (client-driven coordination, Dynamo section 6.4).

A ``get``/``put``/``get_many``/``put_many`` from the driver goes straight to
the key's replicas, with no coordinator actor in between: one Ray hop instead
of two, and no second pickling of the batch. The router holds a plain
``raykv.cluster.coordinator.Coordinator`` for its state (membership view, dot
minter, counters) and its planning (``plan_put``, ``plan_read``: the very
rounds of ``raykv.cluster.rounds`` the coordinator actors and the simulator
run), and drives each round synchronously in the caller's thread
(``round_driver.RoundDriver``: one ``.remote()`` per replica node, then
``ray.wait`` until the round is decided: ``ray.wait`` is the quorum primitive).

One daemon thread does the background work: it refreshes the membership view
(a ``gossip`` call to a random up node every ``gossip_interval``, so the phi
detector keeps seeing heartbeats while the driver is idle) and, every
``LATE_EVERY`` seconds, sends the copies single-key puts made past their W
acks (one call per node for all of them: ``_flush_behind``) and runs read
repair: one non-blocking ``ray.wait`` over the replies that came after their
read's quorum, then the merge pushed to stale replicas. Requests hand both over
with a deque append, so the daemon is not woken per request. The router's actor
id (the ``actor`` of the dots it mints) is fresh per process, like a
coordinator's.

Threads: the ``Coordinator`` and each round are touched only under ``mu``;
``ray.wait`` runs outside it, so concurrent callers wait in parallel. Async
callers run the same path in a worker thread (``asyncio.to_thread``).

Cost: a single-key get is one Ray call to each of R replicas, a single-key put
one to each of W replicas (plus a share of the daemon's batched call for the
other N - W copies), issued from the driver; a batch of keys is one call per
replica node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import random
import threading
import time
import uuid
from itertools import repeat

import ray

from raykv.actors.metrics import Metrics
from raykv.actors.round_driver import RoundDriver
from raykv.actors.transport import RayTransport, pack_call, unpack_result
from raykv.cluster.rounds import bulk_write_rounds, encoded_size, payload_cuts, raise_failed
from raykv.cluster.vclock import VClock
from raykv.errors import NodeUnavailable
from raykv.types import Version

log = logging.getLogger(__name__)

MAX_VIEW_AGE = 5.0          # gossip intervals: an older view is refreshed before planning, not after
PIPELINE = 500              # keys at least per bulk write round: the driver plans round k+1 while the nodes
                            # write round k
READ_ROUND = 1000           # keys per bulk read round: asking R of N replicas, a node's share of 1,000 keys
                            # (~400) answers in one message; 500 made twice the calls (docs/benchmarks.md)
MAX_ROUND = 4096            # keys per bulk write round at most
FIRST_VIEW = 8              # nodes asked for their view when a process connects
REFRESH_ASKS = 2            # nodes asked at once for their view on a refresh (the first answer is taken)
LATE_EVERY = 0.05           # seconds between the daemon's passes over late replies (read repair) and the
                            # copies puts made past W
BULK = 64                   # keys from which a request pauses the cyclic GC


_frozen = False


def freeze_heap() -> None:
    """Once per process: move what exists now (Ray, imported modules, ...) to the GC's permanent generation, so
    the collections a bulk request triggers scan only newer objects (measured: driver CPU per 1,000-key
    ``put_many`` 19 -> 12 ms). The cost: a reference cycle among those older objects is never collected.
    ``RAYKV_GC_FREEZE=0`` turns it off."""
    global _frozen
    if not _frozen and os.environ.get("RAYKV_GC_FREEZE", "1") != "0":
        _frozen = True
        gc.freeze()


@contextlib.contextmanager
def gc_paused(keys: int):
    """Pause the cyclic GC for one bulk request. Planning and decoding 1,000 keys allocates ~10 objects per key
    and makes no reference cycles, yet triggered enough collections of the driver's whole heap to cost a third
    of ``put_many``'s driver CPU (measured, 29 -> 19 ms per 1,000 keys). No-op when the caller disabled the GC."""
    if keys < BULK or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ClientRouter:
    """Coordinator rounds driven from the driver with ``ray.wait``; thread-safe."""

    def __init__(self, store: str, config, seeds: list[str]) -> None:
        from raykv.cluster.coordinator import Coordinator

        self.store, self.config = store, config
        self.transport = RayTransport(store)
        self.coord = Coordinator(f"d{uuid.uuid4().hex[:12]}", self.transport, config, seeds=list(seeds),
                                 rng=random.Random())
        self.mu = threading.Lock()
        self.driver = RoundDriver(self.transport, self.mu)
        self._stop = threading.Event()
        self.metrics = Metrics(store, "client", self.coord.actor)   # like a coordinator actor's, from this process
        self._late: collections.deque = collections.deque()     # reads still waiting for their last replies
        self._pushes: dict = {}                                  # read-repair calls in flight
        self._behind: collections.deque = collections.deque()    # (node, items): puts' copies past W, to send
        self._thread: threading.Thread | None = None
        self._closed = False
        freeze_heap()
        self._first_view(seeds)
        if not self.coord.membership.members:
            raise NodeUnavailable(f"no storage node of store {store!r} answered a membership request "
                                  f"(tried {self.coord.gossip_targets() or seeds})")

    # ------------------------------------------------------------------ membership
    def refresh(self) -> bool:
        """Pull the membership view from the gossip targets, ``REFRESH_ASKS`` at a time, the first answer
        winning (blocking): a node that is stopped but not dead (SIGSTOP, a partition) is alive to Ray and
        would hold a lone ask for ``request_timeout``, and with it the request that needed a fresh view."""
        with self.mu:
            targets, view = self.coord.gossip_targets(), self.coord.membership.view()
        call = pack_call("gossip", (view,))
        for lo in range(0, len(targets), REFRESH_ASKS):
            asks = {}
            for nid in targets[lo:lo + REFRESH_ASKS]:
                try:
                    asks[self.transport.handle(nid).call_packed.remote(call)] = nid
                except NodeUnavailable:
                    with self.mu:
                        self.coord.membership.suspect(nid, self.transport.now())
            pending, end = list(asks), time.monotonic() + self.config.request_timeout
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, end - time.monotonic()))
                if not ready:
                    break
                try:
                    got = unpack_result(ray.get(ready[0]))
                except Exception:   # noqa: BLE001 - any failure: wait for the other ask
                    with self.mu:
                        self.coord.membership.suspect(asks[ready[0]], self.transport.now())
                    continue
                with self.mu:
                    self.coord.absorb_view(got)
                return True
            with self.mu:                       # no answer within request_timeout
                for ref in pending:
                    self.coord.membership.suspect(asks[ref], self.transport.now())
        return False

    def _first_view(self, seeds: list[str]) -> None:
        """The view at connect time, merged from up to ``FIRST_VIEW`` nodes at once rather than one: a single
        node may not have heard yet that a peer finished joining, and a write planned on that view would skip
        the peer without a hint (its copy then waits for anti-entropy)."""
        calls = {}
        for nid in list(seeds)[:FIRST_VIEW]:
            try:
                calls[self.transport.handle(nid).call_packed.remote(pack_call("gossip", ([],)))] = nid
            except NodeUnavailable:
                continue
        if calls:
            ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=self.config.request_timeout)
            for ref in ready:
                try:
                    view = unpack_result(ray.get(ref))
                except Exception:   # noqa: BLE001 - that node is down; the others answered
                    continue
                with self.mu:
                    self.coord.absorb_view(view)
        if not self.coord.membership.members:
            self.refresh()

    def _ensure_view(self) -> None:
        self._start_thread()
        if self.coord.view_age() > MAX_VIEW_AGE * self.config.gossip_interval:
            self.refresh()

    def add_node(self, node_id: str) -> None:
        with self.mu:
            if node_id not in self.coord.seeds:
                self.coord.seeds.append(node_id)
        self.refresh()

    # ------------------------------------------------------------------ requests
    def put(self, key: bytes, value, *, context=None, w=None, consistency=None, ttl=None, timeout=None):
        """Write after W acks; returns the new version's clock (see ``Coordinator.put``)."""
        t0 = time.perf_counter()
        try:
            return self._put(key, value, context, w, consistency, ttl, timeout)
        finally:
            self.metrics.observe("put", time.perf_counter() - t0)

    def _put(self, key, value, context, w, consistency, ttl, timeout):
        self._ensure_view()
        timeout = timeout or self.config.request_timeout
        with self.mu:
            rnd, clock = self.coord.plan_put(key, value, context=context, w=w, consistency=consistency, ttl=ttl)
            sends = rnd.start()
            delay = None if rnd.fanout is None else self.coord.speculative_delay("put")
        out: dict = {}
        self.driver.submit(rnd, sends, out, timeout)
        t0 = time.monotonic()
        self.driver.drive([rnd], out, timeout, 2, "decided", speculate=delay)
        if rnd.fanout is not None:     # W replicas were written first: the others' copies go out behind
            with self.mu:
                self.coord.latency["put"].add(time.monotonic() - t0)
                rest = rnd.rest()
            self._behind.extend((node, payload) for node, _method, payload, _tag in rest)
        self._finish("put", [rnd])
        return clock

    def put_many(self, items: list, *, w=None, consistency=None, ttl=None) -> dict:
        """Blind writes of many keys, one ``put_blind`` per replica node per round (``write_rounds``);
        -> {key: clock}. Rounds are planned while the nodes write the previous ones."""
        return self._put_many_timed(items, w, consistency, ttl, False)

    def put_many_versions(self, items: list, *, w=None, consistency=None, ttl=None) -> dict:
        """``put_many`` -> {key: ``raykv.Version``}, each built from its dot on first use (what ``KV.put_many``
        returns)."""
        return self._put_many_timed(items, w, consistency, ttl, True)

    def _put_many_timed(self, items, w, consistency, ttl, versions: bool) -> dict:
        t0 = time.perf_counter()
        try:
            return self._put_many(items, w, consistency, ttl, versions)
        finally:
            self.metrics.observe("put_many", time.perf_counter() - t0)

    def _put_many(self, items, w, consistency, ttl, versions: bool):
        self._ensure_view()
        timeout = self.config.request_timeout
        with gc_paused(len(items)):
            rounds, minted, out = [], [], {}
            for lo, hi in self.write_rounds(items):
                with self.mu:
                    rnd, dots, now = self.coord.plan_blind(items[lo:hi], w=w, consistency=consistency, ttl=ttl)
                    sends = rnd.start()
                rounds.append(rnd)
                minted.append((rnd.keys, dots, now))
                self.driver.submit(rnd, sends, out, timeout)
            self._count_once(rounds, "puts")
            # the new versions are built while the nodes write, not before the first call goes out
            result = {}
            for keys, dots, now in minted:
                if versions:
                    result.update(zip(keys, map(Version._of_blind, dots, repeat(now))))
                else:
                    raw = VClock._raw
                    result.update({key: raw({a: n}, {a: now}) for key, (a, n) in zip(keys, dots)})
            self.driver.drive(rounds, out, timeout, 2, "decided")
            self._finish("put_many", rounds)
            del rounds
            return result

    def write_rounds(self, items: list) -> list[tuple[int, int]]:
        """``rounds.bulk_write_rounds`` for this view and transport."""
        with self.mu:
            nodes = len(self.coord.membership.ring("read"))
        return bulk_write_rounds(items, nodes, self.config.replicas, self.transport.max_payload, PIPELINE, MAX_ROUND)

    def get(self, key: bytes, *, r=None, consistency=None, timeout=None) -> list:
        """Live siblings of ``key`` after R replies; read repair in the background."""
        t0 = time.perf_counter()
        try:
            return self._read("get", [key], r, consistency, timeout)[key]
        finally:
            self.metrics.observe("get", time.perf_counter() - t0)

    def get_many(self, keys: list, *, r=None, consistency=None) -> dict:
        """{key: live siblings} of the keys that have some (the coalescer's batched single-key gets)."""
        got = self._bulk_read(keys, r, consistency, False)
        return {k: v for k, v in got.items() if v}

    def get_values(self, keys: list, *, r=None, consistency=None) -> tuple[dict, dict]:
        """``get_many`` as ({key: value} of keys with one live version, {key: live siblings} of keys with several)
        (``ReadRound.values``): what ``KV.get_many`` uses, no ``Sibling`` built for the usual key."""
        return self._bulk_read(keys, r, consistency, True)

    def _bulk_read(self, keys: list, r, consistency, values: bool):
        t0 = time.perf_counter()
        try:
            with gc_paused(len(keys)):
                return self._read("get_many", list(dict.fromkeys(keys)), r, consistency, None, values=values)
        finally:
            self.metrics.observe("get_many", time.perf_counter() - t0)

    def _read(self, op: str, keys: list, r, consistency, timeout, values: bool = False):
        """Read rounds of ``READ_ROUND`` keys, all in flight together; read repair left to the daemon.
        -> {key: siblings}, or with ``values`` the pair of ``ReadRound.values``."""
        self._ensure_view()
        timeout = timeout or self.config.request_timeout
        rounds, out = [], {}
        for lo in range(0, len(keys), READ_ROUND):
            with self.mu:
                rnd = self.coord.plan_read(op, keys[lo:lo + READ_ROUND], r=r, consistency=consistency, values=values)
                sends = rnd.start()
            rounds.append(rnd)
            self.driver.submit(rnd, sends, out, timeout)
        self._count_once(rounds, "gets")
        spares = rounds[0].fanout is not None
        delay = None
        if spares:                    # rounds that asked R replicas per key have spares to speculate with
            with self.mu:
                delay = self.coord.speculative_delay(op)
        t0 = time.monotonic()
        self.driver.drive(rounds, out, timeout, 3, "decided", speculate=delay)
        if spares:    # rounds are decided one after another: each took about its share of the wait
            with self.mu:
                self.coord.latency[op].add((time.monotonic() - t0) / len(rounds))
        self._finish(op, rounds)
        now = self.transport.now()
        result = ({}, {}) if values else {}
        with self.mu:
            for rnd in rounds:
                if values:
                    vals, conflicts = rnd.values(now)
                    result[0].update(vals)
                    result[1].update(conflicts)
                else:
                    result.update(rnd.result(now))
        for rnd in rounds:
            late = {ref: entry for ref, entry in out.items() if entry[0] is rnd}
            if late:
                self._late.append((rnd, late, timeout))      # deque: no lock, no wake-up of the daemon per read
            elif len(rnd.keys) > 1 or rnd.answered > 1:
                if rnd.repair_plan():      # every replica answered already: usually identical, nothing to do
                    self._late.append((rnd, late, timeout))
        return result

    def _count_once(self, rounds: list, kind: str) -> None:
        """One request split in several rounds counts as one operation."""
        if len(rounds) > 1:
            with self.mu:
                self.coord.counters["ops"] -= len(rounds) - 1
                self.coord.counters[kind] -= len(rounds) - 1

    def _finish(self, op: str, rounds: list) -> None:
        """``QuorumNotReached`` over every key of the request if some key's quorum was not met."""
        with self.mu:
            if len(rounds) == 1:
                rounds[0].finish()
            elif any(rnd.tallies is not None and rnd.tallies.not_ok() for rnd in rounds):
                self.coord.counters["quorum_failures"] += 1
                raise_failed(op, rounds)

    def _drain_late(self) -> None:
        """Daemon thread, every ``LATE_EVERY`` s: feed the replies that came after their read's quorum (one
        non-blocking ``ray.wait`` for all of them), and once a read has every reply (or its calls timed out),
        push the merge to its stale replicas (read repair, best effort; results checked on later passes)."""
        batch = []
        while self._late:
            batch.append(self._late.popleft())
        refs = {ref: item for item in batch for ref in item[1]}
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for ref in ready:
                _rnd, out, timeout = refs[ref]
                self.driver.feed(out, ref, timeout)
        now = time.monotonic()
        for item in batch:
            rnd, out, timeout = item
            self.driver.expire(out, now, timeout)
            if out:
                self._late.append(item)
                continue
            with self.mu:
                pushes = rnd.repair_plan()
            for node, items in pushes.items():
                try:
                    ref = self.transport.handle(node).call_packed.remote(pack_call("put_encoded", (items,)))
                except NodeUnavailable:
                    continue
                self._pushes[ref] = (node, len(items), now + timeout)
        self._check_pushes(now)

    def _flush_behind(self) -> None:
        """Daemon thread, every ``LATE_EVERY`` s (and at ``close``): the copies single-key puts made past their W
        acks (``WriteRound.rest``), one ``put_encoded`` per node for all of them (``rounds.payload_cuts``), not
        waited for. Why not one call per put, at once: on a 2-core host that call is paid in the put's latency
        (puts back to back: 2.2-2.5x a raw round trip with the copies behind, 2.3-3.7x with each sent after its
        put's acks, docs/benchmarks.md "Session 9"), and one call carries the copies of many puts. Cost: a
        replica past W gets its copy up to ``LATE_EVERY`` s later; a copy whose node is down or that this
        process never sends (it exits first) is repaired by anti-entropy, as a lost copy past W always was."""
        by: dict[str, list] = {}
        while self._behind:
            node, items = self._behind.popleft()
            by.setdefault(node, []).extend(items)
        for node, items in by.items():
            for lo, hi in payload_cuts(list(map(encoded_size, items)), self.transport.max_payload):
                try:
                    self.transport.handle(node).call_packed.remote(pack_call("put_encoded", (items[lo:hi],)))
                except NodeUnavailable:
                    with self.mu:
                        self.coord._failed(node)
                    break

    def _check_pushes(self, now: float) -> None:
        if not self._pushes:
            return
        ready, _ = ray.wait(list(self._pushes), num_returns=len(self._pushes), timeout=0)
        repaired = 0
        for ref in ready:
            node, n, _ = self._pushes.pop(ref)
            try:
                ray.get(ref)
                repaired += n
            except Exception:   # noqa: BLE001 - the node is down: anti-entropy repairs it later
                with self.mu:
                    self.coord._failed(node)
        for ref in [ref for ref, (_n, _k, deadline) in self._pushes.items() if deadline <= now]:
            del self._pushes[ref]
        with self.mu:
            self.coord.counters["read_repairs"] += repaired

    # ------------------------------------------------------------------ background thread
    def _start_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self.mu:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._background, name=f"raykv-router-{self.store}",
                                                    daemon=True)
                    self._thread.start()

    def _background(self) -> None:
        interval = self.config.gossip_interval
        while not self._closed:
            self._stop.wait(LATE_EVERY)
            if self._closed or not ray.is_initialized():
                return
            try:
                self._flush_behind()
                self._drain_late()
                if self.coord.view_age() >= interval:
                    self.refresh()
                self._export()
            except Exception:   # noqa: BLE001 - background work must not kill the thread
                log.debug("raykv router background job failed", exc_info=True)

    def _export(self, force: bool = False) -> None:
        """The logic's counters as ``ray.util.metrics`` deltas, every ``metrics.EXPORT_EVERY`` s (daemon thread)."""
        if self.metrics.due(force):
            with self.mu:
                counters = dict(self.coord.counters)
            self.metrics.export(counters)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        try:
            self._flush_behind()
        except Exception:   # noqa: BLE001 - best effort: anti-entropy repairs what is not sent
            pass
        try:
            self._export(force=True)
        except Exception:   # noqa: BLE001 - metrics must never break shutdown
            pass

    # ------------------------------------------------------------------ async
    async def acall(self, method: str, *args, **kwargs):
        """The same call from an event loop: run in a worker thread, so the loop is never blocked."""
        return await asyncio.to_thread(getattr(self, method), *args, **kwargs)

    def status(self) -> dict:
        with self.mu:
            return {"actor": self.coord.actor, "view_age": self.coord.view_age(),
                    "counters": dict(self.coord.counters), "members": sorted(self.coord.membership.members)}
