"""Metrics export: the logic's ``counters`` dicts and per-call latencies as ``ray.util.metrics``.

They appear in the Ray dashboard and its Prometheus endpoint as
``raykv_events`` (counter, tags store/component/id/event: every key of a
logic object's ``counters`` dict, e.g. hint replays, read repairs, anti-entropy
repairs), ``raykv_call_seconds`` (histogram per method) and ``raykv_state``
(gauges: hints pending, keys, disk bytes). Cost: ``observe`` is a dict lookup
and a local record; ``export`` walks the counters dict (call it every few seconds).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

EXPORT_EVERY = 5.0      # seconds between a component's metrics exports (storage node, coordinator, client router)

_BOUNDARIES = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


class Metrics:
    """One component's metrics; silently inert if ``ray.util.metrics`` is unusable in this process."""

    def __init__(self, store: str, component: str, ident: str) -> None:
        self.tags = {"store": store, "component": component, "id": ident}
        self._last: dict[str, float] = {}
        self._exported = 0.0        # time.monotonic() of the last due() that said yes
        try:
            from ray.util.metrics import Counter, Gauge, Histogram
            self._events = Counter("raykv_events", description="raykv logic events (counters dicts)",
                                   tag_keys=("store", "component", "id", "event"))
            self._latency = Histogram("raykv_call_seconds", description="raykv call latency by method",
                                      boundaries=_BOUNDARIES, tag_keys=("store", "component", "id", "method"))
            self._state = Gauge("raykv_state", description="raykv state gauges (hints pending, keys, disk bytes)",
                                tag_keys=("store", "component", "id", "name"))
        except Exception as e:  # pragma: no cover - metrics must never break the data path
            log.warning("raykv metrics disabled: %s", e)
            self._events = self._latency = self._state = None

    def observe(self, method: str, seconds: float) -> None:
        if self._latency is not None:
            self._latency.observe(seconds, tags={**self.tags, "method": method})

    def due(self, force: bool = False) -> bool:
        """True at most once every ``EXPORT_EVERY`` seconds (always with ``force``): whether a component's
        periodic loop should ``export`` now. Cheap enough to ask on every tick."""
        now = time.monotonic()
        if force or now - self._exported >= EXPORT_EVERY:
            self._exported = now
            return True
        return False

    def export(self, counters: dict, gauges: dict | None = None) -> None:
        """Push counter deltas since the last export, and the current gauge values."""
        if self._events is None:
            return
        for name, value in list(counters.items()):
            if not isinstance(value, (int, float)):
                continue
            delta = value - self._last.get(name, 0)
            if delta > 0:
                self._events.inc(delta, tags={**self.tags, "event": str(name)})
            self._last[name] = value
        for name, value in (gauges or {}).items():
            if isinstance(value, (int, float)):
                self._state.set(value, tags={**self.tags, "name": str(name)})


def with_transport(counters: dict, transport_counters: dict) -> dict:
    """A logic object's counters plus its transport's, the latter prefixed ``transport_``."""
    return {**counters, **{"transport_" + k: v for k, v in transport_counters.items()}}
