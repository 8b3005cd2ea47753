"""Leveled compaction policy: a pure function from the table layout to the next compaction task (no I/O).

Reference: LevelDB ``db/version_set.cc`` (``Finalize`` scores, ``PickCompaction``,
``IsTrivialMove``) and O'Neil et al., "The Log-Structured Merge-Tree" (1996).

Level 0 holds flushed memtables (they may overlap; newest first); level k >= 1 holds
non-overlapping tables sorted by key with a byte budget ``base * multiplier**(k-1)``.
The number of tables a point read consults is therefore at most
``l0_stop + (levels - 1)``: bounded, whatever the data size. Why leveled and not
size-tiered: see docs/architecture.md ("Storage engine"). ``flush_level`` places a
flushed table below level 0 when nothing there overlaps it (LevelDB's
``Version::PickLevelForMemTableOutput``), saving the L0 -> L1 -> L2 rewrites of
disjoint data.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileInfo:
    """The policy's view of one table."""
    number: int
    size: int
    smallest: bytes
    largest: bytes


@dataclass(frozen=True)
class Policy:
    """Tuning knobs (LevelDB defaults scaled by the engine to its memtable size)."""
    l0_trigger: int = 4              # compact L0 when it holds this many tables
    level_base_bytes: int = 10 << 20 # byte budget of level 1
    multiplier: int = 10             # each deeper level holds this much more
    max_levels: int = 7
    max_flush_level: int = 2         # deepest level a flushed table may be placed in (kMaxMemCompactLevel)
    grandparent_bytes: int = 20 << 20  # most bytes a placed table may overlap two levels below it

    def target_bytes(self, level: int) -> int:
        return self.level_base_bytes * self.multiplier ** (level - 1)


@dataclass
class Task:
    """Merge ``inputs`` (tables of ``level``) with ``overlapping`` (tables of ``output_level``) into ``output_level``.

    ``bottom``: no table deeper than ``output_level`` overlaps the key range, so tombstones and
    expired entries may be dropped. ``trivial_move``: re-level the single input without rewriting.
    """
    level: int
    inputs: list[FileInfo]
    output_level: int
    overlapping: list[FileInfo] = field(default_factory=list)
    bottom: bool = False
    trivial_move: bool = False
    reason: str = ""

    @property
    def all_inputs(self) -> list[FileInfo]:
        return list(self.inputs) + list(self.overlapping)

    @property
    def input_bytes(self) -> int:
        return sum(f.size for f in self.all_inputs)


def key_range(files: list[FileInfo]) -> tuple[bytes, bytes]:
    return min(f.smallest for f in files), max(f.largest for f in files)


def overlapping(files: list[FileInfo], lo: bytes, hi: bytes) -> list[FileInfo]:
    """Tables of ``files`` whose [smallest, largest] intersects [lo, hi]."""
    return [f for f in files if not (f.largest < lo or f.smallest > hi)]


def scores(levels: list[list[FileInfo]], policy: Policy) -> list[float]:
    """Compaction pressure per level (>= 1 means over budget); the last level is never scored."""
    out = []
    for lv in range(min(len(levels), policy.max_levels - 1)):
        files = levels[lv]
        if lv == 0:
            out.append(len(files) / policy.l0_trigger)
        else:
            out.append(sum(f.size for f in files) / policy.target_bytes(lv))
    return out


def _disjoint(files: list[FileInfo]) -> bool:
    ordered = sorted(files, key=lambda f: f.smallest)
    return all(a.largest < b.smallest for a, b in zip(ordered, ordered[1:]))


def _is_bottom(levels: list[list[FileInfo]], output_level: int, lo: bytes, hi: bytes) -> bool:
    return not any(overlapping(levels[lv], lo, hi) for lv in range(output_level + 1, len(levels)))


