"""The public API: ``raykv.start`` / ``raykv.connect`` return a ``KV``, the facade users hold.

Contract: DESIGN.md section 2. The facade validates every key, value and
option at the boundary (``InvalidKey``, ``KeyTooLarge``, ``ValueTooLarge``,
``InvalidArgument``) before anything crosses Ray, routes each request to a
coordinator actor (the one on this machine first, failing over to the others),
coalesces concurrent single-key requests from many threads or asyncio tasks
into ``get_many``/``put_many`` batches (``raykv.actors.client.Coalescer``), and
turns sibling sets into values: one live sibling -> its value; several -> the
store's resolver (``"lww"``: latest timestamp wins, explicitly lossy; a
callable ``f(list_of_values) -> value``), whose result is written back with the
merged context, or ``ConflictError`` carrying every sibling and the merged
context when the store has no resolver.

Cost per call: one Ray round trip to a coordinator (~0.7 ms on one host) plus
its fan-out to the replicas; batched calls move ~1000 items per round trip.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Iterable, Iterator, Mapping

from raykv.cluster.config import StoreConfig
from raykv.cluster.quorum import validate_request
from raykv.errors import ConflictError, InvalidArgument, QuorumNotReached, StoreNotFound
from raykv.types import ClusterStatus, NodeStatus, Version, Versioned, status_from
from raykv.validation import check_context, check_items, check_key, check_keys, check_ttl, check_value

_MISSING = object()


# --------------------------------------------------------------------------- the facade

class KV:
    """A handle on one store; thread-safe, cheap to share; every method is a network call."""

    def __init__(self, client) -> None:
        from raykv.actors.client import Coalescer, Pending
        self._client = client
        self._Pending = Pending
        self.name = client.store
        desc = client.desc
        self.config: StoreConfig = desc["config"]
        self.data_dir: str = desc["data_dir"]
        self._resolver = _load_resolver(desc.get("resolver_blob"))
        self._coalescers: dict[tuple, Any] = {}
        self._Coalescer = Coalescer

    # ----- helpers
    def _key(self, key) -> bytes:
        return check_key(key, self.config.max_key_bytes)

    def _value(self, value) -> bytes:
        return check_value(value, self.config.max_value_bytes)

    def _pending(self, method: str, *args, **kwargs):
        return self._Pending(self._client, method, args, kwargs)

    def _get_group(self, r, consistency):
        gk = ("get", r, consistency)
        c = self._coalescers.get(gk)
        if c is None:
            c = self._coalescers.setdefault(gk, self._Coalescer(
                lambda k: self._pending("get", k, r=r, consistency=consistency),
                lambda ks: self._pending("get_many", ks, r=r, consistency=consistency),
                lambda ks, res: [(True, res.get(k, [])) for k in ks],
                lambda k: k))
        return c

    def _put_group(self, w, consistency, ttl):
        gk = ("put", w, consistency, ttl)
        c = self._coalescers.get(gk)
        if c is None:
            def split(items, res):
                out = []
                for k, _ in items:
                    if k in res:
                        out.append((True, res[k]))
                    else:
                        out.append((False, QuorumNotReached("put", 0, w or self.config.write_quorum,
                                                            self.config.replicas, f"key {k!r} missing from batch")))
                return out
            c = self._coalescers.setdefault(gk, self._Coalescer(
                lambda kv: self._pending("put", kv[0], kv[1], w=w, consistency=consistency, ttl=ttl),
                lambda items: self._pending("put_many", items, w=w, consistency=consistency, ttl=ttl),
                split, lambda kv: kv[0]))
        return c

    def _siblings(self, key: bytes, r, consistency) -> list:
        validate_request("r", r, consistency, self.config.replicas)
        return self._get_group(r, consistency).run(key)

    async def _asiblings(self, key: bytes, r, consistency) -> list:
        validate_request("r", r, consistency, self.config.replicas)
        return await self._get_group(r, consistency).arun(key)

    def _choose(self, key: bytes, sibs: list) -> tuple[bool, Any, Any]:
        """-> (found, value, write_back) where write_back is (value, context clock) or None."""
        if not sibs:
            return False, None, None
        if len(sibs) == 1 or all(s.value == sibs[0].value for s in sibs):
            return True, sibs[0].value, None
        from raykv.cluster.vclock import merged_context
        merged = merged_context(sibs)
        if self._resolver is None:
            raise ConflictError(key, [Versioned(s.value, Version(s.clock)) for s in sibs], Version(merged))
        if self._resolver == "lww":
            value = max(sibs, key=lambda s: (s.timestamp, s.dot)).value
        else:
            value = self._resolver([s.value for s in sibs])
            value = check_value(value, self.config.max_value_bytes)
        return True, value, (value, merged)

    # ----- single key
    def put(self, key, value, *, context: Version | None = None, w: int | None = None,
            consistency: str | None = None, ttl: float | None = None) -> Version:
        """Write ``value`` after W acks; returns the new Version. ``context`` supersedes the versions it covers."""
        key, value = self._key(key), self._value(value)
        validate_request("w", w, consistency, self.config.replicas)
        ttl, clock = check_ttl(ttl), check_context(context)
        if clock is None:
            return Version(self._put_group(w, consistency, ttl).run((key, value)))
        return Version(self._client.call("put", key, value, context=clock, w=w, consistency=consistency, ttl=ttl))

    def get(self, key, default=_MISSING, *, r: int | None = None, consistency: str | None = None) -> bytes:
        """The value after R replies; ``default`` (or KeyError) when absent; ``ConflictError`` on siblings."""
        key = self._key(key)
        found, value, wb = self._choose(key, self._siblings(key, r, consistency))
        if wb is not None:
            self._write_back(key, wb)
        if not found:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def _write_back(self, key: bytes, wb) -> None:
        try:
            self._client.call("put", key, wb[0], context=wb[1])
        except Exception:  # the read succeeded; the next read resolves again
            pass

    async def _awrite_back(self, key: bytes, wb) -> None:
        try:
            await self._client.acall("put", key, wb[0], context=wb[1])
        except Exception:  # the read succeeded; the next read resolves again
            pass

    def get_versions(self, key, *, r: int | None = None, consistency: str | None = None) -> list[Versioned]:
        """Every live sibling of ``key`` with its own context ([] when absent)."""
        key = self._key(key)
        return [Versioned(s.value, Version(s.clock)) for s in self._siblings(key, r, consistency)]

    def delete(self, key, context: Version | None = None, *, w: int | None = None,
               consistency: str | None = None) -> Version:
        """Write a tombstone superseding ``context`` (default: every version this client can read now)."""
        key = self._key(key)
        validate_request("w", w, consistency, self.config.replicas)
        clock = check_context(context)
        if clock is None:
            clock = self._current_context(self._siblings(key, None, None))
        return Version(self._client.call("put", key, None, context=clock, w=w, consistency=consistency))

    @staticmethod
    def _current_context(sibs):
        if not sibs:
            return None
        from raykv.cluster.vclock import merged_context
        return merged_context(sibs)

    # ----- batches
    def put_many(self, items: Mapping | Iterable, *, w: int | None = None, consistency: str | None = None,
                 ttl: float | None = None) -> dict[bytes, Version]:
        """Write many keys with one call per replica; -> {key: Version}."""
        checked = check_items(items, self.config)
        validate_request("w", w, consistency, self.config.replicas)
        ttl = check_ttl(ttl)
        if not checked:
            return {}
        return self._client.call("put_many_versions", list(checked.items()), w=w, consistency=consistency, ttl=ttl)

    def get_many(self, keys: Iterable, *, r: int | None = None, consistency: str | None = None) -> dict[bytes, bytes]:
        """Values of the keys found (absent keys are left out), one call per replica."""
        ks = check_keys(keys, self.config.max_key_bytes)
        validate_request("r", r, consistency, self.config.replicas)
        if not ks:
            return {}
        out, write_backs = self._values(ks, self._client.call("get_values", ks, r=r, consistency=consistency))
        for k, wb in write_backs:
            self._write_back(k, wb)
        return out

    def _values(self, ks: list[bytes], res: tuple[dict, dict]) -> tuple[dict[bytes, bytes], list]:
        """``get_many``'s answer from ``get_values``' ({key: value}, {key: siblings}): ({key: value} of the keys
        found, in the order asked, [(key, write-back)] for the keys the resolver merged). ``ConflictError`` on
        siblings without a resolver."""
        out, conflicts = res
        if not conflicts:
            return out, []
        write_backs = []
        for k, sibs in conflicts.items():
            found, value, wb = self._choose(k, sibs)
            if wb is not None:
                write_backs.append((k, wb))
            if found:
                out[k] = value
        return {k: out[k] for k in dict.fromkeys(ks) if k in out}, write_backs

    def items(self, page_size: int = 1000) -> Iterator[tuple[bytes, bytes]]:
        """Every live key once with its value, page by page (no order promised; concurrent writes may or may not
        show). A key with siblings is resolved by the store's resolver, or raises ``ConflictError`` without one."""
        if not isinstance(page_size, int) or page_size < 1:
            raise InvalidArgument(f"page_size must be a positive integer, got {page_size!r}")
        cursor = None
        while True:
            page, cursor = self._client.call("scan_page", cursor, page_size)
            for key, sibs in page:
                found, value, wb = self._choose(key, sibs)
                if wb is not None:
                    self._write_back(key, wb)
                if found:
                    yield key, value
            if cursor is None:
                return

    def keys(self) -> Iterator[bytes]:
        return (k for k, _ in self.items())

    __iter__ = keys

    # ----- dict sugar
    def __getitem__(self, key) -> bytes:
        return self.get(key)

    def __setitem__(self, key, value) -> None:
        """``kv[k] = v`` overwrites: it reads the current versions and writes ``v`` superseding all of them
        (``put`` without a context is a blind write, concurrent with what is stored)."""
        key, value = self._key(key), self._value(value)
        clock = self._current_context(self._siblings(key, None, None))
        if clock is None:
            self.put(key, value)
        else:
            self._client.call("put", key, value, context=clock)

    def __delitem__(self, key) -> None:
        self.delete(key)

    def __contains__(self, key) -> bool:
        return bool(self._siblings(self._key(key), None, None))

    # ----- async twins
    async def aput(self, key, value, *, context: Version | None = None, w: int | None = None,
                   consistency: str | None = None, ttl: float | None = None) -> Version:
        key, value = self._key(key), self._value(value)
        validate_request("w", w, consistency, self.config.replicas)
        ttl, clock = check_ttl(ttl), check_context(context)
        if clock is None:
            return Version(await self._put_group(w, consistency, ttl).arun((key, value)))
        return Version(await self._client.acall("put", key, value, context=clock, w=w,
                                                consistency=consistency, ttl=ttl))

    async def aget(self, key, default=_MISSING, *, r: int | None = None, consistency: str | None = None) -> bytes:
        key = self._key(key)
        found, value, wb = self._choose(key, await self._asiblings(key, r, consistency))
        if wb is not None:
            await self._awrite_back(key, wb)
        if not found:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    async def aget_versions(self, key, *, r: int | None = None, consistency: str | None = None) -> list[Versioned]:
        key = self._key(key)
        return [Versioned(s.value, Version(s.clock)) for s in await self._asiblings(key, r, consistency)]

    async def adelete(self, key, context: Version | None = None, *, w: int | None = None,
                      consistency: str | None = None) -> Version:
        key = self._key(key)
        validate_request("w", w, consistency, self.config.replicas)
        clock = check_context(context)
        if clock is None:
            clock = self._current_context(await self._asiblings(key, None, None))
        return Version(await self._client.acall("put", key, None, context=clock, w=w, consistency=consistency))

    async def aput_many(self, items, *, w=None, consistency=None, ttl=None) -> dict[bytes, Version]:
        checked = check_items(items, self.config)
        validate_request("w", w, consistency, self.config.replicas)
        ttl = check_ttl(ttl)
        if not checked:
            return {}
        return await self._client.acall("put_many_versions", list(checked.items()), w=w, consistency=consistency,
                                        ttl=ttl)

    async def aget_many(self, keys, *, r=None, consistency=None) -> dict[bytes, bytes]:
        ks = check_keys(keys, self.config.max_key_bytes)
        validate_request("r", r, consistency, self.config.replicas)
        if not ks:
            return {}
        out, write_backs = self._values(ks, await self._client.acall("get_values", ks, r=r, consistency=consistency))
        for k, wb in write_backs:
            await self._awrite_back(k, wb)
        return out

    async def acontains(self, key) -> bool:
        return bool(await self._asiblings(self._key(key), None, None))

    # ----- administration
    def status(self) -> ClusterStatus:
        """Nodes, liveness, ring ownership and per-node stats (keys, disk bytes, hints pending)."""
        raw = self._client.admin("status")
        return status_from(raw)

    def add_node(self, weight: float = 1.0, datacenter: str | None = None) -> str:
        """Start a storage node that joins the ring and receives its ranges; returns its node id."""
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise InvalidArgument(f"weight must be a positive number, got {weight!r}")
        node_id = self._client.admin("add_node", float(weight), datacenter)
        self._client.refresh()
        return node_id

    def remove_node(self, node_id: str) -> None:
        """Stream the node's ranges to their new owners, then stop it (its directory stays on disk). A node that
        is down is removed without streaming: its ranges pass to their next owners, and anti-entropy copies the
        data there from the other replicas (Cassandra's ``removenode``)."""
        if not isinstance(node_id, str):
            raise InvalidArgument(f"node_id must be a str like 'n3', got {node_id!r}")
        self._client.admin("remove_node", node_id)
        self._client.refresh()

    def shutdown(self) -> None:
        """Stop this store's actors (nodes, coordinators, manager); the data stays in ``data_dir``."""
        import ray
        if self._client.router is not None:
            self._client.router.close()
        try:
            self._client.admin("shutdown", timeout=120)
        finally:
            try:
                ray.kill(self._client.manager, no_restart=True)
            except Exception:
                pass

    def __enter__(self) -> "KV":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<raykv.KV store={self.name!r} N={self.config.replicas} R={self.config.read_quorum} " \
               f"W={self.config.write_quorum} data_dir={self.data_dir!r}>"


