"""One contract suite for every VersionedBackend: MemoryBackend (simulator) and LSMBackend (real disk).

Each test runs against both backends; the LSM-only tests at the bottom check
what only a disk backend can promise (reopen durability, token-ordered key
layout in the engine).
"""

from __future__ import annotations

import random

import pytest

from raykv.cluster.vclock import Sibling, VClock, sync

try:
    from raykv.cluster.ring import key_token
except ImportError:                                    # ring.py not landed yet
    key_token = None

TOKEN_MAX = (1 << 64) - 1
_needs_ring = pytest.mark.skipif(key_token is None, reason="raykv.cluster.ring.key_token not importable yet")


def _memory(tmp_path):
    try:
        from raykv.cluster.memory_backend import MemoryBackend
    except ImportError as e:
        pytest.skip(f"MemoryBackend not importable yet: {e}")
    return MemoryBackend()


def _lsm(tmp_path, **opts):
    try:
        from raykv.storage import LSMStore  # noqa: F401
    except ImportError as e:
        pytest.skip(f"raykv.storage.LSMStore not importable yet: {e}")
    from raykv.cluster.lsm_backend import LSMBackend
    return LSMBackend(str(tmp_path / "lsm"), **{"fsync": "never", "memtable_bytes": 32 * 1024, **opts})


@pytest.fixture(params=["memory", "lsm"])
def backend(request, tmp_path):
    if key_token is None:
        pytest.skip("raykv.cluster.ring.key_token not importable yet")
    b = _memory(tmp_path) if request.param == "memory" else _lsm(tmp_path)
    yield b
    b.close()


def sib(actor: str, n: int, value: bytes | None = b"v", ctx: dict | None = None, expires_at: float | None = None,
        ts: float = 1000.0) -> Sibling:
    ctx = ctx or {}
    return Sibling(dot=(actor, n), context=VClock(ctx, {a: ts for a in ctx}), value=value, timestamp=ts,
                   expires_at=expires_at)


def ring_order(lo: int, hi: int, keys) -> list[bytes]:
    """Brute force: keys with lo < token <= hi (wrapping; lo == hi whole ring), in ring order starting after lo."""
    def inside(t: int) -> bool:
        if lo < hi:
            return lo < t <= hi
        return t > lo or t <= hi
    sel = [(key_token(k), k) for k in keys if inside(key_token(k))]
    sel.sort(key=lambda tk: (tk[0] <= lo, tk[0], tk[1]))
    return [k for _, k in sel]


# ------------------------------------------------------------------ data


def test_get_absent_is_empty(backend):
    assert backend.get(b"nope") == []


def test_put_get_roundtrip_keeps_siblings_tombstones_ttl(backend):
    sibs = sync([sib("a", 2, b"x", {"a": 1})], [sib("b", 1, None, {"a": 1}, expires_at=5000.5)])
    assert len(sibs) == 2                                  # concurrent: both kept
    backend.put(b"k", sibs)
    got = backend.get(b"k")
    assert got == sibs
    assert {s.value for s in got} == {b"x", None}
    assert [s.expires_at for s in got if s.value is None] == [5000.5]
    assert all(isinstance(s.context, VClock) for s in got)


def test_put_replaces_and_remove_forgets(backend):
    backend.put(b"k", [sib("a", 1, b"one")])
    backend.put(b"k", [sib("a", 2, b"two", {"a": 1})])
    assert [s.value for s in backend.get(b"k")] == [b"two"]
    backend.remove(b"k")
    assert backend.get(b"k") == []
    backend.remove(b"never-there")                         # no error


def test_put_many(backend):
    items = [(b"key%03d" % i, [sib("n1", i + 1, b"val%d" % i)]) for i in range(50)]
    backend.put_many(items)
    for k, s in items:
        assert backend.get(k) == s
    backend.put_many([])


def test_put_empty_sibling_list_is_absent(backend):
    """An empty sibling set means "no such key" on every backend: get, iter_range and put_many agree."""
    backend.put(b"gone", [sib("a", 1)])
    backend.put(b"kept", [sib("a", 2)])
    backend.put(b"gone", [])
    backend.put(b"never", [])
    backend.put_many([(b"batch", [sib("a", 3)]), (b"kept2", [sib("a", 4)])])
    backend.put_many([(b"batch", [])])
    for k in (b"gone", b"never", b"batch"):
        assert backend.get(k) == []
    assert sorted(k for k, _ in backend.iter_range(0, 0)) == [b"kept", b"kept2"]
    assert all(v for _, v in backend.iter_range(0, 0))


