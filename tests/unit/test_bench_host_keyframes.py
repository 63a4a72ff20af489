"""The synthetic host's keyframe intervals, which the TTFF step varies: every N frames, or only when asked."""

import asyncio

from loadtests.webrtc.media import encode_video_clip
from loadtests.webrtc.tracks import PacketLoopTrack

FRAMES = 8  # a tiny clip: 160x96 at 30 fps


def clip(keyframe_interval):  # type: ignore[no-untyped-def]
    return encode_video_clip(width=160, height=96, seconds=FRAMES / 30, bitrate=200_000,
                             keyframe_interval=keyframe_interval)


async def keyframes_sent(track: PacketLoopTrack, frames: int, ask_at: int | None = None) -> list[int]:
    shown = []
    for index in range(frames):
        if index == ask_at:
            track.request_keyframe()
        packet = await track.recv()
        if bytes(packet)[0] & 0x01 == 0:  # the VP8 frame tag: P bit 0 is a keyframe
            shown.append(index)
    return shown


def test_an_interval_clip_has_a_keyframe_every_interval():
    assert clip(4).keyframe_indexes == (0, 4)
    assert clip(4).seam is None


def test_a_keyframe_on_request_only_clip_has_one_keyframe_and_an_inter_coded_seam():
    only = clip(None)
    assert only.keyframe_indexes == (0,) and len(only.frames) == FRAMES
    assert only.seam is not None and not only.seam.keyframe


async def test_a_keyframe_on_request_only_host_wraps_its_loop_without_a_keyframe():
    track = PacketLoopTrack("video", clip(None))
    assert await keyframes_sent(track, 2 * FRAMES + 2) == [0]
    track.stop()


async def test_a_keyframe_on_request_only_host_sends_one_when_asked():
    track = PacketLoopTrack("video", clip(None))
    assert await keyframes_sent(track, FRAMES + 2, ask_at=3) == [0, 3]
    assert track.keyframe_requests == 1
    track.stop()


async def test_an_interval_host_keeps_its_keyframes_at_the_loop_seam():
    track = PacketLoopTrack("video", clip(4))
    assert await asyncio.wait_for(keyframes_sent(track, FRAMES + 1), 10) == [0, 4, 8]
    track.stop()
