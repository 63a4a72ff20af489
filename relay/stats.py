"""Cheap sampled figures the relay exposes (no per-packet allocation)."""

from __future__ import annotations


class DelaySampler:
    """A fixed ring of recent delay samples in seconds, for percentiles on demand."""

    __slots__ = ("_ring", "_next", "count")

    def __init__(self, size: int = 4096) -> None:
        self._ring = [0.0] * size
        self._next = 0
        self.count = 0

    def add(self, seconds: float) -> None:
        self._ring[self._next] = seconds
        self._next = (self._next + 1) % len(self._ring)
        self.count += 1

    def percentiles(self, *qs: float) -> list[float]:
        n = min(self.count, len(self._ring))
        if n == 0:
            return [0.0 for _ in qs]
        ordered = sorted(self._ring[:n])
        return [ordered[min(n - 1, int(q * n))] for q in qs]
