"""SenderPort: an ``RTCRtpSender`` turned into a raw packet sink for encoded media.

aiortc's own RTP loop (which would poll a track and encode) and RTCP loop (which would report
counts it never saw) are replaced before negotiation. Each packet's header and payload are written
straight into the transport's SRTP buffer, protected in place and sent with a synchronous
``sendto``: one ``bytes`` object per packet, no encoder, no await. RTCP feedback from the viewer
(NACK, PLI/FIR, REMB, receiver reports) goes to a :class:`FeedbackListener`.
"""

from __future__ import annotations

import asyncio
import random
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import RTCRtpSender
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)

from aiortc_bridge.dtls import tx_srtp
from aiortc_bridge.guard import PACKETS, unpack_remb_fci
from aiortc_bridge.srtp import SrtpContext

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_PLAIN = struct.Struct("!BBHII")
# One-byte header extension (RFC 8285) holding abs-send-time: 0xBEDE, one word, id/len, 24 bits.
_WITH_ABS = struct.Struct("!BBHIIHHI")
_OSN = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """One RTCP report block about a stream we send (RFC 3550 6.4.1)."""

    fraction_lost: int  # 0-255: lost / expected since the last report
    packets_lost: int
    highest_sequence: int
    jitter: int  # in the stream's clock units
    lsr: int  # middle 32 bits of the NTP time of our last sender report (0: none yet)
    dlsr: int  # delay since that report, 1/65536 s


class FeedbackListener(Protocol):
    """Where a port's RTCP feedback goes (a relay subscription)."""

    def on_nack(self, lost: list[int]) -> None: ...

    def on_keyframe_request(self) -> None: ...

    def on_bandwidth(self, bitrate: int) -> None: ...

    def on_receiver_report(self, report: ReceiverReport) -> None: ...

    def sender_report(self) -> bytes | None: ...


class _NoListener:
    def on_nack(self, lost: list[int]) -> None:
        pass

    def on_keyframe_request(self) -> None:
        pass

    def on_bandwidth(self, bitrate: int) -> None:
        pass

    def on_receiver_report(self, report: ReceiverReport) -> None:
        pass

    def sender_report(self) -> bytes | None:
        return None


