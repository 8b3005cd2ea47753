"""Dotted version vectors: causality per key, siblings for concurrent writes.

CONTRACT STUB (to be implemented). Signatures below are the interface other
modules code against; do not change them without updating every caller.

References: Almeida, Baquero, Goncalves, Preguica, Fonte, "Scalable and
Accurate Causality Tracking for Eventually Consistent Stores" (DAIS 2014);
DeCandia et al., "Dynamo" (SOSP 2007) section 4.4; riak_core ``vclock.erl``.

Model: every write is a ``Sibling`` with a unique ``dot`` = (actor, counter)
minted by the coordinator that accepted it, and a ``context`` = the version
vector the writer had read. Sibling ``a`` is obsolete iff another sibling
``b`` (b.dot != a.dot) has ``b.context.covers(a.dot)``. Two writes with the
same context are therefore concurrent siblings, never a silent overwrite.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping

Dot = tuple[str, int]


class Order(enum.Enum):
    BEFORE = "before"          # self < other
    AFTER = "after"            # self > other
    EQUAL = "equal"
    CONCURRENT = "concurrent"


class VClock:
    """Immutable version vector: actor -> counter, with the wall time each entry was last bumped (for pruning)."""

    def __init__(self, counters: Mapping[str, int] | None = None,
                 stamps: Mapping[str, float] | None = None) -> None: ...
    def get(self, actor: str) -> int: ...                       # 0 when absent
    def covers(self, dot: Dot) -> bool: ...                     # self[dot.actor] >= dot.counter
    def add(self, dot: Dot, now: float) -> "VClock": ...        # max(self[actor], counter)
    def merge(self, other: "VClock") -> "VClock": ...           # pointwise max
    def descends(self, other: "VClock") -> bool: ...            # self >= other pointwise
    def compare(self, other: "VClock") -> Order: ...
    def prune(self, now: float, *, small: int = 10, big: int = 50,
              young: float = 20.0, old: float = 86400.0) -> "VClock": ...
    def to_bytes(self) -> bytes: ...
    @classmethod
    def from_bytes(cls, data: bytes) -> "VClock": ...
    # plus __eq__, __hash__, __len__, __iter__ (actors), __repr__


@dataclass(frozen=True)
class Sibling:
    """One stored version of a key. ``value is None`` is a tombstone."""

    dot: Dot
    context: VClock
    value: bytes | None
    timestamp: float                  # coordinator wall clock at write (lww, tombstone GC)
    expires_at: float | None = None   # absolute wall-clock seconds; None = never

    @property
    def clock(self) -> VClock: ...    # context.add(dot)

    def expired(self, now: float) -> bool: ...


def sync(a: Iterable[Sibling], b: Iterable[Sibling]) -> list[Sibling]:
    """Union of two sibling sets minus obsolete ones, deduplicated by dot, in a deterministic order."""


def merged_context(siblings: Iterable[Sibling]) -> VClock:
    """The version vector covering every sibling (what a read hands back as context)."""


def encode_siblings(siblings: list[Sibling]) -> bytes: ...
def decode_siblings(data: bytes) -> list[Sibling]: ...
