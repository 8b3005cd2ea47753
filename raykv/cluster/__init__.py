"""Distributed logic of raykv, pure Python (no ``import ray``): ring, versioning,
quorum, membership and gossip, Merkle trees, hints, node and coordinator logic."""
