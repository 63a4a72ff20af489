"""Network impairment in the load client's own UDP receive path (no ``tc netem`` needed).

A :class:`NetworkCondition` (read from ``configs/load-network.toml``) describes a viewer's
downlink: one-way delay, jitter, random loss, burst loss (Gilbert-Elliott), a bandwidth cap
with a bounded bottleneck queue. :class:`Impairment` applies it to every DTLS/SRTP datagram the
viewer receives, between aioice and aiortc (``aiortc_bridge.client.wrap_ice_delivery``), with
``loop.call_at`` timers: no threads, no extra processes.

Semantics, and where they differ from netem:

* delay + jitter: each datagram is delivered ``delay_ms + U(-jitter_ms, +jitter_ms)`` after it
  arrived, but never before the previous one (no reordering; netem reorders unless rate-limited).
* loss: each datagram is dropped with probability ``loss``.
* burst loss: a two-state Markov chain per viewer; from "good" it enters "bad" with probability
  ``burst_enter`` per datagram, leaves it with ``burst_exit``; every datagram in "bad" is lost
  (mean burst length 1 / burst_exit).
* bandwidth: a ``bandwidth_kbps`` link with a FIFO queue; a datagram that would wait more than
  ``queue_ms`` is dropped (tail drop), like a bottleneck router.
* Only the viewer's downlink is impaired (media, DTLS); its uplink (RTCP NACK/PLI, DTLS) and
  STUN consent checks are not. Timer resolution adds up to about 1 ms per datagram when the
  event loop is idle, more when it lags (the generator-health check catches that).

With real netem on a load machine: leave the profile's network mix at ``same-city`` (no
impairment) and shape the load machine's interface instead, e.g.
``tc qdisc add dev eth0 root netem delay 75ms 10ms loss 1%``.
"""

from __future__ import annotations

import asyncio
import random
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

Deliver = Callable[[bytes, int], None]


@dataclass(frozen=True, slots=True)
class NetworkCondition:
    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    burst_enter: float = 0.0
    burst_exit: float = 1.0
    bandwidth_kbps: float = 0.0
    queue_ms: float = 300.0
    description: str = ""

    @property
    def impaired(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss or self.burst_enter or self.bandwidth_kbps)

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> NetworkCondition:
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"network condition {name!r}: unknown keys {sorted(unknown)}")
        condition = cls(name, **data)
        for key in ("loss", "burst_enter", "burst_exit"):
            if not 0.0 <= getattr(condition, key) <= 1.0:
                raise ValueError(f"network condition {name!r}: {key} must be within 0..1")
        if condition.delay_ms < 0 or condition.jitter_ms < 0 or condition.jitter_ms > condition.delay_ms:
            raise ValueError(f"network condition {name!r}: need 0 <= jitter_ms <= delay_ms")
        return condition


def load_conditions(path: Path) -> dict[str, NetworkCondition]:
    """``[NAME]`` tables of a TOML file, each a :class:`NetworkCondition`."""
    data = tomllib.loads(path.read_text())
    return {name: NetworkCondition.from_dict(name, table) for name, table in data.items()}


class Impairment:
    """Applies one :class:`NetworkCondition` to one viewer's incoming datagrams."""

    def __init__(self, condition: NetworkCondition, rng: random.Random | None = None) -> None:
        self.condition = condition
        self._rng = rng or random.Random()
        self._bad = False
        self._last_due = 0.0
        self._link_free_at = 0.0
        self.delivered = 0
        self.dropped_loss = 0
        self.dropped_queue = 0

    def _lost(self) -> bool:
        c = self.condition
        if c.burst_enter:
            self._bad = self._rng.random() >= c.burst_exit if self._bad else self._rng.random() < c.burst_enter
            if self._bad:
                return True
        return bool(c.loss) and self._rng.random() < c.loss

    def wrap(self, deliver: Deliver) -> Deliver:
        c = self.condition
        if not c.impaired:
            return deliver
        loop = asyncio.get_running_loop()
        delay = c.delay_ms / 1000
        jitter = c.jitter_ms / 1000
        byte_s = c.bandwidth_kbps * 1000 / 8
        queue_s = c.queue_ms / 1000

        def receive(data: bytes, component: int) -> None:
            if self._lost():
                self.dropped_loss += 1
                return
            now = loop.time()
            sent = now
            if byte_s:
                start = max(now, self._link_free_at)
                if start - now > queue_s:
                    self.dropped_queue += 1
                    return
                self._link_free_at = start + len(data) / byte_s
                sent = self._link_free_at
            due = sent + delay + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
            due = max(due, self._last_due)
            self._last_due = due
            self.delivered += 1
            if due <= now:
                deliver(data, component)
            else:
                loop.call_at(due, deliver, data, component)

        return receive
