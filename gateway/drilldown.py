"""The dashboard's per-room drill-down: ``GET /dashboard/room?room=R``, one room at a time.

It reads the admin API's room detail (``signaling.admin``: this process, or every worker of a cluster
through ``cluster.admin``) and the room's real-user quality reports, and passes on only a whitelist of
fields: identities, roles, session kinds and states, codecs, bitrates, loss, NACK/PLI counts. No session
id (the last segment of a session's URL), no token, no address leaves here, and a big audience is cut to
``MAX_PARTICIPANTS`` rows (stage first), so the feed stays small however big the room.

Acting on a room (kick, end) is the admin API's, with an admin token the page asks the operator for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.metrics import Operations, field_of, hub_quality
from signaling.admin import LocalAdmin
from signaling.errors import HttpError

MAX_PARTICIPANTS = 50
MAX_ROOM_NAME = 128
QUALITY_FIELDS = ("reports", "watch_seconds", "freeze_seconds", "stutter_ratio", "latency_ms_p50",
                  "latency_ms_p95", "fps_mean")
CONGESTION_RANK = {"ok": 0, "probing": 1, "congested": 2}


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _session_view(session: Mapping[str, Any], codecs: Mapping[str, str], now: float) -> dict[str, Any]:
    subs = [s for s in session.get("subscriptions") or [] if isinstance(s, Mapping)]
    congestion = [s.get("congestion") or {} for s in subs]
    video = [c for s, c in zip(subs, congestion, strict=True) if s.get("kind") == "video"]
    rtts = [float(c["rtt_ms"]) for c in congestion if isinstance(c.get("rtt_ms"), int | float)]
    worst = max((str(c.get("state", "ok")) for c in video), key=lambda s: CONGESTION_RANK.get(s, 0), default=None)
    connected_at = session.get("connected_at")
    kind = str(session.get("kind", ""))
    return {
        "kind": kind,
        "state": str(session.get("state", "")),
        "connected_s": round(now - connected_at, 1) if isinstance(connected_at, int | float) else None,
        # An ingest session's codecs are the room's publications'; a playback session's are what it receives.
        "codecs": sorted({codecs[k] for k in (codecs if kind == "ingest" else {str(s.get("kind")) for s in subs})
                          if k in codecs}),
        "streams": len(subs),
        "send_bps": sum(_int(c.get("send_bps")) for c in congestion),
        "loss": round(max((field_of(c, "loss") for c in video), default=0.0), 4) if video else None,
        "jitter_ms": round(max((field_of(c, "jitter_ms") for c in video), default=0.0), 1) if video else None,
        "rtt_ms": round(max(rtts), 1) if rtts else None,
        "congestion": worst,
        "nacks": sum(_int(s.get("nacks_in")) for s in subs),
        "plis": sum(_int(s.get("keyframe_requests_in")) for s in subs),
        "retransmitted": sum(_int(s.get("retransmitted")) for s in subs),
        "dropped": sum(sum(_int(n) for n in (s.get("dropped") or {}).values()) for s in subs),
    }


def room_view(detail: Mapping[str, Any], quality: Mapping[str, Any] | None, now: float | None = None,
              max_participants: int = MAX_PARTICIPANTS) -> dict[str, Any]:
    """The drill-down of one room from the admin API's detail: whitelisted fields only."""
    now = time.time() if now is None else now
    publications = {str(kind): p for kind, p in (detail.get("publications") or {}).items() if isinstance(p, Mapping)}
    codecs = {kind: str(p.get("codec", "")) for kind, p in publications.items()}
    participants = [p for p in detail.get("participants") or [] if isinstance(p, Mapping)]
    shown = []
    for p in participants[:max_participants]:  # the admin API sorts the host first
        shown.append({
            "identity": str(p.get("identity", "")),
            "display_name": str(p.get("display_name") or ""),
            "role": str(p.get("role", "")),
            "on_mic": bool(p.get("on_mic")),
            "sockets": _int(p.get("sockets")),
            "worker": str(p["worker"]) if isinstance(p.get("worker"), str) else None,
            "sessions": [_session_view(s, codecs, now) for s in p.get("sessions") or [] if isinstance(s, Mapping)],
        })
    live_since = detail.get("live_since")
    return {
        "room": str(detail.get("room", "")),
        "title": str(detail.get("title") or ""),
        "live": bool(detail.get("live")),
        "live_s": round(now - live_since, 1) if isinstance(live_since, int | float) else None,
        "host": detail.get("host") if isinstance(detail.get("host"), str) else None,
        "guests": [str(g) for g in detail.get("guests") or []],
        "pk_partner": detail.get("pk_partner") if isinstance(detail.get("pk_partner"), str) else None,
        "viewers": _int(detail.get("viewers")),
        "online": _int(detail.get("online")),
        "ingest_bps": round(1000 * field_of(detail, "ingest_kbps")),
        "publications": [{"kind": kind, "codec": codecs[kind], "owner": str(p.get("owner", "")),
                          "packets_in": _int(p.get("packets_in")), "keyframes_in": _int(p.get("keyframes_in")),
                          "keyframe_requests": _int(p.get("keyframe_requests")), "epochs": _int(p.get("epochs")),
                          "subscriptions": _int(p.get("subscriptions"))}
                         for kind, p in sorted(publications.items())],
        "participants": shown,
        "participants_total": len(participants),
        "quality": None if quality is None else {f: round(field_of(quality, f), 5) for f in QUALITY_FIELDS},
        "partial": bool(detail.get("partial")),
    }


def install_drilldown(app: web.Application, ops: Operations) -> None:
    async def room(request: web.Request) -> web.Response:
        name = request.query.get("room", "")
        if not name or len(name) > MAX_ROOM_NAME:
            raise HttpError(400, "bad_room_name", f"query parameter 'room' must name a room (1-{MAX_ROOM_NAME} "
                                                  "characters)")
        ctx = ops.ctx
        scope = ctx.admin if ctx.admin is not None else LocalAdmin(ctx)
        detail = await scope.room(name)
        if detail is None:
            raise HttpError(404, "unknown_room", f"no room {name!r}")
        view = room_view(detail, hub_quality(ops.hub()).get(name))
        return web.json_response(view, headers={"Cache-Control": "no-store"})

    app.router.add_get("/dashboard/room", room)
