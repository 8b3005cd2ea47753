"""Store-level resolvers on real Ray: "lww" and a cloudpickled callable, each resolved value written back."""

import asyncio

import pytest

import raykv

pytestmark = pytest.mark.ray


def make_conflict(kv, key):
    base = kv.put(key, b"base")
    kv.put(key, b"left", context=base)
    kv.put(key, b"right", context=base)


def test_lww_picks_the_latest_write_and_writes_it_back(ray_session, store_dir):
    kv = raykv.start(name="lww", nodes=3, replicas=3, data_dir=store_dir, resolver="lww")
    make_conflict(kv, b"k")
    assert len(kv.get_versions(b"k")) == 2, "siblings are still stored; only reads resolve them"
    assert kv.get(b"k") == b"right"            # the later of the two concurrent writes
    assert [v.value for v in kv.get_versions(b"k")] == [b"right"], "resolution written back"
    make_conflict(kv, b"m")
    assert kv.get_many([b"m"]) == {b"m": b"right"}
    assert [v.value for v in kv.get_versions(b"m")] == [b"right"], "get_many writes the resolution back"
    make_conflict(kv, b"a")
    assert asyncio.run(kv.aget_many([b"a", b"absent"])) == {b"a": b"right"}
    assert [v.value for v in kv.get_versions(b"a")] == [b"right"], "so does aget_many"
    kv.shutdown()


def test_callable_resolver_shipped_with_cloudpickle(ray_session, store_dir):
    sep = b"+"                                   # a closure: cloudpickle ships it by value

    def union(values):
        return sep.join(sorted(values))

    kv = raykv.start(name="merge", nodes=3, replicas=3, data_dir=store_dir, resolver=union)
    make_conflict(kv, b"k")
    assert kv.get(b"k") == b"left+right"
    assert [v.value for v in kv.get_versions(b"k")] == [b"left+right"]
    other = raykv.connect("merge")             # another handle gets the resolver from the store
    make_conflict(other, b"k2")
    assert other.get(b"k2") == b"left+right"
    assert dict(other.items())[b"k2"] == b"left+right"
    kv.shutdown()
