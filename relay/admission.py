"""Process-wide admission: refuse newcomers before overload degrades everyone already watching.

Two signals: the viewer sessions this process holds against its calibrated capacity, and how late
the event loop runs a short timer (the loop that forwards every packet). While either is over its
bound a new session is refused with a ``Retry-After``, and the sessions already open keep going.
A worker with a UDP port range also refuses a session its range has no ports left for: without them
the answer would carry no host candidate and the session could never connect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from relay.config import LimitsConfig
from relay.errors import CapacityExceeded, Overloaded

log = logging.getLogger("cherry.relay.admission")

TICK = 0.05  # seconds between loop-lag probes
WINDOW = 1.0  # lag is judged over the last second of probes


class LoopLag:
    """How late a 50 ms timer fires, over the last second (the worst of it, in seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()
        self.last = 0.0

    def add(self, at: float, lag: float) -> None:
        samples = self._samples
        samples.append((at, lag))
        self.last = lag
        while samples and samples[0][0] < at - WINDOW:
            samples.popleft()

    def worst(self) -> float:
        now = self._clock()
        return max((lag for at, lag in self._samples if at >= now - WINDOW), default=0.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + TICK
            await asyncio.sleep(TICK)
            now = loop.time()
            self.add(self._clock(), max(0.0, now - expected))


class MediaPorts(Protocol):
    """The UDP port range this process binds media sockets in (``aiortc_bridge.udp_ports.UdpPortPool``)."""

    first: int
    last: int

    def free(self) -> int: ...

    def reserve(self, count: int) -> AbstractContextManager[None]: ...


def _no_ports() -> MediaPorts | None:
    return None


def _one_port() -> int:
    return 1


class Admission:
    """Says whether a new session may open now; raises the refusal if not.

    ``media_ports``: the process's port range, if it has one (asked on every offer: it is set at start-up);
    ``ports_per_session``: how many of its ports one session binds.
    """

    def __init__(self, limits: LimitsConfig, viewers: Callable[[], int], lag: LoopLag | None = None,
                 media_ports: Callable[[], MediaPorts | None] = _no_ports,
                 ports_per_session: Callable[[], int] = _one_port) -> None:
        self._limits = limits
        self._viewers = viewers
        self._media_ports = media_ports
        self._ports_per_session = ports_per_session
        self.lag = lag or LoopLag()
        self.refused = {"capacity": 0, "overloaded": 0, "media_ports": 0}

    def check_loop(self) -> None:
        worst = self.lag.worst()
        if worst * 1000 > self._limits.max_loop_lag_ms:
            self.refused["overloaded"] += 1
            raise Overloaded(f"the gateway is overloaded (event loop {worst * 1000:.0f} ms late); "
                             "retry shortly or on another instance")

    def check_viewer(self) -> None:
        self.check_loop()
        capacity = self._limits.process_viewer_capacity
        if self._viewers() >= capacity:
            self.refused["capacity"] += 1
            raise CapacityExceeded(f"this gateway process serves its capacity of {capacity} viewers")

    @contextmanager
    def media_ports(self) -> Iterator[None]:
        """Hold the ports a new session will bind for as long as it negotiates; CapacityExceeded if there are
        not that many free. A refusal comes before any negotiation work."""
        ports = self._media_ports()
        if ports is None:
            yield
            return
        need = self._ports_per_session()
        if ports.free() < need:
            self.refused["media_ports"] += 1
            raise CapacityExceeded(f"this gateway process has no free media ports (UDP {ports.first}-{ports.last} "
                                   "in use); retry shortly or on another instance")
        with ports.reserve(need):
            yield
