"""Validation at the API boundary: every key, value and option is checked before anything crosses Ray.

Each check returns the normalised value (``str`` keys UTF-8 encoded, ``bytearray`` values copied to
``bytes``) or raises the typed error whose message says what to do. Cost: O(len(key) + len(value)).
"""

from __future__ import annotations

from typing import Mapping

from raykv.cluster.config import StoreConfig
from raykv.errors import InvalidArgument, InvalidKey, KeyTooLarge, ValueTooLarge
from raykv.types import Version


def check_key(key, max_key_bytes: int) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    elif not isinstance(key, bytes):
        raise InvalidKey(f"keys must be str or bytes, got {type(key).__name__}; encode it first (e.g. str(x))")
    if not key:
        raise InvalidKey("keys must not be empty; use at least one byte")
    if len(key) > max_key_bytes:
        raise KeyTooLarge(f"key is {len(key)} bytes, the store allows at most {max_key_bytes} "
                          f"(max_key_bytes); hash long keys or raise max_key_bytes in raykv.start")
    return key


def check_keys(keys, max_key_bytes: int) -> list[bytes]:
    """``[check_key(k) for k in keys]`` with duplicates dropped (first occurrence kept). A list of non-empty
    bytes within the limit (the usual ``get_many``) is checked by C-level passes, not key by key."""
    if not isinstance(keys, (list, tuple)):
        keys = list(keys)
    if keys and set(map(type, keys)) == {bytes} and min(map(len, keys)) > 0 and max(map(len, keys)) <= max_key_bytes:
        return list(dict.fromkeys(keys))
    return list(dict.fromkeys(check_key(k, max_key_bytes) for k in keys))


def check_value(value, max_value_bytes: int) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise InvalidArgument(f"values must be bytes, got {type(value).__name__}; encode it first "
                              f"(e.g. s.encode() or pickle.dumps(obj))")
    if len(value) > max_value_bytes:
        raise ValueTooLarge(f"value is {len(value)} bytes, the store allows at most {max_value_bytes} "
                            f"(max_value_bytes); split it over several keys or raise max_value_bytes in raykv.start")
    return value


def check_items(items, config: StoreConfig) -> dict[bytes, bytes]:
    """put_many's items validated into {key: value}; plain bytes pairs within limits take a fast path."""
    pairs = items.items() if isinstance(items, Mapping) else items
    mk, mv = config.max_key_bytes, config.max_value_bytes
    out = {}
    for k, v in pairs:
        if type(k) is bytes and type(v) is bytes and 0 < len(k) <= mk and len(v) <= mv:
            out[k] = v
        else:
            out[check_key(k, mk)] = check_value(v, mv)
    return out


def check_ttl(ttl) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise InvalidArgument(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def check_context(context):
    if context is None:
        return None
    if not isinstance(context, Version):
        raise InvalidArgument(f"context must be a raykv.Version returned by put/get_versions/ConflictError, "
                              f"got {type(context).__name__}")
    return context._clock
