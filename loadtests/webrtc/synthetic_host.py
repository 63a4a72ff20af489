"""A synthetic host: publishes pre-encoded VP8 + Opus over WHIP.

Library::

    configure_ice(["127.0.0.1"])          # once per process, before any connection
    media = HostMedia.encode()             # ~0.3 s of CPU; share it between hosts
    host = SyntheticHost(HostOptions("http://127.0.0.1:8080", "room1"), media)
    await host.start()                     # returns once the ingest session is connected
    ...
    await host.stop()

Process (prints JSON lines on stdout: ``publishing``, then ``stopped``)::

    python -m loadtests.webrtc.synthetic_host --base-url http://127.0.0.1:8080 --room room1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCRtpSender, RTCSessionDescription

from aiortc_bridge.client import route_keyframe_requests
from aiortc_bridge.heap import freeze_start_up_heap
from loadtests.webrtc.media import EncodedClip, encode_audio_clip, encode_video_clip
from loadtests.webrtc.peer import DEFAULT_ICE_HOSTS, configure_ice, new_peer_connection, wait_connected
from loadtests.webrtc.signaling_client import (
    SessionResource,
    delete_resource,
    post_offer,
)
from loadtests.webrtc.token_options import TokenError, TokenSettings, add_token_arguments
from loadtests.webrtc.tokens import DevTokenSource, TokenSource
from loadtests.webrtc.tracks import FreezeSchedule, PacketLoopTrack

FPS = 30


@dataclass(frozen=True, slots=True)
class HostMedia:
    """The encoded loops a host replays; build once and share between hosts."""

    video: EncodedClip
    audio: EncodedClip

    @classmethod
    def encode(cls, seconds: float = 2.0, bitrate: int = 1_000_000, keyframe_interval: float | None = 1.0) -> HostMedia:
        """``keyframe_interval``: seconds between keyframes (the loop grows to a whole number of them);
        None: keyframes only when asked (PLI/FIR), like a browser."""
        frames: int | None = None
        if keyframe_interval is not None:
            frames = max(1, round(keyframe_interval * FPS))
            seconds = math.ceil(round(seconds * FPS) / frames) * frames / FPS
        video = encode_video_clip(fps=FPS, seconds=seconds, bitrate=bitrate, keyframe_interval=frames)
        return cls(video, encode_audio_clip(seconds=seconds))


@dataclass(slots=True)
class HostOptions:
    base_url: str
    room: str
    token: str | None = None  # None: one from ``tokens``
    connect_timeout: float = 15.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    tag_capture: bool = True  # capture-time trailer on each video frame (viewers measure latency)
    freeze: FreezeSchedule | None = None  # known video freezes, for truth tests
    tokens: TokenSource | None = None  # None: the gateway's /dev/token (dev servers only)


def _preferences(kind: str, mime_type: str) -> list[Any]:
    # Our packets are VP8/Opus: never let the answer pick H264 or PCMU.
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in codecs if c.mimeType.lower() == mime_type.lower()]
    if kind == "video":
        chosen += [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    return chosen


class SyntheticHost:
    """One WHIP ingest session replaying :class:`HostMedia`."""

    def __init__(self, options: HostOptions, media: HostMedia) -> None:
        self.options = options
        self.video = PacketLoopTrack("video", media.video, tag_capture=options.tag_capture, freeze=options.freeze)
        self.audio = PacketLoopTrack("audio", media.audio)
        self.pc = new_peer_connection()
        self.resource: SessionResource | None = None
        self.setup_ms: float | None = None
        self._http: aiohttp.ClientSession | None = None
        self._token: str | None = options.token
        self.closed = asyncio.Event()

    async def start(self) -> None:
        """Publish; returns when ICE+DTLS are connected, raises on refusal or timeout."""
        started = time.monotonic()
        http = self._http = aiohttp.ClientSession(headers=self.options.extra_headers)
        if self._token is None:
            tokens = self.options.tokens or DevTokenSource(self.options.base_url, lambda: http)
            self._token = await tokens.token(self.options.room, "host")
        video = self.pc.addTransceiver(self.video, direction="sendonly")
        video.setCodecPreferences(_preferences("video", "video/VP8"))
        audio = self.pc.addTransceiver(self.audio, direction="sendonly")
        audio.setCodecPreferences(_preferences("audio", "audio/opus"))
        route_keyframe_requests(video.sender, self.video.request_keyframe)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.closed.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        url = f"{self.options.base_url.rstrip('/')}/whip/{self.options.room}"
        self.resource = await post_offer(self._http, url, self.pc.localDescription.sdp, self._token)
        await self.pc.setRemoteDescription(RTCSessionDescription(self.resource.answer_sdp, "answer"))
        await wait_connected(self.pc, self.options.connect_timeout)
        self.setup_ms = (time.monotonic() - started) * 1000

    async def stop(self) -> None:
        """End the session (DELETE, then close the connection); idempotent."""
        if self._http is not None and self.resource is not None:
            await delete_resource(self._http, self.resource.url, self._token)
            self.resource = None
        await self.pc.close()
        self.video.stop()
        self.audio.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self.closed.set()

    def stats(self) -> dict[str, Any]:
        return {
            "video_frames_sent": self.video.frames_sent,
            "audio_frames_sent": self.audio.frames_sent,
            "keyframe_requests": self.video.keyframe_requests,
            "keyframes_sent": self.video.keyframes_sent,
            "setup_ms": self.setup_ms,
            "pauses": [[round(a, 6), round(b, 6)] for a, b in self.video.pauses],
        }


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _run(args: argparse.Namespace) -> int:
    configure_ice(args.ice_host or DEFAULT_ICE_HOSTS)
    interval = args.keyframe_interval or None  # 0: only when asked
    media = HostMedia.encode(seconds=args.loop_seconds, bitrate=args.bitrate, keyframe_interval=interval)
    _emit("encoded", video_bps=round(media.video.bitrate), audio_bps=round(media.audio.bitrate),
          keyframe_interval_s=interval)
    freeze_start_up_heap()  # the clip and imports: a full collection's pause would hold frames back
    freeze = FreezeSchedule(args.freeze_every, args.freeze_for, args.freeze_first) if args.freeze_every else None
    settings = TokenSettings.from_args(args)
    try:
        tokens = settings.source(args.base_url) if settings.given else None  # else the host asks /dev/token
    except TokenError as exc:
        _emit("failed", error=str(exc))
        return 2
    host = SyntheticHost(HostOptions(args.base_url, args.room, args.token, freeze=freeze, tokens=tokens), media)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await host.start()
    except Exception as exc:
        _emit("failed", error=repr(exc))
        await host.stop()
        return 1
    _emit("publishing", location=host.resource.url if host.resource else None, setup_ms=host.setup_ms)
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(host.closed.wait())]
    try:
        await asyncio.wait(waiters, timeout=args.duration or None, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    lost = host.closed.is_set() and not stop.is_set()
    stats = host.stats()
    await host.stop()
    _emit("stopped", reason="connection lost" if lost else "requested", **stats)
    return 1 if lost else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--room", required=True)
    parser.add_argument("--token", help="host JWT; default: one from the token source")
    add_token_arguments(parser)
    parser.add_argument("--ice-host", action="append", help="ICE host address (repeatable); default 127.0.0.1")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to publish; 0: until SIGTERM")
    parser.add_argument("--loop-seconds", type=float, default=2.0, help="length of the pre-encoded loop")
    parser.add_argument("--bitrate", type=int, default=1_000_000, help="video bits per second")
    parser.add_argument("--keyframe-interval", type=float, default=1.0,
                        help="seconds between keyframes (the loop grows to a multiple); 0: only on PLI/FIR")
    parser.add_argument("--freeze-every", type=float, default=0.0, help="truth tests: pause video every N s")
    parser.add_argument("--freeze-for", type=float, default=0.5, help="... for this many seconds")
    parser.add_argument("--freeze-first", type=float, default=2.0, help="... the first pause this long after start")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
