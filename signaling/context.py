"""What the signaling handlers need from the composition root."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from relay.core import Relay
from relay.participant import Grant as RelayGrant
from relay.room import Rooms
from signaling.auth import ROOM_NAME, AuthError, Forbidden, Grant, TokenService, bearer_token
from signaling.broker import SessionBroker
from signaling.clients import AddressSet, client_address
from signaling.errors import HttpError
from signaling.events.moderation import Moderation
from signaling.ratelimit import RateLimiter

if TYPE_CHECKING:
    from signaling.admin import AdminScope
    from signaling.events.hub import EventHub


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""


@dataclass(slots=True)
class SignalingContext:
    tokens: TokenService
    relay: Relay
    broker: SessionBroker
    offer_limiter: RateLimiter
    ice_servers: tuple[IceServer, ...] = ()
    max_body_bytes: int = 65536
    categories: tuple[str, ...] = ()  # what a host may list its room under (rooms.categories)
    retry_after: int = 5
    public_url: str = ""
    dev: bool = False
    draining: bool = False
    moderation: Moderation = field(default_factory=Moderation)
    hub: EventHub | None = None
    admin: AdminScope | None = None  # the whole cluster's (cluster.admin); None: this process's
    trusted_proxies: AddressSet = field(default_factory=lambda: AddressSet(()))
    offer_limit_exempt: AddressSet = field(default_factory=lambda: AddressSet(()))
    # Origins besides the gateway's own whose pages may open room sockets ("*": any).
    socket_origins: tuple[str, ...] = ()

    @property
    def rooms(self) -> Rooms:
        return self.relay.rooms


CONTEXT = web.AppKey("signaling_context", SignalingContext)


def context(request: web.Request) -> SignalingContext:
    return request.app[CONTEXT]


def room_name(request: web.Request) -> str:
    name = request.match_info["room"]
    if not ROOM_NAME.match(name):
        raise HttpError(400, "bad_room_name",
                        "room names are 1-64 characters: letters, digits, '_', '-', '.'")
    return name


def authorize(request: web.Request, room: str, at_least: str) -> Grant:
    """401 for a missing or bad token, 403 for a token without this grant."""
    ctx = context(request)
    try:
        grant = ctx.tokens.verify(bearer_token(request.headers.get("Authorization")))
        grant.at_least(room, at_least)
    except AuthError as exc:
        raise HttpError(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"}) from exc
    except Forbidden as exc:
        raise HttpError(403, "forbidden", str(exc)) from exc
    return grant


async def read_body(request: web.Request, content_type: str) -> str:
    """The request body as text: 415 on the wrong type, 413 when too large, 400 if not UTF-8."""
    if request.content_type != content_type:
        raise HttpError(415, "unsupported_media_type",
                        f"Content-Type must be {content_type}, got {request.content_type or 'none'}")
    limit = context(request).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, "body_too_large", f"body exceeds {limit} bytes")
    # read(n) answers what has arrived, up to n bytes: an offer in several TCP segments (a 6-m-line offer is 18 KB)
    # came in truncated by one read whenever its tail was still on the way, and was refused as bad SDP.
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    if len(body) > limit:
        raise HttpError(413, "body_too_large", f"body exceeds {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpError(400, "bad_encoding", "body is not UTF-8") from exc


def link_headers(ctx: SignalingContext) -> list[str]:
    """RFC 9725 section 4.6: ICE servers as Link headers."""
    links = []
    for server in ctx.ice_servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username:
                link += (f'; username="{server.username}"; credential="{server.credential}"'
                         '; credential-type="password"')
            links.append(link)
    return links


def client_of(request: web.Request) -> str:
    """The client's address (behind a trusted proxy: the one it forwarded for)."""
    ctx = context(request)
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), ctx.trusted_proxies)


def check_offer_rate(request: web.Request) -> None:
    """429 when one client address sends offers faster than the configured rate (exempt addresses: never)."""
    ctx = context(request)
    client = client_of(request)
    if client in ctx.offer_limit_exempt:
        return
    wait = ctx.offer_limiter.allow(client)
    if wait > 0:
        raise HttpError(429, "rate_limited", "too many offers from this address; slow down",
                        {"Retry-After": str(max(1, int(wait + 0.999)))})


def check_socket_origin(request: web.Request) -> None:
    """403 for a browser page of another origin opening a room socket (cross-site WebSocket hijacking: the
    browser sends the victim's cookies and the page could act in the room). No Origin: not a browser."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    ctx = context(request)
    origin = origin.lower()
    if "*" in ctx.socket_origins or origin in ctx.socket_origins or _netloc(origin) == request.host.lower():
        return
    raise HttpError(403, "origin_not_allowed",
                    "pages of this origin may not open room sockets (events.allowed_origins)")


def _netloc(origin: str) -> str:
    return origin.partition("://")[2].lower()


def check_not_banned(ctx: SignalingContext, room: str, identity: str) -> None:
    if ctx.rooms.bans.banned_until(room, identity):
        raise HttpError(403, "banned", "you are banned from this room")


def relay_grant(grant: Grant, room: str) -> RelayGrant:
    """What the relay needs of a verified token: who, in which room (an admin's covers any), as what."""
    return RelayGrant(room, grant.identity, grant.role, scope=grant.scope)


def check_draining(ctx: SignalingContext) -> None:
    if ctx.draining:
        raise HttpError(503, "draining", "gateway is draining; try another instance",
                        {"Retry-After": str(ctx.retry_after)})


__all__ = ["AuthError", "Forbidden"]
