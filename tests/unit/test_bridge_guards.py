"""The compatibility layer's own guards: right-sized SRTP, datagram classification, drop logging."""

from __future__ import annotations

import logging
import os
import struct

import pylibsrtp
import pytest

from aiortc_bridge import guard
from aiortc_bridge.srtp import SrtpContext


def _pair() -> tuple[SrtpContext, SrtpContext]:
    key = os.urandom(30)
    tx = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                          srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    rx = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                          srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    return SrtpContext(pylibsrtp.Session(tx)), SrtpContext(pylibsrtp.Session(rx))


def rtp(seq: int, size: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, 1000, 0x1234) + bytes(range(256)) * (size // 256) + b"\x01" * (
        size % 256 - 12 if size % 256 >= 12 else 0)


@pytest.mark.parametrize("size", [200, 1356, 1400, 1490, 1492, 1500])
def test_packets_up_to_a_full_mtu_protect_and_unprotect(size: int) -> None:
    packet = rtp(7, size)[:size].ljust(size, b"\x02")
    tx, rx = _pair()
    protected = tx.protect(packet)
    assert len(protected) == size + 10  # the HMAC-SHA1-80 tag
    assert rx.unprotect(protected) == packet


def test_pylibsrtp_alone_refuses_what_the_context_accepts() -> None:
    """The defect this layer exists for: pylibsrtp's fixed 1500-byte buffer."""
    key = os.urandom(30)
    session = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                 srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    with pytest.raises(ValueError):
        session.protect(rtp(1, 1400)[:1400].ljust(1400, b"\x02"))


def test_sealing_in_place_gives_the_same_datagram_as_protect() -> None:
    tx, rx = _pair()
    payload = b"\x10" + b"\xab" * 1477
    header = struct.pack("!BBHII", 0x80, 96, 9, 1000, 0x1234)
    tx.buffer[0:12] = header
    tx.buffer[12 : 12 + len(payload)] = payload
    sealed = tx.seal(12 + len(payload))
    assert sealed is not None
    assert rx.unprotect(sealed) == header + payload


def test_replayed_and_forged_packets_are_refused_without_raising_other_errors() -> None:
    tx, rx = _pair()
    protected = tx.protect(rtp(3, 300)[:300])
    assert rx.unprotect_or_none(protected) is not None
    assert rx.unprotect_or_none(protected) is None  # replay
    forged = protected[:-1] + bytes([protected[-1] ^ 1])
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(forged)
    assert rx.unprotect_or_none(b"\x80" * 5000) is None  # larger than any media port accepts


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"\x80" * 11, "short_rtp"),
    (b"\x16\xfe\xfd", "short_dtls"),
    (b"\x00\x01\x00", "short_stun"),
    (b"\xff" * 40, "unknown_protocol"),
    (b"\x80" * (guard.MAX_DATAGRAM + 1), "too_long"),
    (b"\x80" * 12, None),
    (b"\x16" + b"\x00" * 12, None),
    (b"\x00\x01" + b"\x00" * 18, None),
])
def test_datagrams_are_classified_before_anything_parses_them(data: bytes, reason: str | None) -> None:
    assert guard._classify(data) == reason


class _Receiver:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.requests = 0
        self._nominated: dict[int, object] = {}

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append(data)

    def request_received(self, message: object, addr: object, protocol: object) -> None:
        self.requests += 1


class _Candidate:
    component = 1


class _Protocol:
    """Just what the guarded StunProtocol.datagram_received reads."""

    def __init__(self) -> None:
        self.receiver = _Receiver()
        self.local_candidate = _Candidate()
        self.transactions: dict[bytes, object] = {}


def malformed_stun() -> bytes:
    """A binding request whose PRIORITY attribute is 2 bytes long: aioice raises struct.error on it."""
    attribute = struct.pack("!HH", 0x0024, 2) + b"\x00\x01" + b"\x00\x00"
    return struct.pack("!HHI12s", 0x0001, len(attribute), 0x2112A442, b"t" * 12) + attribute


def test_malformed_stun_is_dropped_and_counted_not_raised() -> None:
    from aioice import stun

    with pytest.raises(struct.error):  # what aioice alone does with it: an exception per datagram
        stun.parse_message(malformed_stun())
    protocol = _Protocol()
    before = guard.DATAGRAMS.counts["malformed_stun"]
    guard._stun_datagram_received(protocol, malformed_stun(), ("127.0.0.1", 9))  # type: ignore[arg-type]
    assert guard.DATAGRAMS.counts["malformed_stun"] == before + 1
    assert protocol.receiver.data == [] and protocol.receiver.requests == 0


def test_media_datagrams_skip_the_stun_parse() -> None:
    protocol = _Protocol()
    for datagram in (b"\x80" * 100, b"\x17" + b"\x00" * 40):
        guard._stun_datagram_received(protocol, datagram, ("127.0.0.1", 9))  # type: ignore[arg-type]
    assert len(protocol.receiver.data) == 2


class _Pair:
    remote_addr = ("127.0.0.1", 5000)


def test_once_ice_chose_the_peer_media_from_any_other_address_is_dropped() -> None:
    protocol = _Protocol()
    protocol.receiver._nominated[1] = _Pair()
    before = guard.DATAGRAMS.counts["unexpected_source"]
    for source in (("127.0.0.1", 5000), ("127.0.0.1", 6000), ("10.0.0.9", 5000)):
        guard._stun_datagram_received(protocol, b"\x80" * 100, source)  # type: ignore[arg-type]
    assert len(protocol.receiver.data) == 1
    assert guard.DATAGRAMS.counts["unexpected_source"] == before + 2


def test_drops_are_logged_once_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    counter = guard.DropCounter("datagrams", interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="cherry.aiortc.guard"):
        for _ in range(1000):
            counter.drop("empty")
        now[0] = 61.0
        counter.drop("empty")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("dropped 1 datagrams (empty)")
    assert lines[1].startswith("dropped 1000 datagrams (empty)")
    assert counter.counts["empty"] == 1001
