"""Properties of raykv.cluster.vclock: partial-order laws, merge laws, DVV sibling reduction, pruning, encoding."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings, strategies as st

from raykv.cluster.codec import decode_siblings, encode_siblings
from raykv.cluster.vclock import Order, Sibling, VClock, live, merged_context, next_dot, reconcile, sync

ACTORS = ["a", "b", "c", "d", "é-node"]

counters = st.dictionaries(st.sampled_from(ACTORS), st.integers(0, 6), max_size=5)
vclocks = st.builds(VClock, counters)


# ---------------------------------------------------------------- VClock laws

@given(vclocks)
def test_reflexive(x):
    assert x.descends(x) and x.compare(x) is Order.EQUAL


@given(vclocks, vclocks)
def test_antisymmetric_and_compare_consistent(x, y):
    o = x.compare(y)
    assert o is {Order.BEFORE: Order.AFTER, Order.AFTER: Order.BEFORE,
                 Order.EQUAL: Order.EQUAL, Order.CONCURRENT: Order.CONCURRENT}[y.compare(x)]
    assert (o is Order.EQUAL) == (x == y)
    if x.descends(y) and y.descends(x):
        assert x == y and hash(x) == hash(y)


@given(vclocks, vclocks, vclocks)
def test_descends_transitive(x, y, z):
    if x.descends(y) and y.descends(z):
        assert x.descends(z)


@given(vclocks, vclocks, vclocks)
def test_merge_is_least_upper_bound_and_laws(x, y, z):
    m = x.merge(y)
    assert m == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x
    assert m.descends(x) and m.descends(y)
    if z.descends(x) and z.descends(y):
        assert z.descends(m)


@given(vclocks, st.sampled_from(ACTORS), st.integers(1, 9))
def test_add_and_covers(x, actor, n):
    y = x.add((actor, n), now=5.0)
    assert y.covers((actor, n)) and y.covers((actor, 1))
    assert y.get(actor) == max(x.get(actor), n)
    assert y.descends(x)
    assert not VClock().covers((actor, n))


@given(vclocks)
def test_bytes_and_pickle_roundtrip(x):
    x = x.add(("z", 3), now=123.5)
    y = VClock.from_bytes(x.to_bytes())
    assert y == x and y.stamp("z") == 123.5
    assert pickle.loads(pickle.dumps(x)) == x


def test_from_bytes_rejects_garbage():
    good = VClock({"a": 1}).to_bytes()
    for bad in (good[:-1], good + b"x", b""):
        with pytest.raises(ValueError):
            VClock.from_bytes(bad)


# ---------------------------------------------------------------- pruning

@given(st.dictionaries(st.text("abcdefghij", min_size=1, max_size=3), st.floats(0, 200_000), max_size=80),
       st.floats(0, 300_000))
def test_prune_follows_riak_rules(stamps, now):
    x = VClock({a: 1 for a in stamps}, stamps)
    small, big, young, old = 10, 50, 20.0, 86400.0
    p = x.prune(now, small=small, big=big, young=young, old=old)
    assert x.descends(p)                         # pruning only forgets
    assert len(p) >= min(small, len(x))
    dropped = set(x) - set(p)
    kept_ages = [now - x.stamp(a) for a in p]
    for a in dropped:
        age = now - x.stamp(a)
        assert age >= young                      # never drop a young entry
        assert all(age >= k for k in kept_ages)  # oldest first
    if len(p) > small and kept_ages:
        oldest = max(kept_ages)
        # stopped for a reason: too young, or neither too many nor too old
        assert oldest < young or (len(p) <= big and oldest <= old)


def test_prune_bounds_size():
    x = VClock({f"n{i}": i + 1 for i in range(200)}, {f"n{i}": float(i) for i in range(200)})
    p = x.prune(1000.0)
    assert len(p) == 50 and set(p) == {f"n{i}" for i in range(150, 200)}
    assert len(x.prune(10.0)) == 200                 # all young -> nothing dropped
    assert len(x.prune(1e9)) == 10                   # all older than `old` -> down to `small`


# ---------------------------------------------------------------- DVV histories

def _run_history(ops, prune: bool = False):
    """Replica-side minting over 3 replicas with full-state replication (DVV); ground truth tracked apart.

    Returns (replica states, all writes, seen: dot -> set of dots the writer had (transitively) read).
    """
    states: list[list[Sibling]] = [[], [], []]
    seen: dict = {}
    writes = []
    now = 0.0
    for op in ops:
        now += 1.0
        if op[0] == "write":
            _, i, j, blind, tomb = op
            if blind:
                ctx, read = VClock(), []
            else:
                read = states[j]
                ctx = merged_context(read)
            if prune:
                ctx = ctx.prune(now, small=1, big=1, young=0.0, old=0.0)
            actor = f"r{i}"
            dot = next_dot(actor, states[i], ctx)
            s = Sibling(dot, ctx, None if tomb else f"v{len(writes)}".encode(), now)
            closure = set()
            for r in read:
                closure.add(r.dot)
                closure |= seen[r.dot]
            seen[dot] = closure
            writes.append(s)
            states[i] = sync(states[i], [s])
        else:
            _, i, j = op
            states[i] = sync(states[i], states[j])
    return states, writes, seen


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 2), st.integers(0, 2), st.booleans(), st.booleans()),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops_strategy)
def test_sync_laws_and_exact_siblings(ops):
    states, writes, seen = _run_history(ops)
    a, b, c = states
    assert sync(a, b) == sync(b, a)
    assert sync(sync(a, b), c) == sync(a, sync(b, c))
    assert sync(a, a) == a and sync(a, []) == a
    assert sync(a, sync(a, b)) == sync(a, b)
    final = reconcile(a, b, c)
    # exactly the writes no other write's writer had read: no concurrent write dropped, no spurious sibling
    superseded = set().union(*seen.values()) if seen else set()
    assert {s.dot for s in final} == {w.dot for w in writes} - superseded
    dots = [s.dot for s in final]
    assert dots == sorted(dots) and len(set(dots)) == len(dots)


@settings(max_examples=200, deadline=None)
@given(ops_strategy)
def test_pruned_contexts_never_lose_a_write(ops):
    states, writes, seen = _run_history(ops, prune=True)
    final = {s.dot for s in reconcile(*states)}
    superseded = set().union(*seen.values()) if seen else set()
    assert final >= {w.dot for w in writes} - superseded    # spurious siblings allowed, never a loss


def test_same_context_writes_are_siblings_and_retries_dedupe():
    base = [Sibling(("a", 1), VClock(), b"x", 1.0)]
    ctx = merged_context(base)
    w1 = Sibling(("c1", 1), ctx, b"y", 2.0)
    w2 = Sibling(("c2", 1), ctx, b"z", 2.0)
    s = sync(sync(base, [w1]), [w2])
    assert [x.value for x in s] == [b"y", b"z"]
    assert sync(s, [w1, w1]) == s                              # retried write is idempotent
    assert merged_context(s) == VClock({"a": 1, "c1": 1, "c2": 1})
    w3 = Sibling(("c1", 2), merged_context(s), b"merged", 3.0)
    assert sync(s, [w3]) == [w3]


def test_single_client_rmw_ends_with_one_version_and_k_writers_at_most_k():
    state: list[Sibling] = []
    for i in range(1000):
        ctx = merged_context(state)
        state = sync(state, [Sibling(next_dot("n1", state, ctx), ctx, b"%d" % i, float(i))])
    assert len(state) == 1 and state[0].value == b"999"
    ctx = merged_context(state)
    for k in range(7):
        state = sync(state, [Sibling((f"w{k}", 1), ctx, b"k", 2000.0)])
    assert len(state) == 7


def test_live_filters_tombstones_and_expired():
    s = [Sibling(("a", 1), VClock(), None, 1.0), Sibling(("b", 1), VClock(), b"v", 1.0, expires_at=10.0),
         Sibling(("c", 1), VClock(), b"w", 1.0)]
    assert [x.dot for x in live(s, 5.0)] == [("b", 1), ("c", 1)]
    assert [x.dot for x in live(s, 10.0)] == [("c", 1)]
    assert s[0].clock == VClock({"a": 1})


# ---------------------------------------------------------------- encoding

siblings = st.builds(
    Sibling,
    st.tuples(st.sampled_from(ACTORS + ["coord-123456789"]), st.integers(1, 2**63)),
    st.builds(VClock, st.dictionaries(st.sampled_from(ACTORS), st.integers(0, 2**40), max_size=5),
              st.dictionaries(st.sampled_from(ACTORS), st.floats(0, 1e10), max_size=5)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.floats(0, 1e10),
    st.one_of(st.none(), st.floats(0, 1e10)),
)


@settings(max_examples=300)
@given(st.lists(siblings, max_size=6))
def test_encode_decode_roundtrip(sibs):
    data = encode_siblings(sibs)
    back = decode_siblings(data)
    assert back == sibs
    for x, y in zip(sibs, back):
        assert [x.context.stamp(a) for a in x.context] == [y.context.stamp(a) for a in y.context]
    assert b"pickle" not in data and not data.startswith(b"\x80")


@settings(max_examples=300)
@given(siblings)
def test_blind_write_fast_encoding_is_byte_identical(sib):
    """encode_siblings' fast path for one context-free sibling (every blind write) gives the general bytes."""
    from raykv.cluster.codec import _encode_general
    blind = Sibling(sib.dot, VClock(), sib.value, sib.timestamp, sib.expires_at)
    assert encode_siblings([blind]) == _encode_general([blind])
    assert decode_siblings(encode_siblings([blind])) == [blind]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(ACTORS), st.integers(0, 2**40), st.none() | st.binary(max_size=20)),
                max_size=8), st.floats(0, 1e9), st.none() | st.floats(0, 1e9))