def pick(levels: list[list[FileInfo]], policy: Policy,
         pointers: dict[int, bytes] | None = None) -> Task | None:
    """The most urgent compaction, or None when every level is within budget.

    ``levels[0]`` is newest first; ``levels[k]`` (k >= 1) is sorted by key. ``pointers[k]``
    is the largest key of the last table compacted out of level k (round-robin, as LevelDB).
    """
    pointers = pointers or {}
    sc = scores(levels, policy)
    if not sc:
        return None
    best = max(range(len(sc)), key=lambda i: (sc[i], -i))
    if sc[best] < 1.0:
        return None
    level = best
    padded = list(levels) + [[] for _ in range(level + 2 - len(levels))]
    if level == 0:
        inputs = list(levels[0])
    else:
        files = levels[level]
        ptr = pointers.get(level)
        chosen = files[0]
        if ptr is not None:
            for f in files:
                if f.smallest > ptr:
                    chosen = f
                    break
        inputs = [chosen]
    lo, hi = key_range(inputs)
    out_level = level + 1
    over = overlapping(padded[out_level], lo, hi)
    if over:
        lo, hi = min(lo, over[0].smallest), max(hi, over[-1].largest)
    bottom = _is_bottom(padded, out_level, lo, hi)
    # re-level without rewriting when nothing in the next level overlaps and the inputs are disjoint
    # (one table of level k >= 1; or level-0 tables that do not overlap each other, as sequential
    # inserts produce: LevelDB moves one such table, we move them all)
    trivial = not over and _disjoint(inputs)
    return Task(level, inputs, out_level, over, bottom, trivial,
                reason=f"level {level} score {sc[level]:.2f}")


def full(levels: list[list[FileInfo]]) -> Task | None:
    """Manual ``compact()``: merge every table into one level (the deepest in use, at least 1),
    dropping every shadowed version, tombstone and expired entry."""
    files = [f for lv in levels for f in lv]
    if not files:
        return None
    deepest = max([lv for lv in range(len(levels)) if levels[lv]] + [1])
    inputs = [f for lv in range(deepest) for f in (levels[lv] if lv < len(levels) else [])]
    over = list(levels[deepest]) if deepest < len(levels) else []
    return Task(0, inputs, deepest, over, bottom=True, trivial_move=False, reason="manual full compaction")


Reservation = tuple[int, bytes, bytes]   # (output level, lo, hi) of a compaction being executed


def reservation(task: Task) -> Reservation:
    """The key range a running task will write into its output level: its outputs' keys all lie
    within its inputs' overall range, so no table may be placed there until it is installed."""
    lo, hi = key_range(task.all_inputs)
    return task.output_level, lo, hi


def flush_level(levels: list[list[FileInfo]], lo: bytes, hi: bytes, policy: Policy,
                reserved: tuple[Reservation, ...] = ()) -> int:
    """The level a freshly flushed table with keys [lo, hi] goes to (LevelDB's
    ``PickLevelForMemTableOutput``): level 0 if it overlaps a level-0 table; otherwise push it
    down while the next level has no overlapping table (nor a running compaction writing an
    overlapping range there) and the level after that overlaps at most ``grandparent_bytes``
    (so the table's later compaction stays cheap), up to ``max_flush_level``.

    Correct because a read consults level 0, then each deeper level in turn: a table placed at
    level k overlaps nothing in levels 0..k, so every older version of its keys lies deeper and
    is shadowed. Cost O(tables in levels 0..max_flush_level + 1).
    """
    def overlaps(level: int) -> bool:
        if level < len(levels) and overlapping(levels[level], lo, hi):
            return True
        return any(lv == level and not (rhi < lo or rlo > hi) for lv, rlo, rhi in reserved)

    if overlaps(0):
        return 0
    level = 0
    while level < min(policy.max_flush_level, policy.max_levels - 1):
        if overlaps(level + 1):
            break
        if level + 2 < min(policy.max_levels, len(levels)):
            if sum(f.size for f in overlapping(levels[level + 2], lo, hi)) > policy.grandparent_bytes:
                break
        level += 1
    return level
