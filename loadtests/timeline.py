"""A load run over time: mergeable per-interval measurements, and the series the report plots.

The agents (and Locust processes, for their own CPU) add what they measure to the interval of the
wall-clock moment they measure it in: joins when they end, watch time, freezes and latency when a
viewer's window is accounted (every report, on leave, at the end), CPU on every health tick. An
interval is ``INTERVAL_S`` of wall clock (epoch-aligned, so processes and machines agree without
talking; across machines their clocks must be NTP-synced, as latency already needs). The entries
travel inside :class:`loadtests.summary.Summary` deltas and merge by addition like everything
else there, so the master holds the whole run's timeline whichever process measured what.

Viewer entries are kept per network condition (a pooled latency percentile mixes an 80 ms
condition with a loopback one into a figure nobody has), CPU entries per generator process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from loadtests.webrtc.metrics import Histogram, fields_to_json

INTERVAL_S = 5  # seconds per interval: 720 intervals in an hour's soak
VIEWERS = "net"  # entry kind: viewers of one network condition
PROCESS = "proc"  # entry kind: one generator process's CPU


def interval_key(at: float, kind: str, name: str) -> str:
    """The key of the interval holding wall-clock instant ``at`` (epoch seconds)."""
    start = int(math.floor(at / INTERVAL_S)) * INTERVAL_S
    return f"{start}|{kind}|{name}"


def split_interval_key(key: str) -> tuple[int, str, str]:
    start, kind, name = key.split("|", 2)
    return int(start), kind, name


@dataclass(slots=True)
class IntervalStats:
    """One interval of one network condition's viewers, or of one generator process."""

    join_attempts: int = 0
    join_ok: int = 0
    join_failed: int = 0
    ttff_ms: Histogram = field(default_factory=Histogram)
    latency_ms: Histogram = field(default_factory=Histogram)
    watch_s: float = 0.0
    frames: int = 0
    freezes: int = 0
    freeze_s: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def merge(self, other: IntervalStats) -> None:
        for f in fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, Histogram):
                mine.merge(getattr(other, f.name))
            else:
                setattr(self, f.name, mine + getattr(other, f.name))

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IntervalStats:
        stats = cls()
        for f in fields(stats):
            if f.name in data:
                current = getattr(stats, f.name)
                value = Histogram.from_json(data[f.name]) if isinstance(current, Histogram) else type(current)(
                    data[f.name])
                setattr(stats, f.name, value)
        return stats


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def series(timeline: dict[str, IntervalStats]) -> dict[str, Any]:
    """Per-interval figures for the report and ``summary.json``: every interval from the first to the last.

    Empty intervals in between are kept (zero joins, no latency: ``None``), so the time axis is true.
    """
    if not timeline:
        return {"interval_s": INTERVAL_S, "start": None, "points": []}
    parsed = [(split_interval_key(key), stats) for key, stats in timeline.items()]
    first = min(start for (start, _, _), _ in parsed)
    last = max(start for (start, _, _), _ in parsed)
    by_start: dict[int, list[tuple[str, str, IntervalStats]]] = {}
    for (start, kind, name), stats in parsed:
        by_start.setdefault(start, []).append((kind, name, stats))
    points = []
    for start in range(first, last + INTERVAL_S, INTERVAL_S):
        viewers = IntervalStats()
        nets: dict[str, dict[str, Any]] = {}
        cpu: dict[str, float] = {}
        for kind, name, stats in sorted(by_start.get(start, []), key=lambda item: item[:2]):
            if kind == PROCESS:
                if stats.wall_s > 0:
                    cpu[name] = round(stats.cpu_s / stats.wall_s, 4)
                continue
            viewers.merge(stats)
            nets[name] = {
                "latency_p50_ms": _r(stats.latency_ms.percentile(50)),
                "latency_p95_ms": _r(stats.latency_ms.percentile(95)),
                "watch_s": round(stats.watch_s, 3),
                "stutter_ratio": round(stats.freeze_s / stats.watch_s, 6) if stats.watch_s > 0 else None,
                "fps": round(stats.frames / stats.watch_s, 2) if stats.watch_s > 0 else None,
            }
        points.append({
            "t_s": start - first,
            "join_attempts": viewers.join_attempts,
            "join_ok": viewers.join_ok,
            "join_failed": viewers.join_failed,
            "ttff_p50_ms": _r(viewers.ttff_ms.percentile(50)),
            "ttff_p95_ms": _r(viewers.ttff_ms.percentile(95)),
            "watch_s": round(viewers.watch_s, 3),
            "freeze_s": round(viewers.freeze_s, 3),
            "stutter_ratio": round(viewers.freeze_s / viewers.watch_s, 6) if viewers.watch_s > 0 else None,
            "by_network": nets,
            "cpu": cpu,
        })
    return {"interval_s": INTERVAL_S, "start": first, "points": points}
