"""ReadRound: one read request's fan-out as plain callbacks (see ``rounds`` for what rounds are and who drives
them).

Reads send ONE ``get_hashed`` per node (``get_encoded`` with the keys' digests); replies stay encoded until the
quorum is met, identical replies are decoded once, and ``repair_plan()`` names the stale replicas once every replica answered (read repair). A bulk
read in count mode asks R replicas per key and keeps the others as spares (the class docstring).
"""

from __future__ import annotations

from typing import Callable

from .codec import SLOW, blind_value, decode_siblings, encode_siblings
from .config import StoreConfig
from .membership import Membership
from .quorum import SLOT_BITS, KeyTallies, Quorum, read_repair_plan
from .ring import key_digests
from .rounds import Send, _fan, _group, _Round, _share
from .vclock import Sibling, live, reconcile

READ_CHUNK_BYTES = 200     # bytes per key of a read reply assumed until some replies were seen (``ReplySize``)
REPLY_KEY_MIN = 32         # ... and never less than this (pickle framing and the stored header of a value)
READ_ATTEMPTS = 3          # a node whose read failed is asked again (reads are idempotent) up to this many times


class ReplySize:
    """Bytes per key of recent read replies (an exponentially weighted mean, weight ``alpha`` per reply), which
    size read calls so each reply stays under the transport's ``max_payload``. One per coordinator, shared by
    its rounds. Why learned and not fixed: a fixed 200 bytes a key cut a 500-key share of 100-byte values
    (~75 KB of reply) into two calls. O(1) per reply (plus one C-level pass over its items)."""

    __slots__ = ("per_key", "alpha")

    def __init__(self, per_key: float = READ_CHUNK_BYTES, alpha: float = 0.2) -> None:
        self.per_key, self.alpha = float(per_key), alpha

    def observe(self, answers: list) -> None:
        """One reply's encoded answers (None for an absent key)."""
        if answers:
            sample = sum(map(len, filter(None, answers))) / len(answers) + 5     # + pickle framing per item
            self.per_key += self.alpha * (max(REPLY_KEY_MIN, sample) - self.per_key)

    def keys_per_call(self, max_payload: int) -> int:
        """Keys one read call may ask for, its reply estimated under ``max_payload`` bytes."""
        return max(1, int(max_payload // max(REPLY_KEY_MIN, self.per_key)))


def merge_encoded(blobs) -> list[Sibling]:
    """``vclock.reconcile`` of encoded sibling sets (None/b"" = absent); identical bytes are decoded once."""
    distinct = {b for b in blobs if b}
    if not distinct:
        return []
    if len(distinct) == 1:
        return decode_siblings(distinct.pop())
    return reconcile(*(decode_siblings(b) for b in distinct))


_MISSING = object()


class ReadRound(_Round):
    """One read request over ``keys`` (distinct), decided after R replies per key.

    Who is asked: with ``fanout`` unset, every replica (Dynamo, Riak: the late replies feed read repair). A round
    with ``fanout`` set (``Coordinator.plan_read``: a ``get`` or ``get_many`` in count mode with
    ``read_fanout="quorum"``, the default) asks only the first ``fanout`` (= R) replicas of each key that are up,
    in ring order, as Cassandra does; the others are *spares*. A key's next spare is asked at once when a
    replica it was asked of fails, and every undecided key's next spare when its driver calls ``speculate()``
    (once, ``config.speculative_retry`` after the round started waiting: Cassandra's speculative retry). Why:
    asking N replicas costs N/R times the calls, lookups and replies for one more copy to compare. A bulk read
    is bound by CPU (docs/benchmarks.md, "Session 6"); a single-key get pays the third call in latency on a
    shared host (3 calls, wait for 2: 2.2-3.0x a raw call; 2 calls: 1.6-1.8x, "Session 8"). Read repair then
    covers the replicas asked; the copy nobody asked is repaired by anti-entropy, as in Cassandra 4.

    One node *rests* (``rest``, rotated by the coordinator): when the round's keys span every node of the
    ring, each key whose replicas include the resting node asks its other up replicas first and keeps that
    node as a spare. With R < N every key still has R others, so the round makes one call fewer (4, not 5,
    for 1,000 keys on 5 nodes at N=3, R=2) for the same lookups: the per-call cost (~0.3 ms of the callee's
    CPU on Ray, plus the driver's send and receive) is paid once less (docs/benchmarks.md, "Session 7").

    A call's tag is ``(node, key indices, slots, attempt)``. Replies stay encoded (``chunks``, as they
    came); as each arrives, a key's first answer is decoded and later answers are only compared with it
    bytewise, so the decoding overlaps the wait for the other replies instead of following the last one
    (a 1,000-key ``get_many``, median of 60: 12.5-13.9 -> 11.3-11.9 ms, same driver CPU)."""

    def __init__(self, op: str, keys: list[bytes], q: Quorum, membership: Membership, config: StoreConfig,
                 now: float, counters: dict, on_failure: Callable[[str], None]) -> None:
        super().__init__(op, q, membership, config, now, counters, on_failure)
        self.keys = keys
        self.fanout: int | None = None                # replicas asked per key up front; None: all (set before start)
        self.rest: str | None = None                  # fanout rounds: a node asked only as a spare (set before start)
        self.speculated = False
        self.chunks: list[tuple[str, list[int], list]] = []    # (node, key indices, encoded replies)
        self.attempts: dict[str, int] = {}
        self._order: list | None = None               # per key: its positions, asked first, then spares (fanout only)
        self._next: list[int] | None = None           # per key: where in its order the next spare is
        self._first: list = [_MISSING] * len(keys)    # per key: the first answer, encoded
        self._sibs: list = [None] * len(keys)         # per key: that answer decoded (None: not yet / malformed)
        self._mixed: set[int] = set()                 # keys whose answers differ: merged in result()
        self._fast: list | None = None                # per key: the value of a simple first answer (``want_values``)
        self.digests: list[bytes] | None = None       # the keys' ``ring.key_digests``, set by start()
        self.reply_size = ReplySize()                 # the coordinator's, shared by its rounds (set before start)
        counters["ops"] += 1
        counters["gets"] += 1
        counters["keys_read"] += len(keys)

    def want_values(self) -> None:
        """Before ``start``: the caller will read ``values()``, not ``result()``; a first answer of the simple
        shape (one live sibling, no expiry, no context: ``codec.blind_value``) is then kept as its value and
        never decoded into a ``Sibling``."""
        self._fast = [None] * len(self.keys)

    def start(self) -> list[Send]:
        cfg = self.config
        self.digests = key_digests(self.keys)
        prefs = self.m.ring("read").preference_tuples(self.keys, cfg.replicas, cfg.dc_replicas, self.digests)
        self.tallies = KeyTallies(self.q, prefs, self.dc_of)
        groups = _fan(prefs)[0] if self.fanout is None else self._fan_first(prefs, self.fanout)
        return self._asks(groups, 1)

    def _fan_first(self, prefs: list[tuple], f: int) -> dict:
        """Like ``_fan``, but each key to its first ``f`` replicas that are up (then the down ones, if fewer are
        up), the resting node (``rest``) after the other up ones when the keys span every node of the ring;
        records every key's order of positions for its spares. O(keys)."""
        up = self.up
        order_of: list = [None] * len(prefs)
        groups: dict[str, tuple[list, list]] = {}
        by_pref = _group(prefs)
        rest = self.rest
        if rest is not None and (not up[rest] or set().union(*by_pref) != set(self.m.ring("read").nodes)):
            rest = None                               # resting saves a call only if every node would be asked
        for p, idx in by_pref.items():
            # stable sort: ring order among equals
            order = tuple(sorted(range(len(p)), key=lambda j: (not up[p[j]], p[j] == rest)))
            for i in idx:
                order_of[i] = order
            for j in order[:f]:
                g = _share(groups, p[j])
                g[0].extend(idx)
                g[1].extend([i << SLOT_BITS | j for i in idx])
        self._order, self._next = order_of, [f] * len(prefs)
        return groups

    def _asks(self, groups: dict[str, tuple[list, list]], attempt: int) -> list[Send]:
        """One ``get_hashed`` per node of ``groups``, split so each reply fits ``max_payload`` (``ReplySize``)."""
        step = self.reply_size.keys_per_call(self.max_payload) if self.max_payload else None
        return [self._ask(node, idx[lo:lo + step] if step else idx, slots[lo:lo + step] if step else slots, attempt)
                for node, (idx, slots) in groups.items() for lo in range(0, len(idx), step or len(idx))]

    def _ask(self, node: str, idx: list[int], slots: list[int], attempt: int) -> Send:
        """One ``get_hashed`` call: the keys with their digests, which the node then need not compute."""
        self.attempts[node] = max(self.attempts.get(node, 0), attempt)
        self.outstanding += 1
        payload = (list(map(self.keys.__getitem__, idx)), b"".join(map(self.digests.__getitem__, idx)))
        return (node, "get_hashed", payload, (node, idx, slots, attempt))

    def _spill(self, idx) -> tuple[dict, list[int]]:
        """Each undecided key of ``idx`` to its next spare: ({node: (key indices, slots)}, [undecided keys with no
        spare left])."""
        t, order, nxt = self.tallies, self._order, self._next
        groups: dict[str, tuple[list, list]] = {}
        stuck = []
        for i in idx:
            if t.decision(i) != "wait":
                continue
            o, k = order[i], nxt[i]
            if k >= len(o):
                stuck.append(i)
                continue
            nxt[i] = k + 1
            j = o[k]
            g = _share(groups, t.prefs[i][j])
            g[0].append(i)
            g[1].append(i << SLOT_BITS | j)
        return groups, stuck

    def speculate(self) -> list[Send]:
        """The calls that ask every undecided key's next spare replica; at most once per round, and nothing for a
        round that asked every replica already. For a driver whose round is not decided after
        ``config.speculative_retry`` seconds: a slow or silently dead replica costs that, not a timeout."""
        if self.speculated or self._order is None or self.decided:
            return []
        self.speculated = True
        groups, _ = self._spill(range(len(self.keys)))
        if groups:
            self.counters["speculative_reads"] += 1
        return self._asks(groups, 1)

    def on_reply(self, tag, res, exc: BaseException | None) -> list[Send]:
        """Keep a node's encoded answers. A failed call's undecided keys go to their next spare (fanout rounds);
        keys with none left are asked of the same node again (``READ_ATTEMPTS``, reads are idempotent)."""
        self.outstanding -= 1
        node, idx, slots, attempt = tag
        t = self.tallies
        if exc is not None:
            self.failed_node(node)
            sends: list[Send] = []
            if self._order is not None:
                groups, stuck = self._spill(idx)
                sends = self._asks(groups, 1)
                keep = set(stuck)
                for i, s in zip(idx, slots):
                    if i not in keep:
                        t.report(s, False)
                slots = [s for i, s in zip(idx, slots) if i in keep]
                idx = stuck
                if not idx:
                    return sends
            if attempt < READ_ATTEMPTS and any(t.decision(i) == "wait" for i in idx):
                return sends + [self._ask(node, idx, slots, attempt + 1)]
            for s in slots:
                t.report(s, False)
            return sends
        self.chunks.append((node, idx, res))
        self.reply_size.observe(res)
        self._absorb(idx, res)
        t.ack_slots(slots)
        return []

    def _absorb(self, idx: list[int], res: list) -> None:
        first, sibs, mixed, fast = self._first, self._sibs, self._mixed, self._fast
        for i, b in zip(idx, res):
            f = first[i]
            if f is _MISSING:
                first[i] = b
                if b:
                    if fast is not None:
                        v = blind_value(b)
                        if v is not SLOW:
                            fast[i] = v
                            continue
                    try:
                        sibs[i] = decode_siblings(b)
                    except ValueError:
                        pass                   # left None: result() decodes again and raises
                else:
                    sibs[i] = []
            elif f != b:
                mixed.add(i)

    @property
    def answered(self) -> int:
        """Replies received (one per node call)."""
        return len(self.chunks)

    def _answers(self, keys: set[int]) -> dict[int, dict]:
        """{key index: {node: encoded answer}} for ``keys``. O(replies)."""
        per: dict[int, dict] = {i: {} for i in keys}
        if per:
            for node, idx, res in self.chunks:
                for i, b in zip(idx, res):
                    if i in per:
                        per[i][node] = b
        return per

    def result(self, now: float, raw: bool = False) -> dict[bytes, list[Sibling]]:
        """The reconciled siblings of every key from the replies so far (live ones only unless ``raw``);
        identical replies are decoded once."""
        per = self._answers(self._mixed)
        out = {}
        for i, key in enumerate(self.keys):
            merged = self._siblings_of(i, per)
            if len(merged) == 1 and i not in per:   # the usual key: one version; live unless a tombstone or expiring
                s0 = merged[0]
                if raw or (s0.value is not None and s0.expires_at is None):
                    out[key] = merged
                    continue
            out[key] = merged if raw else live(merged, now)
        return out

    def _siblings_of(self, i: int, per: dict[int, dict]) -> list[Sibling]:
        """Key ``i``'s siblings from the replies so far: the merge of its differing answers (``per``, from
        ``_answers``), else its first answer decoded (at most once); [] before any answer."""
        if i in per:
            return merge_encoded(per[i].values())
        merged = self._sibs[i]
        if merged is None:                 # no answer yet, or malformed bytes (decode raises ValueError)
            b = self._first[i]
            merged = decode_siblings(b) if b is not _MISSING and b else []
        return merged

    def values(self, now: float) -> tuple[dict[bytes, bytes], dict[bytes, list[Sibling]]]:
        """What a ``get_many`` returns, without a ``Sibling`` per key where it can (``want_values``):
        ({key: value} of the keys with one live version, {key: live siblings} of the keys with several: the
        caller resolves those). Absent, deleted and expired keys are in neither."""
        fast = self._fast
        if fast is None:
            raise RuntimeError("values() needs want_values() before start()")
        per = self._answers(self._mixed)
        vals: dict[bytes, bytes] = {}
        conflicts: dict[bytes, list[Sibling]] = {}
        for i, key in enumerate(self.keys):
            v = fast[i]
            if v is not None and i not in per:
                vals[key] = v
                continue
            merged = live(self._siblings_of(i, per), now)
            if len(merged) == 1:
                vals[key] = merged[0].value
            elif merged:
                conflicts[key] = merged
        return vals, conflicts

    def repair_plan(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """{stale node: [(key, merged encoded siblings)]}; keys whose replicas answered identical bytes cost
        one comparison. Meant for when the round is ``complete``."""
        pushes: dict[str, list] = {}
        for i, rep in self._answers(self._mixed).items():
            merged, stale = read_repair_plan({node: decode_siblings(b) if b else [] for node, b in rep.items()})
            if stale:
                blob = encode_siblings(merged)
                for node in stale:
                    pushes.setdefault(node, []).append((self.keys[i], blob))
        return pushes
