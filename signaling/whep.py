"""WHEP playback: a viewer receives the room's tracks, forwarded without transcoding."""

from __future__ import annotations

import logging

from aiohttp import web
from aiortc import RTCSessionDescription

from relay.aiortc_bridge import SenderPort, capabilities_matching, prefer_dtls_server
from relay.errors import CapacityExceeded, RoomClosed, RoomNotLive
from relay.subscription import Subscription
from signaling.context import (
    authorize,
    check_draining,
    check_not_banned,
    check_offer_rate,
    context,
    count,
    read_body,
    room_name,
)
from signaling.errors import HttpError
from signaling.negotiation import answer_response, apply_offer
from signaling.sdp import parse_offer, require_codec
from signaling.sessions import PlaybackSession

log = logging.getLogger("cherry.signaling.whep")


async def post_whep(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    room_id = room_name(request)
    check_offer_rate(request)
    offer_sdp = await read_body(request, "application/sdp")
    grant = authorize(request, room_id, "viewer")
    check_not_banned(ctx, room_id, grant.identity)
    check_draining(ctx)
    offered = parse_offer(offer_sdp, sending=False)
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

    # Every offered kind that the room carries must share the host's codec.
    kinds = []
    for media in offered:
        codec = room.codecs.get(media.kind)
        if codec is not None and media.kind not in kinds:
            require_codec(media, [codec.mime_type])
            kinds.append(media.kind)
    if not kinds:
        raise HttpError(400, "no_common_codec",
                        "offer has no m-line for the room's tracks ("
                        + ", ".join(sorted(room.codecs)) + ")")

    session = PlaybackSession(room, grant.identity, grant.role, ctx.session_settings, ctx.sessions)
    settings = ctx.session_settings
    try:
        pc = session.pc
        for kind in kinds:
            codec = room.codecs[kind]
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            transceiver.setCodecPreferences(capabilities_matching(codec))
            port = SenderPort(transceiver.sender, f"cherry-{room.name}", settings.report_interval)
            subscription = Subscription(kind, codec.clock_rate, port, queue_limit=settings.queue_limit,
                                        cname=f"cherry-{room.name}")
            port.on_keyframe_request = subscription.on_keyframe_request
            port.on_nack = subscription.on_nack
            port.sender_report = subscription.sender_report
            session.ports.append(port)
            session.subscriptions.append(subscription)
        await apply_offer(pc, RTCSessionDescription(sdp=offer_sdp, type="offer"))
        prefer_dtls_server(pc)
        response = await answer_response(request, session, "whep")
        room.add_viewer(session, session.subscriptions)
    except (RoomNotLive, RoomClosed, CapacityExceeded) as exc:
        session.close("room changed during negotiation")
        raise HttpError(409, "room_changed", str(exc)) from exc
    except BaseException:
        session.close("negotiation failed")
        raise
    count(ctx, "whep_201")
    log.info("%s watching (%s)", session.tag, ", ".join(kinds))
    return response
