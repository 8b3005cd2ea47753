"""raykv.validation without Ray: the key checks every API call starts with."""

from __future__ import annotations

import pytest

from raykv.errors import InvalidKey, KeyTooLarge
from raykv.validation import check_key, check_keys


def test_check_keys_fast_path_equals_check_key_per_key():
    keys = [b"b", b"a", b"b", b"c" * 8]
    assert check_keys(keys, 8) == [b"b", b"a", b"c" * 8]            # duplicates dropped, first order kept
    assert check_keys(iter(keys), 8) == check_keys(tuple(keys), 8) == check_keys(keys, 8)
    mixed = ["é", bytearray(b"x"), b"y", "é"]
    assert check_keys(mixed, 8) == [check_key(k, 8) for k in mixed[:3]]
    assert check_keys([], 8) == []


@pytest.mark.parametrize("keys, error", [([b"ok", b""], InvalidKey), ([b"ok", b"x" * 9], KeyTooLarge),
                                         ([b"ok", 3], InvalidKey), ([b"ok", None], InvalidKey)])
def test_check_keys_rejects_what_check_key_rejects(keys, error):
    with pytest.raises(error):
        check_keys(keys, 8)


def test_a_blind_writes_version_built_from_its_dot_is_the_same_version():
    """``put_many`` returns ``Version._of_blind(dot, stamp)`` per key (the clock is built on first use): it must be
    indistinguishable from ``Version(clock)`` of the same write: equal, same hash, same bytes, same pickle, and
    accepted as a ``context``."""
    import pickle

    from raykv.cluster.vclock import VClock
    from raykv.types import Version
    from raykv.validation import check_context
    eager = Version(VClock._raw({"c1.ab": 42}, {"c1.ab": 12.5}))
    lazy = Version._of_blind(("c1.ab", 42), 12.5)
    assert lazy._vc is None                                  # nothing built yet
    assert lazy == eager and hash(lazy) == hash(eager) and repr(lazy) == repr(eager)
    assert lazy.to_bytes() == eager.to_bytes() and Version.from_bytes(lazy.to_bytes()) == eager
    assert pickle.loads(pickle.dumps(Version._of_blind(("c1.ab", 42), 12.5))) == eager
    assert check_context(Version._of_blind(("c1.ab", 42), 12.5)) == eager._clock
    assert lazy != Version._of_blind(("c1.ab", 43), 12.5)