def test_binary_keys_and_values(backend):
    keys = [b"\x00", b"\xff" * 40, b"a\x00b", bytes(range(256))]
    for i, k in enumerate(keys):
        backend.put(k, [sib("z", i + 1, bytes([i]) * 1000)])
    for i, k in enumerate(keys):
        assert backend.get(k)[0].value == bytes([i]) * 1000
    assert sorted(k for k, _ in backend.iter_range(0, 0)) == sorted(keys)


def test_iter_range_matches_brute_force(backend):
    rng = random.Random(5)
    keys = [b"user:%d" % rng.randrange(10**9) for _ in range(400)]
    keys = list(dict.fromkeys(keys))
    for i, k in enumerate(keys):
        backend.put(k, [sib("n", i + 1, k[::-1])])
    tokens = sorted(key_token(k) for k in keys)
    arcs = [(0, TOKEN_MAX), (0, 0), (TOKEN_MAX, TOKEN_MAX), (TOKEN_MAX, 0), (5, 5),
            (tokens[10], tokens[20]),            # lo excluded, hi included exactly on key tokens
            (tokens[20], tokens[10]),            # wrapping
            (tokens[-1], tokens[0]), (tokens[0] - 1, tokens[0]), (tokens[0], tokens[0] + 1)]
    arcs += [(rng.randrange(1 << 64), rng.randrange(1 << 64)) for _ in range(20)]
    for lo, hi in arcs:
        got = list(backend.iter_range(lo, hi))
        assert [k for k, _ in got] == ring_order(lo, hi, keys), (lo, hi)
        assert all(s[0].value == k[::-1] for k, s in got)
    assert len(list(backend.iter_range(7, 7))) == len(keys)


def test_iter_range_sees_removals_and_many_keys(backend):
    keys = [b"k%05d" % i for i in range(3000)]               # more than one internal scan chunk
    backend.put_many([(k, [sib("a", 1, b"v")]) for k in keys])
    for k in keys[::3]:
        backend.remove(k)
    live = set(keys) - set(keys[::3])
    got = [k for k, _ in backend.iter_range(0, 0)]
    assert len(got) == len(set(got)) == len(live) and set(got) == live
    assert got == ring_order(0, 0, live)


# ------------------------------------------------------------------ hints


def test_hints_merge_filter_count_remove(backend):
    assert backend.hint_count() == 0
    backend.add_hint("n1", b"k", [sib("a", 1, b"x")])
    backend.add_hint("n1", b"k", [sib("b", 1, b"y")])      # concurrent: merged with the held hint
    backend.add_hint("n10", b"k", [sib("a", 1, b"x")])     # prefix of another node id: kept apart
    backend.add_hint("n2", b"k\x00z", [sib("c", 1, b"z")])
    assert backend.hint_count() == 3
    held = {(t, k): s for t, k, s in backend.iter_hints()}
    assert set(held) == {("n1", b"k"), ("n10", b"k"), ("n2", b"k\x00z")}
    assert sorted(s.value for s in held[("n1", b"k")]) == [b"x", b"y"]
    assert [(t, k) for t, k, _ in backend.iter_hints("n1")] == [("n1", b"k")]
    assert [(t, k) for t, k, _ in backend.iter_hints("n2")] == [("n2", b"k\x00z")]
    backend.add_hint("n1", b"k", [sib("a", 2, b"x2", {"a": 1, "b": 1})])   # supersedes both
    assert [[x.value for x in s] for _, _, s in backend.iter_hints("n1")] == [[b"x2"]]
    assert backend.hint_count() == 3
    assert [s.value for s in backend.get_hint("n1", b"k")] == [b"x2"]
    assert backend.get_hint("n1", b"nothing") is None and backend.get_hint("n3", b"k") is None
    backend.remove_hint("n1", b"k")
    assert backend.get_hint("n1", b"k") is None
    backend.remove_hint("n1", b"k")                         # idempotent
    assert backend.hint_count() == 2
    assert list(backend.iter_hints("n1")) == []
    assert backend.get(b"k") == []                          # hints are not data


