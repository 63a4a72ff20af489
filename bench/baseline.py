"""The naive baseline relay: aiortc's ``MediaRelay`` behind the same WHIP/WHEP URLs.

The ingest receiver decodes once and every viewer's sender encodes again
(VP8 and Opus), which is what the gateway avoids; it exists only as the
comparison point for ``bench.run`` and is never used in the product.

Any token is accepted; ``GET /dev/token`` hands out a dummy one so the same
load clients work against both servers::

    python -m bench.baseline --host 127.0.0.1 --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from bench.stand_in import StandInServer, created, error
from loadtests.webrtc.peer import configure_ice, new_peer_connection

log = logging.getLogger("bench.baseline")


@dataclass(slots=True)
class BaselineRoom:
    host_pc: RTCPeerConnection
    host_id: str
    relay: MediaRelay = field(default_factory=MediaRelay)
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    drains: list[asyncio.Task[None]] = field(default_factory=list)
    viewers: dict[str, RTCPeerConnection] = field(default_factory=dict)


async def _drain(track: MediaStreamTrack) -> None:
    # A source nobody reads queues decoded frames forever; one permanent
    # subscriber keeps the relay pulling whether or not viewers are there.
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class BaselineServer(StandInServer[BaselineRoom]):
    TOKEN = "baseline"

    async def close_room(self, room: BaselineRoom) -> None:
        for task in room.drains:
            task.cancel()
        await asyncio.gather(*(pc.close() for pc in room.viewers.values()), return_exceptions=True)
        await room.host_pc.close()

    async def stats(self, request: web.Request) -> web.Response:
        # No forwarding-delay figure: the baseline has no packet path to time.
        rooms = {name: len(room.viewers) for name, room in self.rooms.items()}
        return web.json_response({"baseline": True, "rooms": rooms})

    async def whip(self, request: web.Request) -> web.Response:
        name = request.match_info["room"]
        if name in self.rooms:
            return error(409, "room_busy", "room already has a host")
        pc = new_peer_connection()
        room = BaselineRoom(pc, uuid.uuid4().hex)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            room.tracks[track.kind] = track
            sink = room.relay.subscribe(track, buffered=False)
            room.drains.append(asyncio.ensure_future(_drain(sink)))

        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        self.rooms[name] = room
        return created(pc, f"/whip/{name}/{room.host_id}")

    async def whep(self, request: web.Request) -> web.Response:
        room = self.rooms.get(request.match_info["room"])
        if room is None or not room.tracks:
            return error(404, "room_not_live", "room has no live host")
        pc = new_peer_connection()
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        for track in room.tracks.values():
            # Unbuffered: a slow encoder drops frames instead of queueing them.
            pc.addTrack(room.relay.subscribe(track, buffered=False))
        await pc.setLocalDescription(await pc.createAnswer())
        session = uuid.uuid4().hex
        room.viewers[session] = pc
        return created(pc, f"/whep/{request.match_info['room']}/{session}")

    async def whep_delete(self, request: web.Request) -> web.Response:
        room = self.rooms.get(request.match_info["room"])
        pc = room.viewers.pop(request.match_info["session"], None) if room else None
        if pc is None:
            return error(404, "not_found", "no such session")
        await pc.close()
        return web.Response(status=200)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Naive MediaRelay baseline (benchmark only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--ice-host", action="append", help="ICE host address (repeatable); default 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    configure_ice(args.ice_host or ["127.0.0.1"])
    web.run_app(BaselineServer().app(), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
