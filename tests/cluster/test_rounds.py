"""Request rounds driven by hand: no asyncio, no Ray, no simulator. A ``Coordinator`` over a transport that is
never called only plans rounds; each test feeds the replies itself and checks the sends a round asks for."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import pytest

from raykv.cluster import read_round, rounds
from raykv.cluster.config import StoreConfig
from raykv.cluster.coordinator import Coordinator
from raykv.cluster.read_round import READ_ATTEMPTS
from raykv.cluster.ring import key_digests
from raykv.cluster.transport import Transport
from raykv.cluster.codec import decode_blind_wire, decode_siblings, encode_siblings
from raykv.cluster.vclock import Sibling, VClock, merged_context
from raykv.errors import InvalidArgument, NodeUnavailable, QuorumNotReached

CFG = StoreConfig(replicas=3, read_quorum=2, write_quorum=2, tokens_per_node=16)
NODES = [(f"n{i}", None) for i in range(1, 6)]
DC_NODES = [("e1", "east"), ("e2", "east"), ("e3", "east"), ("w1", "west"), ("w2", "west")]
DC_CFG = CFG.with_(dc_replicas={"east": 2, "west": 1}, local_datacenter="east")
DOWN = NodeUnavailable("down")
ALL_WRITES = CFG.with_(write_fanout="all")      # a single put written to all N at once (Dynamo, Cassandra)


class NoIO(Transport):
    """Rounds do no I/O: any call through the transport is a test failure."""

    async def call(self, node_id, method, *args, timeout):
        raise AssertionError("a round must not call the transport")

    def now(self) -> float:
        return 0.0

    async def sleep(self, seconds):
        raise AssertionError("a round must not sleep")


def coordinator(config=CFG, nodes=NODES) -> Coordinator:
    c = Coordinator("c", NoIO(), config, seeds=[], rng=random.Random(7))
    c.membership.merge([(nid, 1.0, dc, None, "alive", 1, 1) for nid, dc in nodes], 0.0)   # MemberState wire
    return c


def pref(c: Coordinator, key: bytes) -> list[str]:
    return c.membership.ring("read").preference_list(key, c.config.replicas, c.config.dc_replicas)


def fallbacks(c: Coordinator, key: bytes) -> list[str]:
    p = pref(c, key)
    return c.membership.ring("read").fallbacks(key, c.config.replicas, set(p), c.config.dc_replicas)


def minted(c: Coordinator, key: bytes, value: bytes, context=None, encoded: bool = False):
    """The new version a ``plan_put`` minted (its encoded sibling set with ``encoded``)."""
    blob = c.plan_put(key, value, context=context)[0].blobs[0]
    return blob if encoded else decode_siblings(blob)[0]


def by_node(sends) -> dict:
    nodes = [s[0] for s in sends]
    assert len(nodes) == len(set(nodes)), "one send per node"
    return {s[0]: s for s in sends}


def items_of(send) -> list:
    """A write send's items as ``(key, encoded)`` or ``(key, encoded, hint target)``, whatever its wire form."""
    return decode_blind_wire(send[2]) if send[1] == "put_blind" else send[2]


def keys_of(read_payload) -> list:
    """The keys of a ``get_hashed`` payload (keys, their digests joined), checking the digests."""
    keys, digests = read_payload
    assert digests == b"".join(key_digests(keys))
    return keys


def ack(rnd, send) -> list:
    return rnd.on_reply(send[3], [True] * len(items_of(send)), None)


def fail(rnd, send) -> list:
    return rnd.on_reply(send[3], None, DOWN)


# ---------------------------------------------------------------------------------------------- writes

def test_put_one_send_per_replica_same_bytes_decided_after_w_acks():
    c = coordinator(ALL_WRITES)
    rnd, clock = c.plan_put(b"k", b"v")
    sends = by_node(rnd.start())
    assert sorted(sends) == sorted(pref(c, b"k"))
    blob = rnd.blobs[0]
    assert decode_siblings(blob)[0].value == b"v" and decode_siblings(blob)[0].clock == clock
    for node, method, payload, _tag in sends.values():
        assert method == "put_encoded" and payload == [(b"k", blob)] and payload[0][1] is blob   # encoded once
    a, b, _ = pref(c, b"k")
    assert ack(rnd, sends[a]) == [] and not rnd.decided
    assert ack(rnd, sends[b]) == [] and rnd.decided and not rnd.complete
    rnd.finish()
    assert c.counters["puts"] == 1 and c.counters["quorum_failures"] == 0


