"""Operational figures: monotonic traffic totals, scrape-time Prometheus metrics, dashboard samples.

Nothing here runs per packet. The relay keeps plain integer counters on each publication and
subscription; this module reads them when someone asks (a Prometheus scrape, a dashboard sample).
Subscriptions and publications come and go, so a :class:`TrafficLedger` folds the final counters of
each one that has gone into "retired" totals: the exported counters never go backwards.

Label sets are bounded: kinds, roles, reasons, HTTP codes. Per-room series exist only for the
``metrics.top_rooms`` busiest rooms.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from aiortc_bridge.guard import DATAGRAMS, PACKETS
from aiortc_bridge.ice import port_pool
from gateway import gc_pauses
from relay.dump import DROP_REASONS, KINDS, RelayDump, Traffic
from relay.stats import DelaySampler
from signaling.context import SignalingContext
from signaling.events.hub import EventHub

log = logging.getLogger("cherry.gateway.metrics")
# No *_created series: they double the output and no dashboard or alert here reads them.
disable_created_metrics()

SESSION_STATES = ("new", "connecting", "connected", "disconnected", "failed", "closed")
# Seconds; forwarding delay is packet-in to last copy out (sampled 1 packet in 16).
FORWARDING_DELAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
# Seconds from a viewer session connecting (or the host going live, if later) to its first video keyframe.
KEYFRAME_WAIT_BUCKETS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass(slots=True)
class RoomFigures:
    name: str
    title: str
    host: str | None
    live: bool
    live_since: float | None
    viewers: int
    ingest_bytes: int
    egress_bytes: int


@dataclass(slots=True)
class Snapshot:
    """Everything the exporters need, from one typed dump of the relay."""

    at: float  # time.time()
    rooms: int
    rooms_live: int
    participants: dict[str, int]
    sessions: dict[tuple[str, str], int]  # (kind, state) -> count
    stream_states: dict[str, int]  # viewer video streams by congestion state
    traffic: Traffic
    room_figures: list[RoomFigures]  # busiest first


def snapshot_of(dump: RelayDump, at: float) -> Snapshot:
    figures = [RoomFigures(r.name, r.title, r.host, r.live, r.live_since, r.viewers,
                           sum(r.traffic.ingest_bytes.values()), sum(r.traffic.egress_bytes.values()))
               for r in dump.rooms]
    figures.sort(key=lambda f: (f.viewers, f.egress_bytes), reverse=True)
    participants = {"viewer": sum(r.viewers for r in dump.rooms),
                    "host": sum(1 for r in dump.rooms if r.host is not None),
                    "guest": sum(len(r.guests) for r in dump.rooms)}
    return Snapshot(at=at, rooms=len(dump.rooms), rooms_live=sum(1 for r in dump.rooms if r.live),
                    participants=participants, sessions=dump.sessions, stream_states=dump.stream_states,
                    traffic=dump.traffic,
                    room_figures=figures)


class ObservedDelaySampler(DelaySampler):
    """The relay's forwarding-delay ring, also feeding a histogram (1 packet in 16 reaches it)."""

    __slots__ = ("_observe",)

    def __init__(self, observe: Callable[[float], None], size: int = 4096) -> None:
        super().__init__(size)
        self._observe = observe

    def add(self, seconds: float) -> None:
        DelaySampler.add(self, seconds)
        self._observe(seconds)


# What became of a WHIP/WHEP offer. "drained": refused with 503 `draining` during a planned drain, which
# sends the client to another instance; like "redirected" it is neither a success nor a failure.
JOIN_OUTCOMES = ("accepted", "redirected", "drained", "refused", "failed")


def join_outcome(status: int, code: str | None) -> str:
    if 200 <= status < 300:
        return "accepted"
    if 300 <= status < 400:
        return "redirected"
    if status == 503 and code == "draining":
        return "drained"
    if status >= 500 or status in (409, 429):
        return "failed"
    return "refused"  # the client's mistake (bad token, bad SDP) or a room that is not live


