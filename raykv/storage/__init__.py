"""The single-node LSM storage engine (no ``import ray``): ``LSMStore`` and its parts."""

from .engine import LSMStore

__all__ = ["LSMStore"]
