"""Every error raykv raises: one base class, one subclass per failure a caller can act on.

Each message says what happened and what to do about it. All errors pickle
cleanly (they cross Ray actor boundaries), so every constructor argument is
also stored on the instance and passed back through ``__reduce__``.
"""

from __future__ import annotations

from typing import Any


class RayKVError(Exception):
    """Base class of every raykv error."""

    def __reduce__(self):
        return (self.__class__, self._args)

    def __init__(self, *args: Any) -> None:
        self._args = args
        super().__init__(*args)


class QuorumNotReached(RayKVError):
    """Fewer replicas acknowledged than the request's R or W required."""

    def __init__(self, op: str, acked: int, required: int, asked: int, detail: str = "") -> None:
        self.op, self.acked, self.required, self.asked = op, acked, required, asked
        msg = (f"{op}: only {acked} of {asked} replicas answered, {required} required. "
               f"Retry, lower the quorum (e.g. consistency='one'), or check `raykv status` for down nodes.")
        if detail:
            msg += f" ({detail})"
        super().__init__(op, acked, required, asked, detail)
        self.args = (msg,)
        self._msg = msg

    def __str__(self) -> str:
        return self._msg


class ConflictError(RayKVError):
    """A read found concurrent versions (siblings) and the store has no resolver.

    ``versions`` holds every sibling (``Versioned(value, context)``); ``context``
    is the merged causal context: ``put(key, merged_value, context=err.context)``
    supersedes all of them.
    """

    def __init__(self, key: bytes, versions: list, context: Any) -> None:
        self.key, self.versions, self.context = key, versions, context
        super().__init__(key, versions, context)
        self._msg = (f"key {key!r} has {len(versions)} concurrent versions (siblings). "
                     f"Merge them and write back with put(key, value, context=err.context), "
                     f"or start the store with resolver='lww' or a callable.")

    def __str__(self) -> str:
        return self._msg


class _Simple(RayKVError):
    """An error that is just a message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValueTooLarge(_Simple):
    """A value is bigger than the store's ``max_value_bytes``."""


class KeyTooLarge(_Simple):
    """A key is bigger than the store's ``max_key_bytes``."""


class InvalidKey(_Simple):
    """A key is not ``str``/``bytes``, or is empty."""


class InvalidArgument(_Simple):
    """An option is out of range or inconsistent (e.g. ``R > N``, ``W = 0``)."""


class StoreNotFound(_Simple):
    """``connect`` found no store with that name in the Ray namespace ``raykv``."""


class Overloaded(_Simple):
    """A bounded queue is full (pending calls, hints, memtable stall timeout); retry with backoff."""


class NodeUnavailable(_Simple):
    """A transport call could not reach a node, or timed out (it may or may not have run)."""


class CorruptionError(RayKVError):
    """A checksum or structural check failed on an on-disk file.

    ``path`` names the file and ``offset`` the byte where the bad record starts.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path, self.offset, self.reason = str(path), offset, reason
        super().__init__(str(path), offset, reason)
        self._msg = (f"corrupt data in {path} at byte offset {offset}: {reason}. "
                     f"The file was not modified; restore it from a replica "
                     f"(anti-entropy repairs a node whose data directory is removed).")

    def __str__(self) -> str:
        return self._msg
