"""The VP8 RTP payload descriptor (RFC 7741 section 4.2), as our clients read it.

One parser for everything the load viewers, bench and tests need from a packet: where the VP8
payload starts, whether the packet starts a frame (and a keyframe), and the picture ID. (The
gateway's forwarding path has its own keyframe test in ``relay/rtp.py``: the relay does not
import client code; ``tests/load/test_pieces.py`` checks the two agree.)
"""

from __future__ import annotations

from typing import NamedTuple


class Vp8Descriptor(NamedTuple):
    length: int  # bytes of payload descriptor before the VP8 payload
    frame_start: bool  # S bit with partition index 0: the first packet of a frame
    keyframe: bool  # a frame start whose VP8 payload header has P = 0
    picture_id: int | None  # 7 or 15 bits; None when absent


_NO_FRAME_START: tuple[bool, bool, int | None] = (False, False, None)


def _extension(payload: bytes) -> tuple[int, int | None]:
    """(descriptor length, picture ID) of a non-empty payload; a truncated one reads as far as it goes."""
    n = len(payload)
    if not payload[0] & 0x80 or n < 2:  # no X: just the first byte
        return 1, None
    ext = payload[1]
    pos = 2
    picture_id = None
    if ext & 0x80:  # I: picture ID, 7 or 15 bits (M bit)
        if n > 2 and payload[2] & 0x80:
            picture_id = ((payload[2] & 0x7F) << 8 | payload[3]) if n > 3 else None
            pos += 2
        else:
            picture_id = payload[2] & 0x7F if n > 2 else None
            pos += 1
    if ext & 0x40:  # L: TL0PICIDX
        pos += 1
    if ext & 0x30:  # T or K: TID/Y/KEYIDX byte
        pos += 1
    return pos, picture_id


def descriptor_length(payload: bytes) -> int:
    """Bytes of payload descriptor before the VP8 payload (0 for an empty payload)."""
    return _extension(payload)[0] if payload else 0


def frame_start(payload: bytes) -> tuple[bool, bool, int | None]:
    """(first packet of a frame, keyframe, picture ID); cheap for the packets that start no frame."""
    if not payload or not payload[0] & 0x10 or payload[0] & 0x07:  # S bit with partition index 0
        return _NO_FRAME_START
    pos, picture_id = _extension(payload)
    return True, len(payload) > pos and not payload[pos] & 0x01, picture_id  # P bit 0: keyframe


def parse_descriptor(payload: bytes) -> Vp8Descriptor:
    """Everything at once (tests, tools); the per-packet paths use :func:`frame_start` / :func:`descriptor_length`."""
    if not payload:
        return Vp8Descriptor(0, False, False, None)
    length, picture_id = _extension(payload)
    start, keyframe, _ = frame_start(payload)
    return Vp8Descriptor(length, start, keyframe, picture_id)
