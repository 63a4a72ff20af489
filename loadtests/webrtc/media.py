"""Pre-encoded media loops for synthetic hosts.

Encoding 640x360 VP8 live costs a good part of a core per host, which would
make the load generator, not the gateway, the bottleneck. So a clip of a few
seconds is encoded once at start-up and then replayed as ``av.Packet`` s; the
clip starts with a keyframe and has one every ``keyframe_interval`` frames, so
the loop seam and keyframe requests can always jump to a keyframe. With no
interval (a browser-like sender: keyframes only when asked), the only keyframe
is the first frame and the loop seam plays :attr:`EncodedClip.seam`, the same
picture coded as an inter frame.

numpy is not a dependency, so pictures are built from ``bytes`` slices.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

VIDEO_CLOCK_RATE = 90_000
AUDIO_SAMPLE_RATE = 48_000
AUDIO_FRAME_SAMPLES = 960  # 20 ms, what aiortc's Opus payloader and browsers use


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    data: bytes
    keyframe: bool


@dataclass(frozen=True, slots=True)
class EncodedClip:
    """A loopable sequence of encoded frames of one track at a fixed rate."""

    frames: tuple[EncodedFrame, ...]
    frame_interval: float  # seconds between frames
    pts_step: int  # pts increment per frame, in time_base units
    time_base: Fraction
    seam: EncodedFrame | None = None  # played instead of frame 0 when the loop wraps unasked (None: frame 0)

    @property
    def keyframe_indexes(self) -> tuple[int, ...]:
        return tuple(i for i, f in enumerate(self.frames) if f.keyframe)

    @property
    def bitrate(self) -> float:
        """Average bits per second over the loop."""
        total = sum(len(f.data) for f in self.frames)
        return total * 8 / (len(self.frames) * self.frame_interval)


def _luma_picture(width: int, height: int, index: int, count: int, noise: bytes) -> bytes:
    """One Y plane: a scrolling gradient, a moving box and a strip of fresh noise.

    The noise strip is what makes a CBR encoder actually spend its bitrate
    (a gradient and a box alone compress to almost nothing); fresh noise each
    frame cannot be predicted, so inter frames stay realistic in size.
    """
    ramp = bytes((x * 256 // width) & 0xFF for x in range(width)) * 2
    shift = (index * width * 2 // count) % width  # one full scroll per loop
    row = ramp[shift : shift + width]
    rows = [row] * height
    box = 64
    bx = (index * (width - box) * 2 // count) % (width - box)
    by = int((height - box) / 2 * (1 + math.sin(2 * math.pi * index / count)))
    for y in range(by, by + box):
        rows[y] = row[:bx] + b"\xeb" * box + row[bx + box :]
    strip_top = height * 3 // 4
    strip_rows = height // 10
    for i in range(strip_rows):
        rows[strip_top + i] = noise[i * width : (i + 1) * width]
    return b"".join(rows)


def encode_video_clip(
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    seconds: float = 2.0,
    bitrate: int = 1_000_000,
    keyframe_interval: int | None = 30,
) -> EncodedClip:
    """Encode a moving test picture with libvpx (VP8), CBR, realtime settings.

    ``keyframe_interval``: frames between keyframes; None: only the first frame is one, and one more
    frame (the first picture again, inter-coded) is encoded as the loop's seam.
    """
    count = round(fps * seconds)
    encoded = count + 1 if keyframe_interval is None else count
    gop = keyframe_interval or encoded + 1
    codec = av.CodecContext.create("libvpx", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, fps)
    codec.framerate = Fraction(fps, 1)
    codec.bit_rate = bitrate
    codec.gop_size = gop
    # Same rate-control family as aiortc's own Vp8Encoder, so packet sizes look like a live sender's.
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
        "undershoot-pct": "100",
        "overshoot-pct": "15",
        "static-thresh": "1",
    }
    # Low-amplitude noise (values 96..159) so the picture stays recognisable.
    level = bytes(96 + (b & 0x3F) for b in range(256))
    chroma_u = bytes((96 + x // 4) & 0xFF for x in range(width // 2)) * (height // 2)
    chroma_v = bytes(128 for _ in range(width // 2)) * (height // 2)
    frames: list[EncodedFrame] = []
    packets: list[av.Packet[Any]] = []
    for index in range(encoded):
        noise = os.urandom(width * (height // 10)).translate(level)
        frame = av.VideoFrame(width, height, "yuv420p")
        frame.planes[0].update(_luma_picture(width, height, index, count, noise))
        frame.planes[1].update(chroma_u)
        frame.planes[2].update(chroma_v)
        frame.pts = index
        frame.time_base = Fraction(1, fps)
        if index % gop == 0:
            # gop_size is only an upper bound; force the keyframes we rely on.
            frame.pict_type = av.video.frame.PictureType.I
        packets.extend(codec.encode(frame))
    packets.extend(codec.encode(None))
    frames = [EncodedFrame(bytes(p), bool(p.is_keyframe)) for p in packets[:encoded]]
    if not frames or not frames[0].keyframe:
        raise RuntimeError("video clip does not start with a keyframe")
    seam = None
    if keyframe_interval is None:
        seam = frames.pop() if len(frames) > count else None
        if seam is None or seam.keyframe or any(f.keyframe for f in frames[1:]):
            raise RuntimeError("libvpx placed keyframes of its own in a clip meant to have only the first")
    return EncodedClip(tuple(frames), 1 / fps, VIDEO_CLOCK_RATE // fps, Fraction(1, VIDEO_CLOCK_RATE), seam)


def encode_audio_clip(seconds: float = 2.0, tone_hz: float = 440.0, bitrate: int = 64_000) -> EncodedClip:
    """Encode a stereo sine tone with libopus in 20 ms frames.

    The tone has a whole number of cycles per loop, so the seam is inaudible.
    """
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate = AUDIO_SAMPLE_RATE
    codec.format = "s16"
    codec.layout = "stereo"
    codec.bit_rate = bitrate
    codec.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
    count = round(seconds * AUDIO_SAMPLE_RATE / AUDIO_FRAME_SAMPLES)
    cycles = max(1, round(tone_hz * seconds))
    total = count * AUDIO_FRAME_SAMPLES
    packets: list[av.Packet[Any]] = []
    for index in range(count + 5):  # a few extra frames to cover the encoder's look-ahead
        samples = array("h")
        for n in range(index * AUDIO_FRAME_SAMPLES, (index + 1) * AUDIO_FRAME_SAMPLES):
            value = int(8000 * math.sin(2 * math.pi * cycles * (n % total) / total))
            samples.append(value)
            samples.append(value)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=AUDIO_FRAME_SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = index * AUDIO_FRAME_SAMPLES
        frame.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
        packets.extend(codec.encode(frame))
    frames = [EncodedFrame(bytes(p), True) for p in packets[:count]]
    return EncodedClip(
        tuple(frames),
        AUDIO_FRAME_SAMPLES / AUDIO_SAMPLE_RATE,
        AUDIO_FRAME_SAMPLES,
        Fraction(1, AUDIO_SAMPLE_RATE),
    )
