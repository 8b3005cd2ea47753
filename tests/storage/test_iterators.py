"""The composable iterators: merge order, newest wins, live filter, and the compaction pipeline's GC rules."""

from raykv.storage import format as F
from raykv.storage.iterators import compaction_columns, live, merge, newest

PUT, DEL = F.KIND_PUT, F.KIND_DELETE


def test_scan_pipeline_newest_wins_and_hides_tombstones_and_expired():
    new = [(b"a", 9, None, 0.0), (b"c", 8, b"c-new", 0.0), (b"e", 7, b"e", 50.0)]
    old = [(b"a", 1, b"a-old", 0.0), (b"b", 2, b"b", 0.0), (b"c", 3, b"c-old", 0.0)]
    merged = list(merge([old, new]))
    assert [(k, s) for k, s, *_ in merged] == [(b"a", 9), (b"a", 1), (b"b", 2), (b"c", 8), (b"c", 3), (b"e", 7)]
    assert list(live(newest(merge([old, new])), now=10.0)) == [(b"b", b"b"), (b"c", b"c-new"), (b"e", b"e")]
    assert list(live(newest(merge([old, new])), now=60.0)) == [(b"b", b"b"), (b"c", b"c-new")]


def _sortable(entries):
    return [(k, -s, b"" if v is None else v, DEL if v is None else PUT, e) for k, s, v, e in entries]


def test_compaction_keeps_tombstones_and_expired_entries_above_older_data():
    upper = _sortable([(b"a", 10, None, 0.0), (b"b", 11, b"b2", 5.0), (b"c", 12, b"c2", 0.0)])
    lower = _sortable([(b"a", 1, b"a1", 0.0), (b"b", 2, b"b1", 0.0), (b"c", 3, b"c1", 0.0)])
    cols = list(compaction_columns([upper, lower], now=100.0, bottom=False, chunk=100))
    assert cols == [([b"a", b"b", b"c"], [10, 11, 12], [None, b"b2", b"c2"], [0.0, 5.0, 0.0])]
    # at the bottom nothing older can remain below: the tombstone and the expired entry go
    cols = list(compaction_columns([upper, lower], now=100.0, bottom=True, chunk=100))
    assert cols == [([b"c"], [12], [b"c2"], [0.0])]


def test_compaction_columns_are_chunked():
    run = _sortable([(b"k%03d" % i, i + 1, b"v", 0.0) for i in range(10)])
    cols = list(compaction_columns([run], now=0.0, bottom=True, chunk=4))
    assert [len(c[0]) for c in cols] == [4, 4, 2]
    assert [k for c in cols for k in c[0]] == [b"k%03d" % i for i in range(10)]


def test_sortable_pipelines_agree_with_the_reference_pipeline():
    import random
    from raykv.storage.iterators import live_sortable
    rnd = random.Random(11)
    seq = 0
    for _ in range(200):
        runs = []
        for _ in range(rnd.randrange(1, 5)):
            keys = sorted(rnd.sample([b"k%02d" % i for i in range(30)], rnd.randrange(0, 20)))
            run = []
            for k in keys:
                seq += 1
                v = None if rnd.random() < 0.3 else rnd.randbytes(rnd.randrange(0, 4))
                run.append((k, seq, v, rnd.choice([0.0, 0.0, 5.0, 15.0])))
            runs.append(run)
        now = 10.0
        reference = list(live(newest(merge(runs)), now))
        assert list(live_sortable([_sortable(r) for r in runs], now)) == reference
        for bottom in (False, True):
            cols = list(compaction_columns([_sortable(r) for r in runs], now, bottom, chunk=7))
            flat = [(k, s, v, e) for ks, ss, vs, es in cols for k, s, v, e in zip(ks, ss, vs, es)]
            expect = list(newest(merge(runs)))
            if bottom:
                expect = [x for x in expect if x[2] is not None and not (x[3] and x[3] <= now)]
            assert flat == expect
