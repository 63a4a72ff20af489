"""Pieces shared by WHIP and WHEP: applying an offer, answering, PATCH and DELETE."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from signaling.auth import Grant
from signaling.context import (
    authorize,
    check_draining,
    check_not_banned,
    check_offer_rate,
    context,
    link_headers,
    read_body,
    room_name,
)
from signaling.errors import HttpError
from signaling.sdp import OfferedMedia, parse_offer, parse_trickle_fragment
from signaling.sessions import Session

log = logging.getLogger("cherry.signaling")


@dataclass(frozen=True, slots=True)
class Offer:
    """A WHIP/WHEP POST that passed every check before negotiation."""

    room: str
    sdp: str
    grant: Grant
    media: list[OfferedMedia]


async def accept_offer(request: web.Request, at_least: str, *, sending: bool) -> Offer:
    """The checks every offer goes through, cheapest first: room name, rate, body, token, ban, drain, SDP."""
    ctx = context(request)
    room = room_name(request)
    check_offer_rate(request)
    sdp = await read_body(request, "application/sdp")
    grant = authorize(request, room, at_least)
    check_not_banned(ctx, room, grant.identity)
    check_draining(ctx)
    return Offer(room, sdp, grant, parse_offer(sdp, sending=sending))


async def apply_offer(pc: RTCPeerConnection, offer: RTCSessionDescription) -> None:
    try:
        await pc.setRemoteDescription(offer)
    except HttpError:
        raise
    except Exception as exc:  # aiortc reports unusable offers with several exception types
        raise HttpError(400, "bad_sdp", f"offer cannot be used: {exc}") from exc


async def answer_response(request: web.Request, session: Session, kind: str) -> web.Response:
    pc = session.pc
    await pc.setLocalDescription(await pc.createAnswer())
    ctx = context(request)
    location = f"/{kind}/{session.room.name}/{session.session_id}"
    headers = {
        "Location": ctx.public_url.rstrip("/") + location,
        "ETag": session.etag,
    }
    response = web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers=headers)
    for link in link_headers(ctx):
        response.headers.add("Link", link)
    return response


def _session(request: web.Request, kind: str) -> Session:
    session = context(request).sessions.get(request.match_info["session"])
    if session is None or session.endpoint != kind or session.room.name != request.match_info["room"]:
        raise HttpError(404, "unknown_session", "no such session (ended, or never existed)")
    return session


def _session_for_update(request: web.Request, kind: str) -> Session:
    """The session named by the URL, authorised by the same grant that created it."""
    grant = authorize(request, room_name(request), "viewer")
    session = _session(request, kind)
    if grant.role != "admin" and grant.identity != session.identity:
        raise HttpError(403, "forbidden", "this session belongs to another participant")
    return session


def delete_handler(kind: str):  # type: ignore[no-untyped-def]
    async def delete(request: web.Request) -> web.StreamResponse:
        session = _session_for_update(request, kind)
        session.close("ended by client (DELETE)")
        return web.Response(status=200)

    return delete


def patch_handler(kind: str):  # type: ignore[no-untyped-def]
    async def patch(request: web.Request) -> web.StreamResponse:
        """Trickle ICE (RFC 8840 fragment): add remote candidates. ICE restart is not offered."""
        session = _session_for_update(request, kind)
        fragment = await read_body(request, "application/trickle-ice-sdpfrag")
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match not in ("*", session.etag):
            raise HttpError(412, "etag_mismatch", "If-Match does not match this session's ETag")
        ufrag, pwd, candidates, end = parse_trickle_fragment(fragment)
        remote = session.pc.remoteDescription
        current_ufrag = None
        if remote is not None:
            for line in remote.sdp.splitlines():
                if line.startswith("a=ice-ufrag:"):
                    current_ufrag = line.split(":", 1)[1].strip()
                    break
        if ufrag is not None and current_ufrag is not None and ufrag != current_ufrag:
            raise HttpError(422, "ice_restart_unsupported",
                            "ICE restart is not supported; DELETE this session and POST a new offer")
        first = session.pc.getTransceivers()[0] if session.pc.getTransceivers() else None
        for line in candidates:
            try:
                candidate = candidate_from_sdp(line.split(":", 1)[1])
            except Exception as exc:
                raise HttpError(400, "bad_candidate", f"cannot parse candidate: {line[:80]!r}") from exc
            # BUNDLE: every candidate belongs to the first transport.
            candidate.sdpMid = first.mid if first else "0"
            candidate.sdpMLineIndex = 0
            await session.pc.addIceCandidate(candidate)
        if end:
            await session.pc.addIceCandidate(None)  # type: ignore[arg-type]
        return web.Response(status=204)

    return patch
