"""WHIP ingest (RFC 9725): a host, or a guest the host put on mic, publishes one audio and one video track."""

from __future__ import annotations

from aiohttp import web

from signaling.context import context
from signaling.negotiation import answer_response, read_offer


async def post_whip(request: web.Request) -> web.StreamResponse:
    offer = await read_offer(request, "guest")
    session = await context(request).relay.open_ingest(offer.grant, offer.sdp, request.query.get("title", ""))
    return answer_response(request, session)
