"""A room's snapshot: one real keyframe, as aiortc's own encoders packetize it, back to a small JPEG; anything
else a host could send is one typed error, never a crash.

Bounded example counts keep `make test` fast; crashes found are kept below as explicit examples (none yet, in
4000 examples; the examples there now are corners of aiortc's depayloaders, kept whatever the random draw).
"""

from __future__ import annotations

import fractions
import io
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiortc_bridge.snapshot import MAX_KEYFRAME_BYTES, SnapshotError, decode_keyframe

CODECS = ("video/VP8", "video/H264")


def keyframe(mime_type: str, width: int = 640, height: int = 360) -> list[bytes]:
    """RTP payloads of one keyframe of a white bar on black, from aiortc's encoder for ``mime_type``."""
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime_type, clockRate=90000, payloadType=96))
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, width // 4: width // 2] = 255
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    payloads, _ = encoder.encode(frame, force_keyframe=True)
    return payloads


def picture(jpeg: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(jpeg), format="mjpeg") as container:
        return next(container.decode(video=0))


@pytest.mark.parametrize("mime_type", CODECS)
def test_a_keyframe_becomes_a_jpeg_of_the_width_asked_with_its_aspect_ratio(mime_type):
    jpeg = decode_keyframe(mime_type, keyframe(mime_type), 320)
    assert jpeg[:2] == b"\xff\xd8"
    image = picture(jpeg)
    assert (image.width, image.height) == (320, 180)
    gray = image.to_ndarray(format="gray")
    assert gray[:, 100:140].mean() > 200 and gray[:, 200:].mean() < 40, "the bar is where the host put it"


def test_an_odd_source_size_gives_even_dimensions():
    jpeg = decode_keyframe("video/VP8", keyframe("video/VP8", 322, 242), 101)
    image = picture(jpeg)
    assert image.width % 2 == 0 and image.height % 2 == 0 and (image.width, image.height) == (100, 76)


def test_decodes_in_a_worker_thread_give_the_same_pictures():
    payloads = keyframe("video/VP8")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: decode_keyframe("video/VP8", payloads, 160), range(4)))
    assert len(set(results)) == 1, "no state shared between decodes"


@pytest.mark.parametrize("payloads", [[], [b""], [b"\x10"], [b"\x10\x00\x9d\x01\x2a" + b"\xff" * 64]])
def test_garbage_is_a_snapshot_error(payloads):
    with pytest.raises(SnapshotError) as caught:
        decode_keyframe("video/VP8", payloads, 320)
    assert caught.value.reason in ("depayload", "decode")


def test_an_unknown_codec_or_an_oversized_keyframe_is_refused_before_decoding():
    with pytest.raises(SnapshotError) as caught:
        decode_keyframe("video/AV1", [b"\x00" * 10], 320)
    assert caught.value.reason == "codec"
    with pytest.raises(SnapshotError) as caught:
        decode_keyframe("video/VP8", [b"\x10" + bytes(1000)] * (MAX_KEYFRAME_BYTES // 1000 + 1), 320)
    assert caught.value.reason == "too_large"


def test_a_truncated_keyframe_is_a_snapshot_error_or_a_picture():
    for mime_type in CODECS:
        payloads = keyframe(mime_type)
        cut = [*payloads[:-1], payloads[-1][: len(payloads[-1]) // 2]]
        try:
            assert decode_keyframe(mime_type, cut, 160)[:2] == b"\xff\xd8"  # FFmpeg conceals what it can
        except SnapshotError:
            pass


VP8_KEY = keyframe("video/VP8", 64, 48)
H264_KEY = keyframe("video/H264", 64, 48)


@settings(max_examples=150, deadline=None)
@given(mime_type=st.sampled_from(CODECS), seed=st.integers(0, 2), payloads=st.lists(st.binary(max_size=64), max_size=6),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8))
@example(mime_type="video/H264", seed=0, payloads=[b"\x1c\x85"], flips=[])  # FU-A fragment without its start
@example(mime_type="video/H264", seed=0, payloads=[b"\x18\x00\x05\x67"], flips=[])  # STAP-A past its end
@example(mime_type="video/VP8", seed=1, payloads=[], flips=[(12, 0)])  # a real keyframe with a corrupt header
def test_any_payloads_give_a_jpeg_or_a_snapshot_error(mime_type, seed, payloads, flips):
    """Random payloads, or a real keyframe with bytes overwritten: never another exception."""
    if seed:
        real = [bytearray(p) for p in (VP8_KEY if mime_type == "video/VP8" else H264_KEY)]
        total = sum(len(p) for p in real)
        for offset, value in flips:
            offset %= total
            for part in real:
                if offset < len(part):
                    part[offset] = value
                    break
                offset -= len(part)
        payloads = [bytes(p) for p in real]
    try:
        jpeg = decode_keyframe(mime_type, payloads, 64)
    except SnapshotError as exc:
        assert exc.reason in ("depayload", "decode", "too_large", "encode")
    else:
        assert jpeg[:2] == b"\xff\xd8"