class JoinOutcomes:
    """Responses to WHIP/WHEP offers (``POST /whip/{room}``, ``POST /whep/{room}``) by status code and outcome."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def record(self, method: str, path: str, status: int, code: str | None = None) -> None:
        if method != "POST":
            return
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] in ("whip", "whep"):
            self.counts[(parts[0], status)] += 1
            self.outcomes[(parts[0], join_outcome(status, code))] += 1

    def success_ratio_parts(self, endpoint: str) -> tuple[int, int]:
        """(accepted, attempts that count): failures the gateway answers for; client mistakes, redirects and
        planned drains do not count."""
        ok = self.outcomes[(endpoint, "accepted")]
        return ok, ok + self.outcomes[(endpoint, "failed")]


# Error responses by where they were answered, status and error code. Codes are constants of our code
# (signaling/errors.py), yet a bounded label set must not rest on that: anything unlike a code, and any
# series past the cap, is counted as "other".
ERROR_ENDPOINTS = ("whip", "whep", "ws", "api", "rooms", "dev", "dashboard", "internal")
MAX_ERROR_SERIES = 64
_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")


class ErrorCounts:
    def __init__(self, cap: int = MAX_ERROR_SERIES) -> None:
        self.counts: Counter[tuple[str, int, str]] = Counter()
        self._cap = cap

    def record(self, path: str, status: int, code: str | None) -> None:
        if status < 400 or status > 599:
            return
        first = path.lstrip("/").split("/", 1)[0]
        endpoint = first if first in ERROR_ENDPOINTS else "other"
        key = (endpoint, status, code if code is not None and _CODE.fullmatch(code) else "other")
        if key not in self.counts and len(self.counts) >= self._cap:
            key = ("other", status, "other")  # at most 200 more series: one per status code
        self.counts[key] += 1


def process_figures() -> tuple[float, int]:
    """(CPU seconds used by this process so far, resident memory in bytes)."""
    cpu = time.process_time()
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return cpu, rss


def asyncio_tasks() -> int:
    """Tasks alive on the running event loop (the scrape runs on it); a leak of per-session tasks shows here."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a scrape from another thread)
        return 0


def field_of(obj: Any, name: str, default: float = 0.0) -> float:
    """A number from a dict or an object, whichever the room-event hub hands out."""
    value = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def hub_quality(hub: EventHub | None) -> dict[str, Any]:
    """``{room: aggregate}`` from the hub's real-user quality reports; empty without a hub."""
    if hub is None:
        return {}
    try:
        return dict(hub.quality_rooms())
    except Exception:
        log.exception("room-event hub quality figures failed")
        return {}


def hub_stats(hub: EventHub | None) -> Mapping[str, int]:
    """The room-event counters (signaling/events/stats.py); empty without a hub."""
    return hub.stats if hub is not None else {}


@dataclass(slots=True)
class Quality:
    """Real-user playback quality summed over rooms (from watch pages' getStats() reports)."""

    reports: float = 0.0
    watch_seconds: float = 0.0
    freeze_seconds: float = 0.0
    latency_ms_p50: float = 0.0  # watch-time-weighted mean of the rooms' figures
    latency_ms_p95: float = 0.0
    fps_mean: float = 0.0

    @property
    def stutter_ratio(self) -> float:
        return self.freeze_seconds / self.watch_seconds if self.watch_seconds > 0 else 0.0


def combine_quality(per_room: Iterable[Any]) -> Quality:
    q = Quality()
    weight = p50 = p95 = fps = 0.0
    for agg in per_room:
        watch = field_of(agg, "watch_seconds")
        q.reports += field_of(agg, "reports")
        q.watch_seconds += watch
        q.freeze_seconds += field_of(agg, "freeze_seconds")
        w = max(watch, 1e-9)
        weight += w
        p50 += w * field_of(agg, "latency_ms_p50")
        p95 += w * field_of(agg, "latency_ms_p95")
        fps += w * field_of(agg, "fps_mean")
    if weight:
        q.latency_ms_p50, q.latency_ms_p95, q.fps_mean = p50 / weight, p95 / weight, fps / weight
    return q


class QualityTotals:
    """Monotonic watch and freeze seconds from the hub's per-room aggregates (which reset when a
    room's event channel goes away): stutter ratio over any window = rate(freeze) / rate(watch)."""

    def __init__(self) -> None:
        self.watch_seconds = 0.0
        self.freeze_seconds = 0.0
        self._last: dict[str, tuple[float, float]] = {}

    def update(self, per_room: Mapping[str, Any]) -> None:
        seen: dict[str, tuple[float, float]] = {}
        for name, agg in per_room.items():
            watch, freeze = field_of(agg, "watch_seconds"), field_of(agg, "freeze_seconds")
            last_watch, last_freeze = self._last.get(name, (0.0, 0.0))
            if watch < last_watch or freeze < last_freeze:  # the aggregate started over
                last_watch, last_freeze = 0.0, 0.0
            self.watch_seconds += watch - last_watch
            self.freeze_seconds += freeze - last_freeze
            seen[name] = (watch, freeze)
        self._last = seen