class SenderPort:
    """An ``RTCRtpSender`` as the relay's ``RtpSink``."""

    def __init__(self, sender: RTCRtpSender, report_interval: float) -> None:
        self._sender = sender
        self._report_interval = report_interval
        self.ssrc: int = sender._ssrc
        self.rtx_ssrc: int = sender._rtx_ssrc
        self.codec: RTCRtpCodecParameters | None = None
        self.listener: FeedbackListener = _NoListener()
        self.feedback_failures = 0
        # Negotiated payload types by codec, so one stream can switch codec with its source.
        self._payload_types: dict[str, tuple[int, int | None]] = {}
        self._abs_word = 0  # first byte of the abs-send-time element, 0: not negotiated
        self._srtp: SrtpContext | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._addr: Any = None
        original_send = sender.send

        async def send(parameters: Any) -> None:
            self.codec = parameters.codecs[0]
            rtx = {c.parameters.get("apt"): c.payloadType for c in parameters.codecs if is_rtx(c)}
            for codec in parameters.codecs:
                if not is_rtx(codec):
                    self._payload_types.setdefault(codec.mimeType.lower(),
                                                   (codec.payloadType, rtx.get(codec.payloadType)))
            for extension in parameters.headerExtensions:
                if extension.uri == ABS_SEND_TIME and 0 < extension.id < 15:
                    self._abs_word = ((extension.id << 4) | 2) << 24  # L = 2: three bytes of data
            await original_send(parameters)

        sender.send = send  # type: ignore[method-assign]
        sender._run_rtp = self._run_rtp  # type: ignore[method-assign]
        sender._run_rtcp = self._run_rtcp  # type: ignore[method-assign]
        sender._handle_rtcp_packet = self._handle_rtcp_packet  # type: ignore[method-assign]

    def payload_types(self, mime_type: str) -> tuple[int, int | None] | None:
        return self._payload_types.get(mime_type.lower())

    @property
    def carries_send_time(self) -> bool:
        """abs-send-time was negotiated: the viewer can estimate bandwidth and send REMB."""
        return self._abs_word != 0

    # -- sending (hot path) ---------------------------------------------

    def _resolve(self) -> bool:
        dtls = self._sender.transport
        if dtls.state != "connected":
            return False
        pair = dtls.transport._connection._nominated.get(1)
        srtp = tx_srtp(dtls)
        if pair is None or pair.protocol.transport is None or srtp is None:
            return False
        self._srtp = srtp
        self._udp = pair.protocol.transport
        self._addr = pair.remote_addr
        return True

    def _header(self, buffer: Any, second: int, seq: int, ts: int, ssrc: int, sent: float) -> int:
        if self._abs_word:
            abs24 = int(sent * 262144) & 0xFFFFFF  # 6.18 fixed-point seconds
            _WITH_ABS.pack_into(buffer, 0, 0x90, second, seq, ts, ssrc, 0xBEDE, 1, self._abs_word | abs24)
            return 20
        _PLAIN.pack_into(buffer, 0, 0x80, second, seq, ts, ssrc)
        return 12

    def send_rtp(self, second: int, seq: int, ts: int, payload: bytes, sent: float) -> bool:
        """Send one media packet: ``second`` is the marker bit and payload type byte."""
        srtp = self._srtp
        if srtp is None:
            if not self._resolve():
                return False
            srtp = self._srtp
            assert srtp is not None
        udp = self._udp
        if udp is None or udp.is_closing():
            self._srtp = None
            return False
        buffer = srtp.buffer
        start = self._header(buffer, second, seq, ts, self.ssrc, sent)
        end = start + len(payload)
        buffer[start:end] = payload
        datagram = srtp.seal(end)
        if datagram is None:
            return False
        udp.sendto(datagram, self._addr)
        return True

    def send_rtx(self, second: int, seq: int, ts: int, original_seq: int, payload: bytes, sent: float) -> bool:
        """Send a retransmission in RFC 4588 form on the RTX stream."""
        srtp = self._srtp
        udp = self._udp
        if srtp is None or udp is None or udp.is_closing():
            return False
        buffer = srtp.buffer
        start = self._header(buffer, second, seq, ts, self.rtx_ssrc, sent)
        _OSN.pack_into(buffer, start, original_seq)
        end = start + 2 + len(payload)
        buffer[start + 2 : end] = payload
        datagram = srtp.seal(end)
        if datagram is None:
            return False
        udp.sendto(datagram, self._addr)
        return True

    def send_rtcp(self, data: bytes) -> bool:
        if self._srtp is None and not self._resolve():
            return False
        udp, srtp = self._udp, self._srtp
        if udp is None or udp.is_closing() or srtp is None:
            return False
        try:
            udp.sendto(srtp.protect_rtcp(data), self._addr)
        except Exception as exc:
            PACKETS.drop("rtcp_protect_failed", exc)
            return False
        return True

    def backlog(self) -> int:
        udp = self._udp
        # asyncio's and uvloop's UDP transports both keep a user-space buffer when the socket is full.
        return udp.get_write_buffer_size() if udp is not None else 0  # type: ignore[attr-defined]

    # -- replaced aiortc loops ------------------------------------------

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        s = self._sender
        s._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]
        try:
            await asyncio.Future()  # packets are pushed by the relay, nothing to pull
        except asyncio.CancelledError:
            pass
        finally:
            s._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]

    async def _run_rtcp(self) -> None:
        s = self._sender
        s._RTCRtpSender__rtcp_started.set()  # type: ignore[attr-defined]
        try:
            while True:
                await asyncio.sleep(self._report_interval * (0.5 + random.random()))
                try:
                    report = self.listener.sender_report()
                except Exception as exc:
                    PACKETS.drop("sender_report_failed", exc)
                    continue
                if report is not None:
                    self.send_rtcp(report)
        except asyncio.CancelledError:
            pass
        finally:
            self.send_rtcp(bytes(RtcpByePacket(sources=[self.ssrc])))
            s._RTCRtpSender__rtcp_exited.set()  # type: ignore[attr-defined]

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        listener = self.listener
        try:
            if isinstance(packet, RtcpRtpfbPacket):
                if packet.fmt == RTCP_RTPFB_NACK and packet.lost:
                    listener.on_nack(list(packet.lost))
            elif isinstance(packet, RtcpPsfbPacket):
                if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    listener.on_keyframe_request()
                elif packet.fmt == RTCP_PSFB_APP:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                    if self.ssrc in ssrcs or self.rtx_ssrc in ssrcs:
                        listener.on_bandwidth(bitrate)
            elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        listener.on_receiver_report(ReceiverReport(
                            block.fraction_lost, block.packets_lost, block.highest_sequence, block.jitter,
                            block.lsr, block.dlsr))
        except Exception as exc:  # malformed feedback, or a listener bug: this packet only
            self.feedback_failures += 1
            PACKETS.drop("rtcp_feedback_failed", exc)
