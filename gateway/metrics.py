"""Operational figures: monotonic traffic totals, scrape-time Prometheus metrics, dashboard samples.

Nothing here runs per packet. The relay keeps plain integer counters on each publication and
subscription; this module reads them when someone asks (a Prometheus scrape, a dashboard sample).
Subscriptions and publications come and go, so a :class:`TrafficLedger` folds the final counters of
each one that has gone into "retired" totals: the exported counters never go backwards.

Label sets are bounded: kinds, roles, reasons, HTTP codes. Per-room series exist only for the
``metrics.top_rooms`` busiest rooms.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from aiortc_bridge.guard import DATAGRAMS, PACKETS
from relay.room import Room, Rooms
from relay.stats import DelaySampler

log = logging.getLogger("cherry.gateway.metrics")
# No *_created series: they double the output and no dashboard or alert here reads them.
disable_created_metrics()

KINDS = ("audio", "video")
DROP_REASONS = ("waiting_keyframe", "congestion", "not_connected")
SESSION_STATES = ("new", "connecting", "connected", "disconnected", "failed", "closed")
# Seconds; forwarding delay is packet-in to last copy out (sampled 1 packet in 16).
FORWARDING_DELAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
# Seconds from a viewer session connecting (or the host going live, if later) to its first video keyframe.
KEYFRAME_WAIT_BUCKETS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass(slots=True)
class Traffic:
    """Counters summed over publications (ingest) and subscriptions (egress)."""

    ingest_packets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    ingest_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    egress_packets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    egress_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    retransmitted: int = 0
    nacks_in: int = 0
    keyframe_requests_in: int = 0  # PLI/FIR from viewers
    keyframe_requests_out: int = 0  # sent upstream to hosts (throttled)
    keyframes_in: int = 0

    def add_publication(self, pub: Any) -> None:
        kind = pub.kind if pub.kind in KINDS else "video"
        s = pub.stats
        self.ingest_packets[kind] += s.packets_in
        self.ingest_bytes[kind] += s.bytes_in
        self.keyframes_in += s.keyframes_in
        self.keyframe_requests_out += s.keyframe_requests

    def add_subscription(self, sub: Any) -> None:
        kind = sub.kind if sub.kind in KINDS else "video"
        s = sub.stats
        self.egress_packets[kind] += s.packets_sent
        self.egress_bytes[kind] += s.bytes_sent
        self.dropped["waiting_keyframe"] += s.dropped_waiting_keyframe
        self.dropped["congestion"] += s.dropped_congestion
        self.dropped["not_connected"] += s.dropped_not_connected
        self.retransmitted += s.retransmitted
        self.nacks_in += s.nacks_in
        self.keyframe_requests_in += s.keyframe_requests_in

    def plus(self, other: Traffic) -> Traffic:
        out = Traffic()
        for name in ("ingest_packets", "ingest_bytes", "egress_packets", "egress_bytes", "dropped"):
            mine, theirs, target = getattr(self, name), getattr(other, name), getattr(out, name)
            for key in target:
                target[key] = mine[key] + theirs[key]
        for name in ("retransmitted", "nacks_in", "keyframe_requests_in", "keyframe_requests_out",
                     "keyframes_in"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out


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
    """Everything the exporters need, read in one walk over the rooms."""

    at: float  # time.time()
    rooms: int
    rooms_live: int
    participants: dict[str, int]
    traffic: Traffic
    room_figures: list[RoomFigures]  # busiest first


@dataclass(slots=True)
class _SubEntry:
    sub: Any
    room: Room
    participant: Any
    waited: bool = False  # keyframe wait already observed


@dataclass(slots=True)
class _PubEntry:
    pub: Any
    room: Room


class TrafficLedger:
    """Monotonic totals over publications and subscriptions that come and go.

    Every known object is held until the next :meth:`snapshot`; one that has left its room by then
    is folded into the retired totals with its final counters. Objects are learned both by walking
    the rooms and from room events, so a viewer who joins and leaves between two samples still
    counts. Memory is bounded by what was live at the last sample plus what joined since.
    """

    def __init__(self, rooms: Rooms, keyframe_wait: Callable[[float], None] | None = None,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self.rooms = rooms
        self.retired = Traffic()
        self._retired_room: dict[str, list[int]] = {}  # room name -> [ingest bytes, egress bytes]
        self._subs: dict[int, _SubEntry] = {}
        self._pubs: dict[int, _PubEntry] = {}
        self._keyframe_wait = keyframe_wait
        self._wall = wall
        self._mono = mono
        rooms.observers.add(self)

    # -- relay.ports.RoomObserver: learn short-lived objects as they appear ---------

    def room_opened(self, room: object) -> None:
        pass

    def room_closed(self, room: object, reason: str) -> None:
        if isinstance(room, Room):
            self._retired_room.pop(room.name, None)

    def host_changed(self, room: object, live: bool) -> None:
        if live and isinstance(room, Room):
            for pub in _publications(room):
                self._pubs.setdefault(id(pub), _PubEntry(pub, room))

    def participant_joined(self, room: object, participant: Any) -> None:
        if not isinstance(room, Room):
            return
        entry = room.viewers.get(participant.participant_id)
        if entry is not None:
            for sub in entry[1]:
                self._subs.setdefault(id(sub), _SubEntry(sub, room, participant))

    def participant_left(self, room: object, participant: Any) -> None:
        pass

    # -- sampling ------------------------------------------------------------------

    def _fold_room(self, room: Room, ingest: int, egress: int) -> None:
        if room.closed:
            return
        totals = self._retired_room.setdefault(room.name, [0, 0])
        totals[0] += ingest
        totals[1] += egress

    def _observe_keyframe_wait(self, entry: _SubEntry) -> None:
        if entry.waited or entry.sub.kind != "video" or entry.sub.stats.first_packet_at is None:
            return
        entry.waited = True
        connected = getattr(entry.participant, "connected_at", None)
        if self._keyframe_wait is None or connected is None:
            return
        start = max(connected, entry.room.live_since or connected)  # wall clock
        first = entry.sub.stats.first_packet_at + (self._wall() - self._mono())  # monotonic -> wall
        self._keyframe_wait(max(0.0, first - start))

    def snapshot(self) -> Snapshot:
        live = Traffic()
        subs: dict[int, _SubEntry] = {}
        pubs: dict[int, _PubEntry] = {}
        figures: list[RoomFigures] = []
        participants: Counter[str] = Counter()
        rooms_live = 0
        for room in self.rooms:
            ingest = egress = 0
            for pub in _publications(room):
                pubs[id(pub)] = self._pubs.get(id(pub)) or _PubEntry(pub, room)
                live.add_publication(pub)
                ingest += pub.stats.bytes_in
            participants["viewer"] += len(room.viewers)
            for participant, subscriptions in room.viewers.values():
                for sub in subscriptions:
                    entry = self._subs.get(id(sub))
                    if entry is None or entry.sub is not sub:
                        entry = _SubEntry(sub, room, participant)
                    subs[id(sub)] = entry
                    live.add_subscription(sub)
                    egress += sub.stats.bytes_sent
                    self._observe_keyframe_wait(entry)
            if room.host is not None:
                participants[room.host.role] += 1
            if guests := len(getattr(room, "guests", ())):
                participants["guest"] += guests
            rooms_live += room.live
            retired = self._retired_room.get(room.name, (0, 0))
            figures.append(RoomFigures(
                name=room.name, title=room.title or room.name,
                host=room.host.identity if room.host is not None else None, live=room.live,
                live_since=room.live_since, viewers=room.viewer_count,
                ingest_bytes=retired[0] + ingest, egress_bytes=retired[1] + egress))
        for key, old in self._pubs.items():
            now = pubs.get(key)
            if now is None or now.pub is not old.pub:
                self.retired.add_publication(old.pub)
                self._fold_room(old.room, old.pub.stats.bytes_in, 0)
        for key, sub_entry in self._subs.items():
            now_sub = subs.get(key)
            if now_sub is None or now_sub.sub is not sub_entry.sub:
                self.retired.add_subscription(sub_entry.sub)
                self._fold_room(sub_entry.room, 0, sub_entry.sub.stats.bytes_sent)
                self._observe_keyframe_wait(sub_entry)
        self._subs, self._pubs = subs, pubs
        figures.sort(key=lambda f: (f.viewers, f.egress_bytes), reverse=True)
        return Snapshot(at=self._wall(), rooms=len(figures), rooms_live=rooms_live,
                        participants=dict(participants), traffic=self.retired.plus(live),
                        room_figures=figures)


def _publications(room: Room) -> Iterator[Any]:
    """The host's tracks, then those of its guests on mic."""
    yield from room.publications.values()
    for tracks in getattr(room, "guest_publications", {}).values():
        yield from tracks.values()


