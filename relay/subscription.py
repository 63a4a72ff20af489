"""Subscription: one outgoing track to one viewer, with header rewriting and drop policy.

The viewer sees a single continuous stream (its own SSRC, sequence and timestamp space) whatever
happens upstream: a host reconnect, a PK source switch or a publisher restart (a new epoch)
re-anchors the offsets at the next keyframe instead of renegotiating.

Its policy, per viewer: keyframe requests throttled on top of the publication's throttle; NACKs
answered from the publication's cache within a budget and never twice within an RTT; and video
paused (audio goes on) while the viewer's own RTCP feedback says its path is congested, resumed at a
keyframe after a pause that doubles while the congestion persists. A local send buffer past its
limit drops video to the next keyframe as a last resort.

A video stream starts (and moves to another source) from its publication's keyframe cache when there is
one: the cached packets go through the same rewriting as live ones, in paced bursts (at most
``keyframe_cache_burst_bytes`` per event-loop turn, ``keyframe_cache_pace_ms`` apart, and only while the
viewer's send queue is empty, so its queue limit is never tripped), and the subscription joins the
publication's sinks once it has caught up with the live end of the cache. It is not a sink meanwhile,
so the per-packet path carries nothing for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.config import MediaConfig
from relay.dump import Congestion, SubscriptionDump, Traffic
from relay.packet import MediaPacket
from relay.ports import FeedbackReport, RtpSink
from relay.publication import Publication
from relay.rtp import ntp_now, sender_report, seq_diff

MAX_NACKS_PER_REPORT = 64  # sequence numbers looked at per NACK; one RTCP packet may list thousands
RESEND_RING = 1024
MAX_PAUSE_FACTOR = 8
REMB_SUSTAIN = 3.0  # seconds a bandwidth estimate must stay too low before it counts as congestion
REMB_SETTLE = 5.0  # estimates start low and ramp up: ignore them for this long after the stream starts
# A session is "connected" (and starts its subscriptions) before aiortc has set its senders up: a catch-up
# waits this long for its sink to take packets, then falls back to waiting for a keyframe.
SINK_READY_TIMEOUT = 2.0


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# Runs a callback after a delay in seconds (the event loop's call_later; a fake in unit tests).
Scheduler = Callable[[float, Callable[[], None]], Cancellable]


def _call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


@dataclass(slots=True)
class SubscriptionStats:
    packets_sent: int = 0
    bytes_sent: int = 0
    dropped_waiting_keyframe: int = 0
    dropped_congestion: int = 0
    dropped_not_connected: int = 0
    retransmitted: int = 0
    nacks_in: int = 0
    nack_budget_refused: int = 0
    resends_suppressed: int = 0
    keyframe_requests_in: int = 0
    keyframe_requests_throttled: int = 0
    first_packet_at: float | None = None
    from_cache: int = 0  # packets sent from the publication's keyframe cache (catching up)


class Subscription:
    __slots__ = (
        "kind",
        "slot",
        "clock_rate",
        "stats",
        "on_failed",
        "on_started",
        "_sink",
        "_source",
        "_clock",
        "_retire_into",
        "_queue_limit",
        "_cname",
        "_started",
        "_waiting",
        "_new_source",
        "_epoch",
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
        "_pli_interval",
        "_last_pli",
        "_nack_rate",
        "_nack_tokens",
        "_nack_at",
        "_resend_interval",
        "_resent_seq",
        "_resent_at",
        "_loss_limit",
        "_bandwidth_ratio",
        "_pause_base",
        "_pause",
        "_paused_until",
        "_probe_until",
        "_pauses",
        "_state",
        "_loss",
        "_jitter",
        "_rtt",
        "_remb",
        "_remb_low_since",
        "_rate_bytes",
        "_rate_at",
        "_send_bps",
        "_schedule",
        "_replay",
        "_replay_at",
        "_replay_timer",
        "_replay_deadline",
        "_burst_bytes",
        "_pace",
    )

    def __init__(self, kind: str, clock_rate: int, sink: RtpSink, *, media: MediaConfig, cname: str,
                 slot: int = 0, retire_into: Sequence[Traffic] = (),
                 clock: Callable[[], float] = time.monotonic, schedule: Scheduler = _call_later) -> None:
        self.kind = kind
        self.slot = slot  # which source of the room's layout this stream shows (0: the room's host)
        self.clock_rate = clock_rate
        self.stats = SubscriptionStats()
        # Told when forwarding to this viewer failed and the subscription closed itself.
        self.on_failed: Callable[[Subscription, str], None] | None = None
        # Told once, when the first packet goes out (the viewer's time to first keyframe).
        self.on_started: Callable[[Subscription], None] | None = None
        self._sink = sink
        self._source: Publication | None = None
        self._clock = clock
        self._retire_into = tuple(retire_into)
        self._queue_limit = media.viewer_queue_limit_bytes
        self._cname = cname.encode()
        self._started = False
        self._waiting = True
        self._new_source = True
        self._epoch = -1
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
        self._pli_interval = media.viewer_keyframe_request_interval_ms / 1000
        self._last_pli = -1e9
        self._nack_rate = float(media.nack_budget_per_second)
        self._nack_tokens = 2 * self._nack_rate
        self._nack_at = clock()
        self._resend_interval = media.nack_resend_interval_ms / 1000
        self._resent_seq = [-1] * RESEND_RING
        self._resent_at = [0.0] * RESEND_RING
        self._loss_limit = media.congestion_loss_ratio
        self._bandwidth_ratio = media.congestion_bandwidth_ratio
        self._pause_base = self._pause = media.congestion_pause_ms / 1000
        self._paused_until = 0.0
        self._probe_until = 0.0
        self._pauses = 0
        self._state = "ok"
        self._loss = 0.0
        self._jitter = 0.0
        self._rtt: float | None = None
        self._remb: int | None = None
        self._remb_low_since: float | None = None
        self._rate_bytes = 0
        self._rate_at = clock()
        self._send_bps = 0
        # Catching up from a keyframe cache: the publication's list being sent, the next index, the timer.
        self._schedule = schedule
        self._replay: list[MediaPacket] | None = None
        self._replay_at = 0
        self._replay_timer: Cancellable | None = None
        self._replay_deadline = 0.0
        self._burst_bytes = media.keyframe_cache_burst_bytes
        self._pace = media.keyframe_cache_pace_ms / 1000

    @property
    def source(self) -> Publication | None:
        return self._source

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._waiting

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def congestion_state(self) -> str:
        return self._state

    @property
    def catching_up(self) -> bool:
        """Being sent its source's keyframe cache (not yet live)."""
        return self._replay is not None

    def switch_source(self, publication: Publication | None) -> None:
        """Follow another publication (host reconnect, PK); resumes at its next keyframe."""
        if publication is self._source or self._closed:
            return
        self._stop_replay()
        if self._source is not None:
            self._source.detach(self)
        self._source = publication
        self._new_source = True
        self._waiting = True
        self._epoch = -1
        if publication is not None:
            if self._started:
                self._begin(publication)
            else:
                publication.attach(self)

    def start(self) -> None:
        """The session can send now: begin from the source's keyframe cache, or at its next keyframe."""
        if self._started or self._closed:
            return
        self._started = True
        self._waiting = True
        if self._source is not None:
            self._begin(self._source)

    def _begin(self, publication: Publication) -> None:
        """Start from the publication's keyframe cache if it has one, else wait for the keyframe it asks for.
        Audio starts live at once (every audio packet is a start)."""
        gop = publication.keyframe_cache(self._clock()) if self.kind == "video" else None
        if gop is None:
            publication.attach(self)
            return
        publication.detach(self)  # live packets reach it through the cache until it has caught up
        self._replay = gop
        self._replay_at = 0
        self._replay_deadline = self._clock() + SINK_READY_TIMEOUT
        self._catch_up()

    # -- catching up from the keyframe cache ----------------------------------------------------------

    def _catch_up(self) -> None:
        """Send the next burst of the cache; join the publication's sinks at its live end."""
        self._replay_timer = None
        source = self._source
        gop = self._replay
        if gop is None or source is None or self._closed:
            return
        if source.gop is not gop:
            # A new keyframe replaced the cache (skip to it: same source, so only the sequence re-anchors),
            # or the cache is gone (the GOP outgrew it, the stream restarted, the source closed): go live and
            # wait for the next keyframe, asked for once.
            gop = source.gop
            self._waiting = True
            if gop is None:
                self._replay = None
                source.attach(self)
                source.request_keyframe()
                return
            self._replay = gop
            self._replay_at = 0
        sink = self._sink
        now = self._clock()
        if self._waiting and sink.payload_types(source.codec.mime_type) is None:
            # Not set up to send yet (or the viewer never negotiated this codec): the keyframe must not be lost.
            if now > self._replay_deadline:
                self._replay = None
                source.attach(self)
                source.request_keyframe()
                return
            self._replay_timer = self._schedule(self._pace, self._catch_up)
            return
        if sink.backlog() > 0:  # the last burst is still queued on its way out: let it drain first
            self._replay_timer = self._schedule(self._pace, self._catch_up)
            return
        stats = self.stats
        budget = self._burst_bytes
        end = len(gop)
        i = self._replay_at
        while i < end and budget > 0:
            packet = gop[i]
            i += 1
            budget -= len(packet.payload)
            sent, refused = stats.packets_sent, stats.dropped_not_connected
            try:
                self.forward(packet, now)
            except Exception as exc:  # as when the publication's fan-out loop catches it
                self._replay = None
                self.fail(f"forwarding failed: {exc!r}")
                return
            if stats.packets_sent != sent:
                stats.from_cache += 1
            elif stats.dropped_not_connected != refused and now <= self._replay_deadline:
                # The transport is not up yet: start over from the keyframe next turn (nothing reached the
                # viewer that it could decode without it).
                self._waiting = True
                self._replay_at = 0
                self._replay_timer = self._schedule(self._pace, self._catch_up)
                return
        self._replay_at = i
        if i >= len(gop):  # at the live end (nothing arrives between here and attach: one event loop)
            self._replay = None
            source.attach(self)
            return
        self._replay_timer = self._schedule(self._pace, self._catch_up)

    def _stop_replay(self) -> None:
        self._replay = None
        if self._replay_timer is not None:
            self._replay_timer.cancel()
            self._replay_timer = None

    # -- hot path ---------------------------------------------------------------------------------

    def forward(self, packet: MediaPacket, now: float | None = None) -> None:
        """Rewrite one packet for this viewer and send it without awaiting (``now``: sent from the cache)."""
        sent_at = packet.arrival if now is None else now
        if packet.epoch != self._epoch:  # the publisher restarted its stream: like a new source
            self._epoch = packet.epoch
            self._new_source = self._waiting = True
        if self._waiting:
            if self._paused_until and not self._may_resume(sent_at):
                self.stats.dropped_congestion += 1
                return
            if not packet.keyframe or not self._started or not self._anchor(packet, sent_at):
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
            self._overflowed()
            return
        seq = (packet.seq + self._seq_offset) & 0xFFFF
        ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        second = self._pt | 0x80 if packet.marker else self._pt
        if not sink.send_rtp(second, seq, ts, packet.payload, sent_at):
            self.stats.dropped_not_connected += 1
            return
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(packet.payload)
        if seq_diff(seq, self._last_out_seq) > 0:
            self._last_out_seq = seq
            self._last_out_ts = ts
            self._last_out_at = packet.arrival

    def _anchor(self, packet: MediaPacket, sent_at: float) -> bool:
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
            self.stats.first_packet_at = sent_at
            if self.on_started is not None:
                self.on_started(self)
        return True

    # -- congestion ---------------------------------------------------------------------------------

    def _may_resume(self, now: float) -> bool:
        """False while a congestion pause lasts; once it is over, resume at the next keyframe (and watch)."""
        if now < self._paused_until:
            return False
        self._paused_until = 0.0
        self._state = "probing"
        self._probe_until = now + 2 * self._pause
        if self._source is not None:
            # Once per pause, past this viewer's own throttle: without it the viewer would wait a whole GOP.
            self._source.request_keyframe()
        return True

    def _overflowed(self) -> None:
        """The local send buffer is past its limit: what follows before a keyframe would be undecodable."""
        self.stats.dropped_congestion += 1
        if self.kind == "video":
            self._waiting = True
            self._request_keyframe(self._clock())

    def _congested(self, now: float, why: str) -> None:
        if self.kind != "video" or self._paused_until:
            return
        if self._state == "probing":
            self._pause = min(self._pause * 2, self._pause_base * MAX_PAUSE_FACTOR)
        self._state = "congested"
        self._pauses += 1
        self._paused_until = now + self._pause
        self._waiting = True  # resume only at a keyframe, after the pause
        self.stats.dropped_congestion += 1

    def _settle(self, now: float) -> None:
        if self._state == "probing" and now >= self._probe_until:
            self._state = "ok"
            self._pause = self._pause_base

    def _update_rate(self, now: float) -> None:
        elapsed = now - self._rate_at
        if elapsed >= 0.5:
            self._send_bps = int(8 * (self.stats.bytes_sent - self._rate_bytes) / elapsed)
            self._rate_bytes = self.stats.bytes_sent
            self._rate_at = now

    # -- RTCP feedback (aiortc_bridge.sender.FeedbackListener) ------------------------------------

    def on_receiver_report(self, report: FeedbackReport) -> None:
        now = self._clock()
        self._update_rate(now)
        self._loss = report.fraction_lost / 256
        self._jitter = report.jitter / self.clock_rate if self.clock_rate else 0.0
        if report.lsr:
            # RFC 3550 6.4.1: now - LSR - DLSR, in 1/65536 s of the middle 32 bits of NTP time.
            rtt = ((ntp_now() >> 16) - report.lsr - report.dlsr) & 0xFFFFFFFF
            if rtt < 65536 * 10:
                self._rtt = rtt / 65536
        self._settle(now)
        if self._loss > self._loss_limit and not self._waiting:
            self._congested(now, "loss")

    def on_bandwidth(self, bitrate: int) -> None:
        now = self._clock()
        self._update_rate(now)
        self._remb = bitrate
        first = self.stats.first_packet_at
        if not self._bandwidth_ratio or self._state != "ok" or first is None or now - first < REMB_SETTLE:
            self._remb_low_since = None
            return
        if bitrate < self._bandwidth_ratio * self._send_bps:
            if self._remb_low_since is None:
                self._remb_low_since = now
            elif now - self._remb_low_since >= REMB_SUSTAIN:
                self._remb_low_since = None
                self._congested(now, "bandwidth")
        else:
            self._remb_low_since = None

    def on_keyframe_request(self) -> None:
        """PLI/FIR from the viewer: forwarded upstream within this viewer's throttle."""
        self.stats.keyframe_requests_in += 1
        self._request_keyframe(self._clock())

    def _request_keyframe(self, now: float) -> None:
        if self._source is None:
            return
        if now - self._last_pli < self._pli_interval:
            self.stats.keyframe_requests_throttled += 1
            return
        self._last_pli = now
        self._source.request_keyframe()

    def on_nack(self, lost: Iterable[int]) -> None:
        """Answer a viewer's NACK from the publication's cache (RTX when negotiated), within budget."""
        self.stats.nacks_in += 1
        source = self._source
        if source is None or self._waiting:
            return
        now = self._clock()
        self._nack_tokens = min(2 * self._nack_rate, self._nack_tokens + (now - self._nack_at) * self._nack_rate)
        self._nack_at = now
        quiet = max(self._resend_interval, self._rtt or 0.0)
        sink = self._sink
        for i, out_seq in enumerate(lost):
            if i >= MAX_NACKS_PER_REPORT:
                break
            out_seq &= 0xFFFF
            in_seq = (out_seq - self._seq_offset) & 0xFFFF
            in_ext = self._max_in_ext + seq_diff(in_seq, self._max_in_ext & 0xFFFF)
            if not self._anchor_ext <= in_ext <= self._max_in_ext:
                continue  # not sent in the current epoch
            packet = source.cache.get(in_seq)
            if packet is None or packet.epoch != self._epoch:
                continue
            slot = out_seq % RESEND_RING
            if self._resent_seq[slot] == out_seq and now - self._resent_at[slot] < quiet:
                self.stats.resends_suppressed += 1  # our last resend may still be on its way
                continue
            if self._nack_tokens < 1:
                self.stats.nack_budget_refused += 1
                continue
            ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
            marker = 0x80 if packet.marker else 0
            if self._rtx_pt is None:
                sent = sink.send_rtp(self._pt | marker, out_seq, ts, packet.payload, now)
            else:
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                sent = sink.send_rtx(self._rtx_pt | marker, self._rtx_seq, ts, out_seq, packet.payload, now)
            if sent:
                self._nack_tokens -= 1
                self._resent_seq[slot] = out_seq
                self._resent_at[slot] = now
                self.stats.retransmitted += 1

    def sender_report(self, now: float | None = None) -> bytes | None:
        """RTCP SR + SDES for this stream, so players can line audio up with video."""
        if self._last_out_at is None or self.stats.packets_sent == 0:
            return None
        now = self._clock() if now is None else now
        # Not before this stream's offset for the current source is known (its first packet from it).
        clock_map = self._source.clock_map if self._source is not None and not self._new_source else None
        if clock_map is not None:  # the host's own mapping, shifted by this stream's timestamp offset
            ntp, rtp_ts = clock_map.at(now, self.clock_rate, self._ts_offset)
        else:  # no report from the host yet: the forwarding instant stands in for the capture instant
            ntp, rtp_ts = ntp_now(), (self._last_out_ts + int((now - self._last_out_at) * self.clock_rate)) & 0xFFFFFFFF
        return sender_report(
            self._sink.ssrc,
            ntp,
            rtp_ts,
            self.stats.packets_sent,
            self.stats.bytes_sent,
            self._cname,
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    def congestion(self) -> Congestion:
        return Congestion(self._state, round(self._loss, 4), round(self._jitter * 1000, 2),
                          None if self._rtt is None else round(self._rtt * 1000, 2), self._remb,
                          self._send_bps, self._pauses)

    def dump(self) -> SubscriptionDump:
        s = self.stats
        source = self._source
        return SubscriptionDump(
            self.kind, self.slot, source.owner if source is not None else None, s.packets_sent, s.bytes_sent,
            {"waiting_keyframe": s.dropped_waiting_keyframe, "congestion": s.dropped_congestion,
             "not_connected": s.dropped_not_connected},
            s.retransmitted, s.nacks_in, s.nack_budget_refused, s.keyframe_requests_in, self._waiting,
            self.congestion())

    def fail(self, reason: str) -> None:
        """Forwarding to this viewer failed: stop it, and tell whoever owns it (once)."""
        if self._closed:
            return
        self.close()
        if self.on_failed is not None:
            self.on_failed(self, reason)

    def close(self) -> None:
        """Idempotent: leaves its source and retires its counters into the totals."""
        if self._closed:
            return
        self._closed = True
        self._stop_replay()
        if self._source is not None:
            self._source.detach(self)
        self._source = None
        dump = self.dump()
        for traffic in self._retire_into:
            traffic.add_subscription(dump)
