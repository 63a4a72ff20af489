"""WHIP ingest (RFC 9725): a host, or a guest the host put on mic, publishes one audio and one video track."""

from __future__ import annotations

from aiohttp import web

from signaling.negotiation import open_session


async def post_whip(request: web.Request) -> web.StreamResponse:
    return await open_session(request, "whip", "guest")
