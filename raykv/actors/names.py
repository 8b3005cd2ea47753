"""Names of every raykv actor in the Ray namespace ``raykv``: one place, so drivers and actors agree.

A store ``S`` is made of named, detached actors:

- ``raykv:S:meta``           the store manager (config, membership, placement; not on the data path)
- ``raykv:S:node:<id>``      one per storage node (owns ``data_dir/<id>``)
- ``raykv:S:coord:<ray12>``  one coordinator per Ray machine hosting storage (``ray12`` = Ray node id prefix)
"""

from __future__ import annotations

NAMESPACE = "raykv"
STORAGE_RESOURCE = "raykv_storage"   # custom resource marking Ray machines that should host storage


def meta_name(store: str) -> str:
    return f"raykv:{store}:meta"


def node_name(store: str, node_id: str) -> str:
    return f"raykv:{store}:node:{node_id}"


def coord_name(store: str, ray_node_id: str) -> str:
    return f"raykv:{store}:coord:{ray_node_id[:12]}"


def unwrap(exc: BaseException) -> BaseException:
    """The user-facing exception inside a Ray ``RayTaskError`` (a remote ``RayKVError`` is re-raised as is)."""
    from raykv.errors import RayKVError
    seen = 0
    while seen < 5 and not type(exc).__module__.startswith("raykv") and getattr(exc, "cause", None) is not None:
        cause = exc.cause
        if isinstance(cause, RayKVError) or isinstance(cause, (KeyError, ValueError, TypeError)):
            return cause
        exc = cause
        seen += 1
    return exc
