"""What WHIP and WHEP share: the checks before an offer reaches the relay, the 201, PATCH and DELETE."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from relay.participant import Grant
from relay.session import Session
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def answer_response(request: web.Request, session: Session) -> web.Response:
    """RFC 9725: 201 with the answer, the session's Location and ETag, ICE servers as Link headers."""
    ctx = context(request)
    location = f"/{session.endpoint}/{session.room.name}/{session.session_id}"
    headers = {"Location": ctx.public_url.rstrip("/") + location, "ETag": session.etag}
    response = web.Response(status=201, text=session.answer, content_type="application/sdp", headers=headers)
    for link in link_headers(ctx):
        response.headers.add("Link", link)
    return response


def _session_for_update(request: web.Request, endpoint: str) -> Session:
    """The session named by the URL, authorised by the same identity that created it (or an admin)."""
    room = room_name(request)
    grant = authorize(request, room, "viewer")
    session = context(request).relay.session(endpoint, room, request.match_info["session"])
    if grant.role != "admin" and grant.identity != session.identity:
        raise HttpError(403, "forbidden", "this session belongs to another participant")
    return session


def delete_handler(endpoint: str) -> Handler:
    async def delete(request: web.Request) -> web.StreamResponse:
        _session_for_update(request, endpoint).close("ended by client (DELETE)", by_client=True)
        return web.Response(status=200)

    return delete


def patch_handler(endpoint: str) -> Handler:
    async def patch(request: web.Request) -> web.StreamResponse:
        """Trickle ICE (RFC 8840 fragment): add remote candidates. ICE restart is not offered."""
        session = _session_for_update(request, endpoint)
        fragment = await read_body(request, "application/trickle-ice-sdpfrag")
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match not in ("*", session.etag):
            raise HttpError(412, "etag_mismatch", "If-Match does not match this session's ETag")
        await context(request).relay.trickle(session, fragment)
        return web.Response(status=204)

    return patch
