"""LatencyWindow (percentiles of recent reads) and the speculative-retry delay a coordinator derives from it:
``speculative_retry="99p"`` (Cassandra's default) or fixed seconds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from raykv.cluster import coordinator as coord_mod
from raykv.cluster.config import StoreConfig
from raykv.cluster.coordinator import Coordinator
from raykv.cluster.latency import MIN_SAMPLES, REFRESH, LatencyWindow
from raykv.errors import InvalidArgument

from .test_rounds import NoIO


def nearest_rank(samples: list[float], p: float) -> float:
    s = sorted(samples)
    k = 0
    while (k + 1) * 100 < len(s) * p:         # smallest k with (k + 1) / n >= p / 100
        k += 1
    return s[k]


@settings(max_examples=200)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=MIN_SAMPLES, max_size=300),
       st.sampled_from([50.0, 90.0, 99.0, 99.9]), st.integers(MIN_SAMPLES, 64))
def test_percentile_is_the_nearest_rank_of_the_last_size_samples(samples, p, size):
    w = LatencyWindow(size)
    for x in samples:
        w.add(x)
    w._stale = REFRESH                              # force a fresh sort: compare with the exact answer
    assert len(w) == min(size, len(samples))
    assert w.percentile(p) == nearest_rank(samples[-size:], p)


def test_no_percentile_before_min_samples_and_at_most_refresh_samples_stale():
    w = LatencyWindow(1000)
    for _ in range(MIN_SAMPLES - 1):
        w.add(0.001)
    assert w.percentile(99) is None
    w.add(0.001)
    assert w.percentile(99) == 0.001
    for _ in range(REFRESH - 1):
        w.add(5.0)                                   # not seen yet: the sorted copy is reused
    assert w.percentile(99) == 0.001
    w.add(5.0)
    assert w.percentile(99) == 5.0
    with pytest.raises(ValueError):
        LatencyWindow(0)


@pytest.mark.parametrize("good", ["99p", "95p", "99.9p", "50p", 0.05, 2])
def test_speculative_retry_accepts_a_percentile_or_seconds(good):
    assert StoreConfig(speculative_retry=good).validate().speculative_retry == good


@pytest.mark.parametrize("bad", ["99", "p", "0p", "100p", "abcp", "99ms", 0, -1.0, True, None])
def test_speculative_retry_rejects_anything_else(bad):
    with pytest.raises(InvalidArgument, match="speculative_retry"):
        StoreConfig(speculative_retry=bad).validate()


def test_the_delay_is_the_percentile_of_recent_bulk_reads_within_bounds():
    c = Coordinator("c", NoIO(), StoreConfig(), seeds=[], rng=random.Random(1))
    assert c.config.speculative_retry == "99p"
    assert c.speculative_delay() == coord_mod.SPECULATE_FALLBACK            # nothing seen yet
    rng = random.Random(2)
    for _ in range(500):
        c.latency["get_many"].add(rng.uniform(0.004, 0.008))
    assert 0.0075 < c.speculative_delay() <= 0.008
    for _ in range(2000):
        c.latency["get_many"].add(0.0001)
    assert c.speculative_delay() == coord_mod.SPECULATE_MIN               # never a storm of spare reads
    for _ in range(2000):
        c.latency["get_many"].add(30.0)
    assert c.speculative_delay() == coord_mod.SPECULATE_MAX
    c.config = c.config.with_(speculative_retry=0.2)
    assert c.speculative_delay() == 0.2                                   # fixed seconds: the window is ignored


def test_single_key_gets_and_bulk_reads_keep_their_own_windows():
    """A single-key get waits ~1.5 ms and a 1,000-key round ~8: one window for both would make gets speculate
    late and bulk rounds early."""
    c = Coordinator("c", NoIO(), StoreConfig(), seeds=[], rng=random.Random(1))
    for _ in range(100):
        c.latency["get"].add(0.003)
        c.latency["get_many"].add(0.008)
    assert c.speculative_delay("get") == 0.003 and c.speculative_delay("get_many") == 0.008
    assert c.speculative_delay() == c.speculative_delay("get_many")


def test_a_record_with_the_old_fanout_name_reopens():
    """``store.json`` written before ``read_fanout`` (sessions 6-7) names it ``bulk_read_fanout``."""
    old = StoreConfig.from_record({"name": "s", "bulk_read_fanout": "all"})
    assert old.read_fanout == "all" and old.name == "s"
    assert StoreConfig.from_record({"read_fanout": "all"}).read_fanout == "all"
    with pytest.raises(InvalidArgument, match="read_fanout"):
        StoreConfig(read_fanout="some").validate()
    with pytest.raises(TypeError):
        StoreConfig.from_record({"no_such_field": 1})       # anything else still fails loudly
