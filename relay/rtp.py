"""RTP/RTCP wire helpers used on the forwarding path.

Only what forwarding needs: sequence arithmetic, codec keyframe detection,
building the 12-byte header we emit and the RTCP packets we originate.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

KeyframeTest = Callable[[bytes], bool]

SEQ_MOD = 1 << 16
RTP_HEADER = struct.Struct("!BBHII")
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970

RTCP_SR = 200
RTCP_SDES = 202


def seq_newer(a: int, b: int) -> bool:
    """True if 16-bit sequence number ``a`` comes after ``b`` (RFC 3550 wrap)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in 16-bit sequence space."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= 0x8000 else d


def vp8_keyframe_start(payload: bytes) -> bool:
    """True if this VP8 packet (RFC 7741) starts a keyframe."""
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    # S bit set and partition index 0: first packet of a frame.
    if not (b0 & 0x10) or (b0 & 0x07):
        return False
    i = 1
    if b0 & 0x80:  # X: extension byte follows
        if n <= i:
            return False
        x = payload[i]
        i += 1
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if n <= i:
                return False
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            i += 1
    if n <= i:
        return False
    # VP8 payload header: P bit clear means a key frame.
    return not (payload[i] & 0x01)


def _nal_types(payload: bytes) -> list[int]:
    """The NAL unit types an H264 RTP payload (RFC 6184) carries or starts; [] for a continuation."""
    if not payload:
        return []
    nal = payload[0] & 0x1F
    if nal == 24:  # STAP-A: walk the aggregated NAL units
        types = []
        i, n = 1, len(payload)
        while i + 2 < n:
            size = (payload[i] << 8) | payload[i + 1]
            if size == 0:
                break
            types.append(payload[i + 2] & 0x1F)
            i += 2 + size
        return types
    if nal == 28:  # FU-A: only its start fragment begins a NAL unit
        if len(payload) > 1 and payload[1] & 0x80:
            return [payload[1] & 0x1F]
        return []
    return [nal]


def h264_packet_info(payload: bytes) -> tuple[bool, bool]:
    """(starts a keyframe candidate: SPS or IDR slice begins here, carries any coded slice).

    A keyframe is flagged once per access unit, on the first packet with SPS or IDR that comes
    before any slice of the unit (see ``Publication``): a multi-slice IDR picture has one IDR NAL
    unit per slice, and a viewer anchored on the second slice would decode half a picture.
    """
    types = _nal_types(payload)
    starts = any(t in (5, 7) for t in types)
    slices = any(1 <= t <= 5 for t in types)
    return starts, slices


def h264_keyframe_start(payload: bytes) -> bool:
    """True if this H264 packet starts an SPS or IDR NAL unit (not access-unit aware on its own)."""
    return h264_packet_info(payload)[0]


def keyframe_detector(mime_type: str) -> KeyframeTest:
    """The keyframe test for a codec; audio codecs have no inter-frame dependency."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_keyframe_start
    if mime == "video/h264":
        return h264_keyframe_start
    return _always


def _always(payload: bytes) -> bool:
    return True

def ntp_now() -> int:
    """Current wall clock as a 64-bit NTP timestamp."""
    now = time.time()
    sec = int(now)
    return ((sec + NTP_EPOCH_OFFSET) << 32) | int((now - sec) * (1 << 32))


def sender_report(
    ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int, cname: bytes
) -> bytes:
    """An RTCP compound packet: SR with no report blocks, then SDES CNAME."""
    sr = struct.pack(
        "!BBHIIIIII",
        0x80,
        RTCP_SR,
        6,
        ssrc,
        ntp >> 32,
        ntp & 0xFFFFFFFF,
        rtp_timestamp & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
    item = bytes([1, len(cname)]) + cname
    chunk = struct.pack("!I", ssrc) + item + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, RTCP_SDES, len(chunk) // 4) + chunk
    return sr + sdes


def rtx_payload(original_seq: int, payload: bytes) -> bytes:
    """RFC 4588 RTX payload: original sequence number then the original payload."""
    return struct.pack("!H", original_seq) + payload
