"""Lip sync from the host's own clocks: RTP time to NTP time as the host's sender reports state it.

A player lines audio up with video through each stream's RTCP sender reports (this NTP instant is that
RTP timestamp). Taken from the wall clock at forwarding time, the mapping would carry each packet's
network and relay delay, and a host whose audio and video clocks differ would play out of sync. So a
publication keeps its host's latest report, and a subscription states the same mapping shifted by its own
timestamp offset. One host's streams share one :class:`HostClock`: the host's NTP clock is moved onto the
gateway's wall clock by one fixed offset, the same for its audio and video (their relative timing is the
host's), which keeps the NTP timeline of a viewer's slot continuous when it switches to another host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from relay.rtp import NTP_EPOCH_OFFSET

NTP_UNIT = 1 << 32  # 64-bit NTP timestamps: seconds in the high 32 bits


def wall_ntp_seconds() -> float:
    return time.time() + NTP_EPOCH_OFFSET


class HostClock:
    """The offset from one host's NTP clock to the gateway's, fixed at its first sender report."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset: float | None = None

    def to_gateway(self, host_ntp_seconds: float) -> float:
        if self.offset is None:
            self.offset = wall_ntp_seconds() - host_ntp_seconds
        return host_ntp_seconds + self.offset


@dataclass(frozen=True, slots=True)
class ClockMap:
    """At ``arrival`` (monotonic clock) the host's stream was at RTP time ``rtp`` for NTP time ``ntp``
    (seconds, on the gateway's clock)."""

    ntp: float
    rtp: int
    arrival: float

    def at(self, now: float, clock_rate: int, ts_offset: int) -> tuple[int, int]:
        """The mapping extrapolated to ``now`` for a stream whose timestamps are the host's plus ``ts_offset``:
        a 64-bit NTP timestamp and the RTP timestamp it corresponds to."""
        elapsed = now - self.arrival
        ntp = int((self.ntp + elapsed) * NTP_UNIT) & 0xFFFFFFFFFFFFFFFF
        return ntp, (self.rtp + ts_offset + round(elapsed * clock_rate)) & 0xFFFFFFFF
