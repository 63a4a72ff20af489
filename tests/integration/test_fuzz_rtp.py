"""Property-based fuzzing of RTP and RTCP handling behind SRTP: the receiver tap feeding a publication,
and a sender port's feedback into a subscription, on a real connected aiortc pair on 127.0.0.1.

Packets are handed to the DTLS transport's RTP/RTCP handlers (what runs after SRTP unprotect), so
every parser and handler of aiortc's and ours sees them. The guards in aiortc_bridge would catch any
exception, so the property is stronger: no handler raises at all (the guards' drop counters and the
tap's failure count stay unchanged), and the forwarding stays well-formed.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection
from hypothesis import example, given
from hypothesis import strategies as st

from aiortc_bridge.codecs import describe, negotiated_codec
from aiortc_bridge.guard import PACKETS
from aiortc_bridge.receiver import ReceiverTap
from aiortc_bridge.sender import SenderPort
from relay.config import MediaConfig
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.subscription import Subscription
from tests.integration.peers import MovingBarTrack
from tests.unit.fakes import FakeSink

LOOPBACK = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class Pair:
    """A publisher peer and a gateway-like peer: tapped receiver in, sender port out, connected."""

    def __init__(self) -> None:
        self.a = RTCPeerConnection(LOOPBACK)
        self.b = RTCPeerConnection(LOOPBACK)
        self.sink = FakeSink()

    async def connect(self) -> None:
        self.a.addTransceiver(MovingBarTrack(), direction="sendonly")
        self.a.addTransceiver("video", direction="recvonly")
        await self.a.setLocalDescription(await self.a.createOffer())
        await self.b.setRemoteDescription(self.a.localDescription)
        incoming, outgoing = self.b.getTransceivers()
        codec = describe(negotiated_codec(incoming))  # type: ignore[arg-type]
        self.publication = Publication("video", CodecInfo(codec.mime_type, codec.clock_rate), self,
                                       cache_size=256, keyframe_interval=0.3)
        self.tap = ReceiverTap(incoming.receiver, self.publication.on_rtp)
        self.viewer = Subscription("video", 90000, self.sink, media=MediaConfig(), cname="c")
        self.viewer.switch_source(self.publication)
        self.viewer.start()
        self.port = SenderPort(outgoing.sender, 1.0)
        self.feedback = Subscription("video", 90000, self.port, media=MediaConfig(), cname="c")
        self.feedback.switch_source(self.publication)
        self.port.listener = self.feedback
        outgoing.direction = "sendonly"
        await self.b.setLocalDescription(await self.b.createAnswer())
        await self.a.setRemoteDescription(self.b.localDescription)
        for _ in range(200):
            if self.b.connectionState == "connected" and self.a.connectionState == "connected":
                break
            await asyncio.sleep(0.05)  # aiortc has no awaitable for "both sides connected"
        assert self.b.connectionState == "connected", self.b.connectionState
        self.dtls = incoming.receiver.transport
        self.payload_type = int(negotiated_codec(incoming).payloadType)  # type: ignore[union-attr]
        self.ssrc = self.port.ssrc

    def request_keyframe(self) -> None:
        pass

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def pair(loop: asyncio.AbstractEventLoop) -> Iterator[Pair]:
    pair = Pair()
    loop.run_until_complete(pair.connect())
    yield pair
    loop.run_until_complete(pair.close())


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, marker: bool, csrcs: int, extension: bytes | None,
               padding: int, payload: bytes) -> bytes:
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | (csrcs & 0x0F)
    data = struct.pack("!BBHII", b0, (0x80 if marker else 0) | (pt & 0x7F), seq & 0xFFFF, ts & 0xFFFFFFFF,
                       ssrc & 0xFFFFFFFF)
    data += b"\x00\x00\x00\x01" * csrcs
    if extension is not None:
        words = (len(extension) + 3) // 4
        data += struct.pack("!HH", 0xBEDE, words) + extension.ljust(words * 4, b"\x00")
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    return data


def rtcp_packet(pt: int, count: int, body: bytes, length_lie: int) -> bytes:
    words = (len(body) + 3) // 4 + length_lie
    return struct.pack("!BBH", 0x80 | (count & 0x1F), pt, words & 0xFFFF) + body.ljust(((len(body) + 3) // 4) * 4,
                                                                                        b"\x00")


def feedback_bodies(ssrc: int) -> st.SearchStrategy[tuple[int, int, bytes]]:
    media = struct.pack("!II", 1, ssrc)
    remb = st.builds(lambda n, exp, ssrcs: (206, 15, media[:4] + b"\x00" * 4 + b"REMB" + bytes([n, exp << 2, 0, 1])
                                            + b"".join(struct.pack("!I", s) for s in ssrcs)),
                     st.integers(0, 255), st.integers(0, 63), st.lists(st.sampled_from([ssrc, 7, 0]), max_size=3))
    nack = st.builds(lambda fcis: (205, 1, media + b"".join(struct.pack("!HH", p, b) for p, b in fcis)),
                     st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), max_size=40))
    pli = st.just((206, 1, media))
    rr = st.builds(lambda blocks: (201, len(blocks), struct.pack("!I", 1) + b"".join(
        struct.pack("!IB3sIIII", s, lost, cum, hs, jit, lsr, dlsr) for s, lost, cum, hs, jit, lsr, dlsr in blocks)),
        st.lists(st.tuples(st.sampled_from([ssrc, 5]), st.integers(0, 255), st.binary(min_size=3, max_size=3),
                           st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                           st.integers(0, 2**32 - 1)), max_size=4))
    raw = st.tuples(st.integers(192, 223), st.integers(0, 31), st.binary(max_size=120))
    return st.one_of(remb, nack, pli, rr, raw)


def test_no_rtp_or_rtcp_makes_a_handler_raise(loop, pair):
    rtp = st.builds(rtp_packet, st.one_of(st.just(pair.payload_type), st.integers(0, 127)),
                    st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
                    st.one_of(st.sampled_from([pair.tap.media_ssrc or 1, 1, 2]), st.integers(0, 2**32 - 1)),
                    st.booleans(), st.integers(0, 15), st.one_of(st.none(), st.binary(max_size=24)),
                    st.integers(0, 40), st.binary(max_size=200))
    rtcp = st.builds(lambda parts, lie: rtcp_packet(parts[0], parts[1], parts[2], lie),
                     feedback_bodies(pair.ssrc), st.sampled_from([0, 0, 0, 1, -1, 100]))
    failures = ("rtp_handling_failed", "rtcp_handling_failed", "tap_callback_failed", "rtcp_feedback_failed")
    before = {reason: PACKETS.counts[reason] for reason in failures}

    @given(packets=st.lists(st.one_of(rtp.map(lambda p: ("rtp", p)), rtcp.map(lambda p: ("rtcp", p))), max_size=30))
    @example(packets=[("rtcp", rtcp_packet(206, 15, struct.pack("!II", 1, 0) + b"REMB" + bytes([9, 0, 0, 1]), 0))])
    def check(packets: list[tuple[str, bytes]]) -> None:
        async def feed() -> None:
            for kind, data in packets:
                if kind == "rtp":
                    await pair.dtls._handle_rtp_data(data, arrival_time_ms=0)
                else:
                    await pair.dtls._handle_rtcp_data(data)

        loop.run_until_complete(feed())
        after = {reason: PACKETS.counts[reason] for reason in failures}
        assert after == before, f"a handler raised: {dict(PACKETS.counts)}"
        assert pair.tap.failures == 0 and pair.port.feedback_failures == 0
        headers = pair.sink.headers()
        assert {h[4] for h in headers} <= {pair.sink.ssrc}

    check()
