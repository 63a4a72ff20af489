"""The one module that touches aiortc (and aioice) internals.

Everything here leans on private attributes of aiortc 1.16 / aioice 0.13;
an upgrade of either has to look here and nowhere else. What it provides:

* :func:`pin_ice_hosts` limits ICE host candidates to configured addresses
  (aioice otherwise offers every interface but loopback);
* :func:`prefer_dtls_server` makes the answerer the DTLS server
  (``a=setup:passive``), which WHIP encoders with RSA certificates need;
* :class:`ReceiverTap` takes incoming RTP from an ``RTCRtpReceiver`` before
  its jitter buffer and decoder, keeping aiortc's NACK, REMB and receiver
  reports; no decoder thread ever runs;
* :class:`SenderPort` turns an ``RTCRtpSender`` into a raw packet sink:
  SRTP-protect and ``sendto`` synchronously, no encoder, no per-packet await,
  with our own sender reports and RTCP feedback routed to the relay.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

from relay.ports import CodecInfo

log = logging.getLogger("cherry.relay.aiortc")

_original_get_host_addresses = aioice.ice.get_host_addresses
_pinned_hosts: list[str] = []

RtpCallback = Callable[[int, int, bool, bytes, float], None]
_RTP_FIXED = struct.Struct("!BBHII")


def pin_ice_hosts(addresses: Sequence[str]) -> None:
    """Offer only these host addresses in ICE (empty: aioice's default, all but loopback)."""
    _pinned_hosts[:] = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if not _pinned_hosts:
            return _original_get_host_addresses(use_ipv4, use_ipv6)
        return [a for a in _pinned_hosts if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses  # type: ignore[assignment]


def prefer_dtls_server(pc: RTCPeerConnection) -> None:
    """After applying a remote offer, answer ``a=setup:passive`` where the offer allows it."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport._role == "auto":
            transport._set_role("server")


def codec_info(codec: RTCRtpCodecParameters) -> CodecInfo:
    fmtp = tuple(sorted((str(k), str(v)) for k, v in codec.parameters.items()))
    return CodecInfo(codec.mimeType, codec.clockRate, codec.channels, fmtp)


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The media codec (not RTX) the transceiver settled on, first by preference."""
    for codec in transceiver._codecs:
        if not is_rtx(codec):
            return codec
    return None


def capabilities_for(kind: str, mime_types: Sequence[str]) -> list[RTCRtpCodecCapability]:
    """aiortc capabilities matching ``mime_types`` in that order, plus RTX for video."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for mime in mime_types for c in caps if c.mimeType.lower() == mime.lower()]
    if chosen and kind == "video":
        chosen += [c for c in caps if is_rtx(c)]
    return chosen


def capabilities_matching(codec: CodecInfo) -> list[RTCRtpCodecCapability]:
    """The capability (plus RTX) equal to a publication's codec, for a viewer's answer."""
    caps = RTCRtpSender.getCapabilities(codec.kind).codecs
    wanted = dict(codec.fmtp)
    chosen = []
    for cap in caps:
        if cap.mimeType.lower() != codec.mime_type.lower():
            continue
        params = {str(k): str(v) for k, v in cap.parameters.items()}
        if "profile-level-id" in wanted and params.get("profile-level-id") != wanted["profile-level-id"]:
            continue
        if "packetization-mode" in wanted and params.get("packetization-mode") != wanted["packetization-mode"]:
            continue
        chosen.append(cap)
    if chosen and codec.kind == "video":
        chosen += [c for c in caps if is_rtx(c)]
    return chosen


class ReceiverTap:
    """Feeds a receiver's RTP to a callback instead of its jitter buffer and decoder."""

    def __init__(self, receiver: RTCRtpReceiver, on_rtp: RtpCallback) -> None:
        self._receiver = receiver
        self._on_rtp = on_rtp
        self.media_ssrc: int | None = None
        self.packets = 0
        original_receive = receiver.receive

        async def receive(parameters: Any) -> None:
            await original_receive(parameters)
            # aiortc starts a decoder thread here; nothing will ever feed it.
            receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]

        receiver.receive = receive  # type: ignore[method-assign]
        receiver._handle_rtp_packet = self._handle_rtp_packet  # type: ignore[method-assign]

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        r = self._receiver
        codecs = r._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        estimator = r._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            rtcp_ssrc = r._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
            if rtcp_ssrc is not None and remb is not None:
                await r._send_rtcp(
                    RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb))
                )
        streams = r._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        stream = streams.get(packet.ssrc)
        if stream is None:
            stream = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if is_rtx(codec):
            original_ssrc = r._RTCRtpReceiver__rtx_ssrc.get(packet.ssrc)  # type: ignore[attr-defined]
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or apt not in codecs:
                return  # unknown RTX source, or padding-only probe
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
        nack = r._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        if nack is not None and nack.add(packet):
            await r._send_rtcp_nack(packet.ssrc, sorted(nack.missing))
        if not packet.payload:
            return
        self.media_ssrc = packet.ssrc
        self.packets += 1
        self._on_rtp(
            packet.sequence_number, packet.timestamp, bool(packet.marker), packet.payload, time.monotonic()
        )

    def request_keyframe(self) -> None:
        """Send a PLI upstream for the tapped stream."""
        if self.media_ssrc is None:
            return
        task = asyncio.ensure_future(self._receiver._send_rtcp_pli(self.media_ssrc))
        task.add_done_callback(_log_task_failure)