def test_bulk_blind_encoding_is_byte_identical(entries, ts, expires):
    """``codec.encode_blind_many`` (what a bulk ``put_many`` encodes, one pass, no Sibling objects) gives
    exactly ``encode_siblings`` of each blind sibling: live values, tombstones, with and without expiry."""
    from raykv.cluster.codec import encode_blind_many
    dots = [(a, n) for a, n, _v in entries]
    values = [v for _a, _n, v in entries]
    assert encode_blind_many(dots, values, ts, expires) == [
        encode_siblings([Sibling(d, VClock(), v, ts, expires)]) for d, v in zip(dots, values)]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(ACTORS), st.integers(0, 2**40), st.none() | st.binary(max_size=20)),
                max_size=8), st.floats(0, 1e9), st.none() | st.floats(0, 1e9), st.data())
def test_blind_batch_wire_rebuilds_the_same_bytes(entries, ts, expires, data):
    """``codec.BlindBatch``: what a bulk write keeps (columns) and sends a replica (``wire``, any subset of
    its items, through pickle) decodes on the node (``decode_blind_wire``) to exactly ``encode_siblings`` of
    each blind sibling; ``batch[i]`` (a hinted copy) is the same bytes."""
    from raykv.cluster.codec import BlindBatch, decode_blind_wire, read_blind_wire
    dots = [(a, n) for a, n, _v in entries]
    values = [v for _a, _n, v in entries]
    keys = [b"k%d" % i for i in range(len(entries))]
    batch = BlindBatch(dots, values, ts, expires)
    want = [encode_siblings([Sibling(d, VClock(), v, ts, expires)]) for d, v in zip(dots, values)]
    assert len(batch) == len(want) and [batch[i] for i in range(len(batch))] == want
    idx = data.draw(st.lists(st.sampled_from(range(len(keys))), unique=True) if keys else st.just([]))
    wire = pickle.loads(pickle.dumps(batch.wire(keys, idx), protocol=5))
    assert decode_blind_wire(wire) == [(keys[i], want[i]) for i in idx]
    # one actor for every dot (the usual batch): the dots go as (actor, packed counters), same bytes decoded
    one = [("coord-1", n) for _a, n, _v in entries]
    batch = BlindBatch(one, values, ts, expires, actor="coord-1")
    want = [encode_siblings([Sibling(d, VClock(), v, ts, expires)]) for d, v in zip(one, values)]
    digests = [bytes([i]) * 8 for i in range(len(keys))]
    for dg in (None, digests):
        wire = pickle.loads(pickle.dumps(batch.wire(keys, idx, dg), protocol=5))
        assert type(wire[3]) is str and len(wire) == (6 if dg is None else 7)
        assert decode_blind_wire(wire) == [(keys[i], want[i]) for i in idx]
        assert read_blind_wire(wire)[1] == (None if dg is None else b"".join(digests[i] for i in idx))
    assert read_blind_wire(BlindBatch(one, values, ts, expires).wire(keys, idx, digests))[1] == \
        b"".join(digests[i] for i in idx)