# ------------------------------------------------------------------ metadata, stats


def test_meta(backend):
    assert backend.meta_get("ring") is None
    backend.meta_put("ring", b"\x01\x02")
    backend.meta_put("ring", b"\x03")
    backend.meta_put("node_id", b"n7")
    assert backend.meta_get("ring") == b"\x03" and backend.meta_get("node_id") == b"n7"
    assert backend.get(b"ring") == []                       # metadata is not data


def test_stats(backend):
    st = backend.stats()
    assert isinstance(st["keys"], int) and isinstance(st["disk_bytes"], int)
    backend.put_many([(b"s%d" % i, [sib("a", 1, b"x" * 100)]) for i in range(200)])
    st = backend.stats()
    assert st["keys"] >= 200 * 0.5 and st["disk_bytes"] > 0


# ------------------------------------------------------------------ model-based


@pytest.mark.parametrize("kind", ["memory", "lsm"])
def test_random_operations_match_a_model(kind, tmp_path):
    """2,000 random data/hint/meta operations checked against dicts; the LSM backend is closed and
    reopened along the way (over flushes and compactions forced by a tiny memtable)."""
    if key_token is None:
        pytest.skip("raykv.cluster.ring.key_token not importable yet")
    rng = random.Random(17)
    make = (lambda: _memory(tmp_path)) if kind == "memory" else (lambda: _lsm(tmp_path, memtable_bytes=8 * 1024))
    b = make()
    data: dict[bytes, list] = {}
    hints: dict[tuple[str, bytes], list] = {}
    meta: dict[str, bytes] = {}
    keys = [b"key-%d" % i for i in range(300)]
    counter = [0]

    def fresh() -> list:
        counter[0] += 1
        out = [sib(rng.choice("abc"), counter[0], rng.choice([None, b"x" * rng.randrange(1, 200)]))]
        if rng.random() < 0.3:
            counter[0] += 1
            out = sync(out, [sib(rng.choice("abc"), counter[0], b"y")])
        return out

    try:
        for step in range(2000):
            p = rng.random()
            k = rng.choice(keys)
            if p < 0.03:
                data.pop(k, None)                   # an empty sibling set is an absent key
                b.put(k, [])
            elif p < 0.45:
                data[k] = fresh()
                b.put(k, data[k])
            elif p < 0.55:
                items = [(rng.choice(keys), fresh()) for _ in range(rng.randrange(1, 10))]
                b.put_many(items)
                data.update(items)
            elif p < 0.65:
                data.pop(k, None)
                b.remove(k)
            elif p < 0.78:
                t = rng.choice(["n1", "n2", "n10"])
                new = fresh()
                hints[(t, k)] = sync(hints.get((t, k), []), new)
                b.add_hint(t, k, new)
            elif p < 0.85:
                t = rng.choice(["n1", "n2", "n10"])
                hints.pop((t, k), None)
                b.remove_hint(t, k)
            elif p < 0.88:
                name = rng.choice(["ring", "id", "epoch"])
                meta[name] = b"%d" % step
                b.meta_put(name, meta[name])
            elif p < 0.98:
                assert b.get(k) == data.get(k, [])
            else:
                lo, hi = rng.randrange(1 << 64), rng.randrange(1 << 64)
                got = list(b.iter_range(lo, hi))
                assert [x for x, _ in got] == ring_order(lo, hi, data)
                assert all(v == data[x] for x, v in got)
            if step % 500 == 499:
                assert dict(b.iter_range(0, 0)) == data
                assert {(t, x): v for t, x, v in b.iter_hints()} == hints
                assert b.hint_count() == len(hints)
                assert all(b.meta_get(n) == v for n, v in meta.items())
                if kind == "lsm":
                    b.close()
                    b = make()
    finally:
        b.close()


# ------------------------------------------------------------------ LSM only


