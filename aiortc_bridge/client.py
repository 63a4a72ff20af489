"""Hooks for our own WebRTC clients (load viewers, synthetic hosts); the gateway never calls these."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpreceiver import StreamStatistics

from aiortc_bridge.dtls import rx_srtp
from aiortc_bridge.heap import drop_bitrate_estimator
from aiortc_bridge.receiver import ReceiverTap, log_task_failure

RtpCallback = Callable[[int, int, bool, bytes, float], None]  # (seq, timestamp, marker, payload, arrival)
_RTP_FIXED = struct.Struct("!BBHII")
# Receiver statistics kept per receiver; a sender cycling SSRCs must not grow them without bound.
MAX_STREAMS_PER_RECEIVER = 8


class _Seen:
    """The two fields of an RTP packet aiortc's ``StreamStatistics.add`` reads, reused for every packet."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self) -> None:
        self.sequence_number = 0
        self.timestamp = 0


def route_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> None:
    """Call ``on_request`` when the remote peer sends PLI/FIR for a sender fed with encoded packets.

    aiortc answers PLI/FIR by setting a flag for its own encoder, which a track of
    pre-encoded ``av.Packet`` never sees (our synthetic load hosts loop such packets).
    """
    original: Callable[[], None] = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        on_request()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send the remote sender a PLI for the stream ``receiver`` gets, as a decoder that lost its reference
    would (aiortc sends one itself only on its own decoder's errors). False before any packet arrived."""
    sources = receiver.getSynchronizationSources()
    if not sources:
        return False
    await receiver._send_rtcp_pli(sources[0].source)
    return True


DatagramSink = Callable[[bytes, int], None]  # (datagram, ICE component)


def _ice_connection(pc: RTCPeerConnection) -> Any:
    transceivers = pc.getTransceivers()
    if not transceivers:
        raise RuntimeError("no transceivers: add them before hooking the ICE connection")
    gatherer = transceivers[0].receiver.transport.transport.iceGatherer
    return gatherer._connection


def wrap_ice_delivery(pc: RTCPeerConnection, wrap: Callable[[DatagramSink], DatagramSink]) -> None:
    """Put ``wrap(deliver)`` between aioice and aiortc for every non-STUN datagram ``pc`` receives.

    aioice hands DTLS and SRTP datagrams to ``Connection.data_received(data, component)``,
    which queues them for aiortc's DTLS transport. ``wrap`` gets that delivery function and
    returns its replacement, which may delay, drop or consume datagrams (user-space network
    impairment, a lean receive path). STUN (ICE checks, consent) is not routed through it.
    Call after ``setLocalDescription`` (candidates gathered) and before ICE connects; wraps
    compose (the last one installed sees datagrams first). All transceivers of a BUNDLEd
    connection share it.

    (:func:`aiortc_bridge.install` makes aioice hand DTLS and RTP/RTCP over without a STUN parse.)
    """
    connection = _ice_connection(pc)
    connection.data_received = wrap(connection.data_received)


class LeanRtpPath:
    """A lean receive path for a recvonly load viewer: SRTP straight from the datagram callback.

    aiortc's own path costs several coroutine hops per packet (queue, DTLS transport,
    ``RtpPacket.parse`` with extensions). Here, once DTLS is up, each SRTP (not SRTCP) datagram
    is unprotected and its 12-byte header read right where aioice delivers it, and handed to
    ``routes[payload_type]``; RTX is unwrapped to the media payload type. NACKs for missing
    video sequence numbers (and PLIs, :meth:`request_keyframe`) are sent through aiortc's
    receiver (rarely: only on gaps). DTLS and RTCP still take aiortc's path. Install with
    :func:`wrap_ice_delivery` after negotiation has set the payload types (see :meth:`route`).

    Receiver reports, as a browser sends them: every packet also feeds aiortc's own
    ``StreamStatistics`` of its receiver, per SSRC as aiortc's path would (media and RTX streams
    apart, so a retransmission does not hide a loss), and each SSRC is registered in the DTLS
    transport's RTP router so that the sender's reports reach that receiver (LSR/DLSR). aiortc's
    RTCP loop then sends RRs with fraction lost, cumulative loss, highest sequence number,
    jitter, LSR and DLSR for each stream.
    """

    def __init__(self, pc: RTCPeerConnection) -> None:
        self._pc = pc
        self._routes: dict[int, RtpCallback] = {}
        self._ssrc_routes: dict[int, RtpCallback] = {}  # media and RTX SSRC -> callback
        self._rtx: dict[int, int] = {}  # RTX payload type -> media payload type
        self._nack_receivers: dict[int, RTCRtpReceiver] = {}  # by payload type
        self._nack_by_ssrc: dict[int, RTCRtpReceiver] = {}
        self._max_seq: dict[int, int] = {}  # by media SSRC
        self._media_ssrc: dict[int, RTCRtpReceiver] = {}  # NACKed media SSRCs seen, for PLIs
        self._receivers: dict[int, RTCRtpReceiver] = {}  # by payload type (media and RTX)
        self._receivers_by_ssrc: dict[int, RTCRtpReceiver] = {}
        self._clock_rates: dict[int, int] = {}  # by payload type
        self._streams: dict[int, StreamStatistics] = {}  # by SSRC: the receivers' own statistics
        self._dtls: Any = None
        self.packets = 0
        self.nacks_sent = 0

    def route(
        self, transceiver: RTCRtpTransceiver, on_rtp: RtpCallback, nack: bool = False, ssrcs: Sequence[int] = ()
    ) -> None:
        """Send this transceiver's packets to ``on_rtp``: by ``ssrcs`` (media and RTX, from the
        remote SDP) when given, which several m-lines of one payload type need, else by its
        negotiated payload types (and their RTX). The first route of a payload type is the
        fallback for SSRCs nobody announced."""
        drop_bitrate_estimator(transceiver.receiver)  # its packets never reach aiortc's path, which uses it
        for codec in transceiver._codecs:
            pt = codec.payloadType
            if pt is None:
                continue
            self._receivers.setdefault(pt, transceiver.receiver)
            self._clock_rates.setdefault(pt, codec.clockRate)
            apt = codec.parameters.get("apt")
            if not is_rtx(codec):
                self._routes.setdefault(pt, on_rtp)
                if nack:
                    self._nack_receivers.setdefault(pt, transceiver.receiver)
            elif apt is not None:
                self._rtx[pt] = int(apt)
        for ssrc in ssrcs:
            self._ssrc_routes[ssrc] = on_rtp
            self._receivers_by_ssrc[ssrc] = transceiver.receiver
            if nack:
                self._nack_by_ssrc[ssrc] = transceiver.receiver
        self._dtls = transceiver.receiver.transport

    def wrap(self, deliver: DatagramSink) -> DatagramSink:
        routes, rtx, nacked = self._routes, self._rtx, self._nack_receivers
        ssrc_routes, nack_by_ssrc = self._ssrc_routes, self._nack_by_ssrc
        streams, seen = self._streams, _Seen()
        header = _RTP_FIXED.unpack_from
        unprotect: Callable[[bytes], bytes | None] | None = None
        monotonic = time.monotonic

        def receive(data: bytes, component: int) -> None:
            nonlocal unprotect
            # 128..191: RTP/RTCP; RTCP packet types 192..223 sit in the second byte.
            if not 127 < data[0] < 192 or 191 < data[1] < 224:
                deliver(data, component)
                return
            if unprotect is None:
                srtp = rx_srtp(self._dtls) if self._dtls is not None else None
                if srtp is None:
                    deliver(data, component)
                    return
                unprotect = srtp.unprotect_or_none
            packet = unprotect(data)
            if packet is None:
                return  # replayed or corrupt: what aiortc would drop too
            b0, b1, seq, ts, ssrc = header(packet)
            pt = b1 & 0x7F
            stats = streams.get(ssrc) or self._new_stream(ssrc, pt)
            if stats is not None:  # receiver statistics, as aiortc's path keeps them (before unwrapping RTX)
                seen.sequence_number = seq
                seen.timestamp = ts
                stats.add(seen)  # type: ignore[arg-type]
            start = 12 + 4 * (b0 & 0x0F)
            if b0 & 0x10:  # header extension
                start += 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
            end = len(packet) - (packet[-1] if b0 & 0x20 else 0)  # padding
            retransmission = pt in rtx
            if retransmission:
                if end - start < 2:
                    return  # padding-only probe
                seq = (packet[start] << 8) | packet[start + 1]
                start += 2
                pt = rtx[pt]
            on_rtp = ssrc_routes.get(ssrc) or routes.get(pt)
            if on_rtp is None or end <= start:
                return
            self.packets += 1
            if not retransmission:
                receiver = nack_by_ssrc.get(ssrc) or nacked.get(pt)
                if receiver is not None:
                    self._check_gap(receiver, seq, ssrc)
            on_rtp(seq, ts, bool(b1 & 0x80), packet[start:end], monotonic())

        return receive

    def _new_stream(self, ssrc: int, pt: int) -> StreamStatistics | None:
        """The statistics of a new SSRC, in its receiver's own table (None: not a stream of ours)."""
        receiver = self._receivers_by_ssrc.get(ssrc) or self._receivers.get(pt)
        clock_rate = self._clock_rates.get(pt)
        if receiver is None or clock_rate is None:
            return None
        remote: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        stats = remote.get(ssrc)  # packets before DTLS was up took aiortc's path, which counted them here
        if stats is None:
            if len(remote) >= MAX_STREAMS_PER_RECEIVER:
                for old in remote:
                    self._streams.pop(old, None)
                remote.clear()
            stats = remote[ssrc] = StreamStatistics(clock_rate)
        self._streams[ssrc] = stats
        # Sender reports are routed by SSRC: without this entry they never reach the receiver, and
        # its receiver reports would carry no LSR/DLSR (aiortc's path adds it on the first packet).
        receiver.transport._rtp_router.ssrc_table.setdefault(ssrc, receiver)
        return stats

    def request_keyframe(self, ssrcs: Sequence[int] | None = None) -> None:
        """Send a PLI for each NACK-routed (video) stream seen so far, or for ``ssrcs``."""
        for ssrc, receiver in self._media_ssrc.items():
            if ssrcs is None or ssrc in ssrcs:
                task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
                task.add_done_callback(log_task_failure)

    def _check_gap(self, receiver: RTCRtpReceiver, seq: int, ssrc: int) -> None:
        self._media_ssrc[ssrc] = receiver
        last = self._max_seq.get(ssrc)
        if last is None or not 0 < (seq - last) & 0xFFFF < 0x8000:
            if last is None:
                self._max_seq[ssrc] = seq
            return
        self._max_seq[ssrc] = seq
        missing = [(last + i) & 0xFFFF for i in range(1, min((seq - last) & 0xFFFF, 64))]
        if missing:
            self.nacks_sent += 1
            task = asyncio.ensure_future(receiver._send_rtcp_nack(ssrc, missing))
            task.add_done_callback(log_task_failure)


def tap_receiver(receiver: RTCRtpReceiver, on_rtp: RtpCallback) -> ReceiverTap:
    """A :class:`ReceiverTap` for a client that only wants media packets (no SSRC, no padding)."""

    def media_only(ssrc: int, seq: int, ts: int, marker: bool, payload: bytes, arrival: float) -> None:
        if payload:
            on_rtp(seq, ts, marker, payload, arrival)

    return ReceiverTap(receiver, media_only)
