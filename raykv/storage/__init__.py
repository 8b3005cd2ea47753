"""The single-node LSM storage engine (no ``import ray``): ``LSMStore`` and its parts."""

from raykv.storage.engine import LSMStore

__all__ = ["LSMStore"]
