"""GET /ws/{room}: authenticate, upgrade, then hand frames to the hub."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from signaling.auth import AuthError, Forbidden
from signaling.context import context, room_name
from signaling.errors import HttpError

log = logging.getLogger("cherry.signaling.events")
# aiohttp closes the socket (1009) past this; between max_frame_bytes and this we answer too_large.
HARD_FRAME_LIMIT = 64 * 1024


async def room_socket(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    hub = ctx.hub
    assert hub is not None
    room = room_name(request)
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
    check_draining = ctx.draining
    if check_draining:
        raise HttpError(503, "draining", "gateway is draining", {"Retry-After": str(ctx.retry_after)})

    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=HARD_FRAME_LIMIT)
    await ws.prepare(request)
    client = hub.join(ws, grant.identity, grant.role, room, grant.expires_at)
    log.info("room=%s participant=%s role=%s socket open", room, grant.identity, grant.role)
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await hub.handle(client, message.data)
                # A socket with frames already buffered would otherwise be served back to back; yielding
                # lets every writer drain, so one client's storm cannot delay anyone else's messages.
                await asyncio.sleep(0)
            elif message.type == WSMsgType.BINARY:
                hub.reject_binary(client)
            if client.closed:
                break
        await ws.close(code=client.close_code, message=client.close_reason.encode())
    finally:
        hub.leave(client)
        if client.writer is not None:
            client.writer.cancel()
        log.info("room=%s participant=%s socket closed (%s)", room, grant.identity, ws.close_code)
    return ws
