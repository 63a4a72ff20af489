"""The unit of forwarding and the per-publication packet cache."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class MediaPacket:
    """One incoming RTP packet as forwarding sees it (header fields + encoded payload)."""

    seq: int
    timestamp: int
    marker: bool
    payload: bytes
    keyframe: bool  # first packet of a keyframe (always True for audio)
    arrival: float  # monotonic seconds
    epoch: int = 0  # the publication's stream epoch: a restart of the source starts a new one


# A slot is found again by its 16-bit sequence number, so a packet from the previous wrap must have been
# overwritten before its number comes round: a ring as long as the sequence space never overwrites it
# (every packet after the first wrap looked like a duplicate), and one of 2^15 only when one particular
# packet in between arrived. 2^13 slots (8 s of 1 Mbps video, far past any NACK) need 7 in a row lost.
MAX_CACHE_SLOTS = 1 << 13


class PacketCache:
    """Ring of the last ``size`` packets by sequence number (at most :data:`MAX_CACHE_SLOTS`), for NACK answers."""

    __slots__ = ("_mask", "_slots")

    def __init__(self, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("packet cache size must be a power of two")
        size = min(size, MAX_CACHE_SLOTS)
        self._mask = size - 1
        self._slots: list[MediaPacket | None] = [None] * size

    def put(self, packet: MediaPacket) -> None:
        self._slots[packet.seq & self._mask] = packet

    def get(self, seq: int) -> MediaPacket | None:
        packet = self._slots[seq & self._mask]
        if packet is not None and packet.seq == seq:
            return packet
        return None

    def clear(self) -> None:
        self._slots = [None] * len(self._slots)
