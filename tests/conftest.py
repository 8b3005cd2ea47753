"""Fixtures shared by the storage and cluster test suites."""

from __future__ import annotations

import threading
import time

import pytest


def wait_for(pred, timeout: float, every: float = 0.2, what: str = "condition"):
    """Poll ``pred`` until it is truthy; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class FsyncGate:
    """Once ``arm()``ed, the WAL's fdatasync blocks until ``release`` is set; ``entered`` is set when a writer
    reaches it. Released (and undone) when the test ends, so a failing test cannot hang."""

    def __init__(self, monkeypatch) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self._mp = monkeypatch

    def arm(self) -> tuple[threading.Event, threading.Event]:
        from raykv.storage import wal as W
        real = W._fdatasync

        def blocking_fdatasync(fd):
            self.entered.set()
            assert self.release.wait(10), "the test never released the fsync"
            real(fd)
        self._mp.setattr(W, "_fdatasync", blocking_fdatasync)
        return self.entered, self.release


@pytest.fixture
def fsync_gate(monkeypatch):
    gate = FsyncGate(monkeypatch)
    yield gate
    gate.release.set()