def test_blind_wire_rejects_a_malformed_payload():
    from raykv.cluster.codec import BlindBatch, decode_blind_wire
    with pytest.raises(ValueError, match="dots for"):
        BlindBatch([("a", 1)], [], 0.0)
    with pytest.raises(ValueError, match="must be"):
        decode_blind_wire([(b"k", b"blob")])                     # a put_encoded payload sent as put_blind
    with pytest.raises(ValueError, match="2 keys, 1 dots"):
        decode_blind_wire((0.0, None, [b"a", b"b"], [("a", 1)], [b"x"]))
    with pytest.raises(ValueError, match="2 keys, 1 dots"):
        decode_blind_wire((0.0, None, [b"a", b"b"], "a", bytes(8), [b"x", b"y"]))
    with pytest.raises(ValueError, match="8-byte"):
        decode_blind_wire((0.0, None, [b"a"], "a", bytes(7), [b"x"]))
    with pytest.raises(ValueError, match="counters and values"):
        decode_blind_wire((0.0, None, [b"a"], "a", bytes(8)))


@settings(max_examples=200)
@given(st.lists(st.integers(0, 2**63), max_size=8), st.data(), st.floats(0, 1e9), st.none() | st.floats(0, 1e9))
def test_one_actor_encoding_is_byte_identical(counters, data, ts, expires):
    """``encode_blind_one_actor`` (the node's path for a one-actor ``put_blind``) is ``encode_blind_many`` of the
    same dots, live values and deletes, with and without expiry."""
    from raykv.cluster.codec import encode_blind_many, encode_blind_one_actor
    values = data.draw(st.lists(st.none() | st.binary(max_size=30), min_size=len(counters), max_size=len(counters)))
    assert encode_blind_one_actor("coord-7", counters, values, ts, expires) == \
        encode_blind_many([("coord-7", n) for n in counters], values, ts, expires)