def _load_resolver(blob):
    if blob is None:
        return None
    import cloudpickle
    return cloudpickle.loads(blob)


# --------------------------------------------------------------------------- start / connect

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(StoreConfig)} - {"name", "replicas", "read_quorum",
                                                                        "write_quorum"}


def _ensure_ray(address: str | None) -> None:
    import ray

    from raykv.actors.names import NAMESPACE
    if ray.is_initialized():
        return
    if address is not None:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
        return
    try:
        ray.init(namespace=NAMESPACE, num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
                 log_to_driver=False)
    except ValueError:   # an existing cluster was found: its resources are fixed
        ray.init(namespace=NAMESPACE, log_to_driver=False)


def _check_routing(routing) -> None:
    if routing not in ("client", "coordinator"):
        raise InvalidArgument(f"routing must be 'client' (coordinate in this process) or 'coordinator' "
                              f"(through the store's coordinator actors), got {routing!r}")


def start(name: str = "default", nodes: int = 5, replicas: int = 3, read_quorum: int = 2, write_quorum: int = 2,
          data_dir: str | None = None, resolver=None, *, address: str | None = None,
          weights: list[float] | None = None, datacenters: list[str | None] | None = None,
          auto_join: bool = True, autoscale: bool | dict = False, ready_timeout: float = 120.0,
          routing: str = "client", **options) -> KV:
    """Create (or re-open, when ``data_dir`` already holds it) the store ``name`` and return a ``KV``.

    Starts an embedded Ray when none is running (``address`` connects to a
    cluster instead). ``options`` are further ``StoreConfig`` fields
    (``max_key_bytes``, ``max_value_bytes``, ``dc_replicas``, ``fsync``, ...).
    If the store's actors are already running, returns a handle on them.
    ``auto_join``: a Ray machine carrying ``raykv_storage`` gets a storage node by
    itself. ``autoscale``: True or a dict of ``raykv.actors.scaler.ScalePolicy``
    fields: traffic-based scaling of storage machines through Ray's autoscaler.
    ``routing``: ``"client"`` (default) coordinates reads and writes in this
    process, straight to the replicas (one Ray hop); ``"coordinator"`` sends
    them through the store's coordinator actors (two hops).
    """
    import cloudpickle
    import ray

    from raykv.actors.client import StoreClient, rget
    from raykv.actors.manager import StoreManager
    from raykv.actors.names import NAMESPACE, meta_name

    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidArgument(f"name must be a non-empty str without ':', got {name!r}")
    _check_routing(routing)
    unknown = set(options) - _CONFIG_FIELDS
    if unknown:
        raise InvalidArgument(f"unknown option(s) {sorted(unknown)}; valid: {sorted(_CONFIG_FIELDS)}")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise InvalidArgument(f"nodes must be a positive integer, got {nodes!r}")
    config = StoreConfig(name=name, replicas=replicas, read_quorum=read_quorum, write_quorum=write_quorum,
                         **options).validate()
    if nodes < replicas:
        raise InvalidArgument(f"replicas N={replicas} need at least {replicas} storage nodes, got nodes={nodes}")
    for label, lst in (("weights", weights), ("datacenters", datacenters)):
        if lst is not None and len(lst) != nodes:
            raise InvalidArgument(f"{label} must have one entry per node ({nodes}), got {len(lst)}")
    if weights is not None and any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0
                                   for w in weights):
        raise InvalidArgument(f"weights must be positive numbers, got {weights}")
    if resolver is not None and resolver != "lww" and not callable(resolver):
        raise InvalidArgument(f"resolver must be None, 'lww' or a callable(list_of_values) -> value, got {resolver!r}")
    blob = cloudpickle.dumps(resolver) if resolver is not None else None
    scale = None
    if autoscale:
        from raykv.actors.scaler import ScalePolicy
        scale = dict(autoscale) if isinstance(autoscale, dict) else {"min_machines": replicas}
        try:
            ScalePolicy(**scale)
        except TypeError as e:
            raise InvalidArgument(f"autoscale: {e}") from None
    data_dir = os.path.abspath(data_dir or os.path.join(tempfile.gettempdir(), "raykv", name))

    from raykv.actors.manager import load_record
    rec = load_record(data_dir)
    if rec is not None:
        if rec.get("name") != name:
            raise InvalidArgument(f"data_dir {data_dir} holds store {rec.get('name')!r}, not {name!r}; "
                                  f"use name={rec.get('name')!r} or another data_dir")
        old_n = rec.get("config", {}).get("replicas")
        if old_n != replicas:
            raise InvalidArgument(f"data_dir {data_dir} holds store {name!r} with replicas N={old_n}; "
                                  f"re-open it with replicas={old_n} (changing N in place is not supported)")
    _ensure_ray(address)
    try:
        ray.get_actor(meta_name(name), namespace=NAMESPACE)
        running = True
    except ValueError:
        running = False
    if not running:
        mgr = StoreManager.options(name=meta_name(name), namespace=NAMESPACE, lifetime="detached",
                                   get_if_exists=True).remote(
            name, data_dir, config, blob, nodes, weights, datacenters, auto_join, scale)
        rget(mgr.wait_ready.remote(ready_timeout))
    return KV(StoreClient(name, routing))


def connect(name: str = "default", address: str | None = "auto", *, routing: str = "client") -> KV:
    """A ``KV`` on the running store ``name`` (``StoreNotFound`` if there is none); ``routing`` as in ``start``."""
    from raykv.actors.client import StoreClient
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"name must be a non-empty str, got {name!r}")
    _check_routing(routing)
    _ensure_ray(address)
    return KV(StoreClient(name, routing))


__all__ = ["start", "connect", "KV", "Version", "Versioned", "ClusterStatus", "NodeStatus", "StoreNotFound"]
