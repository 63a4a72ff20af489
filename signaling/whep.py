"""WHEP playback: a viewer receives the room's tracks, forwarded without transcoding."""

from __future__ import annotations

from aiohttp import web

from signaling.negotiation import open_session


async def post_whep(request: web.Request) -> web.StreamResponse:
    return await open_session(request, "whep", "viewer")