def test_put_failed_replicas_rerouted_with_hints_then_quorum_not_reached():
    c = coordinator(ALL_WRITES)
    rnd, _ = c.plan_put(b"k", b"v")
    sends = by_node(rnd.start())
    a, b, r3 = pref(c, b"k")
    f1, f2 = fallbacks(c, b"k")
    blob = rnd.blobs[0]
    assert ack(rnd, sends[a]) == []
    (re_b,) = fail(rnd, sends[b])
    assert re_b[:3] == (f1, "put_encoded", [(b"k", blob, b)])        # hint names the failed replica
    (re_c,) = fail(rnd, sends[r3])
    assert re_c[:3] == (f2, "put_encoded", [(b"k", blob, r3)])
    assert not rnd.decided and c.counters["write_retries"] == 2 and c.counters["sloppy_writes"] == 2
    assert fail(rnd, re_b) == []          # every node tried: nowhere left to re-route b
    assert not rnd.decided
    assert fail(rnd, re_c) == []
    assert rnd.decided and rnd.complete
    with pytest.raises(QuorumNotReached) as e:
        rnd.finish()
    assert "1/2 acks, 2 failed, 0 pending" in str(e.value) and (e.value.acked, e.value.required) == (1, 2)
    assert c.counters["quorum_failures"] == 1


def test_put_rerouted_hint_ack_counts_for_the_failed_replica():
    c = coordinator(ALL_WRITES)
    rnd, _ = c.plan_put(b"k", b"v")
    sends = by_node(rnd.start())
    a, b, _ = pref(c, b"k")
    ack(rnd, sends[a])
    (re_b,) = fail(rnd, sends[b])
    assert re_b[0] == fallbacks(c, b"k")[0] and re_b[2][0][2] == b
    assert not rnd.decided
    ack(rnd, re_b)                      # a + the hint held for b = W
    assert rnd.decided and not rnd.complete
    rnd.finish()


def test_put_replica_down_at_plan_time_goes_to_hinted_fallback():
    c = coordinator(ALL_WRITES)
    a, b, r3 = pref(c, b"k")
    c.membership.suspect(b, 0.0)
    rnd, _ = c.plan_put(b"k", b"v")
    sends = by_node(rnd.start())
    f1 = fallbacks(c, b"k")[0]
    assert sorted(sends) == sorted([a, f1, r3])                        # b is not asked at all
    blob = rnd.blobs[0]
    assert sends[f1][2] == [(b"k", blob, b)] and sends[a][2] == [(b"k", blob)]
    assert c.counters["sloppy_writes"] == 1
    ack(rnd, sends[f1])
    assert not rnd.decided
    ack(rnd, sends[a])                  # a + the hint held for b = W
    assert rnd.decided
    rnd.finish()


def test_put_writes_w_replicas_first_and_the_others_once_decided():
    """``write_fanout="quorum"`` (the default): W = 2 replicas up front, the third by ``rest()`` after the acks,
    with the same bytes; nothing is written twice."""
    c = coordinator()
    rnd, _ = c.plan_put(b"k", b"v")
    a, b, r3 = pref(c, b"k")
    sends = by_node(rnd.start())
    assert rnd.fanout == 2 and sorted(sends) == sorted([a, b])
    assert sends[a][2] is sends[b][2]                # one payload object: a driver pickles it once
    ack(rnd, sends[a])
    assert not rnd.decided
    ack(rnd, sends[b])
    assert rnd.decided
    (third,) = rnd.rest()
    assert third[:3] == (r3, "put_encoded", [(b"k", rnd.blobs[0])])
    assert rnd.rest() == [] and rnd.speculate() == []                    # every replica written once
    rnd.finish()
    assert c.counters["speculative_writes"] == 0 and c.counters["sloppy_writes"] == 0


def test_put_failed_replica_writes_the_spare_and_a_hint_for_it():
    """A replica written up front fails: its copy goes to a hinted fallback (as with all N) and the spare
    replica is written at once; either ack completes W."""
    c = coordinator()
    rnd, _ = c.plan_put(b"k", b"v")
    a, b, r3 = pref(c, b"k")
    f1 = fallbacks(c, b"k")[0]
    sends = by_node(rnd.start())
    ack(rnd, sends[a])
    retry = by_node(fail(rnd, sends[b]))
    assert sorted(retry) == sorted([f1, r3])
    assert retry[f1][2] == [(b"k", rnd.blobs[0], b)] and retry[r3][2] == [(b"k", rnd.blobs[0])]
    ack(rnd, retry[r3])
    assert rnd.decided and rnd.rest() == []                              # the spare is spent
    rnd.finish()


