"""Hypothesis state machine: LSMStore against a dict model, with shrinking to a minimal failing sequence."""

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raykv.storage import LSMStore

KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"ab", b"ba", b"\x00", b"\xff" * 3])
VALUES = st.binary(max_size=300)


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


class LSMMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="raykv-stateful-")
        self.clock = Clock()
        self.opts = dict(fsync="never", memtable_bytes=600, cache_bytes=2048, block_bytes=128,
                         clock=self.clock, l0_trigger=2, l0_stop=4, table_bytes=512,
                         level_base_bytes=1024, level_multiplier=2)
        self.db = LSMStore(self.dir, **self.opts)
        self.model = {}   # key -> (value, expire_at or None)

    def _live(self, key):
        v, exp = self.model.get(key, (None, None))
        return v if exp is None or exp > self.clock.now else None

    @rule(key=KEYS, value=VALUES)
    def put(self, key, value):
        self.db.put(key, value)
        self.model[key] = (value, None)

    @rule(key=KEYS, value=VALUES, ttl=st.sampled_from([1.0, 5.0]))
    def put_ttl(self, key, value, ttl):
        self.db.put(key, value, ttl=ttl)
        self.model[key] = (value, self.clock.now + ttl)

    @rule(key=KEYS)
    def delete(self, key):
        self.db.delete(key)
        self.model.pop(key, None)

    @rule(items=st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), min_size=1, max_size=5))
    def batch(self, items):
        self.db.write_batch(items)
        for k, v in items:
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = (v, None)

    @rule(key=KEYS)
    def get(self, key):
        assert self.db.get(key) == self._live(key)

    @rule(a=KEYS, b=KEYS)
    def scan(self, a, b):
        lo, hi = min(a, b), max(a, b)
        want = sorted((k, self._live(k)) for k in self.model if lo <= k < hi and self._live(k) is not None)
        assert list(self.db.scan(lo, hi)) == want

    @rule(dt=st.sampled_from([0.5, 2.0, 10.0]))
    def tick(self, dt):
        self.clock.now += dt

    @rule()
    def flush(self):
        self.db.flush()

    @rule()
    def compact(self):
        self.db.compact()

    @rule()
    def reopen(self):
        self.db.close()
        self.db = LSMStore(self.dir, **self.opts)

    @invariant()
    def full_scan_matches(self):
        want = sorted((k, self._live(k)) for k in self.model if self._live(k) is not None)
        assert list(self.db.scan()) == want

    def teardown(self):
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LSMMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=50, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_lsm_state_machine = LSMMachine.TestCase
