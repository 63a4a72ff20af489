"""WHEP playback: a viewer receives the room's tracks, forwarded without transcoding."""

from __future__ import annotations

from aiohttp import web

from signaling.context import context
from signaling.negotiation import answer_response, read_offer


async def post_whep(request: web.Request) -> web.StreamResponse:
    offer = await read_offer(request, "viewer")
    session = await context(request).relay.open_playback(offer.grant, offer.sdp)
    return answer_response(request, session)
