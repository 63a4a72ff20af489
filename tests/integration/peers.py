"""Real aiortc peers for integration tests: a small synthetic host and decoding viewers."""

from __future__ import annotations

import asyncio
import fractions
import random
import time
from dataclasses import dataclass, field

import aiohttp
import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from multidict import CIMultiDict

from loadtests.webrtc.metrics import freeze_gaps

LOOPBACK = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
VIDEO_CLOCK = 90000


class MovingBarTrack(MediaStreamTrack):
    """Small moving picture (so a frozen or black stream is detectable), real-time paced."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30, luma: int = 200) -> None:
        super().__init__()
        self._fps = fps
        self._start: float | None = None
        self._count = 0
        self._frames = []
        chroma = bytes([128]) * (width * height // 4)
        for i in range(fps):  # one second of distinct frames, looped
            bar = (i * width) // fps
            row = bytes([16]) * bar + bytes([luma]) * min(16, width - bar) + bytes([16]) * max(0, width - bar - 16)
            self._frames.append((bytes(row[:width]) * height, chroma))
        self._size = (width, height)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        target = self._start + self._count / self._fps
        if target > now:
            await asyncio.sleep(target - now)
        luma, chroma = self._frames[self._count % len(self._frames)]
        frame = av.VideoFrame(self._size[0], self._size[1], "yuv420p")
        frame.planes[0].update(luma)
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frame.pts = self._count * (VIDEO_CLOCK // self._fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        return frame


class NoiseTrack(MovingBarTrack):
    """The moving bar over random noise: frames as large as the encoder's bitrate allows, so the
    packetizer fills every packet up to its limit."""

    def __init__(self, width: int = 320, height: int = 180, fps: int = 15) -> None:
        super().__init__(width, height, fps)
        rng = random.Random(7)
        chroma = bytes([128]) * (width * height // 4)
        self._frames = [(rng.randbytes(width * height), chroma) for _ in range(8)]


def answer_ports(sdp: str) -> list[int]:
    """The gateway's media ports: the UDP ports of the host candidates in its SDP answer."""
    ports = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and " udp " in line.lower():
            ports.append(int(line.split()[5]))
    return sorted(set(ports))


