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
