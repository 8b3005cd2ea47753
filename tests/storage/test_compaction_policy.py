"""The leveled compaction policy as a pure function: state in, task out, no I/O."""

import random

from raykv.storage import compaction as C

P = C.Policy(l0_trigger=4, level_base_bytes=1000, multiplier=10, max_levels=4)


def f(n, lo, hi, size=100):
    return C.FileInfo(n, size, lo, hi)


def test_nothing_to_do_within_budget():
    levels = [[f(1, b"a", b"z")], [f(2, b"a", b"m", 500)], [], []]
    assert C.pick(levels, P) is None
    assert C.pick([[], [], [], []], P) is None


def test_level0_trigger_merges_all_l0_with_overlapping_l1():
    l0 = [f(9, b"c", b"f"), f(8, b"a", b"d"), f(7, b"e", b"h"), f(6, b"b", b"g")]
    l1 = [f(1, b"a", b"b"), f(2, b"c", b"e"), f(3, b"i", b"k")]
    t = C.pick([l0, l1, [], []], P)
    assert t.level == 0 and t.output_level == 1
    assert {x.number for x in t.inputs} == {6, 7, 8, 9}
    assert {x.number for x in t.overlapping} == {1, 2}      # 3 does not overlap [a, h]
    assert t.bottom and not t.trivial_move


def test_disjoint_level0_tables_move_without_rewrite():
    l0 = [f(4, b"m", b"p"), f(3, b"i", b"l"), f(2, b"e", b"h"), f(1, b"a", b"d")]   # sequential inserts
    t = C.pick([l0, [f(9, b"q", b"z")], [], []], P)
    assert t.trivial_move and t.output_level == 1 and len(t.inputs) == 4
    t = C.pick([l0, [f(9, b"k", b"z")], [], []], P)                                # overlaps level 1
    assert not t.trivial_move
    t = C.pick([l0[:3] + [f(1, b"a", b"f")], [], [], []], P)                        # overlap inside L0
    assert not t.trivial_move


def test_not_bottom_when_deeper_level_overlaps():
    l0 = [f(n, b"a", b"c") for n in range(10, 14)]
    t = C.pick([l0, [], [f(1, b"b", b"b")], []], P)
    assert t.output_level == 1 and not t.bottom             # an older "b" lives in level 2
    t2 = C.pick([l0, [], [f(1, b"x", b"z")], []], P)
    assert t2.bottom


def test_oversized_level_picks_one_file_round_robin_and_trivial_moves():
    l1 = [f(1, b"a", b"c", 600), f(2, b"d", b"f", 600), f(3, b"g", b"i", 600)]
    t = C.pick([[], l1, [], []], P)
    assert t.level == 1 and [x.number for x in t.inputs] == [1]
    assert t.trivial_move and t.output_level == 2            # nothing in level 2 overlaps: just re-level
    t = C.pick([[], l1, [], []], P, pointers={1: b"c"})
    assert [x.number for x in t.inputs] == [2]
    t = C.pick([[], l1, [], []], P, pointers={1: b"i"})      # wraps around
    assert [x.number for x in t.inputs] == [1]
    t = C.pick([[], l1, [f(4, b"b", b"e")], []], P)
    assert not t.trivial_move and [x.number for x in t.overlapping] == [4]


def test_most_urgent_level_first():
    l0 = [f(n, b"a", b"b") for n in range(10, 14)]          # score 1.0
    l1 = [f(1, b"a", b"z", 3000)]                            # score 3.0
    assert C.pick([l0, l1, [], []], P).level == 1


def test_last_level_is_never_compacted_further():
    l3 = [f(1, b"a", b"z", 10 ** 9)]
    assert C.pick([[], [], [], l3], P) is None


def test_full_compaction_takes_everything_to_the_deepest_level():
    levels = [[f(9, b"a", b"b")], [f(5, b"a", b"c")], [f(3, b"b", b"z")], []]
    t = C.full(levels)
    assert t.output_level == 2 and t.bottom
    assert {x.number for x in t.all_inputs} == {9, 5, 3}
    assert C.full([[], [], [], []]) is None
    assert C.full([[f(1, b"a", b"b")], [], [], []]).output_level == 1


