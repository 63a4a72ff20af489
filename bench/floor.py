"""The floor: the least a Python forwarder can spend per viewer, behind the gateway's WHIP/WHEP URLs.

Real WebRTC on both sides (aiortc ICE + DTLS + SRTP), through the same compatibility module the gateway
uses (:mod:`aiortc_bridge`): the host's RTP is tapped before any jitter buffer or decoder
(``ReceiverTap``), and each packet goes to every viewer through ``SenderPort.send_rtp``: the header
written with the viewer's SSRC, sequence number and timestamp, the payload copied behind it into the
session's SRTP buffer, protected in place and handed to ``sendto``. Nothing else: no RTCP sent (no
sender reports), viewer feedback ignored (no NACK answers, no keyframe requests upstream), no drop
policy, no metrics, no per-packet bookkeeping beyond one keyframe test while a viewer waits for its
first keyframe. It exists only so that ``make bench`` can show how far the gateway is from it; never
use it for anything else.

Any token is accepted; ``GET /dev/token`` hands out a dummy one so the load clients work unchanged::

    python -m bench.floor --host 127.0.0.1 --port 8091 --ice-host 127.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import aiortc_bridge
from aiortc_bridge.codecs import capabilities_for
from aiortc_bridge.dtls import prefer_dtls_server
from aiortc_bridge.ice import pin_ice_hosts
from aiortc_bridge.receiver import ReceiverTap
from aiortc_bridge.sender import SenderPort
from bench.stand_in import StandInServer, created, error
from loadtests.webrtc.vp8 import frame_start

log = logging.getLogger("bench.floor")

CODECS = {"video": "video/VP8", "audio": "audio/opus"}
REPORT_INTERVAL = 3600.0  # SenderPort's RTCP loop: the floor never has a sender report to send


class Output:
    """One viewer's stream of one track: its port and the constant offsets of its header rewrite."""

    __slots__ = ("payload_type", "port", "seq_delta", "ts_delta")

    def __init__(self, port: SenderPort, payload_type: int) -> None:
        self.port = port
        self.payload_type = payload_type
        self.seq_delta = random.getrandbits(16)
        self.ts_delta = random.getrandbits(32)


