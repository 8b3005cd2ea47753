"""The one seam between distributed logic and the world: call a method on a node.

``raykv/actors`` implements it over Ray (object refs awaited with a timeout);
``raykv/sim`` implements it in-process with a seeded, fault-injecting network
and virtual time. Node and coordinator logic only ever see this interface.
"""

from __future__ import annotations

import abc
from typing import Any, Awaitable


class Transport(abc.ABC):
    """Asynchronous request/response to named nodes, plus the caller's clock."""

    @abc.abstractmethod
    async def call(self, node_id: str, method: str, *args: Any, timeout: float) -> Any:
        """Run ``rpc_<method>(*args)`` on node ``node_id`` and return its result.

        Raises ``raykv.errors.NodeUnavailable`` when the node cannot be reached,
        crashed, or did not answer within ``timeout`` seconds (the call may or
        may not have run: callers make requests idempotent). A ``RayKVError``
        raised by the remote method is re-raised as is.
        """

    def call_future(self, node_id: str, method: str, *args: Any, timeout: float) -> Awaitable[Any]:
        """``call`` started now, as an asyncio future (same result and errors). Transports that can complete a
        future without a task per call override it (Ray: the object ref's own future); default wraps ``call``."""
        import asyncio
        return asyncio.ensure_future(self.call(node_id, method, *args, timeout=timeout))

    @abc.abstractmethod
    def now(self) -> float:
        """Wall-clock seconds as this process sees them (may be skewed)."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Sleep in this transport's notion of time (virtual in the simulator)."""

    def spawn(self, coro: Awaitable[Any]) -> Any:
        """Run ``coro`` in the background (fire and forget); default uses asyncio."""
        import asyncio
        return asyncio.ensure_future(coro)