def test_put_speculates_once_on_a_slow_replica():
    """A replica that neither acks nor fails (SIGSTOP, a partition): ``speculate()`` writes the spare, once."""
    c = coordinator()
    rnd, _ = c.plan_put(b"k", b"v")
    a, b, r3 = pref(c, b"k")
    sends = by_node(rnd.start())
    ack(rnd, sends[a])
    (spare,) = rnd.speculate()
    assert spare[0] == r3 and rnd.speculate() == []
    ack(rnd, spare)
    assert rnd.decided and rnd.rest() == []
    rnd.finish()
    assert c.counters["speculative_writes"] == 1


def test_put_fanout_skips_a_down_replica_and_hints_a_down_spare():
    """Up replicas are written first (ring order among them); a spare known down gets its copy through a
    hinted fallback in ``rest()``."""
    c = coordinator()
    a, b, r3 = pref(c, b"k")
    c.membership.suspect(a, 0.0)
    rnd, _ = c.plan_put(b"k", b"v")
    sends = by_node(rnd.start())
    assert sorted(sends) == sorted([b, r3])                              # the first replica is down: skipped
    for s in sends.values():
        ack(rnd, s)
    assert rnd.decided
    (hint,) = rnd.rest()
    assert hint[0] == fallbacks(c, b"k")[0] and hint[2] == [(b"k", rnd.blobs[0], a)]
    rnd.finish()


def test_put_fanout_only_for_one_key_in_count_mode():
    """``put_many``, datacenter quorums and ``write_fanout="all"`` write every replica up front."""
    assert coordinator().plan_put_many([(b"a", b"1"), (b"b", b"2")])[0].fanout is None
    assert coordinator(ALL_WRITES).plan_put(b"k", b"v")[0].fanout is None
    assert coordinator(DC_CFG, DC_NODES).plan_put(b"k", b"v", consistency="local_quorum")[0].fanout is None
    assert coordinator().plan_put(b"k", b"v", w=3)[0].fanout == 3
    with pytest.raises(InvalidArgument, match="write_fanout"):
        CFG.with_(write_fanout="some").validate()


def test_put_many_one_send_per_node_each_key_n_times():
    c = coordinator()
    items = [(f"key-{i}".encode(), b"v%d" % i) for i in range(50)]
    rnd, clocks = c.plan_put_many(items)
    sends = rnd.start()
    by = by_node(sends)
    assert sorted(by) == [nid for nid, _ in NODES] and len(sends) == 5
    seen = Counter()
    blobs = dict(zip(rnd.keys, (rnd.blobs[i] for i in range(len(rnd.keys)))))
    for send in sends:
        node, method = send[:2]
        assert method == "put_blind"                               # columns, encoded by each replica
        assert send[2][3] == c.minter.actor                        # one actor: dots as (actor, packed counters)
        for entry in items_of(send):
            key, blob = entry                                      # no hints: everyone is up
            assert blob == blobs[key] and node in pref(c, key)
            assert decode_siblings(blob)[0].value == dict(items)[key]
            seen[key] += 1
    assert seen == {key: 3 for key, _ in items} and set(clocks) == set(seen)
    for s in sends:
        ack(rnd, s)
    assert rnd.decided and rnd.complete
    rnd.finish()
    assert c.counters["keys_written"] == 50
    # a key this coordinator wrote before gets a fresh actor mid-batch: two actors, the dots go as tuples
    rnd, _ = c.plan_put_many([(b"new-1", b"x"), (b"key-3", b"y"), (b"new-2", b"z")])
    wires = [s[2] for s in rnd.start()]
    assert all(type(w[3]) is list for w in wires)
    assert {decode_siblings(blob)[0].dot[0] for w in wires for _k, blob in decode_blind_wire(w)} == \
        {c.minter.base, c.minter.actor}


