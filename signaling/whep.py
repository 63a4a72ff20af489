"""WHEP playback: a viewer receives the room's tracks, forwarded without transcoding.

``?monitor=costream``: the room's host or a guest on mic hears and sees the co-stream slots (guests, the
PK partner) and not slot 0, so the host never gets its own voice back; it is not counted as a viewer and
a full room does not refuse it.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from relay.participant import RANK
from signaling.errors import HttpError
from signaling.negotiation import Offer, open_session


async def post_whep(request: web.Request) -> web.StreamResponse:
    return await open_session(request, "whep", "viewer", monitor_grant if "monitor" in request.query else None)


def monitor_grant(request: web.Request, offer: Offer) -> Offer:
    if request.query.get("monitor") != "costream":
        raise HttpError(400, "bad_query", "monitor must be 'costream'")
    grant = offer.grant
    if RANK[grant.role] < RANK["guest"] or grant.scope:
        raise HttpError(403, "forbidden", "only the room's host or a guest may monitor its co-stream slots")
    return replace(offer, grant=replace(grant, scope="costream"))
