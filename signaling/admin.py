"""Admin REST API under /api/ (admin grant): rooms, their participants, ending and kicking; and a room's
paged participant list for its host (the studio's viewer list: a page asked for, never a broadcast of joins).

The handlers speak to an :class:`AdminScope`: :class:`LocalAdmin` answers for this process; in a cluster
``cluster.admin.ClusterAdmin`` asks every worker (each answering with its ``LocalAdmin``) and merges, so
the API works the same from any node.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Protocol

from aiohttp import web

from relay.dump import RoomDump
from relay.pipe import PIPE_IDENTITY
from relay.room import Room
from signaling.context import SignalingContext, authorize, context
from signaling.errors import HttpError


class AdminScope(Protocol):
    async def rooms(self) -> dict[str, Any]: ...

    async def room(self, name: str) -> dict[str, Any] | None: ...

    async def participants(self, name: str) -> list[dict[str, Any]] | None: ...

    async def end(self, name: str) -> dict[str, Any] | None: ...

    async def kick(self, name: str, identity: str) -> dict[str, Any] | None: ...


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


class LocalAdmin:
    """What this process holds of each room."""

    def __init__(self, ctx: SignalingContext) -> None:
        self.ctx = ctx

    def _summary(self, room: Room, dump: RoomDump) -> dict[str, Any]:
        hub = self.ctx.hub
        return {
            "room": dump.name,
            "title": dump.title,
            "live": dump.live,
            "host": dump.host,
            "viewers": dump.viewers,
            "guests": list(dump.guests),
            "pk_partner": dump.pk_partner,
            "online": hub.online(dump.name) if hub else 0,
            "ingest_kbps": round(BITRATES.kbps(dump.name, sum(dump.traffic.ingest_bytes.values())), 1),
            "live_since": dump.live_since,
            "created_at": dump.created_at,
            "held_here": room.held_here,  # the origin's summary is the room's stage in a cluster
        }

    async def rooms(self) -> dict[str, Any]:
        return {"rooms": [self._summary(room, room.dump()) for room in list(self.ctx.relay.rooms)]}

    async def room(self, name: str) -> dict[str, Any] | None:
        room = self.ctx.rooms.get(name)
        if room is None:
            return None
        dump = room.dump(detailed=True)
        detail = self._summary(room, dump)
        participants = []
        for p in dump.participants:
            participants.append({
                "identity": p.identity, "display_name": p.display_name, "role": p.role, "on_mic": p.on_mic,
                "sockets": p.sockets,
                "sessions": [{"id": s.session_id, "kind": s.kind, "state": s.state, "created_at": s.created_at,
                              "connected_at": s.connected_at,
                              "subscriptions": [{"kind": sub.kind, "slot": sub.slot, "source": sub.source,
                                                 "packets_sent": sub.packets_sent, "dropped": sub.dropped,
                                                 "retransmitted": sub.retransmitted, "nacks_in": sub.nacks_in,
                                                 "keyframe_requests_in": sub.keyframe_requests_in,
                                                 "congestion": dataclasses.asdict(sub.congestion)}
                                                for sub in s.subscriptions]}
                             for s in p.sessions]})
        detail["online"] = sum(p.sockets for p in dump.participants)
        detail["participants"] = sorted(participants, key=lambda p: (p["role"] != "host", p["identity"]))
        detail["publications"] = {p.kind: {"codec": p.codec, "owner": p.owner, "packets_in": p.packets_in,
                                           "keyframes_in": p.keyframes_in, "keyframe_requests": p.keyframe_requests,
                                           "duplicates": p.duplicates,
                                           "epochs": p.epochs, "subscriptions": p.subscriptions}
                                  for p in dump.publications if p.owner == dump.host}
        return detail

    async def participants(self, name: str) -> list[dict[str, Any]] | None:
        """Who is in the room here, without their sessions' detail: what a participant list shows."""
        room = self.ctx.rooms.get(name)
        if room is None:
            return None
        return [{"identity": p.identity, "display_name": p.display_name, "role": p.role, "on_mic": p.on_mic,
                 "sockets": p.sockets, "sessions": len(p.sessions)} for p in room.participant_dumps()
                if not p.identity.startswith(PIPE_IDENTITY)]  # a pipe is the cluster's plumbing, nobody in the room

    async def end(self, name: str) -> dict[str, Any] | None:
        room = self.ctx.rooms.get(name)
        if room is None:
            return None
        sockets = sum(p.sockets for p in room.dump(detailed=True).participants)
        room.close("ended by an admin")  # ends every session and socket of the room (sockets: close 4004)
        return {"ended": room.name, "sockets_closed": sockets}

    async def kick(self, name: str, identity: str) -> dict[str, Any] | None:
        room = self.ctx.rooms.get(name)
        sessions, sockets = room.kick(identity, "kicked by an admin") if room is not None else (0, 0)
        if sessions + sockets == 0:
            return None
        return {"kicked": identity, "sessions": sessions, "sockets": sockets}

    async def apply(self, op: dict[str, Any]) -> Any:
        """One operation asked by another worker (``/internal/admin``), answered for this worker only."""
        kind, name = op.get("op"), op.get("room")
        if kind == "rooms":
            return await self.rooms()
        if not isinstance(name, str) or not name:
            raise HttpError(400, "bad_request", "'room' is required")
        if kind == "room":
            return await self.room(name) or {}
        if kind == "participants":
            return {"room": name, "participants": await self.participants(name)}
        if kind == "end":
            return await self.end(name) or {}
        identity = op.get("identity")
        if kind == "kick" and isinstance(identity, str) and identity:
            return await self.kick(name, identity) or {}
        raise HttpError(400, "bad_request", "op must be rooms, room, participants, end or kick (with an identity)")


