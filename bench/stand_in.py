"""What the benchmark's stand-in servers (the MediaRelay baseline, the floor forwarder) share: the routes the
bench drives a gateway through, and their WHIP/WHEP answers. Each stand-in supplies the handlers."""

from __future__ import annotations

import uuid

from aiohttp import web
from aiortc import RTCPeerConnection


class StandInServer:
    """The gateway's routes as the bench uses them; ``TOKEN`` is what its /dev/token hands out."""

    TOKEN = "stand-in"

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
        raise NotImplementedError

    async def whep(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def whep_delete(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def shutdown(self, app: web.Application) -> None:
        raise NotImplementedError


def created(pc: RTCPeerConnection, location: str) -> web.Response:
    return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                        headers={"Location": location, "ETag": f'"{uuid.uuid4().hex[:8]}"'})


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