def test_put_many_down_node_share_goes_to_hinted_fallbacks_and_a_failed_share_is_rerouted():
    """Bulk rounds keep the single-key rules per key: every key whose preference list holds a node believed
    down sends that copy to a fallback with a hint naming the node; a share whose call fails is re-routed
    key by key; a hinted ack counts for the replica it stands for."""
    c = coordinator()
    items = [(f"key-{i}".encode(), b"v%d" % i) for i in range(60)]
    c.membership.suspect("n2", 0.0)
    rnd, _ = c.plan_put_many(items)
    sends = rnd.start()
    assert "n2" not in {s[0] for s in sends}
    hinted = Counter(entry[0] for s in sends for entry in items_of(s) if len(entry) == 3)
    held_by_n2 = {k for k, _ in items if "n2" in pref(c, k)}
    assert set(hinted) == held_by_n2 and set(hinted.values()) == {1}
    assert all(entry[2] == "n2" for s in sends for entry in items_of(s) if len(entry) == 3)
    direct = [s for s in sends if s[1] == "put_blind"]
    assert all(s[1] == "put_encoded" for s in sends if s not in direct)    # a hint names its replica
    victim = direct[0]
    lost = items_of(victim)
    retries = fail(rnd, victim)                          # one node's direct share fails
    assert sorted(e[0] for s in retries for e in items_of(s)) == sorted(e[0] for e in lost)
    assert all(len(e) == 3 and e[2] == victim[0] for s in retries for e in items_of(s))
    assert {e[0]: e[1] for s in retries for e in items_of(s)} == dict(lost)     # the same bytes, hinted
    for s in sends + retries:
        if s is not victim:
            ack(rnd, s)
    assert rnd.decided and rnd.complete
    rnd.finish()
    assert c.counters["sloppy_writes"] == len(held_by_n2) + len(lost)
    assert c.counters["write_retries"] == len(lost)


