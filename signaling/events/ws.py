"""GET /ws/{room}: authenticate, admit into the relay room, upgrade, then hand frames to the hub."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from relay.errors import RelayError
from signaling.auth import AuthError, Forbidden
from signaling.context import check_socket_origin, context, room_name
from signaling.errors import HttpError
from signaling.events.protocol import CLOSE_INTERNAL_ERROR, CLOSE_TRY_AGAIN

log = logging.getLogger("cherry.signaling.events")
# aiohttp closes the socket (1009) past this; between max_frame_bytes and this we answer too_large.
HARD_FRAME_LIMIT = 64 * 1024


async def room_socket(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    hub = ctx.hub
    assert hub is not None
    room = room_name(request)
    check_socket_origin(request)
    token = request.query.get("token")
    if not token and request.headers.get("Authorization", "").lower().startswith("bearer "):
        token = request.headers["Authorization"].split(" ", 1)[1].strip()
    try:
        if not token:
            raise AuthError("missing ?token=")
        grant = ctx.tokens.verify(token)
        grant.at_least(room, "viewer")
    except AuthError as exc:
        raise HttpError(401, "unauthorized", str(exc)) from exc
    except Forbidden as exc:
        raise HttpError(403, "forbidden", str(exc)) from exc
    if ctx.rooms.bans.banned_until(room, grant.identity):
        raise HttpError(403, "banned", "you are banned from this room")
    if not hub.capacity_left(room):
        raise HttpError(503, "capacity", "this room's chat is full", {"Retry-After": str(ctx.retry_after)})
    if ctx.draining:
        raise HttpError(503, "draining", "gateway is draining", {"Retry-After": str(ctx.retry_after)})
    # Refused before the upgrade at the room limit (503 capacity, via the relay error table); the room
    # then lives at least as long as this socket.
    ctx.rooms.get_or_create(room)
    if not web.WebSocketResponse().can_prepare(request).ok:
        # A browser never sees why a WebSocket handshake was refused: a page asks with a plain GET, which gets
        # every refusal above (the room limit included), or this once the socket would be accepted.
        raise HttpError(426, "upgrade_required", "this is a WebSocket endpoint: every check passed",
                        {"Upgrade": "websocket"})
    # In a cluster: who decides the room's events, and its state if that is another worker (bounded wait).
    await hub.prepare(room)

    # No per-message deflate: a frame is encoded once for a whole room, and compressing it again for each
    # socket (with a compressor's state kept per socket) would cost more than the bytes it saves.
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=HARD_FRAME_LIMIT, compress=False)
    await ws.prepare(request)
    try:
        client = hub.join(ws, request.transport, grant.identity, grant.role, room, grant.expires_at, grant.name)
    except RelayError as exc:  # the room closed and the room limit was reached while upgrading
        log.info("room=%s participant=%s socket refused after the upgrade: %s", room, grant.identity, exc)
        await ws.close(code=CLOSE_TRY_AGAIN, message=b"try again later")
        return ws
    log.info("%s role=%s socket open", client.tag(), grant.role)
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                hub.handle(client, message.data)
                # A socket with frames already buffered would otherwise be served back to back; yielding
                # lets every writer drain, so one client's storm cannot delay anyone else's messages.
                await asyncio.sleep(0)
            elif message.type == WSMsgType.BINARY:
                hub.reject_binary(client)
            if client.closed:
                break  # cut off: its connection is already closed
    except Exception:
        # Past the upgrade an error response would be written into the WebSocket stream: end it instead.
        log.exception("%s room socket failed", client.tag())
        client.cut(CLOSE_INTERNAL_ERROR, "internal error")
    finally:
        hub.leave(client)
        cut = bool(client.close_reason)  # ended by the gateway; otherwise the client closed or went away
        log.info("%s socket closed (%s %s)", client.tag(), client.close_code if cut else ws.close_code,
                 client.close_reason)
    return ws
