"""The relay's sections of the one configuration tree (``gateway.config`` composes and validates it).

Frozen: what the composition root loads is what every layer reads; nothing copies a section into
settings of its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # Codec preference for ingest, best first.
    video_codecs: tuple[str, ...] = ("VP8", "H264")
    audio_codecs: tuple[str, ...] = ("opus",)
    # Minimum gap between keyframe requests sent to one host track (all its viewers together).
    keyframe_request_interval_ms: int = 300
    # Minimum gap between keyframe requests one viewer stream may cause (on top of the host's throttle).
    viewer_keyframe_request_interval_ms: int = 1000
    # Packets kept per publication to answer NACKs (power of two).
    packet_cache_size: int = 1024
    # Retransmissions one viewer stream may get per second (a token bucket, burst of twice this).
    nack_budget_per_second: int = 100
    # A packet is not resent to the same viewer again within this long (or its measured RTT, if longer).
    nack_resend_interval_ms: int = 50
    # User-space bytes queued to one viewer before its video drops to the next keyframe.
    viewer_queue_limit_bytes: int = 262144
    sender_report_interval_ms: int = 1000
    # A viewer stream reporting more loss than this (RTCP receiver reports) is congested.
    congestion_loss_ratio: float = 0.10
    # ... or whose bandwidth estimate (REMB) is below this share of what its stream needs.
    congestion_bandwidth_ratio: float = 0.8
    # A congested viewer's video pauses this long (doubling while it stays congested, up to 8x)
    # before it is resumed at a keyframe; audio keeps flowing.
    congestion_pause_ms: int = 2000
    # Keyframe cache: each video publication keeps the packets since its last keyframe, so a new viewer
    # starts from it at once instead of asking the host (0 turns it off). A GOP larger than this is not
    # kept: its joiners ask for a keyframe and wait, as without a cache.
    keyframe_cache_bytes: int = 1048576
    # A cache older than this is still served (it decodes), but its joiner asks the host for one
    # refreshing keyframe (through the host's keyframe throttle), so later joiners catch up faster.
    keyframe_cache_max_age_ms: int = 2000
    # A joiner is sent the cache in bursts of at most this many bytes, one burst per this many ms
    # (and only while its send queue is empty), then goes live.
    keyframe_cache_burst_bytes: int = 16384
    keyframe_cache_pace_ms: int = 5


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_rooms: int = 1000
    # Viewers of one room; 0 means the process's viewer capacity.
    max_viewers_per_room: int = 0
    # Viewer sessions one process forwards to before it refuses more (503). Calibrated with `make bench` on a
    # reference run (2-core VM, a slow day): 3.3-3.7 CPU-ms per viewer-second at 200-300 viewers, so 200 viewers
    # take about 0.7 of a core; the 300-viewer step saturated the core (stutter 0.24).
    process_viewer_capacity: int = 200
    # New sessions are refused (503) while the event loop lags more than this.
    max_loop_lag_ms: int = 250
    max_body_bytes: int = 65536
    # Seconds a client is told to wait (Retry-After) when a limit is hit.
    retry_after: int = 5
    # WHIP/WHEP offers accepted per client address: sustained rate and burst (0 disables).
    offers_per_second: float = 10.0
    offer_burst: int = 40
    # Addresses or CIDRs the offer rate limit does not apply to (load generators, a trusted app backend).
    offer_limit_exempt: tuple[str, ...] = ()
    # Bounds on what one offer or trickle PATCH may carry (checked before any negotiation work).
    max_offer_mlines: int = 16
    max_sdp_line_bytes: int = 1024
    max_candidates_per_patch: int = 20
    max_remote_candidates: int = 40

    def viewers_per_room(self) -> int:
        return self.max_viewers_per_room or self.process_viewer_capacity


@dataclass(frozen=True, slots=True)
class RoomsConfig:
    # An empty room is closed after this many seconds.
    empty_room_grace_s: float = 30.0
    # Viewers of a room whose host left keep their sessions this long before they are ended.
    host_absent_timeout_s: float = 300.0
    # Seconds a session may take to connect (ICE + DTLS) before it is dropped.
    connect_timeout_s: float = 20.0
    # What a host may list its room under (WHIP ?category=); the room list filters by them. Empty: no categories.
    categories: tuple[str, ...] = ("Just chatting", "Music", "Gaming", "Dance", "Outdoors", "Food", "Sports",
                                   "Learning")


@dataclass(frozen=True, slots=True)
class CostreamConfig:
    # Guests on mic a room may have at once.
    max_guests: int = 2
    # Video (and audio) m-lines of one viewer that get a stream: own host + co-stream slots.
    max_slots: int = 4
    pk_duration_s: float = 300.0
    # An invitation nobody answers in this time is rejected.
    pk_invite_timeout_s: float = 15.0
    # A host that drops mid-battle has this long to come back before its side loses.
    pk_host_grace_s: float = 10.0
    # Scores and the remaining time are sent at least this often during a battle.
    pk_tick_s: float = 1.0
    guest_invite_timeout_s: float = 30.0
