"""Hinted handoff: the record a fallback node keeps for a down replica, and the replay rule.

Dynamo section 4.6: when a replica is unreachable, the coordinator writes to the
next healthy node on the ring with a *hint* naming the intended replica. The
fallback stores the hint durably (``backend.add_hint``, merged with any hint it
already holds for that key), and replays it once its failure detector sees the
target up again: the siblings are sent with an ordinary ``put_batch`` (a
reconciling write, so a replay that arrives twice is harmless), and a hint is
deleted only if it did not change while the replay was in flight (a newer hint
merged meanwhile is kept for the next round). Hints for a target that has left
the ring are delivered to the key's current preference list instead.

Bounded: a node holds at most ``config.max_hints`` hints; beyond it a sloppy
write is refused with ``Overloaded`` (the coordinator counts that replica as
failed), so a long outage becomes an error, not unbounded growth.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import VersionedBackend
from .vclock import Sibling, sync
from ..errors import Overloaded


@dataclass(frozen=True)
class Hint:
    """Siblings that ``target`` should receive for ``key``."""

    target: str
    key: bytes
    siblings: tuple[Sibling, ...]


def store_hint(backend: VersionedBackend, max_hints: int, target: str, key: bytes, siblings: list[Sibling]) -> None:
    """Durably add a hint; ``Overloaded`` when the node already holds ``max_hints`` (merging into an existing one is always allowed)."""
    if backend.hint_count() >= max_hints and backend.get_hint(target, key) is None:
        raise Overloaded(f"node holds {max_hints} hints (config.max_hints); the sloppy write for a down replica "
                         f"was refused. Bring the down node back or remove it, then retry")
    backend.add_hint(target, key, siblings)


def pending_targets(backend: VersionedBackend) -> dict[str, int]:
    """target -> number of hints held, in first-seen order. O(hints); O(1) when none are held (the usual case,
    asked every hint-replay interval: a scan of the hint range would sort the LSM memtable's new keys each time)."""
    out: dict[str, int] = {}
    if not backend.hint_count():
        return out
    for target, _key, _sibs in backend.iter_hints():
        out[target] = out.get(target, 0) + 1
    return out


def hint_batch(backend: VersionedBackend, target: str, limit: int) -> list[Hint]:
    """Up to ``limit`` hints for ``target`` (one replay call carries one batch)."""
    out = []
    for t, key, sibs in backend.iter_hints(target):
        out.append(Hint(t, key, tuple(sibs)))
        if len(out) >= limit:
            break
    return out


def retire_delivered(backend: VersionedBackend, delivered: list[Hint]) -> int:
    """Remove hints whose content is unchanged since they were sent; returns how many were removed."""
    removed = 0
    for h in delivered:
        cur = backend.get_hint(h.target, h.key)
        if cur is None:
            continue
        if sync(cur, h.siblings) == sync(h.siblings, ()):   # nothing newer merged in meanwhile
            backend.remove_hint(h.target, h.key)
            removed += 1
    return removed