async def post_sdp(http: aiohttp.ClientSession, url: str, token: str, sdp: str) -> tuple[int, str, CIMultiDict[str]]:
    async with http.post(url, data=sdp, headers={"Content-Type": "application/sdp",
                                                 "Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.text(), CIMultiDict(response.headers)


@dataclass
class Host:
    """A host publishing a moving picture and a tone over WHIP."""

    base: str
    room: str
    token: str
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(LOOPBACK))
    location: str | None = None
    video_codec: str | None = None  # e.g. "video/H264"; default: aiortc's preference (VP8)
    luma: int = 200  # brightness of the moving bar: tells hosts apart at the viewer
    track: MediaStreamTrack | None = None  # default: a MovingBarTrack of this luma
    answer: str = ""
    query: str = ""  # e.g. "?title=...&category=..."

    async def publish(self, http: aiohttp.ClientSession) -> None:
        video = self.pc.addTransceiver(self.track or MovingBarTrack(luma=self.luma), direction="sendonly")
        if self.video_codec is not None:
            video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                       if c.mimeType in (self.video_codec, "video/rtx")])
        self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, body, headers = await post_sdp(http, f"{self.base}/whip/{self.room}{self.query}", self.token,
                                               self.pc.localDescription.sdp)
        assert status == 201, f"WHIP publish failed: {status} {body}"
        self.location = headers["Location"]
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def stop(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.location:
            async with http.delete(self.base + self.location,
                                   headers={"Authorization": f"Bearer {self.token}"}) as response:
                assert response.status == 200, await response.text()
        await self.pc.close()


@dataclass
class Viewer:
    """A WHEP viewer that decodes what it gets and records when each frame arrived."""

    base: str
    room: str
    token: str
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(LOOPBACK))
    location: str | None = None
    video_times: list[float] = field(default_factory=list)
    audio_frames: int = 0
    bars: list[tuple[int, int]] = field(default_factory=list)  # (bar column, bar luma) samples
    posted_at: float = 0.0
    first_video: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    slots: int = 1  # video+audio m-line pairs offered: 1 is a standard WHEP player
    query: str = ""  # e.g. "?monitor=costream"
    # slot > 0: frame arrival times, bar samples and audio frames of co-stream slots
    slot_times: dict[int, list[float]] = field(default_factory=dict)
    slot_bars: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    slot_audio: dict[int, int] = field(default_factory=dict)
    answer: str = ""

    async def watch(self, http: aiohttp.ClientSession) -> None:
        for _ in range(self.slots):
            self.pc.addTransceiver("video", direction="recvonly")
        for _ in range(self.slots):
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.posted_at = time.monotonic()
        status, body, headers = await post_sdp(http, f"{self.base}/whep/{self.room}{self.query}", self.token,
                                               self.pc.localDescription.sdp)
        assert status == 201, f"WHEP watch failed: {status} {body}"
        self.location = headers["Location"]
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        same_kind = [t for t in self.pc.getTransceivers() if t.kind == track.kind]
        slot = next(i for i, t in enumerate(same_kind) if t.receiver.track is track)
        self._tasks.append(asyncio.ensure_future(self._read(track, slot)))

    async def _read(self, track: MediaStreamTrack, slot: int = 0) -> None:
        try:
            while True:
                frame = await track.recv()
                if slot > 0:
                    if track.kind == "video":
                        times = self.slot_times.setdefault(slot, [])
                        times.append(time.monotonic())
                        if len(times) % 7 == 1:
                            self.slot_bars.setdefault(slot, []).append(bar_of(frame))
                        self._progress.set()
                    else:
                        self.slot_audio[slot] = self.slot_audio.get(slot, 0) + 1
                        self._progress.set()
                    continue
                if track.kind == "video":
                    self.video_times.append(time.monotonic())
                    if len(self.video_times) % 7 == 1:  # 7 is coprime with the 30-frame loop
                        self.bars.append(bar_of(frame))
                    self.first_video.set()
                    self._progress.set()
                else:
                    self.audio_frames += 1
                    self._progress.set()
        except MediaStreamError:
            pass

    async def wait_slot_frames(self, slot: int, count: int, timeout: float) -> None:
        """Wait until slot ``slot`` has ``count`` more video frames, or fail with a clear message."""
        times = self.slot_times.setdefault(slot, [])
        target = len(times) + count
        deadline = time.monotonic() + timeout
        while len(times) < target:
            self._progress.clear()
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._progress.wait(), max(remaining, 0.001))
            except TimeoutError:
                raise AssertionError(f"slot {slot} got {len(times) - target + count}/{count} frames "
                                     f"in {timeout}s") from None

    async def wait_slot_audio(self, slot: int, count: int, timeout: float) -> None:
        """Wait until slot ``slot`` has ``count`` audio frames in all. Its video may come from the keyframe
        cache's catch-up burst, a second of frames in a fraction of one, so video frames say nothing of audio."""
        deadline = time.monotonic() + timeout

        def have() -> int:
            return self.audio_frames if slot == 0 else self.slot_audio.get(slot, 0)

        while have() < count:
            self._progress.clear()
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._progress.wait(), max(remaining, 0.001))
            except TimeoutError:
                raise AssertionError(f"slot {slot} audio: {have()}/{count} frames in {timeout}s") from None

    def frames_between(self, start: float, end: float) -> list[float]:
        return [t for t in self.video_times if start <= t <= end]

    async def wait_frames(self, count: int, timeout: float) -> None:
        """Wait until ``count`` more video frames arrived, or fail with a clear message."""
        target = len(self.video_times) + count
        deadline = time.monotonic() + timeout
        while len(self.video_times) < target:
            self._progress.clear()
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._progress.wait(), max(remaining, 0.001))
            except TimeoutError:
                raise AssertionError(
                    f"viewer got {len(self.video_times) - target + count}/{count} frames "
                    f"in {timeout}s") from None

    async def stop(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.location:
            async with http.delete(self.base + self.location,
                                   headers={"Authorization": f"Bearer {self.token}"}) as response:
                assert response.status == 200, await response.text()
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


async def wait_slot_quiet(viewers: list[Viewer], slot: int, what: str, frames: int = 30, windows: int = 3,
                          kind: str = "video") -> None:
    """Until ``slot`` gets no frame of ``kind`` while slot 0 gets ``frames`` more video frames, on every viewer.
    Frames already on their way when the slot ended may still arrive (a loaded machine queues them): a slot
    still forwarded goes on growing through every window and fails; one that drains stops within the first."""
    def seen(v: Viewer) -> int:
        return len(v.slot_times.get(slot, [])) if kind == "video" else v.slot_audio.get(slot, 0)

    counts = [seen(v) for v in viewers]
    for _ in range(windows):
        await asyncio.gather(*(v.wait_frames(frames, 10) for v in viewers))
        now = [seen(v) for v in viewers]
        if now == counts:
            return
        counts = now
    raise AssertionError(f"{what}: slot {slot} still got {kind} frames through {windows} windows of {frames} frames")


def bar_of(frame: av.VideoFrame) -> tuple[int, int]:
    """Where the moving bar is on the first row and how bright it is (which host sent it)."""
    plane = frame.planes[0]
    row = bytes(plane)[: frame.width]
    peak = max(row)
    return row.index(peak), peak


def freezes(times: list[float]) -> list[float]:
    """The gaps between frame arrivals that are freezes by the W3C webrtc-stats rule, measured by the
    load suite's (Chromium-validated) :class:`~loadtests.webrtc.metrics.FreezeMeter`."""
    return freeze_gaps(times)