def _scope(request: web.Request) -> AdminScope:
    ctx = context(request)
    return ctx.admin if ctx.admin is not None else LocalAdmin(ctx)


def _admin(request: web.Request) -> AdminScope:
    authorize(request, "*", "admin")
    return _scope(request)


ROLE_ORDER = {"host": 0, "guest": 1}
MAX_PAGE = 100


def _page_bound(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name, str(default))
    if not raw.isdigit() or len(raw) > 7 or not 0 <= int(raw) <= high:
        raise HttpError(400, "bad_query", f"'{name}' must be a whole number from 0 to {high}")
    return int(raw)


def _unknown(name: str) -> HttpError:
    return HttpError(404, "unknown_room", f"no room {name!r}")


async def list_rooms(request: web.Request) -> web.Response:
    return web.json_response(await _admin(request).rooms())


async def room_detail(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    detail = await _admin(request).room(name)
    if detail is None:
        raise _unknown(name)
    return web.json_response(detail)


async def participants(request: web.Request) -> web.Response:
    """``GET /api/rooms/{room}/participants?offset=&limit=``: the room's host (or an admin) pages through who is
    there, the host and guests first, then by identity (stable from page to page), with the count of all."""
    name = request.match_info["room"]
    authorize(request, name, "host")
    offset = _page_bound(request, "offset", 0, 1_000_000)
    limit = _page_bound(request, "limit", 50, MAX_PAGE)
    everyone = await _scope(request).participants(name)
    if everyone is None:
        raise _unknown(name)
    everyone.sort(key=lambda p: (ROLE_ORDER.get(p["role"], 2), p["identity"]))
    return web.json_response({"room": name, "count": len(everyone), "offset": offset, "limit": limit,
                              "participants": everyone[offset:offset + limit]})


async def end_room(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    ended = await _admin(request).end(name)
    if ended is None:
        raise _unknown(name)
    return web.json_response(ended)


async def kick(request: web.Request) -> web.Response:
    scope = _admin(request)
    name = request.match_info["room"]
    try:
        body = json.loads(await request.text())
    except ValueError as exc:
        raise HttpError(400, "bad_json", "body must be JSON like {\"identity\": \"...\"}") from exc
    identity = body.get("identity") if isinstance(body, dict) else None
    if not isinstance(identity, str) or not identity:
        raise HttpError(400, "bad_request", "'identity' is required")
    kicked = await scope.kick(name, identity)
    if kicked is None:
        raise HttpError(404, "unknown_participant", f"{identity!r} is not in room {name!r}")
    return web.json_response(kicked)


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/rooms", list_rooms)
    r.add_get("/api/rooms/{room}", room_detail)
    r.add_get("/api/rooms/{room}/participants", participants)
    r.add_delete("/api/rooms/{room}", end_room)
    r.add_post("/api/rooms/{room}/kick", kick)
