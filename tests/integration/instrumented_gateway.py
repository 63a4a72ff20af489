"""Runs the real gateway CLI with codec creation counted, for the no-transcoding tests.

Every way aiortc or PyAV can make an encoder or decoder is wrapped; the counts
are served at GET /test/codecs so a test can assert they stay zero while the
gateway forwards. The room covers' decodes (gateway/snapshots.py) are the one codec
work the gateway does, off the forwarding path in their own thread: what is made
in that thread is counted apart, at GET /test/snapshot-codecs, so the forwarding
counts stay zero and the covers' are checked against their rounds.
GET /test/forwarding/{room} gives one consistent snapshot of
a room's packets in (per publication) and out (per viewer and subscription),
which /api/stats only reports summed over the room.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
from aiohttp import web

from aiortc_bridge.snapshot import SNAPSHOT_THREAD

COUNTS = {"encoders": 0, "decoders": 0, "codec_contexts": 0}
SNAPSHOT_COUNTS = dict.fromkeys(COUNTS, 0)  # made in the snapshot thread


def _counting(name: str, original: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        snapshot = threading.current_thread().name.startswith(SNAPSHOT_THREAD)
        (SNAPSHOT_COUNTS if snapshot else COUNTS)[name] += 1
        return original(*args, **kwargs)

    return wrapper


get_encoder = _counting("encoders", aiortc.codecs.get_encoder)
get_decoder = _counting("decoders", aiortc.codecs.get_decoder)
aiortc.codecs.get_encoder = get_encoder
aiortc.codecs.get_decoder = get_decoder
aiortc.rtcrtpsender.get_encoder = get_encoder  # type: ignore[attr-defined]
aiortc.rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[attr-defined]
av.CodecContext.create = _counting("codec_contexts", av.CodecContext.create)  # type: ignore[method-assign]


async def codecs(request: web.Request) -> web.Response:
    return web.json_response(COUNTS)


async def snapshot_codecs(request: web.Request) -> web.Response:
    return web.json_response(SNAPSHOT_COUNTS)


def _raise(*args: Any, **kwargs: Any) -> bool:
    raise RuntimeError("injected sink failure")


async def break_sink(request: web.Request) -> web.Response:
    """Make every outgoing stream of one playback session raise on send (a bug in one viewer's path)."""
    from signaling.context import CONTEXT

    session = request.app[CONTEXT].relay.sessions.get(request.match_info["session"])
    ports = getattr(session, "ports", None)
    if not ports:
        return web.json_response({"error": "no such playback session"}, status=404)
    for port in ports:
        port.send_rtp = _raise
    return web.json_response({"broken": len(ports)})


async def block_loop(request: web.Request) -> web.Response:
    """Stall the event loop (what an unbounded request used to do), to see admission react."""
    seconds = min(float(request.query.get("seconds", "0.5")), 5.0)
    time.sleep(seconds)
    return web.json_response({"blocked_s": seconds})


async def forwarding(request: web.Request) -> web.Response:
    from signaling.context import context

    room = context(request).rooms.get(request.match_info["room"])
    if room is None:
        raise web.HTTPNotFound(text="no such room")
    return web.json_response({
        "publications": {kind: p.stats.packets_in for kind, p in room.publications.items()},
        "viewers": {pid: [{"kind": s.kind, "slot": s.slot, "sent": s.stats.packets_sent,
                           "dropped": s.stats.dropped_congestion + s.stats.dropped_waiting_keyframe
                           + s.stats.dropped_not_connected}
                          for s in viewer.subscriptions]
                    for pid, viewer in room.viewers.items()},
    })


def main() -> int:
    import gateway.app
    import gateway.cli

    original_create_app = gateway.app.create_app

    def create_app(config: Any, **kwargs: Any) -> web.Application:
        app = original_create_app(config, **kwargs)
        app.router.add_get("/test/codecs", codecs)
        app.router.add_get("/test/snapshot-codecs", snapshot_codecs)
        app.router.add_post("/test/break-sink/{session}", break_sink)
        app.router.add_get("/test/forwarding/{room}", forwarding)
        app.router.add_post("/test/block-loop", block_loop)
        return app

    gateway.app.create_app = create_app
    return gateway.cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