def test_a_transport_payload_cap_splits_a_nodes_share_into_several_calls():
    c = coordinator()
    items = [(f"key-{i}".encode(), b"x" * 100) for i in range(200)]
    rnd, _ = c.plan_put_many(items)
    rnd.max_payload = 2_000                                          # bytes per message
    sends = rnd.start()
    assert len(sends) > 5                                            # more than one call per node
    seen = Counter()
    for send in sends:
        assert len(pickle.dumps(send[2], protocol=5)) <= 2_000
        seen.update(k for k, _ in items_of(send))
    assert seen == {key: 3 for key, _ in items}
    for s in sends:
        ack(rnd, s)
    assert rnd.decided and rnd.complete
    rnd.finish()

    keys = [k for k, _ in items]
    read = c.plan_read("get_many", keys)
    read.max_payload = 2_000
    asks = read.start()
    per_call = max(1, 2_000 // read_round.READ_CHUNK_BYTES)
    assert all(len(keys_of(payload)) <= per_call for _n, _m, payload, _t in asks)
    assert Counter(k for _n, _m, payload, _t in asks for k in keys_of(payload)) == {k: 2 for k in keys}   # R of N


def test_read_calls_are_sized_by_the_reply_bytes_seen_lately():
    """Read calls are cut so each reply stays under ``max_payload``, by the bytes per key of recent replies
    (``ReplySize``, shared by a coordinator's rounds): before any reply, 200 bytes a key (a 500-key share at
    90 KB is two calls); after replies of ~140-byte sibling sets, one call; after big values, many again.
    Absent keys do not drive the estimate below ``REPLY_KEY_MIN``."""
    from raykv.cluster.read_round import REPLY_KEY_MIN, ReplySize
    size = ReplySize()
    assert size.keys_per_call(90_000) == 450
    for _ in range(30):
        size.observe([b"x" * 140] * 400 + [None] * 100)
    assert 500 <= size.keys_per_call(90_000) < 900
    for _ in range(30):
        size.observe([b"x" * 4000] * 10)
    assert size.keys_per_call(90_000) < 25
    for _ in range(200):
        size.observe([None] * 100)
    assert size.per_key == pytest.approx(REPLY_KEY_MIN) and size.keys_per_call(100) == 100 // REPLY_KEY_MIN
    size.observe([])
    assert size.keys_per_call(1) == 1

    c = coordinator(CFG.with_(tokens_per_node=256))         # a real ring: shares of ~500 keys, evenly
    keys = [b"key-%d" % i for i in range(1000)]
    blob = minted(c, b"k", b"v" * 100, encoded=True)

    def calls() -> tuple[int, int]:
        rnd = c.plan_read("get_many", keys)
        rnd.max_payload = 90_000
        sends = rnd.start()
        answer(rnd, sends, blob)
        return len(sends), len({s[0] for s in sends})
    first, nodes = calls()
    assert first > nodes                     # ~500 keys a node at 200 bytes a key: some nodes cut in two
    for _ in range(10):
        calls()
    sent, nodes = calls()
    assert sent == nodes                     # one call per asked node once replies showed ~150 bytes a key


def test_bulk_write_rounds_fill_one_message_per_node_and_cut_evenly():
    """``bulk_write_rounds``: a 1,000-key write of 100-byte values at N=3 over 5 nodes is ONE round, and once
    planned on a real-sized ring (256 tokens a node) every node's share is one ``put_blind`` call under the
    90 KB cap; more keys make even rounds; huge values fall back to rounds of ``min_keys``."""
    items = [(b"bulk%010d" % i, bytes([i % 251]) * 100) for i in range(1000)]
    assert rounds.bulk_write_rounds(items, 5, 3, 90_000, 500, 4096) == [(0, 1000)]
    c = coordinator(StoreConfig(replicas=3, read_quorum=2, write_quorum=2))
    rnd, _ = c.plan_put_many(items)
    rnd.max_payload = 90_000
    sends = rnd.start()
    assert sorted(s[0] for s in sends) == [nid for nid, _ in NODES]        # one call per node
    assert all(len(pickle.dumps((s[1], (s[2],)), protocol=5)) <= 90_000 for s in sends)

    cuts = rounds.bulk_write_rounds(items * 5, 5, 3, 90_000, 500, 4096)
    assert cuts[0] == (0, 1000) and cuts[-1][1] == 5000 and len({hi - lo for lo, hi in cuts}) == 1
    assert rounds.bulk_write_rounds(items, 3, 3, 90_000, 500, 4096) == [(0, 500), (500, 1000)]   # all keys on all
    big = [(k, v * 100) for k, v in items[:2000]]
    assert rounds.bulk_write_rounds(big, 5, 3, 90_000, 500, 4096) == [(0, 500), (500, 1000)]
    assert rounds.bulk_write_rounds(items, 5, 3, None, 500, 4096) == [(0, 1000)]         # no cap: one round
    assert rounds.bulk_write_rounds([], 5, 3, 90_000, 500, 4096) == []


# ---------------------------------------------------------------------------------------------- reads

def test_read_one_send_per_node_decided_after_r_per_key_and_failed_node_reasked():
    c = coordinator(CFG.with_(read_fanout="all"))          # every replica asked (Dynamo, Riak)
    keys = [b"k", b"x"]
    pk, px = pref(c, b"k"), pref(c, b"x")
    assert pk == ["n5", "n3", "n4"] and px == ["n2", "n1", "n4"]       # n4 holds both keys
    rnd = c.plan_read("get_many", keys)
    sends = rnd.start()
    by = by_node(sends)
    assert sorted(by) == sorted(set(pk) | set(px))
    for node, method, payload, _tag in sends:
        assert method == "get_hashed" and keys_of(payload) == [k for k in keys if node in pref(c, k)]
    blob = minted(c, b"k", b"v", encoded=True)

    def reply(node):
        assert rnd.on_reply(by[node][3], [blob] * len(keys_of(by[node][2])), None) == []

    send = by["n5"]
    for _ in range(READ_ATTEMPTS - 1):                          # a failed read is asked again...
        (again,) = fail(rnd, send)
        assert again[:3] == send[:3]
        send = again
    assert fail(rnd, send) == []                                # ...up to READ_ATTEMPTS times
    assert rnd.attempts["n5"] == READ_ATTEMPTS and c.counters["node_failures"] == READ_ATTEMPTS
    reply("n3")
    reply("n4")                                                 # b"k": R = 2 replies; b"x": 1
    assert not rnd.decided
    reply("n2")                                                 # b"x": 2
    assert rnd.decided and not rnd.complete
    rnd.finish()
    assert {k: [s.value for s in v] for k, v in rnd.result(0.0).items()} == {b"k": [b"v"], b"x": [b"v"]}


def asked(sends) -> dict[bytes, list[str]]:
    """{key: nodes asked for it} over read sends."""
    out: dict[bytes, list[str]] = {}
    for node, method, payload, _tag in sends:
        assert method == "get_hashed"
        for k in keys_of(payload):
            out.setdefault(k, []).append(node)
    return out


def answer(rnd, sends, blob=None) -> list:
    """Every send of ``sends`` answered (``blob`` per key); the sends the round asks for next."""
    nxt = []
    for node, _m, payload, tag in sends:
        nxt += rnd.on_reply(tag, [blob] * len(keys_of(payload)), None)
    return nxt


def rested(c: Coordinator, key: bytes, rest: str | None) -> list[str]:
    """The key's replicas in the order a bulk read asks them: ring order, the resting node last."""
    return sorted(pref(c, key), key=lambda n: n == rest)


def test_bulk_read_asks_the_first_r_replicas_and_a_failed_ones_keys_go_to_the_spare():
    """``get_many`` in count mode asks R = 2 of N = 3 replicas per key, the first two in ring order with the
    round's resting node last; when a node fails, each of its keys is asked of that key's third replica, once,
    and nothing else is asked again."""
    c = coordinator()
    keys = [b"key-%d" % i for i in range(80)]
    rnd = c.plan_read("get_many", keys)
    sends = rnd.start()
    by_node(sends)
    assert rnd.rest is not None and rnd.rest not in {s[0] for s in sends}
    assert {k: sorted(v) for k, v in asked(sends).items()} == {k: sorted(rested(c, k, rnd.rest)[:2]) for k in keys}
    victim = sends[0]
    spill = fail(rnd, victim)
    assert {k: v for k, v in asked(spill).items()} == {k: [rested(c, k, rnd.rest)[2]] for k in keys_of(victim[2])}
    assert victim[0] not in {s[0] for s in spill}
    blob = minted(c, b"k", b"v", encoded=True)
    assert answer(rnd, sends[1:] + spill, blob) == []
    assert rnd.decided and rnd.complete
    rnd.finish()
    assert sorted(rnd.result(0.0)) == sorted(keys)


def test_bulk_reads_rest_one_node_in_turn_when_the_keys_span_every_node():
    """A bulk read whose keys have replicas on every node asks one node fewer (4 calls on 5 nodes), each key
    still of R distinct replicas; successive rounds rest each node in turn. A round whose keys miss some node
    saves nothing by resting, so it asks in plain ring order; so does R = N, and a resting node known down."""
    c = coordinator()
    keys = [b"key-%d" % i for i in range(200)]
    rests = []
    for _ in range(10):
        rnd = c.plan_read("get_many", keys)
        sends = rnd.start()
        by_node(sends)
        assert len(sends) == 4 and rnd.rest not in {s[0] for s in sends}
        got = asked(sends)
        assert all(len(set(v)) == 2 and set(v) <= set(pref(c, k)) for k, v in got.items()) and len(got) == 200
        rests.append(rnd.rest)
    assert rests == [f"n{i}" for i in range(1, 6)] * 2
    few = [k for k in keys if "n1" not in pref(c, k)][:3]          # these keys never touch n1
    rnd = c.plan_read("get_many", few)
    sends = rnd.start()
    assert {k: sorted(v) for k, v in asked(sends).items()} == {k: sorted(pref(c, k)[:2]) for k in few}
    assert len(c.plan_read("get_many", keys, r=3).start()) == 5 and c.plan_read("get_many", keys, r=3).rest is None
    rnd = c.plan_read("get_many", keys)
    c.membership.suspect(rnd.rest, 0.0)
    sends = rnd.start()
    assert {k: sorted(v) for k, v in asked(sends).items()} == \
        {k: sorted([n for n in pref(c, k) if n != rnd.rest][:2]) for k in keys}


def test_reads_skip_a_replica_known_down_and_ask_all_only_when_told():
    c = coordinator()
    p = pref(c, b"k")
    assert asked(c.plan_read("get", [b"k"]).start()) == {b"k": p[:2]}           # R of N, in ring order
    rnd = c.plan_read("get", [b"k"])
    assert rnd.fanout == 2 and rnd.rest is None                                 # no resting for one key
    c.membership.suspect(p[0], 0.0)
    assert asked(c.plan_read("get_many", [b"k"]).start()) == {b"k": p[1:]}
    assert asked(c.plan_read("get", [b"k"]).start()) == {b"k": p[1:]}
    assert sorted(asked(c.plan_read("get_many", [b"k"], r=3).start())[b"k"]) == sorted(p)
    assert sorted(asked(c.plan_read("get_many", [b"k"], consistency="all").start())[b"k"]) == sorted(p)
    assert sorted(asked(c.plan_read("get_raw", [b"k"]).start())[b"k"]) == sorted(p)    # tools see every copy
    dyn = coordinator(CFG.with_(read_fanout="all"))                   # Dynamo, Riak: all N, repair the rest
    for op in ("get", "get_many"):
        assert sorted(asked(dyn.plan_read(op, [b"k"]).start())[b"k"]) == sorted(pref(dyn, b"k"))


def test_reads_speculate_once_on_the_undecided_keys_only():
    c = coordinator()
    keys = [b"key-%d" % i for i in range(80)]
    rnd = c.plan_read("get_many", keys)
    sends = rnd.start()
    blob = minted(c, b"k", b"v", encoded=True)
    first = sends[0]
    assert answer(rnd, [first], blob) == []                    # the first node's keys: 1 of 2 replies
    spec = rnd.speculate()
    assert c.counters["speculative_reads"] == 1
    assert {k: v for k, v in asked(spec).items()} == {k: [rested(c, k, rnd.rest)[2]] for k in keys}   # its spare
    assert rnd.speculate() == []                               # once per round
    assert answer(rnd, spec, blob) == []
    assert not rnd.decided                                     # keys the first node did not hold: 1 of 2
    answer(rnd, sends[1:], blob)
    assert rnd.decided and rnd.complete
    rnd.finish()
    # a round decided already, or one that asked every replica, has nothing to speculate with
    done = c.plan_read("get_many", [b"k"])
    answer(done, done.start(), blob)
    assert done.speculate() == []
    every = c.plan_read("get_many", [b"k"], r=3)
    every.start()
    assert every.speculate() == [] and c.counters["speculative_reads"] == 1
    # a single-key get asks R and speculates like a bulk read: its spare, once
    single = c.plan_read("get", [b"k"])
    single.start()
    assert asked(single.speculate()) == {b"k": [pref(c, b"k")[2]]} and single.speculate() == []
    assert c.counters["speculative_reads"] == 2


def test_bulk_read_with_no_spare_left_asks_the_same_node_again_then_fails():
    c = coordinator()
    p = pref(c, b"k")
    rnd = c.plan_read("get_many", [b"k"])
    by = by_node(rnd.start())
    assert sorted(by) == sorted(p[:2])
    (spare,) = fail(rnd, by[p[0]])
    assert spare[0] == p[2] and spare[3][3] == 1
    send = spare
    for attempt in range(2, READ_ATTEMPTS + 1):                # no spare left: the same node, up to READ_ATTEMPTS
        (send,) = fail(rnd, send)
        assert send[0] == p[2] and send[3][3] == attempt
    assert fail(rnd, send) == []
    assert rnd.decided
    answer(rnd, [by[p[1]]], minted(c, b"k", b"v", encoded=True))
    with pytest.raises(QuorumNotReached, match="1/2 acks, 2 failed"):
        rnd.finish()


def _read_round_with_replies(c, replies: dict[str, bytes | None]):
    rnd = c.plan_read("get", [b"k"])
    by = by_node(rnd.start())
    assert sorted(by) == sorted(replies)
    for node, blob in replies.items():
        rnd.on_reply(by[node][3], [blob], None)
    assert rnd.decided and rnd.complete
    return rnd


def test_read_reconciles_concurrent_siblings_and_plans_repair():
    c = coordinator(CFG.with_(read_fanout="all"))    # every replica asked and repaired
    s1 = minted(c, b"k", b"one")
    s2 = minted(c, b"k", b"two")                # blind again: concurrent with s1
    a, b, r3 = pref(c, b"k")
    both = encode_siblings([s1, s2])
    rnd = _read_round_with_replies(c, {a: encode_siblings([s1]), b: encode_siblings([s2]), r3: both})
    assert sorted(s.value for s in rnd.result(0.0)[b"k"]) == [b"one", b"two"]
    plan = rnd.repair_plan()
    assert sorted(plan) == sorted([a, b])                           # r3 already holds the merge
    for node in (a, b):
        ((key, blob),) = plan[node]
        assert key == b"k" and {s.dot for s in decode_siblings(blob)} == {s1.dot, s2.dot}

    s3 = minted(c, b"k", b"three", context=merged_context([s1, s2]))   # supersedes both
    new = encode_siblings([s3])
    rnd = _read_round_with_replies(c, {a: new, b: both, r3: None})   # r3 never saw the key
    assert [s.value for s in rnd.result(0.0)[b"k"]] == [b"three"]
    plan = rnd.repair_plan()
    assert sorted(plan) == sorted([b, r3]) and plan[b] == plan[r3] == [(b"k", new)]


def test_read_identical_replies_decoded_once_and_need_no_repair(monkeypatch):
    c = coordinator(CFG.with_(read_fanout="all"))    # every replica asked and repaired
    blob = minted(c, b"k", b"v", encoded=True)
    calls = []

    def counting(data):
        calls.append(data)
        return decode_siblings(data)
    monkeypatch.setattr(read_round, "decode_siblings", counting)
    rnd = _read_round_with_replies(c, dict.fromkeys(pref(c, b"k"), blob))
    assert len(calls) == 1, "the first answer is decoded as it arrives; the others are compared bytewise"
    assert [s.value for s in rnd.result(0.0)[b"k"]] == [b"v"]
    assert len(calls) == 1
    assert rnd.repair_plan() == {} and len(calls) == 1


def test_read_values_skip_siblings_for_simple_answers_and_keep_conflicts(monkeypatch):
    """``values()`` (what ``KV.get_many`` reads): a key whose answers are one live blind version gives its
    value with no ``Sibling`` decoded; a version with a context, concurrent versions (a conflict, handed back as
    siblings), replicas that answer differently, a deleted key, an expired one and an absent one take the full
    path and come out as ``result()`` says."""
    c = coordinator()
    s1, s2 = minted(c, b"k", b"one"), minted(c, b"k", b"two")
    ctx = minted(c, b"k", b"three", context=merged_context([s1, s2]))
    dead = minted(c, b"k", None)
    old = Sibling(("x", 1), VClock(), b"old", 1.0, 5.0)                  # expired at 5.0
    split = [encode_siblings([minted(c, b"split", b"left")]), encode_siblings([minted(c, b"split", b"right")])]
    answers = {b"plain": encode_siblings([s1]), b"ctx": encode_siblings([ctx]), b"both": encode_siblings([s1, s2]),
               b"gone": encode_siblings([dead]), b"old": encode_siblings([old]), b"none": None}
    keys = list(answers) + [b"split"]
    decoded = []
    monkeypatch.setattr(read_round, "decode_siblings", lambda b: decoded.append(b) or decode_siblings(b))
    rnd = c.plan_read("get_many", keys, values=True)
    for _node, _m, payload, tag in rnd.start():
        rnd.on_reply(tag, [split.pop() if k == b"split" else answers[k] for k in keys_of(payload)], None)
    assert rnd.decided and not split, "split's two replicas each answered"
    vals, conflicts = rnd.values(10.0)
    assert vals == {b"plain": b"one", b"ctx": b"three"}
    assert sorted(conflicts) == [b"both", b"split"]
    assert sorted(s.value for s in conflicts[b"both"]) == [b"one", b"two"]
    assert sorted(s.value for s in conflicts[b"split"]) == [b"left", b"right"]
    assert answers[b"plain"] not in decoded, "the simple answer is never decoded"
    with pytest.raises(RuntimeError):
        c.plan_read("get_many", keys).values(0.0)


def test_read_malformed_answer_fails_in_result_not_in_on_reply():
    """A reply is absorbed without raising (a driver's reply callback must not throw); the malformed bytes
    surface as ValueError from ``result()``, where the caller gets it."""
    c = coordinator(CFG.with_(read_fanout="all"))    # every replica asked and repaired
    rnd = _read_round_with_replies(c, dict.fromkeys(pref(c, b"k"), b"\x07garbage"))
    with pytest.raises(ValueError):
        rnd.result(0.0)


# ---------------------------------------------------------------------------------------------- datacenters

def _dc_write(key: bytes, down: list[str]):
    """A local_quorum (east: 2 of 2) write of ``key`` with ``down`` suspected; every send acks."""
    c = coordinator(DC_CFG, DC_NODES)
    for n in down:
        c.membership.suspect(n, 0.0)
    rnd, _ = c.plan_put(key, b"v", consistency="local_quorum")
    sends = rnd.start()
    hinted = {entry[2]: node for node, _m, payload, _t in sends for entry in payload if len(entry) == 3}
    for s in sends:
        ack(rnd, s)
    assert rnd.decided and rnd.complete
    return c, rnd, hinted


def test_local_quorum_hint_in_other_datacenter_does_not_count():
    c = coordinator(DC_CFG, DC_NODES)
    assert pref(c, b"k0") == ["e1", "w1", "e2"] and fallbacks(c, b"k0") == ["w2", "e3"]
    _, rnd, hinted = _dc_write(b"k0", down=["e2", "e3"])        # e2's share can only go west
    assert hinted == {"e2": "w2"}
    with pytest.raises(QuorumNotReached, match="east: 1/2"):
        rnd.finish()


def test_local_quorum_hint_in_same_datacenter_counts():
    c = coordinator(DC_CFG, DC_NODES)
    assert pref(c, b"k1") == ["e2", "e3", "w1"] and fallbacks(c, b"k1") == ["e1", "w2"]
    _, rnd, hinted = _dc_write(b"k1", down=["e3"])
    assert hinted == {"e3": "e1"}
    rnd.finish()


def test_local_quorum_hint_prefers_the_down_replicas_datacenter():
    _, rnd, hinted = _dc_write(b"k0", down=["e2"])              # fallbacks in ring order: w2, then e3
    assert hinted == {"e2": "e3"}
    rnd.finish()
