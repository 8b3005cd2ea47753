"""Manifest: the durable record of which tables are live (per level), the log number and the sequence.

Reference: LevelDB ``db/version_set.cc`` keeps an append-only MANIFEST of edits plus CURRENT;
this engine rewrites one small snapshot file instead, atomically: write ``MANIFEST.tmp``,
fsync it, rename over ``MANIFEST``, fsync the directory. A reader sees the old or the new
state, never a mix. Callers delete obsolete files only after ``save`` returns.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field

from ..errors import CorruptionError
from . import format as F
from .sstable import TableMeta


def fsync_dir(path: str) -> None:
    """Make renames/creates/unlinks in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ManifestState:
    """Live tables per level (level 0 newest first), next file number, oldest live log, last sequence."""
    next_file: int = 1
    log_number: int = 0
    last_seq: int = 0
    levels: list[list[TableMeta]] = field(default_factory=list)


def _meta_to_json(m: TableMeta) -> dict:
    d = asdict(m)
    d["smallest"] = m.smallest.hex()
    d["largest"] = m.largest.hex()
    return d


def _meta_from_json(d: dict) -> TableMeta:
    d = dict(d)
    d["smallest"] = bytes.fromhex(d["smallest"])
    d["largest"] = bytes.fromhex(d["largest"])
    return TableMeta(**d)


def encode(state: ManifestState) -> bytes:
    body = json.dumps({
        "version": F.MANIFEST_VERSION,
        "next_file": state.next_file,
        "log_number": state.log_number,
        "last_seq": state.last_seq,
        "levels": [[_meta_to_json(m) for m in level] for level in state.levels],
    }, separators=(",", ":")).encode()
    return F.MANIFEST_HEADER.pack(F.MANIFEST_MAGIC, zlib.crc32(body), len(body)) + body


def decode(data: bytes, path: str) -> ManifestState:
    if len(data) < F.MANIFEST_HEADER.size:
        raise CorruptionError(path, 0, "manifest shorter than its header")
    magic, crc, length = F.MANIFEST_HEADER.unpack_from(data, 0)
    if magic != F.MANIFEST_MAGIC:
        raise CorruptionError(path, 0, "bad manifest magic")
    body = data[F.MANIFEST_HEADER.size:]
    if len(body) != length or zlib.crc32(body) != crc:
        raise CorruptionError(path, F.MANIFEST_HEADER.size, "manifest checksum or length mismatch")
    try:
        d = json.loads(body)
        if d["version"] != F.MANIFEST_VERSION:
            raise ValueError(f"unsupported manifest version {d['version']}")
        return ManifestState(d["next_file"], d["log_number"], d["last_seq"],
                             [[_meta_from_json(m) for m in level] for level in d["levels"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(path, F.MANIFEST_HEADER.size, f"malformed manifest: {exc}") from None


def save(dirpath: str, state: ManifestState) -> None:
    """Atomically replace the manifest (temp + fsync + rename + fsync dir). Cost O(number of tables)."""
    save_encoded(dirpath, encode(state))


def save_encoded(dirpath: str, encoded: bytes) -> None:
    """``save`` of an already-encoded state (the engine encodes under its lock, saves outside it)."""
    final = os.path.join(dirpath, F.MANIFEST_NAME)
    tmp = final + F.TMP_SUFFIX
    with open(tmp, "wb") as f:
        f.write(encoded)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(dirpath)


def load(dirpath: str) -> ManifestState | None:
    """The saved state, or None for a directory that holds no store yet."""
    path = os.path.join(dirpath, F.MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return decode(data, path)