class SenderPort:
    """An ``RTCRtpSender`` used as a raw packet sink (relay.ports.RtpSink).

    aiortc's own RTP loop (which would poll a track or encode) and RTCP loop
    (which would report counts it never saw) are replaced before negotiation.
    """

    def __init__(self, sender: RTCRtpSender, report_interval: float) -> None:
        self._sender = sender
        self._report_interval = report_interval
        self.ssrc: int = sender._ssrc
        self.rtx_ssrc: int = sender._rtx_ssrc
        self.codec: RTCRtpCodecParameters | None = None
        # Negotiated payload types by codec, so one stream can switch codec with its source.
        self._payload_types: dict[str, tuple[int, int | None]] = {}
        self.on_keyframe_request: Callable[[], None] = _noop
        self.on_nack: Callable[[list[int]], None] = _noop_nack
        self.sender_report: Callable[[], bytes | None] = _no_report
        self._protect: Callable[[bytes], bytes] | None = None
        self._protect_rtcp: Callable[[bytes], bytes] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._addr: Any = None
        original_send = sender.send

        async def send(parameters: Any) -> None:
            self.codec = parameters.codecs[0]
            rtx = {c.parameters.get("apt"): c.payloadType for c in parameters.codecs if is_rtx(c)}
            for codec in parameters.codecs:
                if not is_rtx(codec):
                    self._payload_types.setdefault(codec.mimeType.lower(), (codec.payloadType,
                                                                            rtx.get(codec.payloadType)))
            await original_send(parameters)

        sender.send = send  # type: ignore[method-assign]
        sender._run_rtp = self._run_rtp  # type: ignore[method-assign]
        sender._run_rtcp = self._run_rtcp  # type: ignore[method-assign]
        sender._handle_rtcp_packet = self._handle_rtcp_packet  # type: ignore[method-assign]

    def payload_types(self, mime_type: str) -> tuple[int, int | None] | None:
        return self._payload_types.get(mime_type.lower())

    # -- sending (hot path) ---------------------------------------------

    def _resolve(self) -> bool:
        dtls = self._sender.transport
        if dtls.state != "connected":
            return False
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or pair.protocol.transport is None:
            return False
        self._protect = dtls._tx_srtp.protect
        self._protect_rtcp = dtls._tx_srtp.protect_rtcp
        self._udp = pair.protocol.transport
        self._addr = pair.remote_addr
        return True

    def send(self, data: bytes) -> bool:
        protect = self._protect
        if protect is None:
            if not self._resolve():
                return False
            protect = self._protect
            assert protect is not None
        udp = self._udp
        if udp is None or udp.is_closing():
            self._protect = None
            return False
        udp.sendto(protect(data), self._addr)
        return True

    def send_rtcp(self, data: bytes) -> bool:
        if self._protect_rtcp is None and not self._resolve():
            return False
        udp = self._udp
        if udp is None or udp.is_closing() or self._protect_rtcp is None:
            return False
        udp.sendto(self._protect_rtcp(data), self._addr)
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
                report = self.sender_report()
                if report is not None:
                    self.send_rtcp(report)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("sender report loop failed")
        finally:
            self.send_rtcp(bytes(RtcpByePacket(sources=[self.ssrc])))
            s._RTCRtpSender__rtcp_exited.set()  # type: ignore[attr-defined]

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.on_nack(packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.on_keyframe_request()
        # Receiver reports are not used yet: nothing reads per-viewer loss or RTT.


def _noop() -> None:
    pass


def _noop_nack(lost: list[int]) -> None:
    pass


def _no_report() -> bytes | None:
    return None


def _log_task_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("RTCP send failed: %r", task.exception())


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


# -- load-client hooks (used by loadtests/ only; the gateway never calls these) --------------------

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

    The first call also short-cuts aioice's socket protocols: a datagram whose first byte says
    DTLS or RTP/RTCP (RFC 7983: 20..63, 128..191) skips aioice's attempt to parse it as STUN.
    """
    connection = _ice_connection(pc)
    connection.data_received = wrap(connection.data_received)
    if getattr(connection, "_cherry_fast_demux", False):
        return
    connection._cherry_fast_demux = True
    for protocol in connection._protocols:
        _fast_demux(connection, protocol)


def _fast_demux(connection: Any, protocol: Any) -> None:
    component = protocol.local_candidate.component
    stun_path = protocol.datagram_received

    def datagram_received(data: bytes, addr: Any) -> None:
        if data and data[0] >= 20:
            connection.data_received(data, component)
        else:
            stun_path(data, addr)

    protocol.datagram_received = datagram_received


def _lean_unprotect(session: Any) -> Callable[[bytes], bytes | None]:
    """SRTP unprotect without pylibsrtp's per-call allocations (None: replayed, corrupt, too long)."""
    try:
        from pylibsrtp import _binding

        srtp, cdata, buffer = session._srtp[0], session._cdata, session._buffer
    except (ImportError, AttributeError):

        def fallback(data: bytes) -> bytes | None:
            try:
                return bytes(session.unprotect(data))
            except Exception:
                return None

        return fallback
    length = _binding.ffi.new("int *")
    limit = len(cdata)
    srtp_unprotect = _binding.lib.srtp_unprotect

    def unprotect(data: bytes) -> bytes | None:
        n = len(data)
        if n > limit:
            return None
        length[0] = n
        buffer[0:n] = data
        if srtp_unprotect(srtp, cdata, length) != 0:
            return None
        return bytes(buffer[0 : length[0]])

    return unprotect


class LeanRtpPath:
    """A lean receive path for a recvonly load viewer: SRTP straight from the datagram callback.

    aiortc's own path costs several coroutine hops per packet (queue, DTLS transport,
    ``RtpPacket.parse`` with extensions, receiver statistics). Here, once DTLS is up, each SRTP
    (not SRTCP) datagram is unprotected and its 12-byte header read right where aioice
    delivers it, and handed to ``routes[payload_type]``; RTX is unwrapped to the media
    payload type. NACKs for missing video sequence numbers (and PLIs, :meth:`request_keyframe`)
    are sent through aiortc's receiver (rarely: only on gaps). DTLS and RTCP still take aiortc's path. Install with
    :func:`wrap_ice_delivery` after negotiation has set the payload types (see :meth:`route`).
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
        for codec in transceiver._codecs:
            pt = codec.payloadType
            if pt is None:
                continue
            apt = codec.parameters.get("apt")
            if not is_rtx(codec):
                self._routes.setdefault(pt, on_rtp)
                if nack:
                    self._nack_receivers.setdefault(pt, transceiver.receiver)
            elif apt is not None:
                self._rtx[pt] = int(apt)
        for ssrc in ssrcs:
            self._ssrc_routes[ssrc] = on_rtp
            if nack:
                self._nack_by_ssrc[ssrc] = transceiver.receiver
        self._dtls = transceiver.receiver.transport

    def wrap(self, deliver: DatagramSink) -> DatagramSink:
        routes, rtx, nacked = self._routes, self._rtx, self._nack_receivers
        ssrc_routes, nack_by_ssrc = self._ssrc_routes, self._nack_by_ssrc
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
                srtp = self._dtls._rx_srtp if self._dtls is not None else None
                if srtp is None:
                    deliver(data, component)
                    return
                unprotect = _lean_unprotect(srtp)
            packet = unprotect(data)
            if packet is None:
                return  # replayed or corrupt: what aiortc would drop too
            b0, b1, seq, ts, ssrc = header(packet)
            pt = b1 & 0x7F
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

    def request_keyframe(self, ssrcs: Sequence[int] | None = None) -> None:
        """Send a PLI for each NACK-routed (video) stream seen so far, or for ``ssrcs``."""
        for ssrc, receiver in self._media_ssrc.items():
            if ssrcs is None or ssrc in ssrcs:
                task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
                task.add_done_callback(_log_task_failure)

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
            task.add_done_callback(_log_task_failure)
