"""WHIP ingest (RFC 9725): a host publishes one audio and one video track."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from aiohttp import web
from aiortc import RTCSessionDescription

from aiortc_bridge.codecs import capabilities_for, describe, negotiated_codec
from aiortc_bridge.dtls import prefer_dtls_server
from aiortc_bridge.receiver import ReceiverTap
from relay.errors import CapacityExceeded, GuestSlotsFull, HostAlreadyLive, RoomClosed
from relay.ports import CodecInfo
from relay.publication import Publication
from signaling.context import (
    context,
    count,
)
from signaling.errors import HttpError
from signaling.negotiation import accept_offer, answer_response, apply_offer
from signaling.sdp import require_codec
from signaling.sessions import IngestSession

log = logging.getLogger("cherry.signaling.whip")


async def post_whip(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    offer = await accept_offer(request, "guest", sending=True)
    room_id, offer_sdp, grant, offered = offer.room, offer.sdp, offer.grant, offer.media
    # A returning host is held to the codecs its waiting viewers already negotiated; a guest is
    # steered to them first (viewers' co-stream slots negotiated every codec their offer allowed).
    preferences = {"video": list(ctx.video_codecs), "audio": list(ctx.audio_codecs)}
    existing = ctx.rooms.get(room_id)
    as_guest = grant.role == "guest"
    if existing is not None and (existing.viewers or as_guest):
        for kind, codec in existing.codecs.items():
            others = [c for c in preferences[kind] if c.lower() != codec.mime_type.split("/")[-1].lower()]
            preferences[kind] = [codec.mime_type] + (others if as_guest else [])
    for media in offered:
        require_codec(media, preferences[media.kind])
    try:
        room = ctx.rooms.get_or_create(room_id)
    except CapacityExceeded as exc:
        count(ctx, "whip_503")
        raise HttpError(503, "capacity", str(exc), {"Retry-After": str(ctx.retry_after)}) from exc

    session = IngestSession(room, grant.identity, grant.role, ctx.session_settings, ctx.sessions)
    try:
        if as_guest:
            room.claim_guest(session)
        else:
            room.claim_host(session)
    except GuestSlotsFull as exc:
        session.close("refused")
        count(ctx, "whip_409")
        raise HttpError(409, "guest_slots_full", str(exc)) from exc
    except (HostAlreadyLive, RoomClosed) as exc:
        session.close("refused")
        count(ctx, "whip_409")
        raise HttpError(409, "host_already_live", str(exc)) from exc

    try:
        pc = session.pc
        for media in offered:
            transceiver = pc.addTransceiver(media.kind, direction="recvonly")
            transceiver.setCodecPreferences(capabilities_for(media.kind, preferences[media.kind]))
        await apply_offer(pc, RTCSessionDescription(sdp=offer_sdp, type="offer"))
        prefer_dtls_server(pc)
        settings = ctx.session_settings
        for transceiver in pc.getTransceivers():
            negotiated = negotiated_codec(transceiver)
            if negotiated is None or transceiver.mid is None:
                continue
            holder: list[ReceiverTap] = []
            publication = Publication(
                transceiver.kind,
                CodecInfo(*dataclasses.astuple(describe(negotiated))),
                _LazyKeyframeSource(holder),
                cache_size=settings.cache_size,
                keyframe_interval=settings.keyframe_interval,
                delay_sampler=ctx.forwarding_delay,
            )
            tap = ReceiverTap(transceiver.receiver, publication.on_rtp)
            holder.append(tap)
            session.publications.append(publication)
            session.taps.append(tap)
        response = await answer_response(request, session, "whip")
        room.title = request.query.get("title", "")[:120] or room.title
        for publication in session.publications:
            room.publish(session, publication)
    except BaseException as exc:
        replaced = session.closed  # a newer session of the same identity took over mid-negotiation
        session.close("negotiation failed")
        if replaced and not isinstance(exc, asyncio.CancelledError):
            raise HttpError(409, "session_replaced",
                            f"this session was ended while negotiating ({session.close_reason})") from exc
        raise
    count(ctx, "whip_201")
    log.info("%s publishing %s", session.tag,
             ", ".join(p.codec.mime_type for p in session.publications))
    return response


class _LazyKeyframeSource:
    """Routes a publication's keyframe requests to its tap, created just after it."""

    __slots__ = ("_holder",)

    def __init__(self, holder: list[ReceiverTap]) -> None:
        self._holder = holder

    def request_keyframe(self) -> None:
        if self._holder:
            self._holder[0].request_keyframe()
