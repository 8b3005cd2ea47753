"""Bloom filter: no false negatives, ~1% false positives at 10 bits/key (measured), deterministic bytes."""

import os
import random

from raykv.storage import bloom


def _fp_rate(keys, probes, bits_per_key=10):
    f = bloom.BloomFilter(bloom.build(keys, bits_per_key))
    assert all(f.may_contain(bloom.key_hash(k)) for k in keys), "false negative"
    return sum(f.may_contain(bloom.key_hash(k)) for k in probes) / len(probes)


def test_false_positive_rate_about_one_percent_sequential_keys():
    keys = [b"user%012d" % i for i in range(20000)]
    probes = [b"user%012d" % i for i in range(20000, 70000)]
    rate = _fp_rate(keys, probes)
    assert 0.002 < rate < 0.015, rate


def test_false_positive_rate_about_one_percent_random_keys():
    rnd = random.Random(5)
    keys = [rnd.randbytes(16) for _ in range(20000)]
    probes = [rnd.randbytes(16) for _ in range(50000)]
    rate = _fp_rate(keys, probes)
    assert 0.002 < rate < 0.015, rate


def test_fewer_bits_more_false_positives():
    keys = [b"k%d" % i for i in range(5000)]
    probes = [b"q%d" % i for i in range(20000)]
    assert _fp_rate(keys, probes, 4) > 2 * _fp_rate(keys, probes, 10)


def test_deterministic_across_processes():
    # the filter is persisted: its bytes must not depend on PYTHONHASHSEED or the process
    keys = [b"a", b"bb", b"ccc"]
    assert bloom.build(keys) == bloom.build(list(keys))
    assert bloom.key_hash(b"hello") == 0x062C0215 << 32 | 0x3610A686
    import subprocess, sys
    out = subprocess.run([sys.executable, "-c",
                          "from raykv.storage import bloom; print(bloom.build([b'a', b'bb', b'ccc']).hex())"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == bloom.build(keys).hex()
