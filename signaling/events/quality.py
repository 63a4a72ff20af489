"""Real-user playback quality: watch pages' own getStats() reports (``type: "quality"``), per room.

Reports are cumulative since the page started playing; each accepted one credits its room with the
watch and freeze time added since the socket's previous report. Two bounds keep one client from
skewing a room's figures:

- rate: ``events.quality_per_second`` / ``quality_burst`` per socket (more is ``rate_limited``);
- plausibility: a report adds at most the wall-clock time since the socket connected or last
  reported (plus ``SLACK_S``) of watch time, and never more freeze than the watch time it adds. A
  report claiming more is credited that much, with its own freeze share kept. A page that opens a new
  socket mid-stream (its figures are cumulative) is credited from then on, and a ``watch_s=604800``
  report counts for seconds, not a week, so it cannot dilute the room's stutter ratio.

A room's aggregate lives as long as its relay room (:meth:`Quality.room_closed`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from signaling.config import EventsConfig
from signaling.events.ports import Sender
from signaling.events.protocol import ClientFrame, ProtocolError, number_field, optional_number
from signaling.events.stats import EventStats
from signaling.ratelimit import RateLimiter

SLACK_S = 2.0  # page timers and the network may run a little ahead of this socket's clock
MAX_REPORTED_S = 86400 * 7


@dataclass
class QualityAggregate:
    """Real-user playback quality of one room."""

    reports: int = 0
    watch_seconds: float = 0.0
    freeze_seconds: float = 0.0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    fps: deque[float] = field(default_factory=lambda: deque(maxlen=512))

    @property
    def stutter_ratio(self) -> float:
        return self.freeze_seconds / self.watch_seconds if self.watch_seconds > 0 else 0.0

    def summary(self) -> dict[str, float]:
        latencies = sorted(self.latency_ms)

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

        return {"reports": self.reports, "watch_seconds": self.watch_seconds,
                "freeze_seconds": self.freeze_seconds, "stutter_ratio": self.stutter_ratio,
                "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95),
                "fps_mean": sum(self.fps) / len(self.fps) if self.fps else 0.0}


class _SocketReports:
    __slots__ = ("limiter", "since", "watch_s", "freeze_s")

    def __init__(self, limiter: RateLimiter, since: float) -> None:
        self.limiter = limiter
        self.since = since  # when the socket connected, then when it last reported
        self.watch_s = 0.0
        self.freeze_s = 0.0


class Quality:
    def __init__(self, config: EventsConfig, stats: EventStats, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._stats = stats
        self._clock = clock
        self._sockets: dict[Sender, _SocketReports] = {}
        self._rooms: dict[str, QualityAggregate] = {}

    def joined(self, sender: Sender) -> None:
        # One bucket per socket (max_keys=1): the same token-bucket rule as every other limit.
        limiter = RateLimiter(self._config.quality_per_second, self._config.quality_burst, 1, self._clock)
        self._sockets[sender] = _SocketReports(limiter, self._clock())

    def left(self, sender: Sender) -> None:
        self._sockets.pop(sender, None)

    def report(self, sender: Sender, frame: ClientFrame) -> None:
        watch = number_field(frame, "watch_s", 0, MAX_REPORTED_S)
        freeze = number_field(frame, "freeze_s", 0, MAX_REPORTED_S)
        latency = optional_number(frame, "latency_ms", 0, 60000)
        fps = optional_number(frame, "fps", 0, 240)
        state = self._sockets.get(sender)
        if state is None:
            self.joined(sender)
            state = self._sockets[sender]
        if state.limiter.allow("") > 0:
            raise ProtocolError("rate_limited", "too many quality reports; slow down", frame.ref)
        now = self._clock()
        if watch < state.watch_s or freeze < state.freeze_s:
            state.watch_s = state.freeze_s = 0.0  # the page started playing again: its figures start over
        added_watch = watch - state.watch_s
        added_freeze = min(freeze - state.freeze_s, added_watch)
        allowed = max(now - state.since, 0.0) + SLACK_S
        if added_watch > allowed:
            self._stats["quality_clamped"] += 1
            added_freeze *= allowed / added_watch
            added_watch = allowed
        aggregate = self._rooms.get(sender.room)
        if aggregate is None:
            aggregate = self._rooms[sender.room] = QualityAggregate()
        aggregate.reports += 1
        aggregate.watch_seconds += added_watch
        aggregate.freeze_seconds += added_freeze
        if latency is not None:
            aggregate.latency_ms.append(latency)
        if fps is not None:
            aggregate.fps.append(fps)
        state.watch_s, state.freeze_s, state.since = watch, freeze, now

    def summary(self, room: str) -> dict[str, float] | None:
        aggregate = self._rooms.get(room)
        return aggregate.summary() if aggregate else None

    def rooms(self) -> dict[str, dict[str, float]]:
        return {name: a.summary() for name, a in self._rooms.items() if a.reports}

    def room_closed(self, room: str) -> None:
        self._rooms.pop(room, None)
