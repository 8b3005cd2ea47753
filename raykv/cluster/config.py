"""StoreConfig: every tunable of a store, validated once, shared by node, coordinator and API."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import InvalidArgument


RENAMED = {"bulk_read_fanout": "read_fanout"}    # old field name -> new (sessions 6-7 asked R for get_many only)


@dataclass(frozen=True)
class StoreConfig:
    """Immutable store settings; ``validate()`` raises ``InvalidArgument`` with a fix-it message."""

    name: str = "default"
    replicas: int = 3                     # N
    read_quorum: int = 2                  # R default
    write_quorum: int = 2                 # W default
    tokens_per_node: int = 256            # virtual nodes per unit of weight
    max_key_bytes: int = 1024
    max_value_bytes: int = 10 * 1024
    request_timeout: float = 5.0          # seconds, per replica call
    read_fanout: str = "quorum"           # get and get_many ask R replicas per key ("quorum", Cassandra) or all N
                                          # ("all", Dynamo and Riak: the extra replies feed read repair)
    write_fanout: str = "quorum"          # a single-key put writes W replicas first, the others once W acked
                                          # ("quorum"), or all N at once ("all", Dynamo, Cassandra)
    speculative_retry: float | str = "99p"  # when a read short of R (a put short of W) also asks the spare replicas:
                                            # "NNp" (that percentile of recent requests of its kind) or seconds
    gossip_interval: float = 0.5
    phi_threshold: float = 8.0
    hint_replay_interval: float = 1.0
    anti_entropy_interval: float = 10.0
    max_hints: int = 100_000              # per node; beyond it sloppy writes fail with Overloaded
    tombstone_grace: float = 86400.0      # seconds a tombstone is kept before GC
    dc_replicas: dict[str, int] | None = None   # replicas per datacenter, e.g. {"us": 2, "eu": 1}
    local_datacenter: str | None = None   # the coordinator's DC for local_quorum
    fsync: str = "periodic"               # each node's commit log: "periodic" (fsync every fsync_interval; acks after
                                          # the append, as Cassandra, Riak and Redis do by default), "batch" (ack after
                                          # a group-commit fsync), "always", "never": see LSMStore
    fsync_interval: float = 0.1           # seconds between a "periodic" node's fsyncs: what a power loss can take
    memtable_bytes: int = 4 << 20
    cache_bytes: int = 16 << 20
    extra: dict = field(default_factory=dict)

    def with_(self, **changes) -> "StoreConfig":
        return replace(self, **changes)

    @classmethod
    def from_record(cls, fields: dict) -> "StoreConfig":
        """The config a store's record (``store.json``) holds, its older field names read as today's
        (``RENAMED``): a data_dir written by an earlier raykv re-opens."""
        fields = dict(fields)
        for old, new in RENAMED.items():
            if old in fields:
                fields.setdefault(new, fields.pop(old))
        return cls(**fields)

    def validate(self) -> "StoreConfig":
        n = self.replicas
        if not isinstance(n, int) or n < 1:
            raise InvalidArgument(f"replicas (N) must be an integer >= 1, got {n!r}")
        for label, q in (("read_quorum (R)", self.read_quorum), ("write_quorum (W)", self.write_quorum)):
            if not isinstance(q, int) or q < 1:
                raise InvalidArgument(f"{label} must be an integer >= 1, got {q!r}")
            if q > n:
                raise InvalidArgument(f"{label}={q} exceeds replicas N={n}; use a value between 1 and {n}")
        if self.max_key_bytes < 1 or self.max_value_bytes < 0:
            raise InvalidArgument("max_key_bytes must be >= 1 and max_value_bytes >= 0")
        if self.tokens_per_node < 1:
            raise InvalidArgument(f"tokens_per_node must be >= 1, got {self.tokens_per_node}")
        if self.request_timeout <= 0:
            raise InvalidArgument(f"request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.read_fanout not in ("quorum", "all"):
            raise InvalidArgument(f"read_fanout must be 'quorum' or 'all', got {self.read_fanout!r}")
        if self.write_fanout not in ("quorum", "all"):
            raise InvalidArgument(f"write_fanout must be 'quorum' or 'all', got {self.write_fanout!r}")
        spec = self.speculative_retry
        if isinstance(spec, str):
            try:
                pct = float(spec[:-1]) if spec.endswith("p") else None
            except ValueError:
                pct = None
            if pct is None or not 0 < pct < 100:
                raise InvalidArgument(f"speculative_retry must be a percentile like '99p' (0 < p < 100) or a positive "
                                      f"number of seconds, got {spec!r}")
        elif isinstance(spec, bool) or not isinstance(spec, (int, float)) or not spec > 0:
            raise InvalidArgument(f"speculative_retry must be a percentile like '99p' or a positive number of "
                                  f"seconds, got {spec!r}")
        if self.dc_replicas is not None:
            if any((not isinstance(v, int)) or v < 1 for v in self.dc_replicas.values()):
                raise InvalidArgument(f"dc_replicas values must be integers >= 1, got {self.dc_replicas}")
            if sum(self.dc_replicas.values()) != n:
                raise InvalidArgument(f"dc_replicas {self.dc_replicas} must add up to replicas N={n}")
        if self.fsync not in ("always", "batch", "periodic", "never"):
            raise InvalidArgument(f"fsync must be 'always', 'batch', 'periodic' or 'never', got {self.fsync!r}")
        if isinstance(self.fsync_interval, bool) or not isinstance(self.fsync_interval, (int, float)) \
                or not self.fsync_interval > 0:
            raise InvalidArgument(f"fsync_interval must be a positive number of seconds, got {self.fsync_interval!r}")
        return self