@settings(max_examples=500)
@given(st.integers(1, 8), st.lists(st.tuples(st.booleans(), st.lists(st.binary(min_size=1, max_size=1)
                                                                     .map(lambda b: bytes([b[0] % 16])),
                                                                     max_size=8)), max_size=8))
def test_dotminter_mint_blind_is_mint_of_each_key(capacity, steps):
    """``DotMinter.mint_blind(keys)`` == ``[mint(k, None) for k in keys]``: same dots and same state after,
    LRU evictions and fresh generations included (the batch path of fresh distinct keys too); interleaved
    with contextful mints."""
    from raykv.cluster.vclock import DotMinter
    one, bulk = DotMinter("c", capacity), DotMinter("c", capacity)
    for with_context, keys in steps:
        if with_context and keys:
            ctx = VClock({one.actor: one.counter})
            assert one.mint(keys[0], ctx) == bulk.mint(keys[0], ctx)
        assert [one.mint(k, None) for k in keys] == bulk.mint_blind(keys)
        assert (one.counter, one.generation, list(one._lru.items())) == \
            (bulk.counter, bulk.generation, list(bulk._lru.items()))


@settings(max_examples=300)
@given(st.lists(siblings, max_size=3), st.data())
def test_blind_value_is_the_value_of_exactly_the_simple_shape(sibs, data):
    """``codec.blind_value`` (the value-only read path) returns the value only for one live sibling with no
    expiry and no context, and ``SLOW`` for every other set, for truncated and padded bytes too: never a wrong
    value, never an exception."""
    from raykv.cluster.codec import SLOW, blind_value
    blob = encode_siblings(sibs)
    simple = (len(sibs) == 1 and sibs[0].value is not None and sibs[0].expires_at is None
              and not sibs[0].context._c)
    assert blind_value(blob) == (sibs[0].value if simple else SLOW)
    cut = data.draw(st.integers(0, max(0, len(blob) - 1)))
    assert blind_value(blob[:cut]) is SLOW
    assert blind_value(blob + b"\x00") is SLOW
    one = Sibling(("coord-1", 7), VClock(), data.draw(st.binary(max_size=50)), 1.0)    # the simple shape
    assert blind_value(encode_siblings([one])) == one.value


@pytest.mark.parametrize("sib", [Sibling(("a", 1), VClock({"b": 2}), b"hello", 1.0, 5.0),
                                 Sibling(("a", 1), VClock(), b"hello", 1.0),        # a blind write: fast path
                                 Sibling(("a", 1), VClock(), None, 1.0)])           # a blind delete
def test_decode_rejects_truncation(sib):
    data = encode_siblings([sib])
    assert decode_siblings(data) == [sib]
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode_siblings(data[:cut])
    with pytest.raises(ValueError):
        decode_siblings(data + b"\x00")