class Operations:
    """The gateway's operational state: ledger, histograms, join outcomes, and their exporters."""

    def __init__(self, ctx: SignalingContext, top_rooms: int, hub: Callable[[], EventHub | None] | None = None,
                 extra: Callable[[], Iterable[Metric]] | None = None) -> None:
        self.ctx = ctx
        self.top_rooms = top_rooms
        self.registry = CollectorRegistry(auto_describe=False)
        self.forwarding_delay = Histogram(
            "cherry_forwarding_delay_seconds",
            "Packet arrival to its last copy sent to viewers (1 packet in 16 sampled)",
            buckets=FORWARDING_DELAY_BUCKETS, registry=self.registry)
        self.keyframe_wait = Histogram(
            "cherry_keyframe_wait_seconds",
            "Viewer session connected (or host live, if later) to its first video keyframe forwarded",
            buckets=KEYFRAME_WAIT_BUCKETS, registry=self.registry)
        ctx.relay.hooks.keyframe_wait = self.keyframe_wait.observe
        self.joins = JoinOutcomes()
        self.errors = ErrorCounts()
        self.quality_totals = QualityTotals()
        self._hub = hub or (lambda: ctx.hub)
        self._extra = extra
        self._last: Snapshot | None = None
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(gc_pauses.watch())
        self.registry.register(_Collector(self))
        self.exported = self.registry  # what /metrics renders (label_all: with a worker's labels)

    def label_all(self, labels: Mapping[str, str]) -> None:
        """Every series with ``labels`` added: in a cluster, the worker's node and id, so the workers behind
        one scrape job (or one shared port) stay apart."""
        self.exported = CollectorRegistry(auto_describe=False)
        self.exported.register(_WithLabels(self.registry, labels))

    def hub(self) -> EventHub | None:
        return self._hub()

    def record_response(self, method: str, path: str, status: int, code: str | None) -> None:
        """One answered HTTP request (``code``: its error code, for error responses built by signaling)."""
        self.joins.record(method, path, status, code)
        self.errors.record(path, status, code)

    def snapshot(self, max_age: float = 0.0) -> Snapshot:
        """A fresh walk over the rooms, or the last one if it is younger than ``max_age`` seconds."""
        if self._last is None or time.time() - self._last.at > max_age:
            self._last = snapshot_of(self.ctx.relay.dump(), time.time())
        return self._last

    def quality(self) -> tuple[dict[str, Any], Quality]:
        per_room = hub_quality(self.hub())
        self.quality_totals.update(per_room)
        return per_room, combine_quality(per_room.values())

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        t = snap.traffic
        per_room, quality = self.quality()

        rooms = GaugeMetricFamily("cherry_rooms", "Rooms by state (live: the host is publishing)",
                                  labels=["state"])
        rooms.add_metric(["live"], snap.rooms_live)
        rooms.add_metric(["idle"], snap.rooms - snap.rooms_live)
        yield rooms
        participants = GaugeMetricFamily("cherry_participants", "Connected participants by role",
                                         labels=["role"])
        for role in sorted(set(snap.participants) | {"host", "guest", "viewer"}):
            participants.add_metric([role], snap.participants.get(role, 0))
        yield participants
        sessions = GaugeMetricFamily("cherry_sessions", "Peer-connection sessions by kind and state",
                                     labels=["kind", "state"])
        counts = snap.sessions
        for kind in ("ingest", "playback"):
            for state in SESSION_STATES:
                sessions.add_metric([kind, state], counts.get((kind, state), 0))
        yield sessions

        def by_kind(name: str, doc: str, values: dict[str, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["kind"])
            for kind in KINDS:
                family.add_metric([kind], values[kind])
            return family

        yield by_kind("cherry_ingest_packets", "RTP packets received from hosts", t.ingest_packets)
        yield by_kind("cherry_ingest_bytes", "RTP payload bytes received from hosts", t.ingest_bytes)
        yield by_kind("cherry_egress_packets", "RTP packets forwarded to viewers", t.egress_packets)
        yield by_kind("cherry_egress_bytes", "RTP payload bytes forwarded to viewers", t.egress_bytes)
        dropped = CounterMetricFamily("cherry_packets_dropped", "Packets not forwarded to a viewer, by reason",
                                      labels=["reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([reason], t.dropped[reason])
        yield dropped
        yield CounterMetricFamily("cherry_packets_retransmitted", "Packets resent from the NACK cache",
                                  value=t.retransmitted)
        yield CounterMetricFamily("cherry_nacks_received", "RTCP NACKs received from viewers", value=t.nacks_in)
        pli = CounterMetricFamily("cherry_keyframe_requests", "PLI/FIR keyframe requests by direction "
                                  "(in: from viewers; out: sent to hosts, throttled)", labels=["direction"])
        pli.add_metric(["in"], t.keyframe_requests_in)
        pli.add_metric(["out"], t.keyframe_requests_out)
        yield pli
        yield CounterMetricFamily("cherry_keyframes_received", "Video keyframes received from hosts",
                                  value=t.keyframes_in)
        starts = CounterMetricFamily("cherry_keyframe_cache_joins", "Video joiners by how they started: from the "
                                     "publication's keyframe cache, or waiting for a keyframe because the GOP "
                                     "outgrew the cache", labels=["start"])
        starts.add_metric(["cache"], t.keyframe_cache_starts)
        starts.add_metric(["fallback"], t.keyframe_cache_fallbacks)
        yield starts

        joins = CounterMetricFamily("cherry_join_requests", "WHIP/WHEP offers answered, by endpoint and "
                                    "HTTP status code", labels=["endpoint", "code"])
        for endpoint in ("whip", "whep"):
            codes = {code for (e, code) in self.joins.counts if e == endpoint} | {201}
            for code in sorted(codes):
                joins.add_metric([endpoint, str(code)], self.joins.counts.get((endpoint, code), 0))
        yield joins
        outcomes = CounterMetricFamily("cherry_join_outcomes", "WHIP/WHEP offers by outcome (drained: refused "
                                       "with 503 draining during a planned drain; not a failure)",
                                       labels=["endpoint", "outcome"])
        for endpoint in ("whip", "whep"):
            for outcome in JOIN_OUTCOMES:
                outcomes.add_metric([endpoint, outcome], self.joins.outcomes[(endpoint, outcome)])
        yield outcomes
        errors = CounterMetricFamily("cherry_http_errors", "HTTP error responses by endpoint, status and error "
                                     "code (bounded: unknown codes and series past the cap count as other)",
                                     labels=["endpoint", "status", "code"])
        for (endpoint, status, error_code), n in sorted(self.errors.counts.items()):
            errors.add_metric([endpoint, str(status), error_code], n)
        yield errors

        events = hub_stats(self.hub())
        messages = CounterMetricFamily("cherry_room_event_messages", "Room-event WebSocket messages",
                                       labels=["direction"])
        messages.add_metric(["in"], float(events.get("messages_in", 0)))
        messages.add_metric(["out"], float(events.get("messages_out", 0)))
        yield messages
        drops = CounterMetricFamily("cherry_room_event_drops", "Room-event messages dropped or refused",
                                    labels=["reason"])
        drops.add_metric(["slow_client"], float(events.get("dropped_slow", 0)))
        drops.add_metric(["rate_limited"], float(events.get("rate_limited", 0)))
        yield drops
        yield GaugeMetricFamily("cherry_room_event_sockets", "Open room-event WebSockets",
                                value=float(events.get("sockets", 0)))

        yield CounterMetricFamily("cherry_viewer_watch_seconds", "Playback time reported by watch pages",
                                  value=self.quality_totals.watch_seconds)
        yield CounterMetricFamily("cherry_viewer_freeze_seconds", "Frozen playback time reported by watch "
                                  "pages (W3C freeze rule)", value=self.quality_totals.freeze_seconds)
        yield GaugeMetricFamily("cherry_viewer_stutter_ratio", "Freeze time / watch time over the rooms' "
                                "current report windows (alert on the rate of the two counters instead)",
                                value=quality.stutter_ratio)
        for pct, ms in (("50", quality.latency_ms_p50), ("95", quality.latency_ms_p95)):
            yield GaugeMetricFamily(f"cherry_viewer_latency_p{pct}_seconds", f"Real-user capture-to-display "
                                    f"latency, {pct}th percentile (watch-time-weighted mean over rooms)",
                                    value=ms / 1000)
        yield GaugeMetricFamily("cherry_viewer_fps", "Real-user decoded frames per second (mean)",
                                value=quality.fps_mean)

        top = snap.room_figures[: self.top_rooms]
        viewers = GaugeMetricFamily("cherry_room_viewers", f"Viewers of the {self.top_rooms} busiest rooms",
                                    labels=["room"])
        ingest = CounterMetricFamily("cherry_room_ingest_bytes", "RTP payload bytes received, busiest rooms",
                                     labels=["room"])
        egress = CounterMetricFamily("cherry_room_egress_bytes", "RTP payload bytes forwarded, busiest rooms",
                                     labels=["room"])
        stutter = GaugeMetricFamily("cherry_room_stutter_ratio", "Real-user stutter ratio, busiest rooms",
                                    labels=["room"])
        for fig in top:
            viewers.add_metric([fig.name], fig.viewers)
            ingest.add_metric([fig.name], fig.ingest_bytes)
            egress.add_metric([fig.name], fig.egress_bytes)
            agg = per_room.get(fig.name)
            if agg is not None:
                stutter.add_metric([fig.name], field_of(agg, "stutter_ratio"))
        yield from (viewers, ingest, egress, stutter)

        dropped_input = CounterMetricFamily("cherry_media_input_dropped", "Datagrams and packets from the network "
                                            "dropped before or while aiortc handled them, by reason",
                                            labels=["unit", "reason"])
        for unit, counter in (("datagram", DATAGRAMS), ("packet", PACKETS)):
            for reason, n in sorted(counter.counts.items()):
                dropped_input.add_metric([unit, reason], n)
        yield dropped_input
        streams = GaugeMetricFamily("cherry_viewer_video_streams", "Viewer video streams by congestion state (RTCP "
                                    "feedback: ok, congested = video paused, probing = resumed and watched)",
                                    labels=["state"])
        for state in ("ok", "congested", "probing"):
            streams.add_metric([state], snap.stream_states.get(state, 0))
        yield streams
        yield CounterMetricFamily("cherry_packets_duplicate", "Duplicate packets from hosts, dropped once before "
                                  "fan-out", value=t.duplicates)
        yield CounterMetricFamily("cherry_nack_budget_refused", "Retransmissions refused by a viewer's NACK budget",
                                  value=t.nack_budget_refused)
        yield CounterMetricFamily("cherry_forwarding_failures", "Viewer streams closed because forwarding to them "
                                  "failed", value=t.sink_failures)
        admission = self.ctx.relay.admission
        refused = CounterMetricFamily("cherry_admission_refused", "New sessions refused by process admission",
                                      labels=["reason"])
        for reason, n in sorted(admission.refused.items()):
            refused.add_metric([reason], n)
        yield refused
        yield GaugeMetricFamily("cherry_event_loop_lag_seconds", "Worst event-loop lag over the last second",
                                value=admission.lag.worst())
        yield GaugeMetricFamily("cherry_asyncio_tasks", "asyncio tasks alive on the event loop (at scrape)",
                                value=asyncio_tasks())
        pool = port_pool()
        if pool is not None:  # only a process with a UDP port range (cluster.udp_port_min/max) has a bound
            ports = GaugeMetricFamily("cherry_media_ports", "This process's media UDP ports by state (free: what "
                                      "new sessions may bind; reserved: held for sessions negotiating)",
                                      labels=["state"])
            ports.add_metric(["free"], pool.free())
            ports.add_metric(["in_use"], pool.in_use)
            ports.add_metric(["reserved"], pool.reserved)
            yield ports
        yield GaugeMetricFamily("cherry_draining", "1 while the gateway drains before exiting",
                                value=1.0 if self.ctx.draining else 0.0)
        if self._extra is not None:
            yield from self._extra()


class _WithLabels:
    def __init__(self, source: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self._source = source
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [sample._replace(labels={**sample.labels, **self._labels}) for sample in family.samples]
            yield labelled


class _Collector:
    def __init__(self, ops: Operations) -> None:
        self._ops = ops

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._ops.collect()
        except Exception:
            log.exception("metrics collection failed")
