"""Subscription: one outgoing track to one viewer, with header rewriting and drop policy."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relay.packet import MediaPacket
from relay.ports import RtpSink
from relay.publication import Publication
from relay.rtp import ntp_now, sender_report, seq_diff


@dataclass(slots=True)
class SubscriptionStats:
    packets_sent: int = 0
    bytes_sent: int = 0
    dropped_waiting_keyframe: int = 0
    dropped_congestion: int = 0
    dropped_not_connected: int = 0
    retransmitted: int = 0
    nacks_in: int = 0
    keyframe_requests_in: int = 0
    first_packet_at: float | None = None


class Subscription:
    """Forwards one publication's packets to one viewer stream.

    The viewer sees a single continuous stream (its own SSRC, sequence and
    timestamp space) whatever happens upstream: a host reconnect or, later, a
    PK source switch re-anchors the offsets at the next keyframe instead of
    renegotiating. A viewer that cannot keep up is dropped to the next keyframe
    instead of queueing.
    """

    __slots__ = (
        "kind",
        "slot",
        "clock_rate",
        "stats",
        "_sink",
        "_source",
        "_queue_limit",
        "_cname",
        "_started",
        "_waiting",
        "_new_source",
        "_seq_offset",
        "_ts_offset",
        "_anchor_ext",
        "_max_in_ext",
        "_last_out_seq",
        "_last_out_ts",
        "_last_out_at",
        "_rtx_seq",
        "_closed",
        "_pt",
        "_rtx_pt",
        "on_failed",
    )

    def __init__(
        self, kind: str, clock_rate: int, sink: RtpSink, *, queue_limit: int, cname: str, slot: int = 0
    ) -> None:
        self.kind = kind
        self.slot = slot  # which source of the room's layout this stream shows (0: the room's host)
        self.clock_rate = clock_rate
        self.stats = SubscriptionStats()
        self._sink = sink
        self._source: Publication | None = None
        self._queue_limit = queue_limit
        self._cname = cname.encode()
        self._started = False
        self._waiting = True
        self._new_source = True
        self._seq_offset = 0
        self._ts_offset = 0
        # Input sequence numbers extended past 16 bits, so "before the anchor" survives wraps.
        self._anchor_ext = 0
        self._max_in_ext = 0
        # Start below 2^15 so the first wrap is far away (libsrtp dislikes early rollover).
        self._last_out_seq = random.randrange(0, 0x7FFF)
        self._last_out_ts = random.getrandbits(32)
        self._last_out_at: float | None = None
        self._rtx_seq = random.randrange(0, 0x7FFF)
        self._closed = False
        self._pt = 0
        self._rtx_pt: int | None = None
        # Told when forwarding to this viewer failed and the subscription closed itself.
        self.on_failed: Callable[[Subscription, str], None] | None = None

    @property
    def source(self) -> Publication | None:
        return self._source

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._waiting

    def switch_source(self, publication: Publication | None) -> None:
        """Follow another publication (host reconnect, PK); resumes at its next keyframe."""
        if publication is self._source:
            return
        if self._source is not None:
            self._source.detach(self)
        self._source = publication
        self._new_source = True
        self._waiting = True
        if publication is not None and not self._closed:
            publication.attach(self)
            if self._started:
                publication.request_keyframe()

    def start(self) -> None:
        """The session can send now: begin at the next keyframe (asked for right away)."""
        if self._started or self._closed:
            return
        self._started = True
        self._waiting = True
        if self._source is not None:
            self._source.request_keyframe()

    def forward(self, packet: MediaPacket) -> None:
        """Hot path: rewrite one packet for this viewer and send it without awaiting."""
        if self._waiting:
            if not packet.keyframe or not self._started or not self._anchor(packet):
                self.stats.dropped_waiting_keyframe += 1
                return
        else:
            d = seq_diff(packet.seq, self._max_in_ext & 0xFFFF)
            if d > 0:
                self._max_in_ext += d
            elif self._max_in_ext + d < self._anchor_ext:
                return  # reordered packet from before the current anchor
        sink = self._sink
        if sink.backlog() > self._queue_limit:
            self._congested()
            return
        seq = (packet.seq + self._seq_offset) & 0xFFFF
        ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        second = self._pt | 0x80 if packet.marker else self._pt
        if not sink.send_rtp(second, seq, ts, packet.payload, packet.arrival):
            self.stats.dropped_not_connected += 1
            return
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(packet.payload)
        if seq_diff(seq, self._last_out_seq) > 0:
            self._last_out_seq = seq
            self._last_out_ts = ts
            self._last_out_at = packet.arrival

    def _anchor(self, packet: MediaPacket) -> bool:
        """Continue the viewer's sequence (and, on a new source, timestamp) space at ``packet``.

        False when the viewer never negotiated the new source's codec: it keeps waiting.
        """
        if self._new_source:
            source = self._source
            mapping = self._sink.payload_types(source.codec.mime_type) if source is not None else None
            if mapping is None:
                return False
            self._pt, self._rtx_pt = mapping
        out_seq = (self._last_out_seq + 1) & 0xFFFF
        self._seq_offset = (out_seq - packet.seq) & 0xFFFF
        if self._new_source:
            if self._last_out_at is None:
                out_ts = self._last_out_ts
            else:
                elapsed = max(packet.arrival - self._last_out_at, 0.001)
                out_ts = self._last_out_ts + int(elapsed * self.clock_rate)
            self._ts_offset = (out_ts - packet.timestamp) & 0xFFFFFFFF
            self._new_source = False
        self._anchor_ext = self._max_in_ext = packet.seq + 0x10000
        self._waiting = False
        if self.stats.first_packet_at is None:
            self.stats.first_packet_at = packet.arrival
        return True

    def _congested(self) -> None:
        self.stats.dropped_congestion += 1
        if self.kind == "video":
            # Anything sent before the next keyframe would be undecodable anyway.
            self._waiting = True
            if self._source is not None:
                self._source.request_keyframe()

    def on_keyframe_request(self) -> None:
        """PLI/FIR from the viewer: forwarded upstream, throttled by the publication."""
        self.stats.keyframe_requests_in += 1
        if self._source is not None:
            self._source.request_keyframe()

    def on_bandwidth(self, bitrate: int) -> None:
        pass

    def on_receiver_report(self, report: object) -> None:
        pass

    def on_nack(self, lost: Iterable[int]) -> None:
        """Answer a viewer's NACK from the publication's packet cache (RTX when negotiated)."""
        self.stats.nacks_in += 1
        source = self._source
        if source is None or self._waiting:
            return
        sink = self._sink
        for out_seq in lost:
            in_seq = (out_seq - self._seq_offset) & 0xFFFF
            in_ext = self._max_in_ext + seq_diff(in_seq, self._max_in_ext & 0xFFFF)
            if not self._anchor_ext <= in_ext <= self._max_in_ext:
                continue  # not sent in the current epoch
            packet = source.cache.get(in_seq)
            if packet is None:
                continue
            ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
            marker = 0x80 if packet.marker else 0
            now = time.monotonic()
            if self._rtx_pt is None:
                sent = sink.send_rtp(self._pt | marker, out_seq, ts, packet.payload, now)
            else:
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                sent = sink.send_rtx(self._rtx_pt | marker, self._rtx_seq, ts, out_seq, packet.payload, now)
            if sent:
                self.stats.retransmitted += 1

    def sender_report(self, now: float | None = None) -> bytes | None:
        """RTCP SR + SDES for this stream, so players can line audio up with video."""
        if self._last_out_at is None or self.stats.packets_sent == 0:
            return None
        now = time.monotonic() if now is None else now
        rtp_ts = self._last_out_ts + int((now - self._last_out_at) * self.clock_rate)
        return sender_report(
            self._sink.ssrc,
            ntp_now(),
            rtp_ts,
            self.stats.packets_sent,
            self.stats.bytes_sent,
            self._cname,
        )

    def fail(self, reason: str) -> None:
        """Forwarding to this viewer failed: stop it, and tell whoever owns it (once)."""
        if self._closed:
            return
        self.close()
        if self.on_failed is not None:
            self.on_failed(self, reason)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._source is not None:
            self._source.detach(self)
        self._source = None
