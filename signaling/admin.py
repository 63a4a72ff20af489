"""Admin REST API under /api/ (admin grant): rooms, their participants, ending and kicking."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from aiohttp import web

from relay.dump import RoomDump
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
    """Ingest bitrate per room from byte-count deltas between calls (no per-packet work)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, float, float]] = {}

    def kbps(self, room: str, total: int) -> float:
        now = time.monotonic()
        last = self._last.get(room)
        if last is None:
            self._last[room] = (total, now, 0.0)
            return 0.0
        bytes_then, then, rate = last
        if now - then >= 1.0:
            rate = max(0, total - bytes_then) * 8 / 1000 / (now - then)
            self._last[room] = (total, now, rate)
        if len(self._last) > 10000:
            self._last.clear()
        return rate


BITRATES = _Bitrates()


def room_summary(request: web.Request, room: RoomDump) -> dict[str, Any]:
    hub = context(request).hub
    return {
        "room": room.name,
        "title": room.title,
        "live": room.live,
        "host": room.host,
        "viewers": room.viewers,
        "guests": list(room.guests),
        "pk_partner": room.pk_partner,
        "online": hub.online(room.name) if hub else 0,
        "ingest_kbps": round(BITRATES.kbps(room.name, sum(room.traffic.ingest_bytes.values())), 1),
        "live_since": room.live_since,
        "created_at": room.created_at,
    }


async def list_rooms(request: web.Request) -> web.Response:
    _admin(request)
    return web.json_response({"rooms": [room_summary(request, r) for r in context(request).relay.dump().rooms]})


async def room_detail(request: web.Request) -> web.Response:
    _admin(request)
    dump = _room(request).dump(detailed=True)
    detail = room_summary(request, dump)
    participants = []
    for p in dump.participants:
        participants.append({
            "identity": p.identity, "display_name": p.display_name, "role": p.role, "on_mic": p.on_mic,
            "sockets": p.sockets,
            "sessions": [{"id": s.session_id, "kind": s.kind, "state": s.state, "created_at": s.created_at,
                          "connected_at": s.connected_at,
                          "subscriptions": [{"kind": sub.kind, "slot": sub.slot, "source": sub.source,
                                             "packets_sent": sub.packets_sent, "dropped": sub.dropped,
                                             "retransmitted": sub.retransmitted,
                                             "congestion": dataclasses.asdict(sub.congestion)}
                                            for sub in s.subscriptions]}
                         for s in p.sessions]})
    detail["online"] = sum(p.sockets for p in dump.participants)
    detail["participants"] = sorted(participants, key=lambda p: (p["role"] != "host", p["identity"]))
    detail["publications"] = {p.kind: {"codec": p.codec, "owner": p.owner, "packets_in": p.packets_in,
                                       "keyframes_in": p.keyframes_in, "duplicates": p.duplicates,
                                       "epochs": p.epochs, "subscriptions": p.subscriptions}
                              for p in dump.publications if p.owner == dump.host}
    return web.json_response(detail)


async def end_room(request: web.Request) -> web.Response:
    _admin(request)
    room = _room(request)
    sockets = sum(p.sockets for p in room.dump(detailed=True).participants)
    room.close("ended by an admin")  # ends every session and socket of the room (sockets: close 4004)
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
    room = context(request).rooms.get(name)
    sessions, sockets = room.kick(identity, "kicked by an admin") if room is not None else (0, 0)
    if sessions + sockets == 0:
        raise HttpError(404, "unknown_participant", f"{identity!r} is not in room {name!r}")
    return web.json_response({"kicked": identity, "sessions": sessions, "sockets": sockets})


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/rooms", list_rooms)
    r.add_get("/api/rooms/{room}", room_detail)
    r.add_delete("/api/rooms/{room}", end_room)
    r.add_post("/api/rooms/{room}/kick", kick)
