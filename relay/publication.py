"""Publication: one incoming track, fanned out to its packet sinks (viewer subscriptions, pipes).

The input is whatever the network and the host's encoder produce; what the sinks see is one clean
stream: duplicates (retransmissions that raced their originals, RTX probes) dropped once here,
padding-only packets taken out of the sequence space so nobody waits for what carries no media, a
new *epoch* whenever the source restarts (SSRC change, or a sequence jump no loss explains), and a
keyframe flag only on the first packet of a keyframe (per access unit for H264).

Sinks are kept in a tuple that is replaced, never mutated, so the fan-out loop can run while viewers
join or leave; a sink that raises is detached and told, and the loop goes on.

A video publication also keeps its *keyframe cache*: the packets from its last keyframe on (``gop``,
a new list at every keyframe, appended to by reference; dropped when it outgrows its byte bound or
the stream restarts). A new subscription starts from it instead of asking the host for a keyframe:
see :meth:`Publication.keyframe_cache`. The room's snapshot (its cover) reads the same cache's keyframe
through :meth:`Publication.last_keyframe`, which changes nothing.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from relay.clock import NTP_UNIT, ClockMap, HostClock
from relay.dump import PublicationDump, Traffic
from relay.packet import MediaPacket, PacketCache
from relay.ports import CodecInfo, KeyframeSource
from relay.rtp import h264_packet_info, keyframe_detector
from relay.stats import DelaySampler

log = logging.getLogger("cherry.relay.publication")

# RFC 3550 appendix A.1: a jump wider than this is a restart, not loss or reordering.
MAX_DROPOUT = 3000
PADDING_MEMORY = 512  # padding sequence numbers remembered, to place late packets correctly
# One numbering for every cached keyframe of the process: a snapshot taker that remembers the last number it
# decoded never mistakes a new publication's keyframe for the old one (an object id could be reused).
_KEYFRAME_SERIALS = itertools.count(1)


class PacketSink(Protocol):
    """Something a publication forwards to: a viewer's subscription, or a pipe to another worker."""

    def forward(self, packet: MediaPacket) -> None: ...

    def fail(self, reason: str) -> None:
        """Forwarding raised: the sink was detached and must stop (and say why, once)."""


@dataclass(slots=True)
class PublicationStats:
    packets_in: int = 0
    bytes_in: int = 0
    keyframes_in: int = 0
    keyframe_requests: int = 0
    duplicates: int = 0
    padding: int = 0
    epochs: int = 0
    stale: int = 0  # stragglers of a restarted stream, and unconfirmed jumps
    sink_failures: int = 0
    # Keyframe cache: joiners started from it (of which from a cache past its age), joiners that found
    # no cache because the GOP outgrew its byte bound, or because no keyframe came yet (a new or restarted
    # stream); and GOPs that outgrew the bound.
    cache_starts: int = 0
    cache_stale_starts: int = 0
    cache_fallbacks: int = 0
    cache_empty: int = 0
    gops_overflowed: int = 0
    sender_reports: int = 0  # RTCP sender reports from the host (its clock mapping, for lip sync)


