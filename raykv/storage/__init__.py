"""The single-node LSM storage engine (no ``import ray``)."""
