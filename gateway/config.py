"""One typed, validated configuration tree.

Order of precedence: embedded defaults, then a TOML file (unknown keys are
errors), then CLI overrides, then :meth:`GatewayConfig.validate`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Public base URL used in Location headers when behind a proxy; empty: relative paths.
    public_url: str = ""
    cors_origins: list[str] = field(default_factory=lambda: ["*"])


@dataclass(slots=True)
class IceServerConfig:
    urls: list[str] = field(default_factory=list)
    username: str = ""
    credential: str = ""


@dataclass(slots=True)
class IceConfig:
    # Host addresses offered as ICE candidates; empty means every interface but loopback.
    hosts: list[str] = field(default_factory=list)
    servers: list[IceServerConfig] = field(default_factory=list)


@dataclass(slots=True)
class AuthConfig:
    # HS256 secret; required outside --dev (dev mode uses a per-run random one).
    secret: str = ""
    issuer: str = "cherry-gateway"
    default_ttl: int = 3600
    leeway: int = 5


@dataclass(slots=True)
class LimitsConfig:
    max_rooms: int = 1000
    max_viewers_per_room: int = 2000
    max_body_bytes: int = 65536
    # Seconds a client is told to wait (Retry-After) when a limit is hit.
    retry_after: int = 5
    # WHIP/WHEP offers accepted per client address: sustained rate and burst (0 disables).
    offers_per_second: float = 10.0
    offer_burst: int = 40


@dataclass(slots=True)
class MediaConfig:
    # Codec preference for ingest, best first.
    video_codecs: list[str] = field(default_factory=lambda: ["VP8", "H264"])
    audio_codecs: list[str] = field(default_factory=lambda: ["opus"])
    # Minimum gap between keyframe requests sent to one host track.
    keyframe_request_interval_ms: int = 300
    # Packets kept per publication to answer NACKs (power of two).
    packet_cache_size: int = 1024
    # User-space bytes queued to one viewer before its video drops to the next keyframe.
    viewer_queue_limit_bytes: int = 262144
    sender_report_interval_ms: int = 1000


@dataclass(slots=True)
class RoomsConfig:
    # An empty room is closed after this many seconds.
    empty_room_grace_s: float = 30.0
    # Viewers of a room whose host left wait this long before the room closes.
    host_absent_timeout_s: float = 300.0
    # Seconds a session may take to connect (ICE + DTLS) before it is dropped.
    connect_timeout_s: float = 20.0


@dataclass(slots=True)
class GiftConfig:
    kind: str = ""
    # Points the gift scores in a PK battle (per unit sent).
    value: int = 1


def _default_gifts() -> list[GiftConfig]:
    return [GiftConfig("heart", 1), GiftConfig("rose", 5), GiftConfig("rocket", 100), GiftConfig("castle", 500)]


@dataclass(slots=True)
class EventsConfig:
    max_chat_length: int = 200
    # Per identity: sustained rate and burst for chat, gifts and likes.
    chat_per_second: float = 1.0
    chat_burst: int = 5
    gifts_per_second: float = 5.0
    gift_burst: int = 20
    likes_per_second: float = 20.0
    like_burst: int = 100
    max_gift_count: int = 999
    gifts: list[GiftConfig] = field(default_factory=_default_gifts)
    # Frames queued to one socket before it is cut off as too slow (close code 4008).
    send_queue_limit: int = 256
    max_frame_bytes: int = 4096
    # Consecutive protocol errors before a socket is closed (4009).
    max_errors: int = 20
    # Aggregated viewer counts and likes go out at most this often.
    aggregate_interval_s: float = 1.0
    default_mute_s: int = 600
    default_ban_s: int = 3600
    chat_history: int = 20
    # Words masked with asterisks in chat (case-insensitive); a smarter filter can replace the hook.
    word_filter: list[str] = field(default_factory=list)
    max_sockets_per_room: int = 20000


@dataclass(slots=True)
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


@dataclass(slots=True)
class LogConfig:
    level: str = "info"
    json: bool = False


@dataclass(slots=True)
class MetricsConfig:
    # GET /metrics in the Prometheus text format.
    enabled: bool = True
    # Per-room series (label "room") only for the N busiest rooms; 0: none.
    top_rooms: int = 10
    # GET /dashboard (SRE page) and its JSON feed /dashboard/data.
    dashboard: bool = True
    # Seconds between dashboard samples, and how many samples of history it keeps.
    sample_interval_s: float = 1.0
    history_points: int = 300


WEBHOOK_EVENTS = ("room_started", "room_ended", "stream_started", "stream_ended",
                  "participant_joined", "participant_left", "pk_started", "pk_ended")


@dataclass(slots=True)
class WebhooksConfig:
    # Receivers; every event is POSTed to each. Empty: webhooks are off.
    urls: list[str] = field(default_factory=list)
    # HMAC-SHA256 key for the X-Cherry-Signature header; required when urls is set.
    secret: str = ""
    events: list[str] = field(default_factory=lambda: list(WEBHOOK_EVENTS))
    # participant_joined/left are sent for these roles only.
    roles: list[str] = field(default_factory=lambda: ["host", "guest", "viewer"])
    timeout_s: float = 5.0
    max_attempts: int = 6
    # First retry delay; it doubles per attempt (with jitter) up to backoff_max_s.
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    # Events waiting per URL; when full, new events for that URL are dropped (and counted).
    queue_size: int = 1000
    # Deliveries in flight per URL.
    concurrency: int = 2


@dataclass(slots=True)
class DrainConfig:
    # After SIGTERM: stop taking sessions, then exit once every session has ended or after this long.
    timeout_s: float = 30.0


@dataclass(slots=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    ice: IceConfig = field(default_factory=IceConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    costream: CostreamConfig = field(default_factory=CostreamConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    drain: DrainConfig = field(default_factory=DrainConfig)
    dev: bool = False

    def validate(self) -> GatewayConfig:
        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{key}: {why}")

        need(0 < self.server.port < 65536, "server.port", "must be 1-65535")
        need(bool(self.server.host), "server.host", "must not be empty")
        for i, server in enumerate(self.ice.servers):
            need(bool(server.urls), f"ice.servers[{i}].urls", "must list at least one URL")
            for url in server.urls:
                need(url.split(":", 1)[0] in ("stun", "stuns", "turn", "turns"),
                     f"ice.servers[{i}].urls", f"{url!r} is not a stun:/turn: URL")
        need(self.dev or len(self.auth.secret) >= 32, "auth.secret",
             "must be at least 32 characters (or run with --dev)")
        need(self.auth.default_ttl > 0, "auth.default_ttl", "must be positive")
        need(self.limits.max_rooms > 0, "limits.max_rooms", "must be positive")
        need(self.limits.max_viewers_per_room > 0, "limits.max_viewers_per_room", "must be positive")
        need(self.limits.max_body_bytes >= 1024, "limits.max_body_bytes", "must be at least 1024")
        need(self.limits.retry_after > 0, "limits.retry_after", "must be positive")
        need(self.limits.offers_per_second >= 0, "limits.offers_per_second", "must be >= 0")
        need(self.limits.offer_burst >= 1, "limits.offer_burst", "must be at least 1")
        known_video = {"vp8", "h264"}
        need(bool(self.media.video_codecs) and all(c.lower() in known_video for c in self.media.video_codecs),
             "media.video_codecs", "must be a non-empty list of VP8, H264")
        need(bool(self.media.audio_codecs) and all(c.lower() == "opus" for c in self.media.audio_codecs),
             "media.audio_codecs", "must be [\"opus\"]")
        size = self.media.packet_cache_size
        need(size >= 64 and size & (size - 1) == 0, "media.packet_cache_size", "must be a power of two >= 64")
        need(self.media.keyframe_request_interval_ms >= 0, "media.keyframe_request_interval_ms", "must be >= 0")
        need(self.media.viewer_queue_limit_bytes > 0, "media.viewer_queue_limit_bytes", "must be positive")
        need(self.media.sender_report_interval_ms >= 100, "media.sender_report_interval_ms", "must be >= 100")
        need(self.rooms.empty_room_grace_s >= 0, "rooms.empty_room_grace_s", "must be >= 0")
        need(self.rooms.host_absent_timeout_s >= 0, "rooms.host_absent_timeout_s", "must be >= 0")
        need(self.rooms.connect_timeout_s > 0, "rooms.connect_timeout_s", "must be positive")
        ev = self.events
        need(ev.max_chat_length > 0, "events.max_chat_length", "must be positive")
        for key in ("chat_per_second", "gifts_per_second", "likes_per_second"):
            need(getattr(ev, key) > 0, f"events.{key}", "must be positive")
        for key in ("chat_burst", "gift_burst", "like_burst", "max_gift_count", "send_queue_limit",
                    "max_errors", "chat_history", "max_sockets_per_room"):
            need(getattr(ev, key) >= 1, f"events.{key}", "must be at least 1")
        need(ev.max_frame_bytes >= 256, "events.max_frame_bytes", "must be at least 256")
        need(ev.aggregate_interval_s > 0, "events.aggregate_interval_s", "must be positive")
        need(bool(ev.gifts), "events.gifts", "must list at least one gift")
        for i, gift in enumerate(ev.gifts):
            need(bool(gift.kind), f"events.gifts[{i}].kind", "must not be empty")
            need(gift.value >= 0, f"events.gifts[{i}].value", "must be >= 0")
        need(len({g.kind for g in ev.gifts}) == len(ev.gifts), "events.gifts", "kinds must be unique")
        co = self.costream
        need(co.max_guests >= 0, "costream.max_guests", "must be >= 0")
        need(co.max_slots >= 1, "costream.max_slots", "must be at least 1")
        for key in ("pk_duration_s", "pk_invite_timeout_s", "pk_tick_s", "guest_invite_timeout_s"):
            need(getattr(co, key) > 0, f"costream.{key}", "must be positive")
        need(co.pk_host_grace_s >= 0, "costream.pk_host_grace_s", "must be >= 0")
        need(self.log.level.lower() in ("debug", "info", "warning", "error"), "log.level",
             "must be debug, info, warning or error")
        need(self.metrics.top_rooms >= 0, "metrics.top_rooms", "must be >= 0")
        need(self.metrics.sample_interval_s >= 0.1, "metrics.sample_interval_s", "must be >= 0.1")
        need(self.metrics.history_points >= 2, "metrics.history_points", "must be at least 2")
        hooks = self.webhooks
        for i, url in enumerate(hooks.urls):
            need(url.startswith(("http://", "https://")), f"webhooks.urls[{i}]", f"{url!r} is not an http(s) URL")
        need(not hooks.urls or len(hooks.secret) >= 16, "webhooks.secret",
             "must be at least 16 characters when webhooks.urls is set")
        for event in hooks.events:
            need(event in WEBHOOK_EVENTS, "webhooks.events", f"{event!r} is not one of {', '.join(WEBHOOK_EVENTS)}")
        for role in hooks.roles:
            need(role in ("host", "guest", "viewer", "admin"), "webhooks.roles",
                 f"{role!r} is not host, guest, viewer or admin")
        need(hooks.timeout_s > 0, "webhooks.timeout_s", "must be positive")
        need(hooks.max_attempts >= 1, "webhooks.max_attempts", "must be at least 1")
        need(hooks.backoff_s >= 0, "webhooks.backoff_s", "must be >= 0")
        need(hooks.backoff_max_s >= hooks.backoff_s, "webhooks.backoff_max_s", "must be >= webhooks.backoff_s")
        need(hooks.queue_size >= 1, "webhooks.queue_size", "must be at least 1")
        need(hooks.concurrency >= 1, "webhooks.concurrency", "must be at least 1")
        need(self.drain.timeout_s >= 0, "drain.timeout_s", "must be >= 0")
        return self


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table")
        return _build(hint, value, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - not used in the tree
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"{path}: unknown setting")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> GatewayConfig:
    """Defaults, then the TOML file, then dotted ``overrides`` (e.g. ``{"server.port": 9000}``)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config: GatewayConfig = _build(GatewayConfig, data, "")
    return config.validate()
