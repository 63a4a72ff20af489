"""The cycle collector's pauses are timed per generation and exported as a Prometheus histogram."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, generate_latest

from gateway import gc_pauses


def _count(text: str, generation: str) -> float:
    line = next(line for line in text.splitlines()
                if line.startswith(f'cherry_gc_pause_seconds_count{{generation="{generation}"}}'))
    return float(line.rsplit(" ", 1)[1])


def test_full_and_middle_passes_are_counted_and_exported() -> None:
    watcher = gc_pauses.watch()
    assert gc_pauses.watch() is watcher  # one per process: apps in one process share it
    registry = CollectorRegistry(auto_describe=False)
    registry.register(watcher)
    before = generate_latest(registry).decode()
    gc.collect(1)
    gc.collect(2)
    gc.collect(2)
    after = generate_latest(registry).decode()
    assert _count(after, "2") - _count(before, "2") == 2
    assert _count(after, "1") - _count(before, "1") == 1
    assert 'cherry_gc_pause_seconds_bucket{generation="2",le="+Inf"}' in after
    assert "generation=\"0\"" not in after  # the youngest is not timed: it runs too often to matter


def test_buckets_are_cumulative() -> None:
    watcher = gc_pauses.GcPauses()
    for pause in (0.0005, 0.03, 0.2, 2.0):
        watcher("start", {"generation": 2})
        watcher._started -= pause  # the pass took this long
        watcher("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    watcher("start", {"generation": 0})
    watcher("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    family = next(watcher.collect())
    buckets = {s.labels["le"]: s.value for s in family.samples
               if s.name.endswith("_bucket") and s.labels["generation"] == "2"}
    assert buckets["0.001"] == 1 and buckets["0.05"] == 2 and buckets["0.25"] == 3 and buckets["+Inf"] == 4
    assert buckets["1.0"] == 3
