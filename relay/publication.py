"""Publication: one incoming track, fanned out to its subscriptions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.packet import MediaPacket, PacketCache
from relay.ports import CodecInfo, KeyframeSource
from relay.rtp import keyframe_detector
from relay.stats import DelaySampler

if TYPE_CHECKING:
    from relay.subscription import Subscription

log = logging.getLogger("cherry.relay.publication")


@dataclass(slots=True)
class PublicationStats:
    packets_in: int = 0
    bytes_in: int = 0
    keyframes_in: int = 0
    keyframe_requests: int = 0
    sink_failures: int = 0


class Publication:
    """The packet tap of one host track: keyframe state, NACK cache, fan-out.

    Subscriptions are kept in a tuple that is replaced, never mutated, so the
    fan-out loop can run while viewers join or leave.
    """

    def __init__(
        self,
        kind: str,
        codec: CodecInfo,
        upstream: KeyframeSource,
        *,
        cache_size: int,
        keyframe_interval: float,
        delay_sampler: DelaySampler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = kind
        self.codec = codec
        self.cache = PacketCache(cache_size)
        self.stats = PublicationStats()
        self._upstream = upstream
        self._is_keyframe = keyframe_detector(codec.mime_type)
        self._keyframe_interval = keyframe_interval
        self._clock = clock
        self._delay_sampler = delay_sampler
        self._subscriptions: tuple[Subscription, ...] = ()
        self._keyframe_wanted = False
        self._last_request = -1e9
        self.closed = False

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._subscriptions

    def attach(self, subscription: Subscription) -> None:
        if subscription not in self._subscriptions:
            self._subscriptions = (*self._subscriptions, subscription)

    def detach(self, subscription: Subscription) -> None:
        self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def on_rtp(self, ssrc: int, seq: int, timestamp: int, marker: bool, payload: bytes, arrival: float) -> None:
        """Hot path: called once per incoming packet, before any decoder."""
        if not payload:
            return
        keyframe = self._is_keyframe(payload)
        packet = MediaPacket(seq, timestamp, marker, payload, keyframe, arrival)
        stats = self.stats
        stats.packets_in += 1
        stats.bytes_in += len(payload)
        self.cache.put(packet)
        if keyframe and self.kind == "video":
            stats.keyframes_in += 1
            self._keyframe_wanted = False
        subscriptions = self._subscriptions
        for subscription in subscriptions:
            try:
                subscription.forward(packet)
            except Exception as exc:  # one viewer's failure costs that viewer its stream, nobody else
                self._sink_failed(subscription, exc)
        # Sample packet-in to last-packet-out delay on one packet in 16.
        if self._delay_sampler is not None and not stats.packets_in & 15 and subscriptions:
            self._delay_sampler.add(self._clock() - arrival)
        if self._keyframe_wanted:
            self._maybe_request(arrival)

    def _sink_failed(self, subscription: Subscription, exc: Exception) -> None:
        self.stats.sink_failures += 1
        self.detach(subscription)
        try:
            subscription.fail(f"forwarding failed: {exc!r}")
        except Exception:
            log.exception("closing a failed subscription failed too")

    def request_keyframe(self) -> None:
        """Ask the host for a keyframe, at most once per keyframe interval.

        A request inside the interval is remembered and sent as soon as the
        interval has passed (checked as packets arrive), so a burst of joining
        viewers costs the host one keyframe, and a lost request is retried.
        """
        if self.kind != "video" or self.closed:
            return
        self._keyframe_wanted = True
        self._maybe_request(self._clock())

    def _maybe_request(self, now: float) -> None:
        if now - self._last_request >= self._keyframe_interval:
            self._last_request = now
            self.stats.keyframe_requests += 1
            self._upstream.request_keyframe()

    def close(self) -> None:
        self.closed = True
        self._subscriptions = ()
        self.cache.clear()