class Track:
    """One incoming track of the host and the viewers it is forwarded to."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.mime_type = CODECS[kind]
        self.outputs: tuple[Output, ...] = ()  # copy-on-write: the packet loop never sees a half-made change
        self.waiting: tuple[SenderPort, ...] = ()  # connected viewers waiting for a keyframe (video) or a packet
        self.packets_in = 0
        self.keyframes_in = 0

    def on_rtp(self, ssrc: int, seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
        self.packets_in += 1
        if self.waiting:
            self._admit(payload)
        second = 0x80 if marker else 0
        for out in self.outputs:
            out.port.send_rtp(second | out.payload_type, (seq + out.seq_delta) & 0xFFFF,
                              (ts + out.ts_delta) & 0xFFFFFFFF, payload, arrival)

    def _admit(self, payload: bytes) -> None:
        # A viewer starts at a keyframe, or its decoder has nothing to start from.
        if self.kind == "video" and not frame_start(payload)[1]:
            return
        admitted, waiting = [], []
        for port in self.waiting:
            types = port.payload_types(self.mime_type)  # known once aiortc started the sender
            if types is None:
                waiting.append(port)
            else:
                admitted.append(Output(port, types[0]))
        self.outputs += tuple(admitted)
        self.waiting = tuple(waiting)

    def add(self, port: SenderPort) -> None:
        self.waiting += (port,)

    def remove(self, port: SenderPort) -> None:
        self.waiting = tuple(p for p in self.waiting if p is not port)
        self.outputs = tuple(o for o in self.outputs if o.port is not port)


@dataclass(slots=True)
class Viewer:
    pc: RTCPeerConnection
    ports: dict[str, SenderPort]


@dataclass(slots=True)
class FloorRoom:
    host_pc: RTCPeerConnection
    host_id: str
    tracks: dict[str, Track] = field(default_factory=dict)
    taps: list[ReceiverTap] = field(default_factory=list)
    viewers: dict[str, Viewer] = field(default_factory=dict)
    connected: bool = False


def _peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class FloorServer(StandInServer[FloorRoom]):
    TOKEN = "floor"

    async def close_room(self, room: FloorRoom) -> None:
        viewers, room.viewers = list(room.viewers.values()), {}
        await asyncio.gather(*(v.pc.close() for v in viewers), return_exceptions=True)
        await room.host_pc.close()

    async def stats(self, request: web.Request) -> web.Response:
        # The shape of the gateway's rooms list where the bench reads it (live, viewers, packets in).
        rooms = [{"room": name, "live": room.connected, "viewers": len(room.viewers),
                  "publications": {kind: {"packets_in": t.packets_in} for kind, t in room.tracks.items()}}
                 for name, room in self.rooms.items()]
        return web.json_response({"floor": True, "rooms": rooms})

    async def whip(self, request: web.Request) -> web.Response:
        name = request.match_info["room"]
        if name in self.rooms:
            return error(409, "room_busy", "room already has a host")
        pc = _peer_connection()
        room = FloorRoom(pc, uuid.uuid4().hex)
        for kind, mime_type in CODECS.items():
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(capabilities_for(kind, [mime_type]))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            room.connected = pc.connectionState == "connected"

        try:
            await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        except Exception as exc:  # aiortc refuses unusable offers with many exception types
            await pc.close()
            return error(400, "bad_offer", f"offer cannot be used: {exc}"[:200])
        prefer_dtls_server(pc)
        for transceiver in pc.getTransceivers():
            track = room.tracks[transceiver.kind] = Track(transceiver.kind)
            room.taps.append(ReceiverTap(transceiver.receiver, track.on_rtp))
        await pc.setLocalDescription(await pc.createAnswer())
        self.rooms[name] = room
        return created(pc, f"/whip/{name}/{room.host_id}")

    async def whep(self, request: web.Request) -> web.Response:
        name = request.match_info["room"]
        room = self.rooms.get(name)
        if room is None or not room.tracks:
            return error(404, "room_not_live", "room has no live host")
        pc = _peer_connection()
        ports: dict[str, SenderPort] = {}
        for kind, mime_type in CODECS.items():
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            transceiver.setCodecPreferences(capabilities_for(kind, [mime_type]))
            ports[kind] = SenderPort(transceiver.sender, REPORT_INTERVAL)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        except Exception as exc:
            await pc.close()
            return error(400, "bad_offer", f"offer cannot be used: {exc}"[:200])
        prefer_dtls_server(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        session = uuid.uuid4().hex
        viewer = room.viewers[session] = Viewer(pc, ports)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                for kind, port in viewer.ports.items():
                    if kind in room.tracks:
                        room.tracks[kind].add(port)
            elif state in ("failed", "closed"):
                _drop_viewer(room, session)

        return created(pc, f"/whep/{name}/{session}")

    async def whep_delete(self, request: web.Request) -> web.Response:
        room = self.rooms.get(request.match_info["room"])
        viewer = _drop_viewer(room, request.match_info["session"]) if room else None
        if viewer is None:
            return error(404, "not_found", "no such session")
        await viewer.pc.close()
        return web.Response(status=200)


def _drop_viewer(room: FloorRoom, session: str) -> Viewer | None:
    viewer = room.viewers.pop(session, None)
    if viewer is not None:
        for kind, port in viewer.ports.items():
            if kind in room.tracks:
                room.tracks[kind].remove(port)
    return viewer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The floor forwarder (benchmark only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--ice-host", action="append", help="ICE host address (repeatable); default 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    aiortc_bridge.install()
    pin_ice_hosts(args.ice_host or ["127.0.0.1"])
    loop: asyncio.AbstractEventLoop
    try:  # the gateway's loop (gateway/cli.py): the comparison is about the forwarding path, not the loop
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(FloorServer().app(), host=args.host, port=args.port, print=None, loop=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
