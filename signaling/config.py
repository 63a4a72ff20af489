"""Signaling's sections of the one configuration tree (``gateway.config`` composes and validates it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # HS256 secret; required outside --dev (dev mode uses a per-run random one). Prefer secret_env or
    # secret_file, so the secret is not in a config file.
    secret: str = ""
    # Name of an environment variable holding the secret.
    secret_env: str = ""
    # A file holding the secret (surrounding whitespace is ignored).
    secret_file: str = ""
    # Secrets still accepted for verification while a rotation is under way (tokens are minted with
    # the current one only). Each may be given as the secret itself, or "env:NAME" / "file:PATH".
    previous_secrets: tuple[str, ...] = ()
    issuer: str = "cherry-gateway"
    default_ttl: int = 3600
    # Longest lifetime `cherry-gateway token` and /dev/token mint.
    max_ttl: int = 86400
    leeway: int = 5


@dataclass(frozen=True, slots=True)
class GiftConfig:
    kind: str = ""
    # Points the gift scores in a PK battle (per unit sent).
    value: int = 1


DEFAULT_GIFTS = (GiftConfig("heart", 1), GiftConfig("rose", 5), GiftConfig("rocket", 100), GiftConfig("castle", 500))


@dataclass(frozen=True, slots=True)
class EventsConfig:
    max_chat_length: int = 200
    # Per identity: sustained rate and burst for chat, gifts and likes.
    chat_per_second: float = 1.0
    chat_burst: int = 5
    gifts_per_second: float = 5.0
    gift_burst: int = 20
    likes_per_second: float = 20.0
    like_burst: int = 100
    # Playback quality reports per socket: sustained rate and burst.
    quality_per_second: float = 0.5
    quality_burst: int = 3
    max_gift_count: int = 999
    gifts: tuple[GiftConfig, ...] = field(default_factory=lambda: DEFAULT_GIFTS)
    # A socket with this many frames queued and none taken for a second (or four times as many) is cut off as
    # too slow (close code 4008).
    send_queue_limit: int = 256
    max_frame_bytes: int = 4096
    # Nesting depth of a client frame's JSON.
    max_frame_depth: int = 4
    # Consecutive protocol errors before a socket is closed (4009).
    max_errors: int = 20
    # Aggregated viewer counts and likes go out at most this often.
    aggregate_interval_s: float = 1.0
    default_mute_s: int = 600
    default_ban_s: int = 3600
    chat_history: int = 20
    # Words masked with asterisks in chat (case-insensitive); a smarter filter can replace the hook.
    word_filter: tuple[str, ...] = ()
    max_sockets_per_room: int = 20000
    # Origins (scheme://host[:port]) whose pages may open room sockets, besides the gateway's own; "*": any.
    # Clients that send no Origin (encoders, load clients, apps) are not browsers and are let through.
    allowed_origins: tuple[str, ...] = ()
