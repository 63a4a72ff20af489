"""Process-wide admission: refuse newcomers before overload degrades everyone already watching.

Two signals: the viewer sessions this process holds against its calibrated capacity, and how late
the event loop runs a short timer (the loop that forwards every packet). While either is over its
bound a new session is refused with a ``Retry-After``, and the sessions already open keep going.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

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


class Admission:
    """Says whether a new session may open now; raises the refusal if not."""

    def __init__(self, limits: LimitsConfig, viewers: Callable[[], int], lag: LoopLag | None = None) -> None:
        self._limits = limits
        self._viewers = viewers
        self.lag = lag or LoopLag()
        self.refused = {"capacity": 0, "overloaded": 0}

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
