"""One typed, validated configuration tree.

Order of precedence: embedded defaults, then a TOML file (unknown keys are
errors), then CLI overrides, then :meth:`GatewayConfig.validate`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cluster.config import ClusterConfig
from gateway.tls import TlsError, server_context
from relay.config import CostreamConfig, LimitsConfig, MediaConfig, RoomsConfig
from relay.packet import MAX_CACHE_SLOTS
from signaling.auth import SecretError, resolve_secrets
from signaling.config import AuthConfig, EventsConfig


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Public base URL used in Location headers when behind a proxy; empty: relative paths.
    public_url: str = ""
    cors_origins: tuple[str, ...] = ("*",)
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client: per-address limits then count
    # the client, not the proxy. Empty: the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    # HTTPS on the public port (PEM certificate chain and its key; both or neither); reloaded on SIGHUP.
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class IceServerConfig:
    urls: tuple[str, ...] = ()
    username: str = ""
    credential: str = ""


@dataclass(frozen=True, slots=True)
class IceConfig:
    # Host addresses offered as ICE candidates; empty means every interface but loopback.
    hosts: tuple[str, ...] = ()
    servers: tuple[IceServerConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    json: bool = False


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    # Receivers; every event is POSTed to each. Empty: webhooks are off.
    urls: tuple[str, ...] = ()
    # HMAC-SHA256 key for the X-Cherry-Signature header; required when urls is set.
    secret: str = ""
    events: tuple[str, ...] = WEBHOOK_EVENTS
    # participant_joined/left are sent for these roles only.
    roles: tuple[str, ...] = ("host", "guest", "viewer")
    timeout_s: float = 5.0
    max_attempts: int = 6
    # First retry delay; it doubles per attempt (with jitter) up to backoff_max_s.
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    # Events waiting per URL; when full, new events for that URL are dropped (and counted).
    queue_size: int = 1000
    # Deliveries in flight per URL.
    concurrency: int = 2


@dataclass(frozen=True, slots=True)
class OperationsConfig:
    # A listener of their own for /metrics and /dashboard (worker i of a host: port + i); 0: they are served on the
    # public port, and outside dev mode only with a bearer token (without one they answer 404 there).
    host: str = "127.0.0.1"
    port: int = 0
    # Bearer token the operations endpoints require, from an environment variable or a file; empty: none.
    token_env: str = ""
    token_file: str = ""


@dataclass(frozen=True, slots=True)
class PagesConfig:
    # Where the pages get a token when the link they were opened with has none: the app's endpoint, asked with
    # GET ?room=NAME&role=viewer|host (cookies included, so the app knows its signed-in user) and answering
    # {"token": "<jwt>"}. "" : only dev mode's /dev/token, or a token in the link (#token=...).
    token_url: str = ""


@dataclass(frozen=True, slots=True)
class DrainConfig:
    # After SIGTERM: stop taking sessions, then exit once every session has ended or after this long.
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SnapshotsConfig:
    # A cover per live room for the room list (GET /rooms/{room}/cover.jpg): the host's last keyframe, decoded off the
    # forwarding path in one worker thread, at most once per room per interval and only when it changed.
    enabled: bool = True
    interval_s: float = 10.0
    # JPEG width in pixels; the height keeps the stream's aspect ratio.
    width: int = 320


@dataclass(frozen=True, slots=True)
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
    operations: OperationsConfig = field(default_factory=OperationsConfig)
    pages: PagesConfig = field(default_factory=PagesConfig)
    snapshots: SnapshotsConfig = field(default_factory=SnapshotsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    dev: bool = False

    def validate(self) -> GatewayConfig:
        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{key}: {why}")

        need(0 < self.server.port < 65536, "server.port", "must be 1-65535")
        need(bool(self.server.host), "server.host", "must not be empty")
        need(bool(self.server.tls_cert) == bool(self.server.tls_key), "server.tls_key" if self.server.tls_cert
             else "server.tls_cert", "set both server.tls_cert and server.tls_key, or neither")
        if self.server.tls_cert:
            try:  # loaded here, so a missing file or a key that does not match stops start-up with its key
                server_context(self.server.tls_cert, self.server.tls_key)
            except TlsError as exc:
                raise ConfigError(str(exc)) from exc
        for i, server in enumerate(self.ice.servers):
            need(bool(server.urls), f"ice.servers[{i}].urls", "must list at least one URL")
            for url in server.urls:
                need(url.split(":", 1)[0] in ("stun", "stuns", "turn", "turns"),
                     f"ice.servers[{i}].urls", f"{url!r} is not a stun:/turn: URL")
        try:  # the secrets are read here, so a missing variable or file stops start-up with its key
            resolve_secrets(self.auth, self.dev)
        except SecretError as exc:
            raise ConfigError(str(exc)) from exc
        token_url = urlsplit(self.pages.token_url)
        need(not self.pages.token_url or (self.pages.token_url.startswith("/") and not token_url.netloc)
             or (token_url.scheme in ("http", "https") and bool(token_url.netloc)), "pages.token_url",
             "must be a path on this site (/...) or an http(s):// URL")
        need(self.auth.default_ttl > 0, "auth.default_ttl", "must be positive")
        need(self.auth.max_ttl >= self.auth.default_ttl, "auth.max_ttl", "must be at least auth.default_ttl")
        need(self.auth.leeway >= 0, "auth.leeway", "must be >= 0")
        need(bool(self.auth.issuer), "auth.issuer", "must not be empty")
        need(self.limits.max_rooms > 0, "limits.max_rooms", "must be positive")
        lim = self.limits
        need(lim.max_viewers_per_room >= 0, "limits.max_viewers_per_room", "must be >= 0 (0: the process capacity)")
        need(lim.process_viewer_capacity >= 1, "limits.process_viewer_capacity", "must be at least 1")
        need(lim.max_loop_lag_ms >= 10, "limits.max_loop_lag_ms", "must be at least 10")
        need(2 <= lim.max_offer_mlines <= 64, "limits.max_offer_mlines", "must be 2-64")
        need(256 <= lim.max_sdp_line_bytes <= 8192, "limits.max_sdp_line_bytes", "must be 256-8192")
        need(1 <= lim.max_candidates_per_patch <= lim.max_remote_candidates, "limits.max_candidates_per_patch",
             "must be 1 to limits.max_remote_candidates")
        need(lim.max_remote_candidates <= 1000, "limits.max_remote_candidates", "must be at most 1000")
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
        need(size >= 64 and size & (size - 1) == 0 and size <= MAX_CACHE_SLOTS, "media.packet_cache_size",
             f"must be a power of two from 64 to {MAX_CACHE_SLOTS} (a larger ring would outlive the 16-bit sequence "
             "numbers it is indexed by)")
        need(self.media.keyframe_request_interval_ms >= 0, "media.keyframe_request_interval_ms", "must be >= 0")
        need(self.media.viewer_queue_limit_bytes > 0, "media.viewer_queue_limit_bytes", "must be positive")
        need(self.media.viewer_keyframe_request_interval_ms >= 0, "media.viewer_keyframe_request_interval_ms",
             "must be >= 0")
        need(self.media.nack_budget_per_second >= 0, "media.nack_budget_per_second", "must be >= 0")
        need(self.media.nack_resend_interval_ms >= 0, "media.nack_resend_interval_ms", "must be >= 0")
        need(0 < self.media.congestion_loss_ratio <= 1, "media.congestion_loss_ratio", "must be in (0, 1]")
        need(0 <= self.media.congestion_bandwidth_ratio <= 1, "media.congestion_bandwidth_ratio",
             "must be in [0, 1] (0: ignore bandwidth estimates)")
        need(self.media.congestion_pause_ms >= 100, "media.congestion_pause_ms", "must be at least 100")
        need(self.media.sender_report_interval_ms >= 100, "media.sender_report_interval_ms", "must be >= 100")
        need(self.media.keyframe_cache_bytes >= 0, "media.keyframe_cache_bytes", "must be >= 0 (0: no cache)")
        need(self.media.keyframe_cache_max_age_ms >= 0, "media.keyframe_cache_max_age_ms", "must be >= 0")
        need(1500 <= self.media.keyframe_cache_burst_bytes <= self.media.viewer_queue_limit_bytes,
             "media.keyframe_cache_burst_bytes", "must be at least 1500 (one packet) and at most "
             "media.viewer_queue_limit_bytes (a burst must not trip it)")
        need(1 <= self.media.keyframe_cache_pace_ms <= 100, "media.keyframe_cache_pace_ms", "must be in [1, 100]")
        need(self.rooms.empty_room_grace_s >= 0, "rooms.empty_room_grace_s", "must be >= 0")
        need(self.rooms.host_absent_timeout_s >= 0, "rooms.host_absent_timeout_s", "must be >= 0")
        need(self.rooms.connect_timeout_s > 0, "rooms.connect_timeout_s", "must be positive")
        categories = self.rooms.categories
        need(len(categories) <= 50 and len(set(categories)) == len(categories), "rooms.categories",
             "must be at most 50 different names")
        need(all(0 < len(c) <= 32 and c == c.strip() and "," not in c for c in categories), "rooms.categories",
             "each must be 1-32 characters, without surrounding spaces or commas")
        ev = self.events
        need(ev.max_chat_length > 0, "events.max_chat_length", "must be positive")
        for key in ("chat_per_second", "gifts_per_second", "likes_per_second"):
            need(getattr(ev, key) > 0, f"events.{key}", "must be positive")
        for key in ("chat_burst", "gift_burst", "like_burst", "max_gift_count", "send_queue_limit",
                    "max_errors", "chat_history", "max_sockets_per_room"):
            need(getattr(ev, key) >= 1, f"events.{key}", "must be at least 1")
        need(ev.max_frame_bytes >= 256, "events.max_frame_bytes", "must be at least 256")
        need(2 <= ev.max_frame_depth <= 32, "events.max_frame_depth", "must be 2-32")
        need(ev.quality_per_second > 0 and ev.quality_burst >= 1, "events.quality_per_second",
             "must be positive (with events.quality_burst at least 1)")
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
        need(self.snapshots.interval_s >= 1, "snapshots.interval_s", "must be at least 1 (seconds between decodes)")
        need(64 <= self.snapshots.width <= 1280, "snapshots.width", "must be 64-1280")
        for key in ("server.trusted_proxies", "limits.offer_limit_exempt"):
            section, name = key.split(".")
            for i, net in enumerate(getattr(getattr(self, section), name)):
                need(_is_network(net), f"{key}[{i}]", f"{net!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)")
        for i, origin in enumerate(self.events.allowed_origins):
            need(_is_origin(origin), f"events.allowed_origins[{i}]",
                 f"{origin!r} is not an origin (scheme://host[:port], no path) or \"*\"")
        self._validate_operations(need)
        cl = self.cluster
        need(1 <= cl.workers <= 256, "cluster.workers", "must be 1-256")
        need(cl.workers == 1 or bool(cl.redis_url), "cluster.redis_url",
             f"{cl.workers} workers share rooms through Redis: set cluster.redis_url (e.g. redis://127.0.0.1:6379/0), "
             "or run one worker")
        need(not cl.redis_url or cl.redis_url.startswith(("redis://", "rediss://", "unix://")), "cluster.redis_url",
             "must be a redis://, rediss:// or unix:// URL")
        need(cl.advertise_url.startswith(("http://", "https://")), "cluster.advertise_url", "must be an http(s) URL")
        need(cl.worker_viewer_capacity >= 0, "cluster.worker_viewer_capacity", "must be >= 0 (0: the process capacity)")
        ports = (cl.udp_port_min, cl.udp_port_max)
        need(ports == (0, 0) or 1024 <= cl.udp_port_min <= cl.udp_port_max <= 65535, "cluster.udp_port_min",
             "with cluster.udp_port_max: a range within 1024-65535, or 0-0 for any free port")
        need(ports == (0, 0) or cl.udp_port_max - cl.udp_port_min + 1 >= cl.workers, "cluster.udp_port_max",
             "the range must hold at least one port per worker")
        need(cl.heartbeat_interval_s > 0 and cl.stale_after_s > cl.heartbeat_interval_s, "cluster.stale_after_s",
             "must be longer than cluster.heartbeat_interval_s")
        need(cl.edge_linger_s >= 0, "cluster.edge_linger_s", "must be >= 0")
        return self


    def _validate_operations(self, need: Callable[[bool, str, str], None]) -> None:
        op = self.operations
        need(0 <= op.port < 65536, "operations.port", "must be 0-65535 (0: on the public port)")
        need(op.port == 0 or not op.port <= self.server.port < op.port + self.cluster.workers,
             "operations.port", "worker i listens on operations.port + i: that range must not hold server.port")
        need(op.port + self.cluster.workers - 1 < 65536, "operations.port", "one port per worker must fit below 65536")
        need(not (op.token_env and op.token_file), "operations.token_env", "set token_env or token_file, not both")
        try:
            operations_token(op)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def operations_token(op: OperationsConfig) -> str:
    """The operations bearer token, read from where ``op`` says; empty when none is configured."""
    if op.token_env:
        token = os.environ.get(op.token_env, "")
        if not token:
            raise ValueError(f"operations.token_env: environment variable {op.token_env} is not set or empty")
    elif op.token_file:
        try:
            token = Path(op.token_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"operations.token_file: cannot read {op.token_file}: {exc.strerror}") from exc
    else:
        return ""
    if len(token) < 16:
        raise ValueError("operations token: must be at least 16 characters")
    return token


def _is_network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _is_origin(value: str) -> bool:
    if value == "*":
        return True
    url = urlsplit(value)
    return url.scheme in ("http", "https") and bool(url.netloc) and not url.path and not url.query


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table")
        return _build(hint, value, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list")
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
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
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config: GatewayConfig = _build(GatewayConfig, data, "")
    return config.validate()
