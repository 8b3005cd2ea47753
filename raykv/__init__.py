"""raykv: a Dynamo-style distributed key-value store on Ray."""

from raykv.errors import (ConflictError, CorruptionError, InvalidArgument, InvalidKey, KeyTooLarge,
                          NodeUnavailable, Overloaded, QuorumNotReached, RayKVError, StoreNotFound,
                          ValueTooLarge)

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import raykv` must not import ray (storage users, CLI start-up)
    if name in ("start", "connect", "KV", "Version", "Versioned", "ClusterStatus", "NodeStatus"):
        from raykv import api
        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["start", "connect", "KV", "Version", "Versioned", "ClusterStatus", "NodeStatus",
           "RayKVError", "QuorumNotReached", "ConflictError", "ValueTooLarge", "KeyTooLarge",
           "InvalidKey", "InvalidArgument", "StoreNotFound", "CorruptionError", "Overloaded",
           "NodeUnavailable"]