class Publication:
    def __init__(
        self,
        kind: str,
        codec: CodecInfo,
        upstream: KeyframeSource,
        *,
        cache_size: int,
        keyframe_interval: float,
        owner: str = "",
        retire_into: Sequence[Traffic] = (),
        delay_sampler: DelaySampler | None = None,
        clock: Callable[[], float] = time.monotonic,
        keyframe_cache_bytes: int = 0,
        keyframe_cache_max_age: float = 2.0,
        fed_by_pipe: bool = False,
        host_clock: HostClock | None = None,
    ) -> None:
        self.kind = kind
        # The host's RTP-to-NTP mapping from its latest sender report (None before the first), and the clock
        # offset it shares with the host's other streams.
        self.clock_map: ClockMap | None = None
        self._host_clock = host_clock or HostClock()
        self.codec = codec
        self.owner = owner
        self.upstream = upstream
        self.cache = PacketCache(cache_size)
        self.stats = PublicationStats()
        self._h264 = codec.mime_type.lower() == "video/h264"
        self._is_keyframe = keyframe_detector(codec.mime_type)
        self._keyframe_interval = keyframe_interval
        self._clock = clock
        self._delay_sampler = delay_sampler
        self._retire_into = tuple(retire_into)
        self._sinks: tuple[PacketSink, ...] = ()
        self._keyframe_wanted = False
        self._last_request = -1e9
        # Input stream state: SSRC, highest sequence number, and the padding taken out since the epoch began.
        self._ssrc: int | None = None
        self._previous_ssrc: int | None = None
        self._probation = -1  # the sequence number that would confirm a jump as a restart
        self._held: tuple[int, int, bool, bytes, float] | None = None
        self._max_seq = 0
        self._skew = 0
        self._padding: deque[int] = deque(maxlen=PADDING_MEMORY)
        self.epoch = 0
        # H264 access unit state: its timestamp, whether its keyframe start was flagged, slices seen.
        self._au_ts = -1
        self._au_flagged = False
        self._au_vcl = False
        # Keyframe cache (video only; 0 bytes: off): the packets since the last keyframe, their payload bytes
        # and the keyframe's arrival; None while there is none (no keyframe yet, or the GOP outgrew the bound).
        self._gop_limit = keyframe_cache_bytes if kind == "video" else 0
        self._gop_max_age = keyframe_cache_max_age
        self.gop: list[MediaPacket] | None = None
        self._gop_bytes = 0
        self._gop_at = 0.0
        self._gop_serial = 0
        self._gop_overflowed = False
        # An edge's copy of an origin's track: the pipe's origin end starts from the origin's cache (or asks
        # the host itself), so a joiner here never needs to ask for the first keyframe.
        self._fed_by_pipe = fed_by_pipe
        self.closed = False

    @property
    def sinks(self) -> tuple[PacketSink, ...]:
        return self._sinks

    def attach(self, sink: PacketSink) -> None:
        if sink not in self._sinks and not self.closed:
            self._sinks = (*self._sinks, sink)

    def detach(self, sink: PacketSink) -> None:
        self._sinks = tuple(s for s in self._sinks if s is not sink)

    def on_sender_report(self, ntp: int, rtp_timestamp: int, arrival: float) -> None:
        """The host's RTCP sender report: NTP time ``ntp`` (64-bit) is RTP time ``rtp_timestamp``."""
        self.stats.sender_reports += 1
        self.clock_map = ClockMap(self._host_clock.to_gateway(ntp / NTP_UNIT), rtp_timestamp & 0xFFFFFFFF, arrival)

    # -- hot path -------------------------------------------------------------------------------

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, marker: bool, payload: bytes, arrival: float) -> None:
        """Called once per incoming packet, before any decoder. ``payload`` empty: padding only."""
        d = (seq - self._max_seq) & 0xFFFF
        if ssrc != self._ssrc:
            if ssrc == self._previous_ssrc:
                self.stats.stale += 1  # a straggler of the stream that restarted: it must not restart it back
                return
            self._new_epoch(ssrc, seq)
            d = 1
        elif MAX_DROPOUT < d < 0x10000 - MAX_DROPOUT:
            # RFC 3550 A.1: a jump is a restart only if the next packet follows it; a lone stray is dropped.
            if seq != self._probation:
                self._probation = (seq + 1) & 0xFFFF
                self._held = (seq, timestamp, marker, payload, arrival)
                self.stats.stale += 1
                return
            held = self._held
            self._new_epoch(ssrc, seq if held is None else held[0])
            if held is not None:
                self._held = None
                self.stats.stale -= 1
                self.on_rtp(ssrc, *held)
            d = (seq - self._max_seq) & 0xFFFF
        newer = 0 < d < 0x8000
        if newer:
            self._max_seq = seq
        if not payload:  # padding: no media, and no sequence number a viewer should wait for
            self.stats.padding += 1
            if newer:
                self._skew += 1
                self._padding.append(seq)
            return
        skew = self._skew if newer or d == 0 else self._skew_before(seq)
        seq = (seq - skew) & 0xFFFF
        cached = self.cache.get(seq)
        if cached is not None and cached.epoch == self.epoch:
            # An RTX that raced its original or a resend we already had (or, from a broken sender, another
            # packet under a number already used): either way viewers must not get the number twice.
            self.stats.duplicates += 1
            return
        keyframe = self._h264_keyframe(timestamp, payload) if self._h264 else self._is_keyframe(payload)
        packet = MediaPacket(seq, timestamp, marker, payload, keyframe, arrival, self.epoch)
        stats = self.stats
        size = len(payload)
        stats.packets_in += 1
        stats.bytes_in += size
        self.cache.put(packet)
        gop = self.gop
        if keyframe and self.kind == "video":
            stats.keyframes_in += 1
            self._keyframe_wanted = False
            if self._gop_limit:
                self.gop = [packet]
                self._gop_bytes = size
                self._gop_at = arrival
                self._gop_serial = next(_KEYFRAME_SERIALS)
                self._gop_overflowed = False
        elif gop is not None:
            self._gop_bytes += size
            if self._gop_bytes > self._gop_limit:
                self._drop_gop(overflowed=True)
            else:
                gop.append(packet)
        sinks = self._sinks
        for sink in sinks:
            try:
                sink.forward(packet)
            except Exception as exc:  # one viewer's failure costs that viewer its stream, nobody else
                self._sink_failed(sink, exc)
        # Sample packet-in to last-packet-out delay on one packet in 16.
        if self._delay_sampler is not None and not stats.packets_in & 15 and sinks:
            self._delay_sampler.add(self._clock() - arrival)
        if self._keyframe_wanted:
            self._maybe_request(arrival)

    def set_codec(self, codec: CodecInfo) -> None:
        """The stream now carries another codec (an edge's pipe slot switched source): a new epoch, so every
        sink re-anchors at its next keyframe with that codec's payload type."""
        if codec == self.codec:
            return
        self.codec = codec
        self._h264 = codec.mime_type.lower() == "video/h264"
        self._is_keyframe = keyframe_detector(codec.mime_type)
        self.epoch += 1
        self.stats.epochs += 1
        self.cache.clear()
        self._drop_gop()
        self.request_keyframe()

    # -- stream continuity ----------------------------------------------------------------------

    def _new_epoch(self, ssrc: int, seq: int) -> None:
        restarted = self._ssrc is not None
        if ssrc != self._ssrc:
            self._previous_ssrc = self._ssrc
        self._ssrc = ssrc
        self._probation = -1
        self._held = None
        self._max_seq = (seq - 1) & 0xFFFF
        self._skew = 0
        self._padding.clear()
        if restarted:
            self.epoch += 1
            self.stats.epochs += 1
            self.cache.clear()
            self._drop_gop()
            log.info("publication=%s %s stream restarted (ssrc %08x, seq %d): new epoch %d", self.owner,
                     self.kind, ssrc, seq, self.epoch)
            self.request_keyframe()

    def _skew_before(self, seq: int) -> int:
        """The padding taken out before a late (reordered) packet: padding newer than it does not count."""
        later = sum(1 for p in self._padding if 0 < (p - seq) & 0xFFFF < 0x8000)
        return self._skew - later

    def _h264_keyframe(self, timestamp: int, payload: bytes) -> bool:
        """Flag only the first packet of an access unit that starts a keyframe (SPS or IDR before any slice)."""
        if timestamp != self._au_ts:
            self._au_ts = timestamp
            self._au_flagged = self._au_vcl = False
        starts, slices = h264_packet_info(payload)
        flag = starts and not self._au_flagged and not self._au_vcl
        if flag:
            self._au_flagged = True
        if slices:
            self._au_vcl = True
        return flag

    # -- sinks and keyframes --------------------------------------------------------------------

    def _drop_gop(self, overflowed: bool = False) -> None:
        self.gop = None
        self._gop_bytes = 0
        self._gop_overflowed = overflowed
        if overflowed:
            self.stats.gops_overflowed += 1

    def keyframe_cache(self, now: float) -> list[MediaPacket] | None:
        """What a new subscription starts from: the packets since the last keyframe (the live list, which
        grows as packets arrive and is replaced at the next keyframe), or None: then it waits for the next
        keyframe, which this asks the host for (today's path).

        A cache past its age is still served: every frame after its keyframe references only frames sent
        since, so it decodes cleanly; age only costs catch-up time, which the byte bound bounds. Its joiner
        asks for one refreshing keyframe, through the host's throttle, so a burst of joiners costs one
        request and the next ones start from a short cache.
        """
        if self.kind != "video" or self.closed:
            return None
        gop = self.gop
        stats = self.stats
        if gop is None:
            if self._gop_limit:
                if self._gop_overflowed:
                    stats.cache_fallbacks += 1
                else:
                    stats.cache_empty += 1
                    if self._fed_by_pipe and not stats.keyframes_in:
                        return None  # the pipe's start brings it
            self.request_keyframe()
            return None
        stats.cache_starts += 1
        if now - self._gop_at > self._gop_max_age:
            stats.cache_stale_starts += 1
            if not self._keyframe_wanted:  # a refresh already asked for is retried by the throttle itself
                self.request_keyframe()
        return gop

    def last_keyframe(self) -> tuple[int, list[bytes]] | None:
        """The cached keyframe for a snapshot: (its number, unique in the process, so an unchanged keyframe is
        not decoded twice; the payloads of its access unit in sequence order), or None while there is no cached
        keyframe or its last packet (the marker) has not arrived in sequence.

        A read only: unlike :meth:`keyframe_cache` it is no joiner's start and asks the host for nothing, so
        however often snapshots are taken the host's keyframes stay what its viewers need.
        """
        gop = self.gop
        if gop is None or self.closed:
            return None
        first = gop[0]
        # Arrival order may be off by reordering: place each packet of the keyframe's timestamp by its offset.
        unit: dict[int, MediaPacket] = {}
        for packet in gop:
            if packet.timestamp == first.timestamp:
                unit[(packet.seq - first.seq) & 0xFFFF] = packet
        ordered = [unit.get(i) for i in range(len(unit))]
        last = ordered[-1]
        if last is None or not last.marker or any(p is None or p.marker for p in ordered[:-1]):
            return None  # a gap, a packet placed before the first, or the frame not complete yet
        return self._gop_serial, [p.payload for p in ordered if p is not None]

    def cache_state(self) -> tuple[int, int, float | None]:
        """(packets, payload bytes, age in seconds or None) of the keyframe cache now."""
        gop = self.gop
        if gop is None:
            return 0, 0, None
        return len(gop), self._gop_bytes, self._clock() - self._gop_at

    def _sink_failed(self, sink: PacketSink, exc: Exception) -> None:
        self.stats.sink_failures += 1
        self.detach(sink)
        try:
            sink.fail(f"forwarding failed: {exc!r}")
        except Exception:
            log.exception("publication=%s closing a failed sink failed too", self.owner)

    def request_keyframe(self) -> None:
        """Ask the host for a keyframe, at most once per keyframe interval.

        A request inside the interval is remembered and sent as soon as the interval has passed
        (checked as packets arrive), so a burst of joining viewers costs the host one keyframe,
        and a lost request is retried.
        """
        if self.kind != "video" or self.closed:
            return
        self._keyframe_wanted = True
        self._maybe_request(self._clock())

    def _maybe_request(self, now: float) -> None:
        if now - self._last_request >= self._keyframe_interval:
            self._last_request = now
            self.stats.keyframe_requests += 1
            self.upstream.request_keyframe()

    def dump(self) -> PublicationDump:
        s = self.stats
        packets, size, age = self.cache_state()
        return PublicationDump(self.kind, self.codec.mime_type, self.owner, s.packets_in, s.bytes_in,
                               s.keyframes_in, s.keyframe_requests, s.duplicates, s.epochs, s.sink_failures,
                               len(self._sinks), s.cache_starts, s.cache_stale_starts, s.cache_fallbacks,
                               s.cache_empty, s.gops_overflowed, packets, size,
                               None if age is None else round(age * 1000), s.sender_reports)

    def close(self) -> None:
        """Idempotent: sinks are let go (they wait for a new source) and the counters retire."""
        if self.closed:
            return
        self.closed = True
        self._sinks = ()
        self.cache.clear()
        dump = self.dump()
        self._drop_gop()
        for traffic in self._retire_into:
            traffic.add_publication(dump)