class ObservedDelaySampler(DelaySampler):
    """The relay's forwarding-delay ring, also feeding a histogram (1 packet in 16 reaches it)."""

    __slots__ = ("_observe",)

    def __init__(self, observe: Callable[[float], None], size: int = 4096) -> None:
        super().__init__(size)
        self._observe = observe

    def add(self, seconds: float) -> None:
        DelaySampler.add(self, seconds)
        self._observe(seconds)


class JoinOutcomes:
    """Responses to WHIP/WHEP offers (``POST /whip/{room}``, ``POST /whep/{room}``) by status code."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()

    def record(self, method: str, path: str, status: int) -> None:
        if method != "POST":
            return
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] in ("whip", "whep"):
            self.counts[(parts[0], status)] += 1

    def success_ratio_parts(self, endpoint: str) -> tuple[int, int]:
        """(accepted, attempts that count): client mistakes (400-404 and the like) do not count."""
        ok = sum(n for (e, code), n in self.counts.items() if e == endpoint and 200 <= code < 300)
        bad = sum(n for (e, code), n in self.counts.items()
                  if e == endpoint and (code >= 500 or code in (409, 429)))
        return ok, ok + bad


def process_figures() -> tuple[float, int]:
    """(CPU seconds used by this process so far, resident memory in bytes)."""
    cpu = time.process_time()
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return cpu, rss


def field_of(obj: Any, name: str, default: float = 0.0) -> float:
    """A number from a dict or an object, whichever the room-event hub hands out."""
    value = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def hub_quality(hub: Any) -> dict[str, Any]:
    """``{room: aggregate}`` from the hub's real-user quality reports; empty without a hub."""
    if hub is None:
        return {}
    rooms = getattr(hub, "quality_rooms", None)
    if rooms is None:
        return {}
    try:
        result = rooms()
        if isinstance(result, Mapping):
            return dict(result)
        one = hub.quality
        return {name: q for name in result if (q := one(name)) is not None}
    except Exception:
        log.exception("room-event hub quality figures failed")
        return {}


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

    def __init__(self, ctx: Any, top_rooms: int, hub: Callable[[], Any] | None = None,
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
        self.ledger = TrafficLedger(ctx.rooms, self.keyframe_wait.observe)
        self.joins = JoinOutcomes()
        self.quality_totals = QualityTotals()
        self._hub = hub or (lambda: getattr(ctx, "hub", None))
        self._extra = extra
        self._last: Snapshot | None = None
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_Collector(self))

    def hub(self) -> Any:
        return self._hub()

    def snapshot(self, max_age: float = 0.0) -> Snapshot:
        """A fresh walk over the rooms, or the last one if it is younger than ``max_age`` seconds."""
        if self._last is None or time.time() - self._last.at > max_age:
            self._last = self.ledger.snapshot()
        return self._last

    def quality(self) -> tuple[dict[str, Any], Quality]:
        per_room = hub_quality(self.hub())
        self.quality_totals.update(per_room)
        return per_room, combine_quality(per_room.values())

    def sessions(self) -> Counter[tuple[str, str]]:
        states: Counter[tuple[str, str]] = Counter()
        for session in self.ctx.sessions:
            pc = getattr(session, "pc", None)
            states[(getattr(session, "kind", "session"), getattr(pc, "connectionState", "unknown"))] += 1
        return states

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
        counts = self.sessions()
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

        joins = CounterMetricFamily("cherry_join_requests", "WHIP/WHEP offers answered, by endpoint and "
                                    "HTTP status code", labels=["endpoint", "code"])
        for endpoint in ("whip", "whep"):
            codes = {code for (e, code) in self.joins.counts if e == endpoint} | {201}
            for code in sorted(codes):
                joins.add_metric([endpoint, str(code)], self.joins.counts.get((endpoint, code), 0))
        yield joins

        hub = self.hub()
        hub_stats: Mapping[str, Any] = getattr(hub, "stats", None) or {}
        messages = CounterMetricFamily("cherry_room_event_messages", "Room-event WebSocket messages",
                                       labels=["direction"])
        messages.add_metric(["in"], float(hub_stats.get("messages_in", 0)))
        messages.add_metric(["out"], float(hub_stats.get("messages_out", 0)))
        yield messages
        drops = CounterMetricFamily("cherry_room_event_drops", "Room-event messages dropped or refused",
                                    labels=["reason"])
        drops.add_metric(["slow_client"], float(hub_stats.get("dropped_slow", 0)))
        drops.add_metric(["rate_limited"], float(hub_stats.get("rate_limited", 0)))
        yield drops
        yield GaugeMetricFamily("cherry_room_event_sockets", "Open room-event WebSockets",
                                value=float(hub_stats.get("sockets", 0)))

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
        yield GaugeMetricFamily("cherry_draining", "1 while the gateway drains before exiting",
                                value=1.0 if self.ctx.draining else 0.0)
        if self._extra is not None:
            yield from self._extra()


class _Collector:
    def __init__(self, ops: Operations) -> None:
        self._ops = ops

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._ops.collect()
        except Exception:
            log.exception("metrics collection failed")