@_needs_ring
def test_lsm_reopen_keeps_data_hints_meta(tmp_path):
    b = _lsm(tmp_path, fsync="always", memtable_bytes=16 * 1024)
    from raykv.cluster.lsm_backend import LSMBackend
    path = b.path
    keys = [b"r%04d" % i for i in range(600)]               # several memtable flushes
    for i, k in enumerate(keys):
        b.put(k, [sib("n1", i + 1, b"%d" % i)])
    b.put_many([(b"batch%d" % i, [sib("n2", 1, b"b")]) for i in range(10)])
    b.remove(keys[0])
    b.add_hint("n3", b"h1", [sib("n1", 9, b"hint")])
    b.add_hint("n4", b"h2", [sib("n1", 10, None)])
    b.meta_put("ring", b"R")
    b.close()
    b = LSMBackend(path, fsync="always")
    try:
        assert b.get(keys[0]) == []
        assert all(b.get(k)[0].value == b"%d" % i for i, k in enumerate(keys) if i)
        assert b.get(b"batch3")[0].value == b"b"
        assert b.hint_count() == 2
        assert {(t, k) for t, k, _ in b.iter_hints()} == {("n3", b"h1"), ("n4", b"h2")}
        assert b.meta_get("ring") == b"R"
        assert len(list(b.iter_range(0, 0))) == len(keys) - 1 + 10
    finally:
        b.close()


@_needs_ring
def test_lsm_layout_groups_data_by_token(tmp_path):
    b = _lsm(tmp_path)
    try:
        b.put(b"alpha", [sib("a", 1)])
        b.add_hint("n1", b"beta", [sib("a", 1)])
        b.meta_put("m", b"1")
        raw = dict(b.db.scan())
        assert b"d" + key_token(b"alpha").to_bytes(8, "big") + b"alpha" in raw
        assert b"hn1\x00beta" in raw and raw[b"mm"] == b"1"
        assert len(raw) == 3
    finally:
        b.close()


@_needs_ring
def test_lsm_put_many_is_one_atomic_batch(tmp_path, monkeypatch):
    b = _lsm(tmp_path)
    try:
        calls = []
        real = b.db.write_batch
        monkeypatch.setattr(b.db, "write_batch", lambda ops, **kw: (calls.append(len(ops)), real(ops, **kw))[1])
        b.put_many([(b"a", [sib("a", 1)]), (b"b", [sib("a", 1)]), (b"c", [sib("a", 1)])])
        assert calls == [3]
    finally:
        b.close()


@_needs_ring
def test_lsm_rejects_nul_in_hint_target(tmp_path):
    from raykv.errors import InvalidArgument
    b = _lsm(tmp_path)
    try:
        with pytest.raises(InvalidArgument):
            b.add_hint("bad\x00id", b"k", [sib("a", 1)])
    finally:
        b.close()


def test_encoded_access_matches_the_decoded_api(backend):
    """get_encoded / put_many_encoded (what the encoded replica RPCs use) agree with get / put_many."""
    from raykv.cluster.codec import decode_siblings, encode_siblings
    a, b = sib("a", 1, b"x"), sib("b", 2, None, ctx={"a": 1})
    assert backend.get_encoded(b"k") is None
    backend.put_many_encoded([(b"k", encode_siblings([a])), (b"t", encode_siblings([b]))])
    assert backend.get(b"k") == [a] and backend.get(b"t") == [b]
    assert decode_siblings(backend.get_encoded(b"k")) == [a]
    backend.put_many([(b"j", [a, sib("c", 1)])])
    assert decode_siblings(backend.get_encoded(b"j")) == backend.get(b"j")
    backend.put_many_encoded([(b"k", None)])                     # no siblings: the key is gone
    assert backend.get(b"k") == [] and backend.get_encoded(b"k") is None


def test_deferred_writes_are_visible_at_once_and_waitable(backend):
    """put_many_deferred / merge_many_encoded_deferred (what the node's put path runs under its write lock) write
    like put_many / merge_many_encoded, visible on return; wait_durable of their ticket (None included) returns."""
    from raykv.cluster.codec import encode_siblings
    from raykv.cluster.node import merge_encoded
    a, b = sib("a", 1, b"x"), sib("b", 1, b"y")
    ticket = backend.put_many_deferred([(b"k", [a])])
    assert backend.get(b"k") == [a]
    backend.wait_durable(ticket)
    written, ticket = backend.merge_many_encoded_deferred([(b"k", encode_siblings([b])), (b"j", encode_siblings([a]))],
                                                          merge_encoded)
    assert written == 2 and backend.get(b"j") == [a] and {s.dot for s in backend.get(b"k")} == {a.dot, b.dot}
    backend.wait_durable(ticket)
    backend.wait_durable(None)
    assert backend.put_many_deferred([]) is None


