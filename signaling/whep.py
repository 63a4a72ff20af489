"""WHEP playback: a viewer receives the room's tracks, forwarded without transcoding."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.codecs import is_rtx

from aiortc_bridge.codecs import capabilities_for, capabilities_matching
from aiortc_bridge.dtls import prefer_dtls_server
from aiortc_bridge.sender import SenderPort
from relay.errors import CapacityExceeded, RoomClosed, RoomNotLive
from relay.subscription import Subscription
from signaling.context import (
    context,
    count,
)
from signaling.errors import HttpError
from signaling.negotiation import accept_offer, answer_response, apply_offer
from signaling.sdp import require_codec
from signaling.sessions import PlaybackSession

log = logging.getLogger("cherry.signaling.whep")


async def post_whep(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    offer = await accept_offer(request, "viewer", sending=False)
    room_id, offer_sdp, grant, offered = offer.room, offer.sdp, offer.grant, offer.media
    room = ctx.rooms.get(room_id)
    try:
        if room is None:
            raise RoomNotLive(f"room {room_id!r} has no live host")
        room.check_can_view()
    except RoomNotLive as exc:
        count(ctx, "whep_404")
        raise HttpError(404, "room_not_live",
                        f"{exc}; retry when the host is live",
                        {"Retry-After": str(ctx.retry_after)}) from exc
    except CapacityExceeded as exc:
        count(ctx, "whep_503")
        raise HttpError(503, "capacity", str(exc), {"Retry-After": str(ctx.retry_after)}) from exc
    except RoomClosed as exc:
        raise HttpError(404, "room_not_live", str(exc)) from exc

    # One subscription per offered m-line: the first of each kind shows the room's host (and must
    # share its codec), further ones are co-stream slots (PK partner, guests) filled as they come.
    plan: list[tuple[str, int]] = []
    for media in offered:
        codec = room.codecs.get(media.kind)
        if codec is None:
            continue
        slot = sum(1 for kind, _ in plan if kind == media.kind)
        if slot >= ctx.max_slots:
            continue
        if slot == 0:
            require_codec(media, [codec.mime_type])
        plan.append((media.kind, slot))
    if not plan:
        raise HttpError(400, "no_common_codec",
                        "offer has no m-line for the room's tracks ("
                        + ", ".join(sorted(room.codecs)) + ")")

    session = PlaybackSession(room, grant.identity, grant.role, ctx.session_settings, ctx.sessions)
    settings = ctx.session_settings
    try:
        pc = session.pc
        for kind, slot in plan:
            codec = room.codecs[kind]
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            accepted = ctx.video_codecs if kind == "video" else ctx.audio_codecs
            others = [c for c in accepted if c.lower() != codec.mime_type.split("/")[-1].lower()]
            # The host's codec first; the others let a co-streamer with another codec through.
            transceiver.setCodecPreferences(capabilities_matching(codec.mime_type, codec.fmtp)
                                            + [c for c in capabilities_for(kind, others) if not is_rtx(c)])
            port = SenderPort(transceiver.sender, settings.report_interval)
            subscription = Subscription(kind, codec.clock_rate, port, queue_limit=settings.queue_limit,
                                        cname=f"cherry-{room.name}", slot=slot)
            port.listener = subscription
            session.ports.append(port)
            session.subscriptions.append(subscription)
        await apply_offer(pc, RTCSessionDescription(sdp=offer_sdp, type="offer"))
        prefer_dtls_server(pc)
        response = await answer_response(request, session, "whep")
        room.add_viewer(session, session.subscriptions)
    except (RoomNotLive, RoomClosed, CapacityExceeded) as exc:
        session.close("room changed during negotiation")
        raise HttpError(409, "room_changed", str(exc)) from exc
    except BaseException as exc:
        replaced = session.closed  # a newer session of the same identity took over mid-negotiation
        session.close("negotiation failed")
        if replaced and not isinstance(exc, asyncio.CancelledError):
            raise HttpError(409, "session_replaced",
                            f"this session was ended while negotiating ({session.close_reason})") from exc
        raise
    count(ctx, "whep_201")
    log.info("%s watching (%s)", session.tag, ", ".join(f"{k}#{slot}" for k, slot in plan))
    return response
