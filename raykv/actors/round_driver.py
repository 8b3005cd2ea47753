"""RoundDriver: the rounds of ``raykv.cluster.rounds`` driven over Ray from a thread, with ``ray.wait``.

The synchronous twin of ``raykv.cluster.coordinator._Driver`` (which awaits
futures on an event loop): ``submit`` makes a round's calls (``.remote()`` on
each node's actor), ``drive`` loops on ``ray.wait`` until the rounds are
decided, feeding each reply back to its round (``on_reply``) and making the
calls it asks for in turn. Several threads may drive rounds at once: round
state is touched only under the lock the caller passes in (the router's
``mu``); ``ray.wait`` runs outside it.

``out`` ({ref: (round, tag, node, method, deadline)}) is the caller's: the
calls still in flight, so a caller may hand the rest of a read (its late
replies) to another thread. A call not answered by its deadline counts as a
failed reply (``NodeUnavailable``). Cost per reply: one ``ray.get`` (one for
all replies that are ready together), its unpickling and ``on_reply``.
"""

from __future__ import annotations

import threading
import time

import ray

from raykv.actors.transport import RayTransport, pack_call, unpack_result
from raykv.errors import NodeUnavailable


class RoundDriver:
    """Makes rounds' calls over one ``RayTransport`` and feeds the replies back; thread-safe given ``mu``."""

    def __init__(self, transport: RayTransport, mu: threading.Lock) -> None:
        self.transport, self.mu = transport, mu

    def drive(self, rounds: list, out: dict, timeout: float, limit_factor: float, until: str,
              speculate: float | None = None) -> None:
        """Feed replies to their rounds until every round's ``<until>`` holds, or ``limit_factor * timeout``
        seconds. ``out`` ({ref: (round, tag, node, method, deadline)}) keeps the calls still in flight.
        ``speculate`` (rounds with spares: reads, single-key puts): the first round not yet decided gets
        ``rnd.speculate()`` once it has been first for that many seconds; rounds are in flight together, so each
        one's clock starts when the previous one is decided, not when it was sent (a 10-round read would
        otherwise speculate on its queued tail)."""
        end = time.monotonic() + limit_factor * timeout
        head, head_at = 0, time.monotonic() + (speculate or 0.0)
        while out:
            with self.mu:
                if all(getattr(rnd, until) for rnd in rounds):
                    return
                want = rounds[0].wanted() if len(rounds) == 1 and until == "decided" else 1
            now = time.monotonic()
            if now >= end:
                return
            wake = end
            if speculate:
                while head < len(rounds) and rounds[head].decided:
                    head, head_at = head + 1, now + speculate
                if head < len(rounds):
                    if now >= head_at:
                        with self.mu:
                            sends = rounds[head].speculate()
                        self.submit(rounds[head], sends, out, timeout)
                        head, head_at = head + 1, now + speculate
                        continue
                    wake = min(wake, head_at)
            first = min(entry[4] for entry in out.values())
            ready, _ = ray.wait(list(out), num_returns=min(want, len(out)),
                                timeout=max(0.0, min(first, wake) - now))
            self.feed_all(out, ready, timeout)
            self.expire(out, time.monotonic(), timeout)

    def expire(self, out: dict, now: float, timeout: float) -> None:
        """Each call of ``out`` past its deadline, fed to its round as failed."""
        for ref in [ref for ref, entry in out.items() if entry[4] <= now]:
            rnd, tag, node, method, _ = out.pop(ref)
            self.reply(rnd, out, tag, None, NodeUnavailable(
                f"storage node {node!r} did not answer {method!r} within {timeout}s"), timeout)

    def feed_all(self, out: dict, ready: list, timeout: float) -> None:
        """``feed`` each ready reply, their values fetched in one ``ray.get`` when none failed (a call each
        otherwise, so a failed one is told apart)."""
        if len(ready) > 1:
            try:
                blobs = ray.get(ready)
            except Exception:   # noqa: BLE001 - some call failed: feed them one by one
                pass
            else:
                for ref, blob in zip(ready, blobs):
                    rnd, tag, node, method, _ = out.pop(ref)
                    try:
                        res, exc = unpack_result(blob), None
                    except Exception as e:  # noqa: BLE001 - as in feed
                        res, exc = None, self.transport.map_error(e, node, method)
                    self.reply(rnd, out, tag, res, exc, timeout)
                return
        for ref in ready:
            self.feed(out, ref, timeout)

    def feed(self, out: dict, ref, timeout: float) -> None:
        """One ready reply (or its failure, mapped by the transport) to its round."""
        rnd, tag, node, method, _ = out.pop(ref)
        try:
            res, exc = unpack_result(ray.get(ref)), None
        except Exception as e:  # noqa: BLE001 - mapped like the async transport does
            res, exc = None, self.transport.map_error(e, node, method)
        self.reply(rnd, out, tag, res, exc, timeout)

    def reply(self, rnd, out: dict, tag, res, exc, timeout: float) -> None:
        """``rnd.on_reply`` under the lock, then the calls it asks for."""
        with self.mu:
            sends = rnd.on_reply(tag, res, exc)
        self.submit(rnd, sends, out, timeout)

    def submit(self, rnd, sends: list, out: dict, timeout: float) -> None:
        """Make a round's calls; a payload object several sends share (a single put's) is pickled once."""
        sends = list(sends)
        last = blob = None
        while sends:
            node, method, payload, tag = sends.pop()
            if last is None or payload is not last[1] or method != last[0]:
                last, blob = (method, payload), pack_call(method, (payload,))
            try:
                ref = self.transport.handle(node).call_packed.remote(blob)
            except Exception as e:  # noqa: BLE001 - no such actor / submission failed: a failed reply
                exc = self.transport.map_error(e, node, method)
                with self.mu:
                    sends.extend(rnd.on_reply(tag, None, exc))
                continue
            out[ref] = (rnd, tag, node, method, time.monotonic() + timeout)
