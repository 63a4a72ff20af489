"""ReceiverTap: a receiver's RTP goes to a callback before any jitter buffer or decoder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpSrPacket, RtpPacket, pack_remb_fci, unwrap_rtx

from aiortc_bridge.codecs import NegotiatedCodec, describe
from aiortc_bridge.guard import PACKETS

# (ssrc, sequence number, timestamp, marker, payload, arrival on the monotonic clock).
# An empty payload is a padding-only packet: it still holds a sequence number.
# Sequence gaps wider than this are a new epoch, not losses to NACK.
MAX_NACK_GAP = 512
TapCallback = Callable[[int, int, int, bool, bytes, float], None]


class ReceiverTap:
    """Feeds a receiver's RTP to a callback instead of its jitter buffer and decoder.

    aiortc's NACK generator, REMB estimator and receiver statistics (and so its receiver reports)
    keep running on the tapped packets; the decoder thread aiortc starts is stopped at once.
    """

    def __init__(self, receiver: RTCRtpReceiver, on_rtp: TapCallback) -> None:
        self._receiver = receiver
        self._on_rtp = on_rtp
        # Told when the media payload type changes to another codec (a pipe whose slot switched source).
        self.on_codec: Callable[[NegotiatedCodec], None] | None = None
        self._payload_type = -1
        self.media_ssrc: int | None = None
        self.packets = 0
        self.failures = 0
        # aiortc makes these once per receiver and only fills them (renegotiation included): resolved here, not
        # per packet. Small containers: the bandwidth estimator is read per packet instead (below).
        self._codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        self._streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        self._rtx_ssrc: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
        self._nack = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        original_receive = receiver.receive

        async def receive(parameters: Any) -> None:
            await original_receive(parameters)
            # aiortc starts a decoder thread here; nothing will ever feed it.
            receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]

        receiver.receive = receive  # type: ignore[method-assign]
        # Told of each RTCP sender report of the media stream: (64-bit NTP time, RTP timestamp, arrival).
        self.on_sender_report: Callable[[int, int, float], None] | None = None
        original_rtcp = receiver._handle_rtcp_packet

        async def handle_rtcp(packet: Any) -> None:
            await original_rtcp(packet)
            if isinstance(packet, RtcpSrPacket) and self.on_sender_report is not None and (
                    self.media_ssrc is None or packet.ssrc == self.media_ssrc):
                info = packet.sender_info
                self.on_sender_report(info.ntp_timestamp, info.rtp_timestamp, time.monotonic())

        receiver._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]
        receiver._handle_rtp_packet = self._handle_rtp_packet  # type: ignore[method-assign]

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        codecs = self._codecs
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        # Read each time: a receiver whose packets bypass this path drops it (aiortc_bridge/heap.py), and a
        # reference kept here would keep its 1000 objects alive.
        estimator = self._receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            r = self._receiver
            rtcp_ssrc = r._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]  # set late, rarely read
            if rtcp_ssrc is not None and remb is not None:
                await r._send_rtcp(
                    RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb))
                )
        streams = self._streams
        stream = streams.get(packet.ssrc)
        if stream is None:
            if len(streams) >= 8:  # a publisher cycling SSRCs must not grow this without bound
                streams.clear()
            stream = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if is_rtx(codec):
            original_ssrc = self._rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or apt not in codecs:
                return  # unknown RTX source, or a padding-only bandwidth probe (no media sequence number)
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
        nack = self._nack
        if nack is not None and nack.max_seq is not None and (
                packet.ssrc != self.media_ssrc
                or MAX_NACK_GAP < (packet.sequence_number - nack.max_seq) & 0xFFFF < 0x8000):
            # A new stream or a jump: aiortc would mark every sequence number in between missing,
            # one set insertion each (up to 32767 per packet); the relay starts a new epoch instead.
            nack.max_seq = None
            nack.missing.clear()
        if nack is not None and nack.add(packet):
            await self._receiver._send_rtcp_nack(packet.ssrc, sorted(nack.missing))
        self.media_ssrc = packet.ssrc
        self.packets += 1
        if packet.payload_type != self._payload_type:
            first = self._payload_type < 0
            self._payload_type = packet.payload_type
            if self.on_codec is not None and not first and packet.payload_type in codecs:
                try:
                    self.on_codec(describe(codecs[packet.payload_type]))
                except Exception as exc:
                    PACKETS.drop("tap_callback_failed", exc)
        try:
            self._on_rtp(packet.ssrc, packet.sequence_number, packet.timestamp, bool(packet.marker),
                         packet.payload, time.monotonic())
        except Exception as exc:  # a bug downstream must cost this packet, not the host's session
            self.failures += 1
            PACKETS.drop("tap_callback_failed", exc)

    def request_keyframe(self) -> None:
        """Send a PLI upstream for the tapped stream."""
        if self.media_ssrc is None:
            return
        task = asyncio.ensure_future(self._receiver._send_rtcp_pli(self.media_ssrc))
        task.add_done_callback(log_task_failure)


def log_task_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        PACKETS.drop("rtcp_send_failed", task.exception())