def test_lsm_engine_keys_carry_the_ring_token(tmp_path):
    """data_key writes the token as the raw blake2b digest: it must equal key_token's big-endian bytes."""
    from raykv.cluster.lsm_backend import TOKEN_BYTES, data_key
    for key in (b"k", b"\x00", b"user:000000000001", bytes(range(256))):
        assert data_key(key) == b"d" + key_token(key).to_bytes(TOKEN_BYTES, "big") + key


def test_lsm_shipped_digests_file_keys_where_hashing_would_and_bad_ones_are_refused(tmp_path):
    """A bulk write or read may bring its keys' digests (``ring.key_digests``, as the driver's ring lookup
    computed them): the engine keys are then exactly ``data_key``'s, with no hashing on the node. A digest run
    of the wrong length, or whose first or last digest is not its key's, is refused with ``InvalidArgument``
    and nothing is written."""
    from raykv.cluster.codec import encode_siblings
    from raykv.cluster.lsm_backend import data_key, data_keys
    from raykv.cluster.node import merge_encoded
    from raykv.cluster.ring import key_digests
    from raykv.errors import InvalidArgument
    keys = [b"k%d" % i for i in range(50)]
    digests = b"".join(key_digests(keys))
    assert data_keys(keys, digests) == [data_key(k) for k in keys] == data_keys(keys)
    b = _lsm(tmp_path)
    try:
        items = [(k, encode_siblings([sib("a", i + 1, k)])) for i, k in enumerate(keys)]
        written, ticket = b.merge_many_encoded_deferred(items, merge_encoded, digests)
        b.wait_durable(ticket)
        assert written == 50
        assert b.get_many_encoded(keys) == [blob for _k, blob in items] == b.get_many_encoded(keys, digests)
        assert [s.value for s in b.get(keys[7])] == [keys[7]]           # the single-key path hashes itself
        other = [b"x%d" % i for i in range(50)]
        for bad in (digests[:-1], digests[8:] + digests[:8], b"\x00" * 8 + digests[8:], digests[:-8] + b"\x00" * 8):
            with pytest.raises(InvalidArgument):
                b.merge_many_encoded_deferred([(k, blob) for k, (_, blob) in zip(other, items)], merge_encoded, bad)
            with pytest.raises(InvalidArgument):
                b.get_many_encoded(keys, bad)
        assert b.get_many_encoded(other) == [None] * 50
    finally:
        b.close()


def test_lsm_batched_encoded_access_matches_per_key_access(tmp_path):
    """get_many_encoded / merge_many_encoded (the batched paths of the encoded replica RPCs) agree with
    get_encoded / put_many_encoded, keys repeated within a batch included."""
    from raykv.cluster.codec import encode_siblings
    b = _lsm(tmp_path)
    try:
        blobs = {i: encode_siblings([sib("a", i, b"v%d" % i)]) for i in range(1, 40)}
        b.put_many_encoded([(b"k%d" % i, blobs[i]) for i in range(1, 20)])
        keys = [b"k%d" % i for i in range(40)] + [b"k3", b"absent"]
        assert b.get_many_encoded(keys) == [b.get_encoded(k) for k in keys]
        seen = []

        def merge(held, blob):
            seen.append((held, blob))
            return None if blob == b"keep" else held + blob if held else blob
        items = [(b"k1", b"+x"), (b"new", blobs[5]), (b"new", b"+y", "hint ignored here"), (b"k2", b"keep")]
        assert b.merge_many_encoded(items, merge) == 2
        assert seen == [(blobs[1], b"+x"), (None, blobs[5]), (blobs[5], b"+y"), (blobs[2], b"keep")]
        assert b.get_many_encoded([b"k1", b"new", b"k2"]) == [blobs[1] + b"+x", blobs[5] + b"+y", blobs[2]]
        assert b.merge_many_encoded([(b"k1", b"keep")], merge) == 0
    finally:
        b.close()
