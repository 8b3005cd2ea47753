"""LatencyWindow: the durations of the last requests of one kind, and their percentiles.

What Cassandra's ``speculative_retry = '99p'`` reads: a read still short of R replies after the 99th
percentile of recent reads of its kind (a coordinator keeps one window for single-key gets, one for bulk
rounds) asks the spare replicas (``ReadRound.speculate``), instead of after a fixed
delay that is too long on a fast cluster and too short on a loaded one. Reference: Cassandra
``SpeculativeRetryPolicy`` / ``PercentileSpeculativeRetryPolicy`` (a per-table latency histogram there; a
ring buffer of raw samples here, small enough to sort).

Cost: ``add`` is O(1); ``percentile`` sorts the window (``size`` samples) at most once every
``REFRESH`` added samples and answers from the sorted copy otherwise (~50 us per sort of 1,024 floats).
"""

from __future__ import annotations

MIN_SAMPLES = 20      # fewer samples than this: no percentile (the caller falls back to a fixed delay)
REFRESH = 32          # samples added between two sorts of the window


class LatencyWindow:
    """The last ``size`` durations (seconds) added; percentiles over them. Not thread-safe (a coordinator's
    state: its callers hold its lock)."""

    __slots__ = ("size", "_buf", "_next", "_sorted", "_stale")

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        self.size = size
        self._buf: list[float] = []
        self._next = 0                      # where the next sample goes once the buffer is full
        self._sorted: list[float] | None = None
        self._stale = 0                     # samples added since ``_sorted`` was built

    def __len__(self) -> int:
        return len(self._buf)

    def add(self, seconds: float) -> None:
        """One request's duration."""
        if len(self._buf) < self.size:
            self._buf.append(seconds)
        else:
            self._buf[self._next] = seconds
            self._next = (self._next + 1) % self.size
        self._stale += 1

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0 < p < 100, nearest rank) of the window, or None with fewer than
        ``MIN_SAMPLES`` samples. Up to ``REFRESH`` samples behind the newest."""
        if len(self._buf) < MIN_SAMPLES:
            return None
        if self._sorted is None or self._stale >= REFRESH:
            self._sorted, self._stale = sorted(self._buf), 0
        s = self._sorted
        rank = max(1, -(-len(s) * p // 100))          # ceil(n * p / 100), nearest-rank definition
        return s[min(len(s), int(rank)) - 1]
