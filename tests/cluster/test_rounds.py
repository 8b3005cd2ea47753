"""Request rounds driven by hand: no asyncio, no Ray, no simulator. A ``Coordinator`` over a transport that is
never called only plans rounds; each test feeds the replies itself and checks the sends a round asks for."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import pytest

from raykv.cluster import rounds
from raykv.cluster.config import StoreConfig
from raykv.cluster.coordinator import Coordinator
from raykv.cluster.rounds import READ_ATTEMPTS
from raykv.cluster.transport import Transport
from raykv.cluster.codec import decode_blind_wire, decode_siblings, encode_siblings
from raykv.cluster.vclock import merged_context
from raykv.errors import NodeUnavailable, QuorumNotReached

CFG = StoreConfig(replicas=3, read_quorum=2, write_quorum=2, tokens_per_node=16)
NODES = [(f"n{i}", None) for i in range(1, 6)]
DC_NODES = [("e1", "east"), ("e2", "east"), ("e3", "east"), ("w1", "west"), ("w2", "west")]
DC_CFG = CFG.with_(dc_replicas={"east": 2, "west": 1}, local_datacenter="east")
DOWN = NodeUnavailable("down")


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


def ack(rnd, send) -> list:
    return rnd.on_reply(send[3], [True] * len(items_of(send)), None)


def fail(rnd, send) -> list:
    return rnd.on_reply(send[3], None, DOWN)


# ---------------------------------------------------------------------------------------------- writes

def test_put_one_send_per_replica_same_bytes_decided_after_w_acks():
    c = coordinator()
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
    c = coordinator()
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
    c = coordinator()
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
    c = coordinator()
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
    read = c.plan_read("get_many", keys)                            # 200 keys: a digest read
    read.max_payload = 2_000
    asks = read.start()
    assert {m for _n, m, _p, _t in asks} == {"get_digested"}
    for _n, _m, (ks, full), _t in asks:                              # reply bytes, as the round estimates them
        assert full * rounds.READ_CHUNK_BYTES + (len(ks) - full) * rounds.DIGEST_REPLY_BYTES <= 2_000
    assert Counter(k for _n, _m, (ks, _f), _t in asks for k in ks) == {k: 3 for k in keys}
    assert Counter(k for _n, _m, (ks, full), _t in asks for k in ks[:full]) == {k: 1 for k in keys}
    small = c.plan_read("get_many", keys[:rounds.DIGEST_MIN_KEYS - 1])
    small.max_payload = 2_000
    asks = small.start()
    per_call = max(1, 2_000 // rounds.READ_CHUNK_BYTES)
    assert {m for _n, m, _p, _t in asks} == {"get_encoded"}
    assert all(len(payload) <= per_call for _n, _m, payload, _t in asks)
    assert Counter(k for _n, _m, payload, _t in asks for k in payload) == {k: 3 for k in keys[:len(small.keys)]}


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
    c = coordinator()
    keys = [b"k", b"x"]
    pk, px = pref(c, b"k"), pref(c, b"x")
    assert pk == ["n5", "n3", "n4"] and px == ["n2", "n1", "n4"]       # n4 holds both keys
    rnd = c.plan_read("get_many", keys)
    sends = rnd.start()
    by = by_node(sends)
    assert sorted(by) == sorted(set(pk) | set(px))
    for node, method, payload, _tag in sends:
        assert method == "get_encoded" and payload == [k for k in keys if node in pref(c, k)]
    blob = minted(c, b"k", b"v", encoded=True)

    def reply(node):
        assert rnd.on_reply(by[node][3], [blob] * len(by[node][2]), None) == []

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


def _read_round_with_replies(c, replies: dict[str, bytes | None]):
    rnd = c.plan_read("get", [b"k"])
    by = by_node(rnd.start())
    assert sorted(by) == sorted(replies)
    for node, blob in replies.items():
        rnd.on_reply(by[node][3], [blob], None)
    assert rnd.decided and rnd.complete
    return rnd


def test_read_reconciles_concurrent_siblings_and_plans_repair():
    c = coordinator()
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
    c = coordinator()
    blob = minted(c, b"k", b"v", encoded=True)
    calls = []

    def counting(data):
        calls.append(data)
        return decode_siblings(data)
    monkeypatch.setattr(rounds, "decode_siblings", counting)
    rnd = _read_round_with_replies(c, dict.fromkeys(pref(c, b"k"), blob))
    assert len(calls) == 1, "the first answer is decoded as it arrives; the others are compared bytewise"
    assert [s.value for s in rnd.result(0.0)[b"k"]] == [b"v"]
    assert len(calls) == 1
    assert rnd.repair_plan() == {} and len(calls) == 1


def test_read_malformed_answer_fails_in_result_not_in_on_reply():
    """A reply is absorbed without raising (a driver's reply callback must not throw); the malformed bytes
    surface as ValueError from ``result()``, where the caller gets it."""
    c = coordinator()
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


# ---------------------------------------------------------------------------------------------- digest reads

def serve(store: dict, send) -> list:
    """What a replica holding ``store[node]`` ({key: encoded}) answers to a read send."""
    from raykv.cluster.codec import digest_of
    node, method, payload, _tag = send
    held = store[node]
    if method == "get_encoded":
        return [held.get(k) for k in payload]
    assert method == "get_digested"
    keys, full = payload
    return [held.get(k) for k in keys[:full]] + [digest_of(held.get(k)) for k in keys[full:]]


def version(actor: str, n: int, value: bytes, ts: float = 1.0) -> bytes:
    from raykv.cluster.vclock import Sibling, VClock
    return encode_siblings([Sibling((actor, n), VClock(), value, ts, None)])


def test_digest_read_asks_one_replica_per_key_in_full_and_decides_on_matching_digests():
    c = coordinator()
    keys = [b"key%03d" % i for i in range(100)]
    store = {nid: {k: version("a", 1, b"v" + k) for k in keys if nid in pref(c, k)} for nid, _ in NODES}
    rnd = c.plan_read("get_many", keys)
    sends = rnd.start()
    assert len(sends) == 5 and {s[1] for s in sends} == {"get_digested"}       # one call per node
    full_of = Counter(k for _n, _m, (ks, full), _t in sends for k in ks[:full])
    assert full_of == {k: 1 for k in keys}
    for _n, _m, (ks, full), _t in sends:                                          # the data replica: the first
        assert all(pref(c, k)[0] == _n for k in ks[:full])
    for send in reversed(sends):                    # digests may come before their data: parked, then credited
        assert rnd.on_reply(send[3], serve(store, send), None) == []
    assert rnd.decided and rnd.complete and rnd.answered == 5
    rnd.finish()
    assert {k: [s.value for s in v] for k, v in rnd.result(0.0).items()} == {k: [b"v" + k] for k in keys}
    assert rnd.repair_plan() == {}


def test_digest_read_of_a_stale_replica_reads_it_in_full_merges_and_repairs_every_replica_that_differs():
    c = coordinator()
    keys = [b"key%03d" % i for i in range(100)]
    old, new = version("a", 1, b"old"), version("b", 1, b"new", 2.0)
    store = {nid: {k: old for k in keys if nid in pref(c, k)} for nid, _ in NODES}
    k0 = keys[0]
    a, b, r3 = pref(c, k0)
    store[b][k0] = new                             # a concurrent version on one non-data replica
    rnd = c.plan_read("get_many", keys)
    sends = rnd.start()
    extra = []
    for send in sends:
        extra += rnd.on_reply(send[3], serve(store, send), None)
    assert [(s[0], s[1], s[2]) for s in extra] == [(b, "get_encoded", [k0])]    # the mismatch, read in full
    assert not rnd.complete
    assert rnd.on_reply(extra[0][3], serve(store, extra[0]), None) == []
    assert rnd.complete and c.counters["digest_mismatches"] == 1
    assert sorted(s.value for s in rnd.result(0.0)[k0]) == [b"new", b"old"]      # siblings, as a full read
    plan = rnd.repair_plan()
    assert sorted(plan) == sorted([a, b, r3])      # r3's digest matched a's bytes: it is stale too
    assert all(items == [(k0, plan[a][0][1])] for items in plan.values())


def test_digest_read_whose_data_replica_fails_reads_the_key_in_full_elsewhere():
    c = coordinator()
    keys = [b"key%03d" % i for i in range(100)]
    store = {nid: {k: version("a", 1, b"v" + k) for k in keys if nid in pref(c, k)} for nid, _ in NODES}
    rnd = c.plan_read("get_many", keys)
    sends = rnd.start()
    victim = sends[0]
    held_data = victim[2][0][:victim[2][1]]
    others = []
    for send in sends[1:]:                            # digests first: those of the victim's keys wait
        others += rnd.on_reply(send[3], serve(store, send), None)
    assert others == [] and not rnd.decided
    retry = rnd.on_reply(victim[3], None, DOWN)       # the data replica fails
    full = [s for s in retry if s[0] != victim[0]]
    assert {s[1] for s in full} == {"get_encoded"}
    assert sorted(k for s in full for k in s[2]) == sorted(k for k in held_data for _ in range(2))
    for s in full:
        assert rnd.on_reply(s[3], serve(store, s), None) == []
    assert rnd.decided
    rnd.finish()
    assert all([s.value for s in v] == [b"v" + k] for k, v in rnd.result(0.0).items())


def test_digest_read_skips_a_replica_believed_down_as_data_replica():
    c = coordinator()
    keys = [b"key%03d" % i for i in range(100)]
    c.membership.suspect("n2", 0.0)
    rnd = c.plan_read("get_many", keys)
    for node, _m, (ks, full), _t in rnd.start():
        assert node != "n2" or full == 0
        assert all(pref(c, k)[0] == node or pref(c, k)[0] == "n2" for k in ks[:full])


@pytest.mark.parametrize("seed", range(60))
def test_digest_read_gives_what_a_full_read_gives_whatever_the_order_and_failures(seed):
    """Random replica contents (equal, missing, concurrent versions), random reply order, one replica that
    may fail every call: once complete, every key's result is the merge of what all reachable replicas hold,
    exactly like a full read, and read repair names every reachable replica that differs from it."""
    rng = random.Random(seed)
    c = coordinator()
    keys = [b"key%03d" % i for i in range(rng.randrange(64, 160))]
    store = {nid: {} for nid, _ in NODES}
    for k in keys:
        base = version("a", 1, b"v" + k)
        for n in pref(c, k):
            r = rng.random()
            if r < 0.75:
                store[n][k] = base
            elif r < 0.85:
                store[n][k] = version("b%d" % rng.randrange(2), 1, b"w%d" % rng.randrange(2), 2.0)
    dead = rng.choice([None, None, "n1", "n4"])
    rnd = c.plan_read("get_many", keys)
    pending = rnd.start()
    while pending:
        send = pending.pop(rng.randrange(len(pending)))
        if send[0] == dead:
            pending += rnd.on_reply(send[3], None, DOWN)
        else:
            pending += rnd.on_reply(send[3], serve(store, send), None)
    assert rnd.complete
    rnd.finish()                                      # R=2 of 3 with at most one replica down: every key is ok
    got = rnd.result(0.0, raw=True)
    plan = rnd.repair_plan()
    for k in keys:
        held = {n: store[n].get(k) for n in pref(c, k) if n != dead}
        want = rounds.merge_encoded(held.values())
        assert sorted(s.dot for s in got[k]) == sorted(s.dot for s in want)
        stale = {n for n, b in held.items() if {s.dot for s in (decode_siblings(b) if b else [])} != {s.dot for s in want}}
        assert {n for n, items in plan.items() if any(key == k for key, _ in items)} == stale
