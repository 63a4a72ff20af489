"""Admin REST API under /api/ (admin grant): rooms, their participants, ending and kicking."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from relay.room import Room
from signaling.context import authorize, context
from signaling.errors import HttpError


def _admin(request: web.Request) -> None:
    authorize(request, "*", "admin")


def _room(request: web.Request) -> Room:
    room = context(request).rooms.get(request.match_info["room"])
    if room is None:
        raise HttpError(404, "unknown_room", f"no room {request.match_info['room']!r}")
    return room


class _Bitrates:
    """Ingest bitrate per publication from byte-count deltas between calls (no per-packet work)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, float, float]] = {}

    def kbps(self, publication: Any) -> float:
        now = time.monotonic()
        key = id(publication)
        total = publication.stats.bytes_in
        last = self._last.get(key)
        if last is None:
            self._last[key] = (total, now, 0.0)
            return 0.0
        bytes_then, then, rate = last
        if now - then >= 1.0:
            rate = (total - bytes_then) * 8 / 1000 / (now - then)
            self._last[key] = (total, now, rate)
        if len(self._last) > 10000:
            self._last.clear()
        return rate


BITRATES = _Bitrates()


def room_summary(request: web.Request, room: Room) -> dict[str, Any]:
    hub = context(request).hub
    channel = hub.channels.get(room.name) if hub else None
    return {
        "room": room.name,
        "title": room.title or room.name,
        "live": room.live,
        "host": room.host.identity if room.host else None,
        "viewers": room.viewer_count,
        "online": len(channel.clients) if channel else 0,
        "ingest_kbps": round(sum(BITRATES.kbps(p) for p in room.publications.values()), 1),
        "live_since": room.live_since,
        "created_at": room.created_at,
    }


async def list_rooms(request: web.Request) -> web.Response:
    _admin(request)
    return web.json_response({"rooms": [room_summary(request, r) for r in context(request).rooms]})


async def room_detail(request: web.Request) -> web.Response:
    _admin(request)
    room = _room(request)
    ctx = context(request)
    participants: dict[str, dict[str, Any]] = {}
    for session in ctx.sessions:
        if session.room is not room:
            continue
        entry = participants.setdefault(session.identity, {"identity": session.identity, "role": session.role,
                                                           "sessions": [], "sockets": 0})
        entry["sessions"].append({"id": session.session_id, "kind": session.kind,
                                  "state": session.pc.connectionState, "created_at": session.created_at})
    channel = ctx.hub.channels.get(room.name) if ctx.hub else None
    for client in channel.clients if channel else ():
        entry = participants.setdefault(client.identity, {"identity": client.identity, "role": client.role,
                                                          "sessions": [], "sockets": 0})
        entry["sockets"] += 1
    detail = room_summary(request, room)
    detail["participants"] = sorted(participants.values(), key=lambda p: (p["role"] != "host", p["identity"]))
    detail["publications"] = {kind: {"codec": p.codec.mime_type, "packets_in": p.stats.packets_in,
                                     "keyframes_in": p.stats.keyframes_in, "subscriptions": len(p.subscriptions)}
                              for kind, p in room.publications.items()}
    return web.json_response(detail)


async def end_room(request: web.Request) -> web.Response:
    _admin(request)
    room = _room(request)
    ctx = context(request)
    room.close("ended by an admin")
    sockets = ctx.hub.close_room(room.name, "room ended") if ctx.hub else 0
    return web.json_response({"ended": room.name, "sockets_closed": sockets})


async def kick(request: web.Request) -> web.Response:
    _admin(request)
    name = request.match_info["room"]
    try:
        body = json.loads(await request.text())
    except ValueError as exc:
        raise HttpError(400, "bad_json", "body must be JSON like {\"identity\": \"...\"}") from exc
    identity = body.get("identity") if isinstance(body, dict) else None
    if not isinstance(identity, str) or not identity:
        raise HttpError(400, "bad_request", "'identity' is required")
    hub = context(request).hub
    assert hub is not None
    sessions, sockets = hub.kick(name, identity, "kicked by an admin")
    if sessions + sockets == 0:
        raise HttpError(404, "unknown_participant", f"{identity!r} is not in room {name!r}")
    return web.json_response({"kicked": identity, "sessions": sessions, "sockets": sockets})


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/rooms", list_rooms)
    r.add_get("/api/rooms/{room}", room_detail)
    r.add_delete("/api/rooms/{room}", end_room)
    r.add_post("/api/rooms/{room}/kick", kick)
