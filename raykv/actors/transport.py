"""RayTransport: ``raykv.cluster.transport.Transport`` over named Ray actors.

Node ``x`` is the detached actor ``raykv:<store>:node:x`` in namespace ``raykv``;
a call is ``await asyncio.wait_for(handle.call.remote(method, *args), timeout)``,
so a caller never blocks a thread and never ``ray.get``s in a loop. Handles are
cached; a failed lookup is remembered for ``NEGATIVE_TTL`` seconds so calls to a
removed node fail fast instead of asking the GCS every time.

Failure mapping: actor died / unavailable / lookup failed / timeout ->
``NodeUnavailable`` (the call may or may not have run; the logic makes writes
idempotent by their dot); a ``RayKVError`` raised by the remote method is
re-raised as is. In-flight calls are bounded (``max_pending``): beyond it a call
fails with ``Overloaded`` at once rather than queueing without bound.

Cost: one Ray actor call (~0.7 ms round trip on one host) per ``call``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from raykv.actors.names import NAMESPACE, node_name
from raykv.cluster.transport import Transport
from raykv.errors import NodeUnavailable, Overloaded, RayKVError

try:  # Ray >= 2.9
    from ray.exceptions import ActorUnavailableError
except ImportError:  # pragma: no cover
    ActorUnavailableError = RayActorError

NEGATIVE_TTL = 1.0


class RayTransport(Transport):
    """Calls ``rpc_<method>`` on storage node actors of one store; bounded, cached, failure-mapped."""

    def __init__(self, store: str, *, max_pending: int = 20_000) -> None:
        self.store = store
        self.max_pending = max_pending
        self.pending = 0
        self._handles: dict[str, Any] = {}
        self._missing: dict[str, float] = {}
        self.counters = {"calls": 0, "unavailable": 0, "timeouts": 0, "overloaded": 0}

    def handle(self, node_id: str):
        """The cached actor handle of ``node_id``; ``NodeUnavailable`` when no such actor exists."""
        h = self._handles.get(node_id)
        if h is not None:
            return h
        missing_since = self._missing.get(node_id)
        if missing_since is not None and time.monotonic() - missing_since < NEGATIVE_TTL:
            raise NodeUnavailable(f"storage node {node_id!r} has no actor in store {self.store!r}")
        try:
            h = ray.get_actor(node_name(self.store, node_id), namespace=NAMESPACE)
        except ValueError:
            self._missing[node_id] = time.monotonic()
            raise NodeUnavailable(f"storage node {node_id!r} has no actor in store {self.store!r} "
                                  f"(removed, or not started yet)") from None
        self._missing.pop(node_id, None)
        self._handles[node_id] = h
        return h

    def forget(self, node_id: str) -> None:
        self._handles.pop(node_id, None)

    async def call(self, node_id: str, method: str, *args: Any, timeout: float) -> Any:
        if self.pending >= self.max_pending:
            self.counters["overloaded"] += 1
            raise Overloaded(f"{self.pending} calls already in flight from this process "
                             f"(max_pending={self.max_pending}); retry with backoff")
        self.pending += 1
        self.counters["calls"] += 1
        try:
            handle = self.handle(node_id)
            ref = handle.call.remote(method, *args)
            return await asyncio.wait_for(ref, timeout)
        except asyncio.TimeoutError:
            self.counters["timeouts"] += 1
            raise NodeUnavailable(f"storage node {node_id!r} did not answer {method!r} within {timeout}s") from None
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, RayKVError):
                raise cause from None
            raise
        except (RayActorError, ActorUnavailableError, GetTimeoutError) as e:
            self.counters["unavailable"] += 1
            if type(e).__name__ == "ActorDiedError" and "restart" not in str(e).lower():
                self.forget(node_id)
            raise NodeUnavailable(f"storage node {node_id!r} is unavailable for {method!r}: "
                                  f"{type(e).__name__}") from None
        finally:
            self.pending -= 1

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
