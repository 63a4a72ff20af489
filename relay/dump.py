"""Typed snapshots of the relay (``dump()``) and the traffic totals objects add to as they close.

Operations (metrics, admin API, pages, dashboard) read these instead of walking relay objects;
the counters a closed publication or subscription held live on in :class:`Traffic` totals, so the
exported counters never go backwards and nothing closed is retained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("audio", "video")
DROP_REASONS = ("waiting_keyframe", "congestion", "not_connected", "failed")


def _by_kind() -> dict[str, int]:
    return dict.fromkeys(KINDS, 0)


@dataclass(slots=True)
class Traffic:
    """Counters summed over publications (ingest) and subscriptions (egress)."""

    ingest_packets: dict[str, int] = field(default_factory=_by_kind)
    ingest_bytes: dict[str, int] = field(default_factory=_by_kind)
    egress_packets: dict[str, int] = field(default_factory=_by_kind)
    egress_bytes: dict[str, int] = field(default_factory=_by_kind)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    duplicates: int = 0
    retransmitted: int = 0
    nacks_in: int = 0
    nack_budget_refused: int = 0
    keyframe_requests_in: int = 0  # PLI/FIR from viewers
    keyframe_requests_out: int = 0  # sent upstream to hosts (throttled)
    keyframes_in: int = 0
    sink_failures: int = 0
    keyframe_cache_starts: int = 0  # joiners started from a publication's keyframe cache
    keyframe_cache_fallbacks: int = 0  # joiners that waited for a keyframe: the GOP outgrew the cache

    def add_publication(self, p: PublicationDump) -> None:
        kind = p.kind if p.kind in KINDS else "video"
        self.ingest_packets[kind] += p.packets_in
        self.ingest_bytes[kind] += p.bytes_in
        self.keyframes_in += p.keyframes_in
        self.keyframe_requests_out += p.keyframe_requests
        self.duplicates += p.duplicates
        self.sink_failures += p.sink_failures
        self.keyframe_cache_starts += p.cache_starts
        self.keyframe_cache_fallbacks += p.cache_fallbacks

    def add_subscription(self, s: SubscriptionDump) -> None:
        kind = s.kind if s.kind in KINDS else "video"
        self.egress_packets[kind] += s.packets_sent
        self.egress_bytes[kind] += s.bytes_sent
        for reason, n in s.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self.retransmitted += s.retransmitted
        self.nacks_in += s.nacks_in
        self.nack_budget_refused += s.nack_budget_refused
        self.keyframe_requests_in += s.keyframe_requests_in

    def plus(self, other: Traffic) -> Traffic:
        out = Traffic()
        for name in ("ingest_packets", "ingest_bytes", "egress_packets", "egress_bytes", "dropped"):
            mine, theirs, target = getattr(self, name), getattr(other, name), getattr(out, name)
            for key in set(mine) | set(theirs):
                target[key] = mine.get(key, 0) + theirs.get(key, 0)
        for name in ("duplicates", "retransmitted", "nacks_in", "nack_budget_refused", "keyframe_requests_in",
                     "keyframe_requests_out", "keyframes_in", "sink_failures", "keyframe_cache_starts",
                     "keyframe_cache_fallbacks"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out


@dataclass(frozen=True, slots=True)
class PublicationDump:
    kind: str
    codec: str
    owner: str  # identity of the host or guest publishing it
    packets_in: int
    bytes_in: int
    keyframes_in: int
    keyframe_requests: int
    duplicates: int
    epochs: int  # stream restarts (SSRC change or sequence jump)
    sink_failures: int
    subscriptions: int
    # Keyframe cache (video): joiners started from it, of which from a cache past its age; joiners that
    # waited for a keyframe because the GOP outgrew the cache (the bench counts these) or no keyframe had
    # come yet; GOPs that outgrew it; and what it holds now (age None: nothing cached).
    cache_starts: int = 0
    cache_stale_starts: int = 0
    cache_fallbacks: int = 0
    cache_empty: int = 0
    gops_overflowed: int = 0
    cache_packets: int = 0
    cache_bytes: int = 0
    cache_age_ms: int | None = None
    sender_reports: int = 0  # RTCP sender reports from the host: its clock mapping, passed on for lip sync


@dataclass(frozen=True, slots=True)
class Congestion:
    """What a viewer stream's RTCP feedback says about its path."""

    state: str  # "ok", "congested" (video paused) or "probing" (resumed, watched)
    loss: float  # fraction lost in the last receiver report
    jitter_ms: float
    rtt_ms: float | None
    bandwidth_bps: int | None  # the viewer's REMB estimate
    send_bps: int  # what this stream sent over the last second or so
    pauses: int


@dataclass(frozen=True, slots=True)
class SubscriptionDump:
    kind: str
    slot: int
    source: str | None  # identity whose track it shows
    packets_sent: int
    bytes_sent: int
    dropped: dict[str, int]
    retransmitted: int
    nacks_in: int
    nack_budget_refused: int
    keyframe_requests_in: int
    waiting_keyframe: bool
    congestion: Congestion


@dataclass(frozen=True, slots=True)
class SessionDump:
    session_id: str
    kind: str  # "ingest" or "playback"
    identity: str
    role: str
    state: str  # the peer connection's state
    created_at: float  # wall clock
    connected_at: float | None
    publications: tuple[PublicationDump, ...] = ()
    subscriptions: tuple[SubscriptionDump, ...] = ()


@dataclass(frozen=True, slots=True)
class ParticipantDump:
    identity: str
    display_name: str
    role: str
    sessions: tuple[SessionDump, ...]
    sockets: int
    on_mic: bool


@dataclass(frozen=True, slots=True)
class RoomDump:
    name: str
    title: str
    live: bool
    live_since: float | None
    created_at: float
    host: str | None
    viewers: int
    guests: tuple[str, ...]
    pk_partner: str | None
    publications: tuple[PublicationDump, ...]  # the host's, then its guests'
    traffic: Traffic  # everything this room ever moved, closed objects included
    participants: tuple[ParticipantDump, ...] = ()  # only in a detailed dump


@dataclass(frozen=True, slots=True)
class RelayDump:
    rooms: tuple[RoomDump, ...]
    sessions: dict[tuple[str, str], int]  # (kind, state) -> count
    viewers: int
    stream_states: dict[str, int]  # viewer video streams by congestion state
    traffic: Traffic  # process-wide: live objects plus everything closed
