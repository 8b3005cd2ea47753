"""Metrics export (raykv.actors.metrics): logic counters become ray.util.metrics deltas with the right tags."""

import ray.util.metrics as rm

from raykv.actors.metrics import Metrics


class Fake:
    made = []

    def __init__(self, name, description="", tag_keys=(), boundaries=None):
        self.name, self.tag_keys, self.records = name, tag_keys, []
        Fake.made.append(self)

    def inc(self, value, tags=None):
        self.records.append(("inc", value, tags))

    def observe(self, value, tags=None):
        self.records.append(("observe", value, tags))

    def set(self, value, tags=None):
        self.records.append(("set", value, tags))


def test_counters_are_exported_as_deltas_and_latencies_as_histograms(monkeypatch):
    Fake.made = []
    for cls in ("Counter", "Gauge", "Histogram"):
        monkeypatch.setattr(rm, cls, Fake)
    m = Metrics("s", "node", "n1")
    by = {f.name: f for f in Fake.made}
    assert set(by) == {"raykv_events", "raykv_call_seconds", "raykv_state"}

    m.export({"hints_delivered": 5, "puts": 10, "note": "not a number"}, {"hints_pending": 7})
    m.export({"hints_delivered": 8, "puts": 10}, {"hints_pending": 0})
    events = by["raykv_events"].records
    assert ("inc", 5, {"store": "s", "component": "node", "id": "n1", "event": "hints_delivered"}) in events
    assert ("inc", 3, {"store": "s", "component": "node", "id": "n1", "event": "hints_delivered"}) in events
    assert [r for r in events if r[2]["event"] == "puts"] == [("inc", 10, r[2]) for r in events
                                                             if r[2]["event"] == "puts"][:1]
    assert by["raykv_state"].records[-1] == ("set", 0, {"store": "s", "component": "node", "id": "n1",
                                                         "name": "hints_pending"})
    m.observe("get_batch", 0.002)
    assert by["raykv_call_seconds"].records == [("observe", 0.002, {"store": "s", "component": "node", "id": "n1",
                                                                     "method": "get_batch"})]
