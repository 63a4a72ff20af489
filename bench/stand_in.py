"""What the benchmark's stand-in servers (the MediaRelay baseline, the floor forwarder) share: the routes the
bench drives a gateway through, and their WHIP/WHEP answers. Each stand-in supplies the handlers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Generic, Protocol, TypeVar

from aiohttp import web
from aiortc import RTCPeerConnection


class StandInRoom(Protocol):
    host_id: str


R = TypeVar("R", bound=StandInRoom)


class StandInServer(Generic[R]):
    """The gateway's routes as the bench uses them; ``TOKEN`` is what its /dev/token hands out. A stand-in keeps
    its rooms by name and says how one closes (:meth:`close_room`); ending the host's session and shutting down
    are the same for both."""

    TOKEN = "stand-in"

    def __init__(self) -> None:
        self.rooms: dict[str, R] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 16)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/dev/token", self.dev_token)
        app.router.add_get("/api/stats", self.stats)
        app.router.add_post("/whip/{room}", self.whip)
        app.router.add_delete("/whip/{room}/{session}", self.whip_delete)
        app.router.add_post("/whep/{room}", self.whep)
        app.router.add_delete("/whep/{room}/{session}", self.whep_delete)
        app.on_shutdown.append(self.shutdown)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def dev_token(self, request: web.Request) -> web.Response:
        return web.json_response({"token": self.TOKEN, "room": request.query.get("room")})

    async def stats(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def whip(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def whip_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["room"]
        room = self.rooms.get(name)
        if room is None or room.host_id != request.match_info["session"]:
            return error(404, "not_found", "no such session")
        del self.rooms[name]
        await self.close_room(room)
        return web.Response(status=200)

    async def whep(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def whep_delete(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def shutdown(self, app: web.Application) -> None:
        rooms, self.rooms = list(self.rooms.values()), {}
        await asyncio.gather(*(self.close_room(room) for room in rooms), return_exceptions=True)

    async def close_room(self, room: R) -> None:
        raise NotImplementedError


def created(pc: RTCPeerConnection, location: str) -> web.Response:
    return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                        headers={"Location": location, "ETag": f'"{uuid.uuid4().hex[:8]}"'})


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
