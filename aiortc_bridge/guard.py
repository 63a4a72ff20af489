"""Datagrams and packets from the network never reach aiortc or aioice in a shape that can hurt them.

Measured failures this closes (aiortc 1.16 / aioice 0.13):

* a zero-length datagram makes ``RTCDtlsTransport._recv_next`` raise on ``data[0]``, which ends
  the transport (and under uvloop the UDP socket): one empty datagram from anywhere ended a session;
* aioice's ``StunProtocol.datagram_received`` tries a STUN parse on every datagram (an exception per
  RTP packet), and a STUN attribute of the wrong length raises ``struct.error`` into the event
  loop's exception handler: a traceback per packet;
* any exception while aiortc handles one RTP or RTCP packet (a parser corner, a handler of ours)
  escapes the DTLS receive loop and ends the transport.

So every datagram on a media port is classified by its first byte (RFC 7983) and bounded in size
before anything parses it; what does not fit is dropped and counted, and each packet handler runs
inside a guard that drops the packet instead of the session. Drops are logged at most once per
minute per reason, with the count since the last line, never once per packet.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aioice import stun
from aioice.ice import StunProtocol
from aioice.turn import TurnClientMixin
from aiortc import rtp as aiortc_rtp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpPacket, RtpPacket

log = logging.getLogger("cherry.aiortc.guard")

# The largest datagram a media port takes: a 1500-byte packet, its RTX form and SRTP's trailer, with margin.
MAX_DATAGRAM = 1600
MIN_RTP = 12  # fixed RTP header; SRTCP is longer than its 8-byte RTCP header anyway
MIN_DTLS = 13  # DTLS record header
MIN_STUN = 20  # STUN header


class DropCounter:
    """Counts dropped input by reason; logs each reason at most once per ``interval`` seconds."""

    def __init__(self, what: str, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.counts: Counter[str] = Counter()
        self._interval = interval
        self._clock = clock
        self._logged: dict[str, tuple[float, int]] = {}

    def drop(self, reason: str, detail: object = None) -> None:
        counts = self.counts
        counts[reason] += 1
        now = self._clock()
        last = self._logged.get(reason)
        if last is None or now - last[0] >= self._interval:
            since = counts[reason] - (last[1] if last else 0)
            self._logged[reason] = (now, counts[reason])
            log.warning("dropped %d %s (%s) since the last report%s", since, self.what, reason,
                        f": {detail!r}" if detail is not None else "")


DATAGRAMS = DropCounter("datagrams")
PACKETS = DropCounter("packets")


def _classify(data: bytes) -> str | None:
    """None if ``data`` may go on, else the reason to drop it."""
    n = len(data)
    if n == 0:
        return "empty"
    if n > MAX_DATAGRAM:
        return "too_long"
    first = data[0]
    if 127 < first < 192:
        return None if n >= MIN_RTP else "short_rtp"
    if 19 < first < 64:
        return None if n >= MIN_DTLS else "short_dtls"
    if first < 4:
        return None if n >= MIN_STUN else "short_stun"
    return "unknown_protocol"


def _stun_datagram_received(self: StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
    """StunProtocol.datagram_received with a bound and a classification before any parse."""
    if not isinstance(data, bytes):
        DATAGRAMS.drop("not_bytes")
        return
    reason = _classify(data)
    if reason is not None:
        DATAGRAMS.drop(reason)
        return
    if data[0] >= 4:  # DTLS, RTP or RTCP: straight to aiortc, no STUN parse attempt
        component = self.local_candidate.component
        pair = self.receiver._nominated.get(component)
        if pair is not None and (pair.remote_addr[0] != addr[0] or pair.remote_addr[1] != addr[1]):
            # Once ICE chose the peer's address, media from anywhere else is not the peer's (aioice itself
            # would take it, and each forged datagram would cost an SRTP check in the session's loop).
            DATAGRAMS.drop("unexpected_source")
            return
        self.receiver.data_received(data, component)
        return
    try:
        message = stun.parse_message(data)
    except Exception as exc:  # ValueError, struct.error, IndexError on a malformed attribute
        DATAGRAMS.drop("malformed_stun", exc)
        return
    addr = (addr[0], addr[1])
    try:
        if message.message_class in (stun.Class.RESPONSE, stun.Class.ERROR):
            transaction = self.transactions.get(message.transaction_id)
            if transaction is not None:
                transaction.response_received(message, addr)
        elif message.message_class == stun.Class.REQUEST:
            self.receiver.request_received(message, addr, self)
    except Exception as exc:
        DATAGRAMS.drop("stun_handling_failed", exc)


def _guard_turn(original: Callable[..., None]) -> Callable[..., None]:
    def datagram_received(self: Any, data: bytes | str, addr: tuple[str, int]) -> None:
        if not isinstance(data, bytes) or not data or len(data) > 65535:
            DATAGRAMS.drop("bad_turn_datagram")
            return
        try:
            original(self, data, addr)
        except Exception as exc:
            DATAGRAMS.drop("malformed_turn", exc)

    return datagram_received


def _guard_handler(original: Callable[..., Awaitable[None]], what: str) -> Callable[..., Awaitable[None]]:
    async def handle(self: RTCDtlsTransport, *args: Any, **kwargs: Any) -> None:
        try:
            await original(self, *args, **kwargs)
        except Exception as exc:
            PACKETS.drop(what, exc)

    return handle


def unpack_remb_fci(data: bytes) -> tuple[int, list[int]]:
    """aiortc's REMB parser, with a lying SSRC count a ValueError (as aiortc's router expects) instead of
    struct.error, which escaped its RTCP routing."""
    try:
        return _original_unpack_remb_fci(data)
    except struct.error as exc:
        raise ValueError(f"REMB lists more SSRCs than it carries: {exc}") from exc


def _parse_or_value_error(parse: Callable[..., Any], what: str) -> Callable[..., Any]:
    """aiortc drops a packet whose parse raises ValueError; its parsers also raise struct.error and
    IndexError on some malformed input (a truncated header extension, say), which escaped. Counted."""

    def parse_packet(data: bytes, *args: Any) -> Any:
        try:
            return parse(data, *args)
        except ValueError:
            PACKETS.drop(what)
            raise
        except Exception as exc:
            PACKETS.drop(what, exc)
            raise ValueError(f"malformed packet: {exc!r}") from exc

    return parse_packet


_original_unpack_remb_fci = aiortc_rtp.unpack_remb_fci
_installed = False


def install_guards() -> None:
    """Patch aioice's and aiortc's receive paths, once per process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    StunProtocol.datagram_received = _stun_datagram_received  # type: ignore[method-assign,assignment]
    TurnClientMixin.datagram_received = _guard_turn(TurnClientMixin.datagram_received)  # type: ignore[method-assign]
    aiortc_rtp.unpack_remb_fci = unpack_remb_fci
    RtpPacket.parse = staticmethod(_parse_or_value_error(RtpPacket.parse, "malformed_rtp"))  # type: ignore[assignment]
    RtcpPacket.parse = staticmethod(_parse_or_value_error(RtcpPacket.parse, "malformed_rtcp"))  # type: ignore[assignment]
    RTCDtlsTransport._handle_rtp_data = _guard_handler(  # type: ignore[method-assign,assignment]
        RTCDtlsTransport._handle_rtp_data, "rtp_handling_failed")
    RTCDtlsTransport._handle_rtcp_data = _guard_handler(  # type: ignore[method-assign,assignment]
        RTCDtlsTransport._handle_rtcp_data, "rtcp_handling_failed")
