"""Mergeable measurements of a load run: per (room, network condition, node) group, and generator health.

The node of a viewer group is the gateway node holding its sessions (the worker a session's
``Location`` names, :func:`loadtests.webrtc.signaling_client.node_of`); of a chat group, the node
its sockets entered through. A single gateway is one node.

Agents ship deltas of these (JSON) to their Locust process, Locust workers ship them to the
master (``report_to_master``), and the master merges everything into one :class:`Summary`
that the verdict (:mod:`loadtests.verdict`) reads. Every field is a count, a sum or a
:class:`~loadtests.webrtc.metrics.Histogram`, so merging is addition and the order of
arrival does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from loadtests.timeline import IntervalStats, interval_key
from loadtests.webrtc.metrics import Histogram, fields_to_json

EVENTS_NET = "events"  # the pseudo network condition of room-event (chat) clients


def group_key(room: str, net: str, node: str = "") -> str:
    return f"{room}|{net}|{node}"


def split_key(key: str) -> tuple[str, str, str]:
    """(room, network condition, node); room names cannot hold ``|`` (signaling.auth.ROOM_NAME_RULE)."""
    room, net, node = (key.split("|", 2) + ["", ""])[:3]
    return room, net, node


def _merge_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for key, value in other.items():
        into[key] = into.get(key, 0) + value


@dataclass(slots=True)
class GroupStats:
    """Viewers (or chat clients) of one room under one network condition."""

    join_attempts: int = 0
    join_ok: int = 0
    join_failed: dict[str, int] = field(default_factory=dict)  # constant error kind -> count
    join_ms: Histogram = field(default_factory=Histogram)  # first POST to first decodable frame
    whep_ms: Histogram = field(default_factory=Histogram)  # accepted POST round trip
    ttff_ms: Histogram = field(default_factory=Histogram)  # accepted POST to first decodable frame
    sessions: int = 0  # viewer sessions that ended (left or at the end of the run)
    lost: int = 0  # sessions whose connection failed while watching
    watch_s: float = 0.0
    frames: int = 0
    freezes: int = 0
    freeze_s: float = 0.0
    decode_gaps: int = 0  # frames lost for good: the picture broke until the next keyframe
    latency_ms: Histogram = field(default_factory=Histogram)  # capture to arrival, per frame
    session_stutter: Histogram = field(default_factory=Histogram)  # per-session stutter, per mille
    sockets: int = 0
    chat_sent: int = 0
    chat_echoed: int = 0
    gifts_sent: int = 0
    likes_sent: int = 0
    event_errors: dict[str, int] = field(default_factory=dict)
    chat_latency: Histogram = field(default_factory=Histogram)
    # PK battles: viewers with co-stream slots, and hosts' battles (counted in the inviter's room)
    partner_frames: int = 0
    partner_latency_ms: Histogram = field(default_factory=Histogram)
    pk_sessions: int = 0  # viewer sessions long enough to span a battle
    pk_sessions_with_partner: int = 0  # ... that received the partner's video
    pk_invites: int = 0
    pk_started: int = 0
    pk_ended: int = 0
    pk_setup_ms: Histogram = field(default_factory=Histogram)  # invite sent to pk_started

    def merge(self, other: GroupStats) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Histogram):
                mine.merge(theirs)
            elif isinstance(mine, dict):
                _merge_counts(mine, theirs)
            else:
                setattr(self, f.name, mine + theirs)

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupStats:
        stats = cls()
        for f in fields(stats):
            if f.name not in data:
                continue
            current = getattr(stats, f.name)
            if isinstance(current, Histogram):
                setattr(stats, f.name, Histogram.from_json(data[f.name]))
            elif isinstance(current, dict):
                setattr(stats, f.name, {str(k): int(v) for k, v in data[f.name].items()})
            else:
                setattr(stats, f.name, type(current)(data[f.name]))
        return stats


@dataclass(slots=True)
class HealthStats:
    """One generator process: CPU against wall time, and event-loop lag."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    cpu_max: float = 0.0  # busiest reporting interval, share of one core
    intervals: int = 0
    busy_intervals: int = 0  # intervals above BUSY share of one core
    loop_lag_ms: Histogram = field(default_factory=Histogram)

    BUSY = 0.9

    def add_interval(self, cpu_s: float, wall_s: float) -> None:
        if wall_s <= 0:
            return
        share = cpu_s / wall_s
        self.cpu_s += cpu_s
        self.wall_s += wall_s
        self.cpu_max = max(self.cpu_max, share)
        self.intervals += 1
        self.busy_intervals += share > self.BUSY

    def merge(self, other: HealthStats) -> None:
        self.cpu_s += other.cpu_s
        self.wall_s += other.wall_s
        self.cpu_max = max(self.cpu_max, other.cpu_max)
        self.intervals += other.intervals
        self.busy_intervals += other.busy_intervals
        self.loop_lag_ms.merge(other.loop_lag_ms)

    @property
    def cpu_mean(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_s": round(self.cpu_s, 4),
            "wall_s": round(self.wall_s, 4),
            "cpu_max": round(self.cpu_max, 4),
            "intervals": self.intervals,
            "busy_intervals": self.busy_intervals,
            "loop_lag_ms": self.loop_lag_ms.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HealthStats:
        return cls(
            float(data.get("cpu_s", 0.0)),
            float(data.get("wall_s", 0.0)),
            float(data.get("cpu_max", 0.0)),
            int(data.get("intervals", 0)),
            int(data.get("busy_intervals", 0)),
            Histogram.from_json(data.get("loop_lag_ms", {})),
        )


@dataclass(slots=True)
class Summary:
    groups: dict[str, GroupStats] = field(default_factory=dict)
    health: dict[str, HealthStats] = field(default_factory=dict)  # process id -> health
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # room -> publish facts, pauses
    host_failures: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # generator-side problems (agent died, ...)
    marks: dict[str, float] = field(default_factory=dict)  # wall-clock instants, merged by max
    # Set-up problems (the verdict is SETUP): tokens the gateway refused ("WHEP 401 unauthorized:
    # ..."), and token sources that failed, each reason with its count.
    token_refusals: dict[str, int] = field(default_factory=dict)
    token_failures: dict[str, int] = field(default_factory=dict)
    # The run over time (loadtests.timeline): interval key -> what was measured in that interval.
    timeline: dict[str, IntervalStats] = field(default_factory=dict)

    MAX_REASONS = 20  # distinct reasons kept per kind; more are counted under the last one

    def setup_error(self, refused: bool, reason: str) -> None:
        counts = self.token_refusals if refused else self.token_failures
        if reason not in counts and len(counts) >= self.MAX_REASONS:
            reason = "(more reasons)"
        counts[reason] = counts.get(reason, 0) + 1

    def mark(self, name: str, at: float) -> None:
        self.marks[name] = max(self.marks.get(name, at), at)

    def interval(self, at: float, kind: str, name: str) -> IntervalStats:
        """The timeline entry of wall-clock instant ``at`` for one network condition or generator process."""
        key = interval_key(at, kind, name)
        stats = self.timeline.get(key)
        if stats is None:
            stats = self.timeline[key] = IntervalStats()
        return stats

    def group(self, key: str) -> GroupStats:
        stats = self.groups.get(key)
        if stats is None:
            stats = self.groups[key] = GroupStats()
        return stats

    def merge(self, other: Summary) -> None:
        for key, stats in other.groups.items():
            self.group(key).merge(stats)
        for proc, health in other.health.items():
            self.health.setdefault(proc, HealthStats()).merge(health)
        self.hosts.update(other.hosts)
        _merge_counts(self.host_failures, other.host_failures)
        self.notes.extend(n for n in other.notes if n not in self.notes)
        for name, at in other.marks.items():
            self.mark(name, at)
        _merge_counts(self.token_refusals, other.token_refusals)
        _merge_counts(self.token_failures, other.token_failures)
        for key, point in other.timeline.items():
            mine = self.timeline.get(key)
            if mine is None:
                self.timeline[key] = mine = IntervalStats()
            mine.merge(point)

    def empty(self) -> bool:
        return not (self.groups or self.health or self.hosts or self.host_failures or self.notes or self.marks
                    or self.token_refusals or self.token_failures or self.timeline)

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": {k: v.to_json() for k, v in self.groups.items()},
            "health": {k: v.to_json() for k, v in self.health.items()},
            "hosts": self.hosts,
            "host_failures": self.host_failures,
            "notes": self.notes,
            "marks": self.marks,
            "token_refusals": self.token_refusals,
            "token_failures": self.token_failures,
            "timeline": {k: v.to_json() for k, v in self.timeline.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(
            {k: GroupStats.from_json(v) for k, v in data.get("groups", {}).items()},
            {k: HealthStats.from_json(v) for k, v in data.get("health", {}).items()},
            dict(data.get("hosts", {})),
            {str(k): int(v) for k, v in data.get("host_failures", {}).items()},
            list(data.get("notes", [])),
            {str(k): float(v) for k, v in data.get("marks", {}).items()},
            {str(k): int(v) for k, v in data.get("token_refusals", {}).items()},
            {str(k): int(v) for k, v in data.get("token_failures", {}).items()},
            {str(k): IntervalStats.from_json(v) for k, v in data.get("timeline", {}).items()},
        )

    def pooled(self, room: str | None = None, net: str | None = None, events: bool = False,
               node: str | None = None) -> GroupStats:
        """All groups of one room, network and/or node merged (chat groups only with ``events``)."""
        total = GroupStats()
        for key, stats in self.groups.items():
            r, n, d = split_key(key)
            if (n == EVENTS_NET) != events:
                continue
            if (room is None or r == room) and (net is None or n == net) and (node is None or d == node):
                total.merge(stats)
        return total

    def rooms(self) -> list[str]:
        return sorted({split_key(k)[0] for k in self.groups})

    def nets(self) -> list[str]:
        return sorted({split_key(k)[1] for k in self.groups} - {EVENTS_NET})

    def nodes(self) -> list[str]:
        """Gateway nodes that held a viewer session or a room socket (or refused one)."""
        return sorted({split_key(k)[2] for k in self.groups})