def test_simulated_workload_keeps_tables_bounded():
    """Drive the policy with a toy executor (no I/O): flush, pick, apply; table count stays bounded."""
    rnd = random.Random(1)
    levels = [[], [], [], []]
    next_no = [1]

    def new(lo, hi, size):
        next_no[0] += 1
        return C.FileInfo(next_no[0], size, lo, hi)

    peak_l0 = 0
    for step in range(400):
        a, b = sorted(rnd.randbytes(2) for _ in range(2))
        levels[0].insert(0, new(a, b, 100))
        while (t := C.pick(levels, P)) is not None:
            gone = {x.number for x in t.all_inputs}
            levels = [[x for x in lv if x.number not in gone] for lv in levels]
            lo, hi = C.key_range(t.all_inputs)
            if t.trivial_move:
                levels[t.output_level].extend(t.inputs)
            else:
                levels[t.output_level].append(new(lo, hi, int(t.input_bytes * 0.9)))
            levels[t.output_level].sort(key=lambda x: x.smallest)
            for lv in levels[1:]:
                for x, y in zip(lv, lv[1:]):
                    assert x.largest < y.smallest, "levels >= 1 must not overlap"
        peak_l0 = max(peak_l0, len(levels[0]))
    assert peak_l0 < P.l0_trigger
    assert sum(len(lv) for lv in levels) < 40


# ------------------------------------------------------------------ flush placement (PickLevelForMemTableOutput)

PF = C.Policy(l0_trigger=4, level_base_bytes=1000, multiplier=10, max_levels=4, max_flush_level=2,
              grandparent_bytes=250)


def test_flush_level_empty_store_goes_to_max_flush_level():
    assert C.flush_level([[], [], [], []], b"a", b"c", PF) == 2
    assert C.flush_level([[], [], [], []], b"a", b"c", C.Policy(max_levels=4, max_flush_level=0)) == 0
    assert C.flush_level([[], []], b"a", b"c", C.Policy(max_levels=2, max_flush_level=2)) == 1


def test_flush_level_stays_in_level0_on_any_level0_overlap():
    assert C.flush_level([[f(5, b"b", b"b")], [], [], []], b"a", b"c", PF) == 0
    assert C.flush_level([[f(5, b"d", b"e")], [], [], []], b"a", b"c", PF) == 2   # disjoint: no effect


def test_flush_level_stops_above_an_overlapping_level():
    assert C.flush_level([[], [f(1, b"b", b"x")], [], []], b"a", b"c", PF) == 0
    assert C.flush_level([[], [f(1, b"m", b"x")], [f(2, b"a", b"b")], []], b"c", b"d", PF) == 2
    assert C.flush_level([[], [f(1, b"m", b"x")], [f(2, b"b", b"d")], []], b"a", b"c", PF) == 1


def test_flush_level_limits_grandparent_overlap():
    l2 = [f(2, b"a", b"b", 200), f(3, b"c", b"d", 100)]          # 300 bytes overlap [a, d] > 250
    assert C.flush_level([[], [], l2, []], b"a", b"d", PF) == 0
    assert C.flush_level([[], [], l2, []], b"a", b"b", PF) == 1   # 200 <= 250, then L2 overlaps
    l3 = [f(4, b"a", b"z", 1000)]
    assert C.flush_level([[], [], [], l3], b"a", b"b", PF) == 1   # placing at 2 would overlap 1000 in L3


def test_flush_level_respects_a_running_compaction_output_range():
    task = C.Task(0, [f(7, b"a", b"c")], 1, [f(1, b"x", b"z")])
    res = C.reservation(task)
    assert res == (1, b"a", b"z")
    # nothing overlaps [m, n] on disk, but the task may write an output table spanning [a, z] into L1
    assert C.flush_level([[f(7, b"a", b"c")], [f(1, b"x", b"z")], [], []], b"m", b"n", PF, (res,)) == 0
    assert C.flush_level([[], [], [], []], b"m", b"n", PF, ((2, b"a", b"z"),)) == 1


def test_flush_level_never_breaks_read_order_randomized():
    """Property: a table placed below level 0 overlaps nothing in levels 0..its level, and levels >= 1
    stay disjoint."""
    rng = random.Random(5)
    keys = [bytes([c]) for c in range(ord("a"), ord("z") + 1)]
    levels = [[], [], [], []]
    n = 0
    for _ in range(300):
        lo, hi = sorted(rng.sample(keys, 2))
        n += 1
        lv = C.flush_level(levels, lo, hi, PF)
        if lv:                                                    # level 0 may overlap; deeper may not
            assert all(not C.overlapping(levels[k], lo, hi) for k in range(lv + 1))
        levels[lv].append(f(n, lo, hi, rng.randrange(10, 200)))
        for k in range(1, 4):
            ordered = sorted(levels[k], key=lambda x: x.smallest)
            assert all(a.largest < b.smallest for a, b in zip(ordered, ordered[1:]))
        if rng.random() < 0.3:                                    # compact something away
            levels = [[], [], [], [f(10_000 + n, b"a", b"z", 500)]] if rng.random() < 0.3 else levels
            if rng.random() < 0.5:
                levels[0] = []
