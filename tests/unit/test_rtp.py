import struct

import pytest

from relay.rtp import (
    h264_keyframe_start,
    keyframe_detector,
    sender_report,
    seq_diff,
    seq_newer,
    vp8_keyframe_start,
)


def test_sequence_comparison_handles_wraparound():
    assert seq_newer(1, 65535) and not seq_newer(65535, 1)
    assert seq_diff(2, 65534) == 4 and seq_diff(65534, 2) == -4 and seq_diff(7, 7) == 0


@pytest.mark.parametrize("payload, key", [
    (bytes([0x10, 0x00]), True),  # plain descriptor, P=0
    (bytes([0x10, 0x01]), False),  # P=1: interframe
    (bytes([0x00, 0x00]), False),  # not the start of a partition
    (bytes([0x11, 0x00]), False),  # partition 1
    (bytes([0x90, 0x80, 0x81, 0x23, 0x00]), True),  # X, I with 15-bit picture id
    (bytes([0x90, 0x80, 0x05, 0x01]), False),  # X, I 7-bit picture id, P=1
    (bytes([0x90, 0xE0, 0x05, 0x07, 0x20, 0x00]), True),  # X, I, L, T
    (bytes([0x90, 0x80]), False),  # truncated
    (b"", False),
])
def test_vp8_keyframe_detection(payload, key):
    assert vp8_keyframe_start(payload) is key


def test_h264_keyframe_detection():
    assert h264_keyframe_start(bytes([0x65, 0x88]))  # IDR slice
    assert h264_keyframe_start(bytes([0x67, 0x42]))  # SPS
    assert not h264_keyframe_start(bytes([0x41, 0x9A]))  # non-IDR slice
    stap = bytes([0x18]) + struct.pack("!H", 2) + bytes([0x67, 0x42]) + struct.pack("!H", 2) + bytes([0x68, 0x1])
    assert h264_keyframe_start(stap)
    assert h264_keyframe_start(bytes([0x7C, 0x85]))  # FU-A start of IDR
    assert not h264_keyframe_start(bytes([0x7C, 0x05]))  # FU-A continuation
    assert not h264_keyframe_start(bytes([0x18, 0x00]))  # truncated STAP-A


def test_audio_packets_are_always_decodable_starts():
    assert keyframe_detector("audio/opus")(b"\x01")


def test_sender_report_layout():
    data = sender_report(0xABCDEF01, (5 << 32) | 7, 1234, 10, 2000, b"cname")
    version_count, packet_type, length, ssrc = struct.unpack("!BBHI", data[:8])
    assert (version_count, packet_type, length, ssrc) == (0x80, 200, 6, 0xABCDEF01)
    ntp_hi, ntp_lo, rtp_ts, packets, octets = struct.unpack("!IIIII", data[8:28])
    assert (ntp_hi, ntp_lo, rtp_ts, packets, octets) == (5, 7, 1234, 10, 2000)
    sdes = data[28:]
    assert sdes[1] == 202 and len(sdes) % 4 == 0 and b"cname" in sdes

