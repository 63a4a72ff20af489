"""Capture timestamps carried inside VP8 frames, so latency survives forwarding without decoding.

The gateway rewrites every RTP header to a plain 12-byte one (header extensions are gone)
but forwards payloads byte for byte. So the synthetic host appends a 12-byte trailer to each
encoded VP8 frame: the capture time (wall clock, microseconds since the epoch, 8 bytes
big-endian) and a 4-byte magic. A VP8 frame's last partition runs to the end of the frame and
libvpx's boolean decoder never reads past the data it needs, so decoders ignore the trailer
(``tests/load/test_capture_tag.py`` decodes tagged and untagged frames with libvpx and gets
identical pictures). RTP packetization puts the trailer at the end of the frame's last
(marker) packet; when it is split across two packets (the last packet carries fewer than 12
bytes of frame data, about 1 frame in 100) the frame yields no sample, which does not bias
the result.

Latency = arrival of the frame's last packet at the viewer (after SRTP, before any jitter
buffer) minus the capture time. Error: both clocks are ``time.time()``; on one machine they
are the same clock (error: microseconds plus the two processes' scheduling delays), across
machines the clocks' offset adds one-to-one (NTP: about 1 ms on a LAN; use PTP or run hosts
and viewers on the same machine when that matters).
"""

from __future__ import annotations

import struct
import time

MAGIC = b"\xc4\x1eCT"
TAG = struct.Struct("!Q4s")
SIZE = TAG.size  # 12
_MIN_US = 1_500_000_000 * 1_000_000  # 2017: anything earlier is not one of our tags


def make_tag(capture_s: float | None = None) -> bytes:
    """The trailer for a frame captured at ``capture_s`` (default: now, wall clock)."""
    when = time.time() if capture_s is None else capture_s
    return TAG.pack(int(when * 1_000_000), MAGIC)


def read_tag(payload: bytes, descriptor_length: int) -> float | None:
    """The capture time (s, wall clock) from a frame's last RTP payload, None if not tagged."""
    if len(payload) - descriptor_length < SIZE or payload[-4:] != MAGIC:
        return None
    micros, _ = TAG.unpack_from(payload, len(payload) - SIZE)
    if micros < _MIN_US:
        return None
    return float(micros / 1_000_000)
