"""One keyframe to one small JPEG: the room's snapshot (its cover on the room list).

Leans on aiortc 1.16's depayloaders (``aiortc.codecs.depayload``: VP8 payload descriptor, H264 single NAL
units, FU-A and STAP-A) and PyAV's codecs (FFmpeg's native ``vp8`` and ``h264`` decoders, ``mjpeg``).

This is the only decoding the gateway does, and it runs off the forwarding path: the snapshot service calls
:func:`decode_keyframe` in its one worker thread (:data:`SNAPSHOT_THREAD`), once per room per interval, never per
viewer. Everything a hostile host could inflate is bounded before or while decoding: the input bytes, the
picture size (FFmpeg's ``max_pixels`` refuses a larger picture before allocating it), one codec thread, one
frame out. Each call builds and drops its own codec contexts, so calls share nothing and a keyframe decodes
without any earlier frame.
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence
from typing import cast

import av
from aiortc.codecs import depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.video.codeccontext import VideoCodecContext

# The snapshot worker thread's name (the integration tests tell its codec work from the forwarding path's by it).
SNAPSHOT_THREAD = "cherry-snapshot"
DECODERS = {"video/vp8": "vp8", "video/h264": "h264"}
MAX_KEYFRAME_BYTES = 2 << 20  # a keyframe's payloads (the keyframe cache holds 1 MiB by default)
MAX_PIXELS = 4096 * 2304  # a picture past 4K is refused before the decoder allocates it
MIN_WIDTH, MAX_WIDTH = 64, 1280
JPEG_QUALITY = 4  # mjpeg quantizer (2: best, 31: worst): ~10-20 KB at 320x180
_TIME_BASE = fractions.Fraction(1, 90000)


class SnapshotError(Exception):
    """The keyframe gave no picture. ``reason`` is one of a few constant strings (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def decode_keyframe(mime_type: str, payloads: Sequence[bytes], width: int) -> bytes:
    """The JPEG of one keyframe's access unit (its RTP payloads in sequence order), ``width`` pixels wide,
    the height keeping the picture's aspect ratio (even, at most twice the width). Safe in any thread.

    Raises :class:`SnapshotError` (reasons: ``codec``, ``too_large``, ``depayload``, ``decode``, ``encode``).
    """
    decoder_name = DECODERS.get(mime_type.lower())
    if decoder_name is None:
        raise SnapshotError("codec", f"no snapshot decoder for {mime_type}")
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"width must be {MIN_WIDTH}-{MAX_WIDTH}")
    if sum(len(p) for p in payloads) > MAX_KEYFRAME_BYTES:
        raise SnapshotError("too_large", f"keyframe over {MAX_KEYFRAME_BYTES} bytes")
    picture = _decode(decoder_name, _depayload(mime_type, payloads))
    return _jpeg(picture, width)


def _depayload(mime_type: str, payloads: Sequence[bytes]) -> bytes:
    codec = RTCRtpCodecParameters(mimeType=mime_type, clockRate=90000, payloadType=96)
    try:
        data = b"".join(depayload(codec, payload) for payload in payloads)
    except (ValueError, IndexError) as exc:  # aiortc's descriptor parsers raise these on malformed payloads
        raise SnapshotError("depayload", str(exc)) from exc
    if not data:
        raise SnapshotError("depayload", "no media in the payloads")
    return data


def _decode(decoder_name: str, data: bytes) -> av.VideoFrame:
    try:
        decoder = cast(VideoCodecContext, av.CodecContext.create(decoder_name, "r"))
        decoder.thread_count = 1  # a snapshot never takes more than the one core its thread runs on
        decoder.options = {"max_pixels": str(MAX_PIXELS)}
        packet = av.Packet(data)
        packet.time_base = _TIME_BASE
        frames = [*decoder.decode(packet), *decoder.decode(None)]
    except (av.FFmpegError, ValueError, MemoryError) as exc:
        raise SnapshotError("decode", str(exc)) from exc
    pictures = [f for f in frames if isinstance(f, av.VideoFrame)]
    if not pictures:
        raise SnapshotError("decode", "the keyframe gave no picture")
    picture = pictures[0]
    if picture.width < 2 or picture.height < 2 or picture.width * picture.height > MAX_PIXELS:
        raise SnapshotError("too_large", f"picture of {picture.width}x{picture.height}")
    return picture


def _jpeg(picture: av.VideoFrame, width: int) -> bytes:
    width -= width % 2
    height = round(picture.height * width / picture.width / 2) * 2
    height = min(max(height, 2), 2 * width)  # an absurd aspect ratio still gives a bounded image
    try:
        # yuvj420p: full-range YUV, what JPEG expects (the reformat converts the decoder's limited range).
        small = picture.reformat(width=width, height=height, format="yuvj420p")
        small.pts = 0
        encoder = cast(VideoCodecContext, av.CodecContext.create("mjpeg", "w"))
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
        encoder.time_base = fractions.Fraction(1, 1)
        encoder.thread_count = 1
        encoder.qmin = encoder.qmax = JPEG_QUALITY
        jpeg = b"".join(bytes(p) for p in (*encoder.encode(small), *encoder.encode(None)))
    except (av.FFmpegError, ValueError) as exc:
        raise SnapshotError("encode", str(exc)) from exc
    if not jpeg.startswith(b"\xff\xd8"):
        raise SnapshotError("encode", "the encoder gave no JPEG")
    return jpeg
