"""The API boundary (raykv.api): every key, value and option is checked before anything crosses Ray.

A KV over a fake client that fails the test if it is ever called: each bad
input must be rejected locally with the right error and a message that says
what to do. Sibling resolution (`_choose`) is checked here too, on real
``Sibling`` objects.
"""

import asyncio

import cloudpickle
import pytest

import raykv
from raykv.api import KV, Version, Versioned
from raykv.cluster.config import StoreConfig
from raykv.cluster.vclock import Sibling, VClock, merged_context


class NoCalls:
    store = "t"

    def __init__(self, resolver=None, **cfg):
        self.desc = {"config": StoreConfig(name="t", **cfg).validate(), "data_dir": "/nowhere",
                     "resolver_blob": cloudpickle.dumps(resolver) if resolver is not None else None}

    def call(self, *a, **k):
        raise AssertionError(f"validation let a bad request through: {a} {k}")

    acall = admin = call


@pytest.fixture
def kv():
    return KV(NoCalls(max_key_bytes=16, max_value_bytes=32))


@pytest.mark.parametrize("key, err, words", [
    (123, raykv.InvalidKey, "str or bytes"),
    (None, raykv.InvalidKey, "str or bytes"),
    (b"", raykv.InvalidKey, "empty"),
    ("", raykv.InvalidKey, "empty"),
    (b"k" * 17, raykv.KeyTooLarge, "at most 16"),
    ("é" * 9, raykv.KeyTooLarge, "18 bytes"),
])
def test_bad_keys(kv, key, err, words):
    for op in (lambda: kv.get(key), lambda: kv.put(key, b"v"), lambda: kv.delete(key),
               lambda: kv.get_versions(key), lambda: kv.put_many({key: b"v"}), lambda: kv.get_many([key]),
               lambda: kv[key], lambda: key in kv):
        with pytest.raises(err) as e:
            op()
        assert words in str(e.value)
        assert isinstance(e.value, raykv.RayKVError)


def test_bad_values(kv):
    with pytest.raises(raykv.ValueTooLarge, match="33 bytes, the store allows at most 32"):
        kv.put(b"k", b"v" * 33)
    with pytest.raises(raykv.ValueTooLarge):
        kv.put_many({b"k": b"v" * 33})
    with pytest.raises(raykv.InvalidArgument, match="values must be bytes"):
        kv.put(b"k", "a str")
    with pytest.raises(raykv.InvalidArgument, match="values must be bytes"):
        kv[b"k"] = 5


@pytest.mark.parametrize("kwargs, words", [
    ({"w": 4}, "exceeds the number of replicas N=3"),
    ({"w": 0}, "at least 1"),
    ({"w": -1}, "at least 1"),
    ({"w": 1.5}, "integer"),
    ({"consistency": "most"}, "unknown consistency 'most'"),
    ({"w": 2, "consistency": "all"}, "not both"),
    ({"ttl": 0}, "ttl must be a positive"),
    ({"ttl": -3.0}, "ttl must be a positive"),
    ({"ttl": "60"}, "ttl must be a positive"),
    ({"context": b"ctx"}, "context must be a raykv.Version"),
])
def test_bad_write_options(kv, kwargs, words):
    with pytest.raises(raykv.InvalidArgument, match=words):
        kv.put(b"k", b"v", **kwargs)
    with pytest.raises(raykv.InvalidArgument, match=words):
        asyncio.run(kv.aput(b"k", b"v", **kwargs))


@pytest.mark.parametrize("kwargs, words", [
    ({"r": 4}, "r=4 exceeds the number of replicas N=3"),
    ({"r": 0}, "at least 1"),
    ({"consistency": "two"}, "unknown consistency"),
    ({"r": 1, "consistency": "one"}, "not both"),
])
def test_bad_read_options(kv, kwargs, words):
    with pytest.raises(raykv.InvalidArgument, match=words):
        kv.get(b"k", **kwargs)
    with pytest.raises(raykv.InvalidArgument, match=words):
        kv.get_many([b"k"], **kwargs)
    with pytest.raises(raykv.InvalidArgument, match=words):
        asyncio.run(kv.aget(b"k", **kwargs))


def test_bad_admin_arguments(kv):
    with pytest.raises(raykv.InvalidArgument, match="weight must be a positive"):
        kv.add_node(weight=0)
    with pytest.raises(raykv.InvalidArgument, match="node_id must be a str"):
        kv.remove_node(3)
    with pytest.raises(raykv.InvalidArgument, match="page_size"):
        next(kv.items(page_size=0))


@pytest.mark.parametrize("kwargs, words", [
    ({"read_quorum": 4}, "exceeds replicas N=3"),
    ({"write_quorum": 0}, ">= 1"),
    ({"nodes": 2}, "need at least 3 storage nodes"),
    ({"resolver": "newest"}, "resolver must be None, 'lww' or a callable"),
    ({"bogus_option": 1}, "unknown option"),
    ({"name": "a:b"}, "without ':'"),
    ({"weights": [1.0]}, "one entry per node"),
])
def test_start_rejects_bad_arguments_before_touching_ray(kwargs, words):
    with pytest.raises(raykv.InvalidArgument, match=words):
        raykv.start(**kwargs)


def sib(actor, n, value, ts, ctx=None):
    return Sibling((actor, n), ctx or VClock(), value, ts)


def test_choose_one_sibling_and_identical_values():
    kv = KV(NoCalls())
    assert kv._choose(b"k", []) == (False, None, None)
    assert kv._choose(b"k", [sib("a", 1, b"x", 1.0)]) == (True, b"x", None)
    assert kv._choose(b"k", [sib("a", 1, b"x", 1.0), sib("b", 1, b"x", 2.0)]) == (True, b"x", None)


def test_conflict_without_resolver_carries_every_sibling_and_the_merged_context():
    kv = KV(NoCalls())
    sibs = [sib("a", 1, b"pear", 1.0), sib("b", 1, b"plum", 2.0)]
    with pytest.raises(raykv.ConflictError) as e:
        kv._choose(b"cart", sibs)
    err = e.value
    assert sorted(v.value for v in err.versions) == [b"pear", b"plum"]
    assert all(isinstance(v, Versioned) and isinstance(v.context, Version) for v in err.versions)
    assert err.context == Version(merged_context(sibs))
    assert "2 concurrent versions" in str(err) and "context=err.context" in str(err)


def test_lww_resolver_picks_the_latest_timestamp_and_writes_back_with_merged_context():
    kv = KV(NoCalls(resolver="lww"))
    sibs = [sib("a", 1, b"old", 1.0), sib("b", 1, b"new", 5.0), sib("c", 1, b"mid", 3.0)]
    found, value, wb = kv._choose(b"k", sibs)
    assert (found, value) == (True, b"new")
    assert wb == (b"new", merged_context(sibs))


def test_callable_resolver_is_shipped_with_cloudpickle_and_applied():
    kv = KV(NoCalls(resolver=lambda values: b"|".join(sorted(values))))
    sibs = [sib("a", 1, b"b", 1.0), sib("b", 1, b"a", 2.0)]
    assert kv._choose(b"k", sibs)[:2] == (True, b"a|b")


def test_version_round_trips_through_bytes():
    v = Version(VClock({"a": 3, "b": 1}))
    assert Version.from_bytes(v.to_bytes()) == v