def test_encoding_is_compact():
    ctx = VClock({"coord-aaaa": 10, "coord-bbbb": 20})
    sibs = [Sibling(("coord-aaaa", 11), ctx, b"v" * 10, 1.0), Sibling(("coord-bbbb", 21), ctx, b"w" * 10, 1.0)]
    data = encode_siblings(sibs)
    assert len(data) < len(pickle.dumps(sibs))
    assert data.count(b"coord-aaaa") == 1 and data.count(b"coord-bbbb") == 1    # shared actor table


# ---------------------------------------------------------------- coordinator-side dot minting

class _Naive:
    """One actor, one global counter: what a stateless coordinator would do without DotMinter."""

    def __init__(self, actor):
        self.actor, self.counter = actor, 0

    def mint(self, key, context):
        self.counter += 1
        return (self.actor, self.counter)


def _partial_replication(minters, ops):
    """Writes through coordinators to 3 replicas with partial, delayed delivery; reads from any subset.

    Returns (final merged siblings per key, all writes per key, dots some writer had read per key).
    """
    replicas = [{}, {}, {}]
    pending = []
    writes, seen = {}, {}
    now = 0.0
    for op in ops:
        now += 1.0
        if op[0] == "write":
            _, coord, key, read_mask, deliver_mask = op
            read = reconcile(*(replicas[i].get(key, []) for i in range(3) if read_mask >> i & 1))
            ctx = merged_context(read) if read_mask else None
            s = Sibling(minters[coord].mint(key, ctx), ctx or VClock(), b"%d" % len(writes), now)
            writes.setdefault(key, []).append(s)
            closure = seen.setdefault(key, {})
            closure[s.dot] = {r.dot for r in read}.union(*(closure[r.dot] for r in read))
            for i in range(3):
                if deliver_mask >> i & 1:
                    replicas[i][key] = sync(replicas[i].get(key, []), [s])
                else:
                    pending.append((i, key, s))
        elif op[0] == "deliver" and pending:
            i, key, s = pending.pop(op[1] % len(pending))
            replicas[i][key] = sync(replicas[i].get(key, []), [s])
    for i, key, s in pending:
        replicas[i][key] = sync(replicas[i].get(key, []), [s])
    final = {k: reconcile(*(r.get(k, []) for r in replicas)) for k in writes}
    superseded = {k: set().union(*seen[k].values()) for k in writes}
    return final, writes, superseded


def test_naive_coordinator_minting_loses_a_write_and_dotminter_does_not():
    ops = [("write", 0, b"k", 0, 0b001),     # w1: blind, reaches r1 only for now
           ("write", 0, b"k", 0, 0b110),     # w2: blind, concurrent with w1, reaches r2 r3
           ("write", 0, b"k", 0b110, 0b111), # w3: read r2+r3 (saw w2, not w1), write with that context
           ]
    final, writes, superseded = _partial_replication([_Naive("c")], ops)
    w1 = writes[b"k"][0].dot
    assert w1 not in superseded[b"k"] and w1 not in {s.dot for s in final[b"k"]}   # the hazard: silently lost
    from raykv.cluster.vclock import DotMinter
    final, writes, superseded = _partial_replication([DotMinter("c")], ops)
    assert {s.dot for s in final[b"k"]} == {w.dot for w in writes[b"k"]} - superseded[b"k"]
    assert w1 in {s.dot for s in final[b"k"]}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1), st.sampled_from([b"x", b"y"]), st.integers(0, 7),
              st.integers(1, 7)),
    st.tuples(st.just("deliver"), st.integers(0, 50))), max_size=30),
    st.integers(1, 4))
def test_dotminter_keeps_contexts_exact_under_partial_replication(ops, capacity):
    from raykv.cluster.vclock import DotMinter
    minters = [DotMinter("c0", capacity=capacity), DotMinter("c1", capacity=capacity)]
    final, writes, superseded = _partial_replication(minters, ops)
    for key in writes:
        assert {s.dot for s in final[key]} == {w.dot for w in writes[key]} - superseded[key]
        dots = [w.dot for w in writes[key]]
        assert len(set(dots)) == len(dots)


def test_dotminter_keeps_one_actor_for_a_read_modify_write_chain():
    from raykv.cluster.vclock import DotMinter
    m = DotMinter("coord", capacity=2)
    state: list[Sibling] = []
    for i in range(100):
        ctx = merged_context(state)
        state = sync(state, [Sibling(m.mint(b"hot", ctx), ctx, b"%d" % i, float(i))])
        m.mint(b"other-%d" % i, None)                 # unrelated keys churn the LRU
    assert len(state) == 1 and len(state[0].clock) <= 2
