"""Cheap sampled figures the relay exposes (no per-packet allocation)."""

from __future__ import annotations

import time
from collections.abc import Callable


class DelaySampler:
    """A fixed ring of recent (when, delay) samples, for percentiles over a recent window on demand."""

    __slots__ = ("_delays", "_times", "_next", "count", "_clock")

    def __init__(self, size: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self._delays = [0.0] * size
        self._times = [0.0] * size
        self._next = 0
        self.count = 0
        self._clock = clock

    def add(self, seconds: float) -> None:
        i = self._next
        self._delays[i] = seconds
        self._times[i] = self._clock()
        self._next = (i + 1) % len(self._delays)
        self.count += 1

    def percentiles(self, *qs: float, window: float | None = None) -> list[float]:
        """Percentiles of the samples kept, or of those from the last ``window`` seconds."""
        n = min(self.count, len(self._delays))
        since = self._clock() - window if window else float("-inf")
        ordered = sorted(d for d, t in zip(self._delays[:n], self._times[:n], strict=True) if t >= since)
        if not ordered:
            return [0.0 for _ in qs]
        return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs]

    def samples(self, window: float | None = None) -> int:
        n = min(self.count, len(self._delays))
        if not window:
            return n
        since = self._clock() - window
        return sum(1 for t in self._times[:n] if t >= since)
