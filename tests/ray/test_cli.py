"""The `raykv` command: up / status / down against the session's Ray, bench dispatch, and the demo itself."""

import os
import subprocess
import sys

import pytest

import raykv
from raykv.cli import main
from raykv.cluster.config import StoreConfig
from tests.ray.conftest import ROOT

pytestmark = pytest.mark.ray


def test_up_status_down(ray_session, store_dir, capsys):
    assert main(["up", "--name", "cli", "--nodes", "3", "--replicas", "3", "-r", "2", "-w", "2",
                 "--data-dir", store_dir, "--fsync", "batch"]) == 0
    out = capsys.readouterr().out
    assert "store 'cli'" in out and "n3" in out
    kv = raykv.connect("cli")
    assert kv.config.fsync == "batch" and StoreConfig().fsync == "periodic"
    kv.put(b"k", b"v")
    assert main(["status", "--name", "cli"]) == 0
    out = capsys.readouterr().out
    assert "3/3 nodes alive" in out and "N=3 R=2 W=2" in out
    assert main(["down", "--name", "cli"]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["status", "--name", "cli"]) == 1
    assert "StoreNotFound" in capsys.readouterr().err


def test_bench_dispatch_and_usage(capsys):
    assert main(["bench"]) == 2
    assert "usage: raykv bench {engine,cluster}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "cluster", "--help"])
    assert "usage" in capsys.readouterr().out.lower()


def test_cluster_bench_runs_every_phase_on_a_tiny_load(ray_session, monkeypatch):
    """``raykv bench cluster`` end to end at a toy size (the numbers mean nothing here): every row is produced
    with a finite ratio, and the rows with a target carry a verdict."""
    from raykv.bench import cluster as bench
    monkeypatch.setattr(bench, "SETTLE", 0.0)
    monkeypatch.setattr(bench, "QUIET", 0.0)
    rows = bench.run(ops=5, batch=20, batches=2, callers=2, nodes=3)
    names = [r["metric"] for r in rows]
    for want in ("put p50", "get p50", "put fan-out floor p50", "get fan-out floor p50", "put p50, isolated",
                 "put_many", "get_many", "put_many, one value object", "get_many, keys in SSTables", "concurrent put", "concurrent get", "put p50, fsync=batch"):
        assert want in names
    assert all(r["ratio"] > 0 for r in rows)
    assert all((r["ok"] is None) == (r["metric"] not in bench.TARGETS) for r in rows)
    assert "| put_many |" in bench.render(rows, [])


def test_demo_runs_end_to_end():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-m", "raykv.cli", "demo", "--keys", "1000", "--single", "30",
                        "--during", "100"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr[-3000:]
    assert "1000/1000 keys read back" in out
    assert "100/100 writes acknowledged" in out
    assert "hints delivered: yes" in out
    assert "100/100 of those keys read back at R=N=3" in out
    assert "ConflictError with siblings" in out and "apple,pear,plum" in out
    assert "preference lists" in out and "ownership" in out
