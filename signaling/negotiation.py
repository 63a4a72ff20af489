"""What WHIP and WHEP share: the checks before an offer reaches the relay, the 201, PATCH and DELETE."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from relay.participant import Grant
from signaling.broker import Mismatch, NotYours, Opened
from signaling.context import (
    authorize,
    check_draining,
    check_offer_rate,
    context,
    link_headers,
    read_body,
    relay_grant,
    room_name,
)
from signaling.errors import HttpError
from signaling.listing import listing_from

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A session's public reference: its id, and in a cluster "~" and the worker holding it.
SESSION_REF = re.compile(r"^[0-9a-f]{32}(~[A-Za-z0-9_.-]{1,100})?$")


@dataclass(frozen=True, slots=True)
class Offer:
    """A WHIP/WHEP POST that passed every HTTP-level check: the relay checks the rest."""

    grant: Grant
    sdp: str


async def read_offer(request: web.Request, at_least: str) -> Offer:
    """Cheapest first: room name, rate, body, token, drain."""
    ctx = context(request)
    room = room_name(request)
    check_offer_rate(request)
    sdp = await read_body(request, "application/sdp")
    grant = authorize(request, room, at_least)
    check_draining(ctx)
    return Offer(relay_grant(grant, room), sdp)


def answer_response(request: web.Request, opened: Opened) -> web.Response:
    """RFC 9725: 201 with the answer, the session's Location and ETag, ICE servers as Link headers."""
    ctx = context(request)
    location = f"/{opened.endpoint}/{opened.room}/{opened.ref}"
    headers = {"Location": ctx.public_url.rstrip("/") + location, "ETag": opened.etag}
    response = web.Response(status=201, text=opened.answer, content_type="application/sdp", headers=headers)
    for link in link_headers(ctx):
        response.headers.add("Link", link)
    return response


async def open_session(request: web.Request, endpoint: str, at_least: str,
                       refine: Callable[[web.Request, Offer], Offer] | None = None) -> web.Response:
    """POST /whip/{room} and /whep/{room}: checked here, opened wherever the broker places it (``refine``: the
    endpoint's own checks of its query, which may narrow the grant that travels with the offer)."""
    offer = await read_offer(request, at_least)
    listing = listing_from(request.query, context(request).categories) if endpoint == "whip" else None
    if refine is not None:
        offer = refine(request, offer)
    broker = context(request).broker
    if request.query.get("redirect") == "307":
        # RFC 9725 4.5: an encoder that follows redirects may go straight to the room's node. Nothing depends
        # on it (offers reaching any node are relayed), and browsers drop the token on a cross-origin one.
        node = await broker.redirect(endpoint, offer.grant)
        if node is not None:
            kept = request.rel_url.with_query({k: v for k, v in request.rel_url.query.items() if k != "redirect"})
            location = node.rstrip("/") + str(kept)
            return web.Response(status=307, headers={"Location": location})
    opened = await broker.open(endpoint, offer.grant, offer.sdp, listing)
    return answer_response(request, opened)


def _for_update(request: web.Request) -> tuple[str, str, Grant]:
    room = room_name(request)
    grant = authorize(request, room, "viewer")
    ref = request.match_info["session"]
    if not SESSION_REF.match(ref):
        raise HttpError(404, "unknown_session", "no such session (ended, or never existed)")
    return room, ref, relay_grant(grant, room)


def delete_handler(endpoint: str) -> Handler:
    async def delete(request: web.Request) -> web.StreamResponse:
        room, ref, grant = _for_update(request)
        try:
            await context(request).broker.end(endpoint, room, ref, grant)
        except NotYours as exc:
            raise HttpError(403, "forbidden", str(exc)) from exc
        return web.Response(status=200)

    return delete


def patch_handler(endpoint: str) -> Handler:
    async def patch(request: web.Request) -> web.StreamResponse:
        """Trickle ICE (RFC 8840 fragment): add remote candidates. ICE restart is not offered."""
        room, ref, grant = _for_update(request)
        fragment = await read_body(request, "application/trickle-ice-sdpfrag")
        try:
            await context(request).broker.trickle(endpoint, room, ref, grant, fragment,
                                                  request.headers.get("If-Match"))
        except NotYours as exc:
            raise HttpError(403, "forbidden", str(exc)) from exc
        except Mismatch as exc:
            raise HttpError(412, "etag_mismatch", str(exc)) from exc
        return web.Response(status=204)

    return patch
