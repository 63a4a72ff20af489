"""Media tracks that replay a pre-encoded clip as ``av.Packet`` s in real time.

aiortc's RTCRtpSender only packetizes ``av.Packet`` s (no encoder runs), so a
synthetic host costs little CPU per stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from loadtests.webrtc import capture_tag
from loadtests.webrtc.media import EncodedClip

# If the event loop was stalled for longer than this, restart the pacing clock
# instead of bursting out every overdue frame (a live encoder would drop them).
MAX_LAG = 0.5


@dataclass(frozen=True, slots=True)
class FreezeSchedule:
    """Known freezes for truth tests: no frame for ``for_s`` seconds every ``every_s`` seconds.

    The first pause starts ``first_s`` after the first frame; after ``count`` pauses (0: no
    limit) the stream runs on, so a run can end well clear of a pause. Like a camera that stalls: the
    frames due during a pause are never sent, pacing resumes when it ends, and the RTP
    timestamps jump by the pause (players' jitter buffers follow them).
    """

    every_s: float
    for_s: float
    first_s: float = 2.0
    count: int = 0


class PacketLoopTrack(MediaStreamTrack):
    """Loops an :class:`EncodedClip` with monotonically increasing pts at real-time pace.

    ``tag_capture`` appends a capture-time trailer to each frame (VP8 only, see
    :mod:`loadtests.webrtc.capture_tag`); ``freeze`` pauses the stream on a schedule and logs
    each pause as (wall time of the last frame before it, wall time of the first after it).
    """

    def __init__(
        self, kind: str, clip: EncodedClip, *, tag_capture: bool = False, freeze: FreezeSchedule | None = None
    ) -> None:
        super().__init__()
        self.kind = kind
        self._clip = clip
        self._tag = tag_capture
        self._freeze = freeze
        self._first_at: float | None = None  # loop time of the first frame
        self._next_pause = 0
        self._last_wall: float | None = None
        self._paused_since: float | None = None
        self.pauses: list[tuple[float, float]] = []
        self._keyframes = clip.keyframe_indexes
        self._index = 0  # position in the clip
        self._sent = 0  # frames handed to the sender (drives pts)
        self._clock_start: float | None = None
        self._clock_frames = 0  # frames sent since the clock (re)started
        self._keyframe_requested = False
        self.keyframe_requests = 0
        self.keyframes_sent = 0

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (PLI/FIR from the remote peer)."""
        self.keyframe_requests += 1
        self._keyframe_requested = True

    def _next_keyframe_index(self) -> int:
        # The nearest keyframe at or after the current position, wrapping at the loop seam.
        for index in self._keyframes:
            if index >= self._index:
                return index
        return self._keyframes[0]

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._clock_start is None or now - self._due(self._clock_frames) > MAX_LAG:
            self._clock_start = now
            self._clock_frames = 0
        delay = self._due(self._clock_frames) - now
        freeze = self._freeze
        if freeze is not None and self._first_at is not None and (not freeze.count or self._next_pause < freeze.count):
            due = now + max(delay, 0.0)
            start = self._first_at + freeze.first_s + self._next_pause * freeze.every_s
            if due >= start:
                # Skip the frames due inside the pause; pacing restarts at its end.
                end = start + freeze.for_s
                self._next_pause += 1
                self._paused_since = self._last_wall
                # Like a stalled camera: the next frame's timestamp is its real capture time.
                self._sent += round((end - due) / self._clip.frame_interval)
                self._clock_start = end
                self._clock_frames = 0
                delay = end - now
        if delay > 0:
            await asyncio.sleep(delay)
        if self._first_at is None:
            self._first_at = loop.time()
        requested = self._keyframe_requested and bool(self._keyframes)
        if requested:
            self._keyframe_requested = False
            self._index = self._next_keyframe_index()
        frame = self._clip.frames[self._index]
        if self._index == 0 and self._sent and not requested and self._clip.seam is not None:
            frame = self._clip.seam  # a keyframe-on-request-only sender: the loop wraps without one
        if frame.keyframe:
            self.keyframes_sent += 1
        wall = time.time()
        if self._paused_since is not None:
            self.pauses.append((self._paused_since, wall))
            self._paused_since = None
        self._last_wall = wall
        packet = av.Packet(frame.data + capture_tag.make_tag(wall) if self._tag else frame.data)
        packet.pts = self._sent * self._clip.pts_step
        packet.time_base = self._clip.time_base
        self._index = (self._index + 1) % len(self._clip.frames)
        self._sent += 1
        self._clock_frames += 1
        return packet

    def _due(self, frames: int) -> float:
        assert self._clock_start is not None
        return self._clock_start + frames * self._clip.frame_interval

    @property
    def open_pause_since(self) -> float | None:
        """Wall time of the last frame before a pause still going on (None: not paused)."""
        return self._paused_since

    @property
    def frames_sent(self) -> int:
        return self._sent
