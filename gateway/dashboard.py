"""The SRE dashboard: a background sampler and the JSON feed ``/dashboard/data`` behind ``/dashboard``.

Every ``metrics.sample_interval_s`` the sampler reads one :class:`~gateway.metrics.Snapshot` and turns
the counters into rates (bitrate, packets/s, messages/s) and windowed ratios (stutter, join success);
the last ``metrics.history_points`` samples are kept for the charts. The page polls
``/dashboard/data?since=T`` and gets only the samples newer than ``T``, plus the error breakdown (HTTP
errors by endpoint, status and code: all time and over the trailing window). Join success leaves out
offers refused by a planned drain (``drained``): they are counted and shown apart.
``/dashboard/room?room=R`` is the per-room drill-down (gateway/drilldown.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import MetricsConfig
from gateway.drilldown import install_drilldown
from gateway.metrics import Operations, Snapshot, field_of, hub_stats, process_figures

log = logging.getLogger("cherry.gateway.dashboard")

WEB = Path(__file__).parent / "web"
WINDOW_S = 60.0  # stutter ratio and join success are shown over this trailing window
TABLE_ROOMS = 20
TABLE_ERRORS = 20


@dataclass(slots=True)
class _Raw:
    """Cumulative figures at one sample, for rates and windowed ratios."""

    mono: float
    cpu_s: float
    ingest_bytes: int
    egress_bytes: int
    egress_packets: int
    dropped: int
    retransmitted: int
    messages_in: float
    messages_out: float
    watch_s: float
    freeze_s: float
    joins_ok: int
    joins_counted: int
    joins_drained: int
    errors: dict[tuple[str, int, str], int]  # bounded by metrics.MAX_ERROR_SERIES (+ one per status)
    delay_samples: int
    room_egress: dict[str, int]
    room_ingest: dict[str, int]


def _rate(new: float, old: float, seconds: float) -> float:
    return max(0.0, new - old) / seconds if seconds > 0 else 0.0


class Dashboard:
    def __init__(self, ops: Operations, config: MetricsConfig) -> None:
        self.ops = ops
        self.interval = config.sample_interval_s
        self.points: deque[dict[str, Any]] = deque(maxlen=config.history_points)
        self.rooms: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self._raw: deque[_Raw] = deque(maxlen=max(2, int(WINDOW_S / self.interval) + 1))
        self.updated = asyncio.Event()  # set after each sample (tests await it)

    def sample(self) -> dict[str, Any]:
        ops = self.ops
        snap: Snapshot = ops.snapshot()
        per_room, quality = ops.quality()
        t = snap.traffic
        events = hub_stats(ops.hub())
        cpu_s, rss = process_figures()
        ok, counted = ops.joins.success_ratio_parts("whep")
        drained = ops.joins.outcomes[("whep", "drained")] + ops.joins.outcomes[("whip", "drained")]
        delay = ops.ctx.relay.hooks.forwarding_delay
        assert delay is not None
        raw = _Raw(
            mono=time.monotonic(), cpu_s=cpu_s,
            ingest_bytes=sum(t.ingest_bytes.values()), egress_bytes=sum(t.egress_bytes.values()),
            egress_packets=sum(t.egress_packets.values()), dropped=sum(t.dropped.values()),
            retransmitted=t.retransmitted,
            messages_in=float(events.get("messages_in", 0)), messages_out=float(events.get("messages_out", 0)),
            watch_s=ops.quality_totals.watch_seconds, freeze_s=ops.quality_totals.freeze_seconds,
            joins_ok=ok, joins_counted=counted, joins_drained=drained, errors=dict(ops.errors.counts),
            delay_samples=delay.count,
            room_egress={f.name: f.egress_bytes for f in snap.room_figures[:TABLE_ROOMS]},
            room_ingest={f.name: f.ingest_bytes for f in snap.room_figures[:TABLE_ROOMS]},
        )
        prev = self._raw[-1] if self._raw else None
        first = self._raw[0] if self._raw else None
        self._raw.append(raw)
        dt = raw.mono - prev.mono if prev else 0.0

        watch_window = raw.watch_s - first.watch_s if first else 0.0
        stutter = quality.stutter_ratio
        if first and watch_window > 0:
            stutter = (raw.freeze_s - first.freeze_s) / watch_window
        joins_window = raw.joins_counted - first.joins_counted if first else 0
        join_success = (raw.joins_ok - first.joins_ok) / joins_window if first and joins_window > 0 else None
        errors_ps = _rate(sum(raw.errors.values()), sum(prev.errors.values()), dt) if prev else 0.0
        server_errors_ps = _rate(_server_errors(raw.errors), _server_errors(prev.errors), dt) if prev else 0.0
        fresh_delay = prev is not None and raw.delay_samples > prev.delay_samples
        p50, p99 = delay.percentiles(0.5, 0.99) if fresh_delay else (0.0, 0.0)
        point = {
            "t": round(snap.at, 3),
            "rooms": snap.rooms,
            "rooms_live": snap.rooms_live,
            "viewers": snap.participants.get("viewer", 0),
            "hosts": snap.participants.get("host", 0) + snap.participants.get("guest", 0),
            "sessions": sum(snap.sessions.values()),
            "ingest_bps": round(8 * _rate(raw.ingest_bytes, prev.ingest_bytes, dt)) if prev else 0,
            "egress_bps": round(8 * _rate(raw.egress_bytes, prev.egress_bytes, dt)) if prev else 0,
            "packets_out_ps": round(_rate(raw.egress_packets, prev.egress_packets, dt), 1) if prev else 0,
            "dropped_ps": round(_rate(raw.dropped, prev.dropped, dt), 1) if prev else 0,
            "retransmitted_ps": round(_rate(raw.retransmitted, prev.retransmitted, dt), 1) if prev else 0,
            "events_in_ps": round(_rate(raw.messages_in, prev.messages_in, dt), 1) if prev else 0,
            "events_out_ps": round(_rate(raw.messages_out, prev.messages_out, dt), 1) if prev else 0,
            "stutter_ratio": round(stutter, 5),
            "watch_reports": int(quality.reports),
            "latency_ms_p95": round(quality.latency_ms_p95, 1),
            "join_success": None if join_success is None else round(join_success, 4),
            "joins_drained": raw.joins_drained - first.joins_drained if first else 0,  # over the window
            "errors_ps": round(errors_ps, 2),
            "errors_5xx_ps": round(server_errors_ps, 2),
            "delay_ms_p50": round(p50 * 1000, 3),
            "delay_ms_p99": round(p99 * 1000, 3),
            "cpu_percent": round(100 * _rate(raw.cpu_s, prev.cpu_s, dt), 1) if prev else 0.0,
            "rss_bytes": rss,
            "draining": bool(ops.ctx.draining),
        }
        rooms = []
        for fig in snap.room_figures[:TABLE_ROOMS]:
            agg = per_room.get(fig.name)
            rooms.append({
                "room": fig.name, "title": fig.title, "host": fig.host, "live": fig.live,
                "live_since": fig.live_since, "viewers": fig.viewers,
                "ingest_bps": round(8 * _rate(fig.ingest_bytes, prev.room_ingest.get(fig.name, fig.ingest_bytes), dt))
                if prev else 0,
                "egress_bps": round(8 * _rate(fig.egress_bytes, prev.room_egress.get(fig.name, fig.egress_bytes), dt))
                if prev else 0,
                "stutter_ratio": None if agg is None else round(field_of(agg, "stutter_ratio"), 5),
                "latency_ms_p95": None if agg is None else round(field_of(agg, "latency_ms_p95"), 1),
                "fps": None if agg is None else round(field_of(agg, "fps_mean"), 1),
            })
        self.points.append(point)
        self.rooms = rooms
        self.errors = _error_table(raw.errors, first.errors if first else {})
        self.updated.set()
        self.updated = asyncio.Event()
        return point

    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("dashboard sample failed")
            await asyncio.sleep(self.interval)

    def data(self, since: float) -> dict[str, Any]:
        points = [p for p in self.points if p["t"] > since]
        return {"interval_s": self.interval, "window_s": WINDOW_S, "now": time.time(),
                "draining": bool(self.ops.ctx.draining), "points": points,
                "latest": self.points[-1] if self.points else None, "rooms": self.rooms, "errors": self.errors}


def _server_errors(counts: dict[tuple[str, int, str], int]) -> int:
    return sum(n for (_, status, _), n in counts.items() if status >= 500)


def _error_table(now: dict[tuple[str, int, str], int], then: dict[tuple[str, int, str], int]) -> list[dict[str, Any]]:
    """The error breakdown: the busiest over the window first, then by total."""
    window = {key: n - then.get(key, 0) for key, n in now.items()}
    keys = sorted(now, key=lambda k: (-window[k], -now[k], k[1], k[2], k[0]))[:TABLE_ERRORS]
    return [{"endpoint": k[0], "status": k[1], "code": k[2], "total": now[k], "window": window[k]} for k in keys]


DASHBOARD = web.AppKey("dashboard", Dashboard)


def install_dashboard(app: web.Application, ops: Operations, config: MetricsConfig) -> Dashboard:
    dashboard = Dashboard(ops, config)
    app[DASHBOARD] = dashboard

    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB / "dashboard.html", headers={"Cache-Control": "no-cache"})

    async def data(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            since = 0.0
        return web.json_response(dashboard.data(since), headers={"Cache-Control": "no-store"})

    async def sampler(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(dashboard.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/data", data)
    install_drilldown(app, ops)
    app.cleanup_ctx.append(sampler)
    return dashboard
