"""Smoke test of `raykv bench engine` (raykv/bench/engine/): tiny sizes, every workload row printed."""

from __future__ import annotations

import re

from raykv.bench import engine as bench

NEVER_WORKLOADS = ["fillseq", "fillrandom", "overwrite", "readrandom", "readrandom-reopen", "readmissing", "scan"]


def _rows(out: str) -> dict[tuple[str, str, str, str], int]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"[\d,]+", cells[0]) and re.fullmatch(r"[\d,]+", cells[4]):
            rows[(cells[0], cells[1], cells[2], cells[3])] = int(cells[4].replace(",", ""))
    return rows


def test_bench_engine_prints_every_workload(tmp_path, capsys):
    out_file = tmp_path / "report.md"
    rc = bench.main(["--num", "2000", "--sync-num", "50", "--no-rss", "--engines", "raykv", "--quiet",
                     "--dir", str(tmp_path / "scratch"), "--out", str(out_file)])
    assert rc == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    expected = [("2,000", "never", w, "1") for w in NEVER_WORKLOADS] + [
        ("50", "batch", "fillrandom-sync", "8"), ("50", "always", "fillrandom-sync", "1"),
        ("50", "always", "fillrandom-sync", "8"), ("50", "periodic", "fillrandom-sync", "1"),
        ("50", "periodic", "fillrandom-sync", "8")]
    for key in expected:
        assert key in rows, f"missing row {key} in:\n{out}"
        assert rows[key] > 0
    assert "| entries | fsync | workload | threads | raykv ops/s |" in out
    assert "raykv batch x8 / always x1" in out          # the group-commit target line
    assert "raykv periodic x8 / batch x8" in out        # what the store's default fsync policy buys
    assert out_file.read_text().strip() == out.strip()  # --out writes the same report


def test_bench_engine_rejects_unknown_policy(capsys):
    assert bench.main(["--policies", "sometimes", "--engines", "raykv", "--no-rss", "--quiet"]) == 2
    assert "unknown engine or policy" in capsys.readouterr().err
