"""How long the cycle collector stopped the event loop: a histogram per generation, exported by /metrics.

A full collection walks every object the collector tracks and frees the reference cycles of everything
closed since the last one (an aiortc peer leaves a few hundred objects in cycles), so its pause grows with
a worker's sessions and churn; meanwhile no packet is forwarded. aiortc_bridge/heap.py keeps it short; this
shows what is left. Only generations 1 and 2 are timed: the youngest runs hundreds of times a second
under traffic, in microseconds.
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import HistogramMetricFamily

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TIMED = (1, 2)


class GcPauses:
    """Watches the collector from the first :func:`watch` on, for the life of the process."""

    def __init__(self) -> None:
        self._started = 0.0
        self.counts = {g: [0] * (len(BUCKETS) + 1) for g in TIMED}  # per bucket, the last one +Inf
        self.sums = dict.fromkeys(TIMED, 0.0)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if generation == 0:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.counts[generation][bisect_left(BUCKETS, pause)] += 1
        self.sums[generation] += pause

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily("cherry_gc_pause_seconds",
                                       "Event loop stopped by a cycle-collector pass, by generation (2: full)",
                                       labels=["generation"])
        for generation in TIMED:
            running, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), self.counts[generation], strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric([str(generation)], buckets, self.sums[generation])
        yield family


_WATCHER: GcPauses | None = None


def watch() -> GcPauses:
    """The process's watcher, installed on the first call (one per process, however many apps it runs)."""
    global _WATCHER
    if _WATCHER is None:
        _WATCHER = GcPauses()
        gc.callbacks.append(_WATCHER)
    return _WATCHER
