"""The small interfaces through which the relay sees the outside world.

Signaling implements them on top of aiortc sessions; unit tests implement
them with plain objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from relay.dump import SessionDump

log = logging.getLogger("cherry.relay")


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """A negotiated codec, independent of any one session's payload type."""

    mime_type: str  # e.g. "video/VP8"
    clock_rate: int
    channels: int | None = None
    fmtp: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        return self.mime_type.split("/", 1)[0].lower()


class RtpSink(Protocol):
    """One outgoing stream of a playback session, already negotiated."""

    ssrc: int
    rtx_ssrc: int

    def payload_types(self, mime_type: str) -> tuple[int, int | None] | None:
        """(payload type, RTX payload type or None) negotiated for a codec; None if not negotiated."""

    def send_rtp(self, second: int, seq: int, ts: int, payload: bytes, sent: float) -> bool:
        """Send one packet now (``second``: marker bit and payload type); False if it cannot send yet."""

    def send_rtx(self, second: int, seq: int, ts: int, original_seq: int, payload: bytes, sent: float) -> bool:
        """Send a retransmission (RFC 4588) on the stream's RTX SSRC."""

    def backlog(self) -> int:
        """Bytes queued in user space on the way to this viewer."""


class FeedbackReport(Protocol):
    """One RTCP report block about a stream we send (RFC 3550 6.4.1)."""

    @property
    def fraction_lost(self) -> int: ...

    @property
    def jitter(self) -> int: ...

    @property
    def lsr(self) -> int: ...

    @property
    def dlsr(self) -> int: ...


class KeyframeSource(Protocol):
    """The ingest side of a publication: where keyframe requests go."""

    def request_keyframe(self) -> None: ...


class Member(Protocol):
    """A media session as its room (and room observers) see it."""

    @property
    def session_id(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def close(self, reason: str) -> None: ...

    def dump(self) -> SessionDump: ...


class RoomObserver(Protocol):
    """Told about room lifecycle changes (room events, webhooks, metrics). Must not block."""

    def room_opened(self, room: object) -> None: ...

    def room_closed(self, room: object, reason: str) -> None: ...

    def host_changed(self, room: object, live: bool) -> None: ...

    def participant_joined(self, room: object, member: Member) -> None: ...

    def participant_left(self, room: object, member: Member) -> None: ...

    def layout_changed(self, room: object) -> None: ...


class Observers:
    """Fans each notification out to several observers; one failing never stops the others."""

    def __init__(self) -> None:
        self._observers: list[object] = []

    def add(self, observer: object) -> None:
        """Add an observer implementing any subset of :class:`RoomObserver`'s methods."""
        self._observers.append(observer)

    def _each(self, method: str, *args: object) -> None:
        for observer in self._observers:
            handler = getattr(observer, method, None)
            if handler is None:
                continue  # observers may implement only what they care about
            try:
                handler(*args)
            except Exception:
                log.exception("room observer %r failed in %s", observer, method)

    def room_opened(self, room: object) -> None:
        self._each("room_opened", room)

    def room_closed(self, room: object, reason: str) -> None:
        self._each("room_closed", room, reason)

    def host_changed(self, room: object, live: bool) -> None:
        self._each("host_changed", room, live)

    def participant_joined(self, room: object, member: Member) -> None:
        self._each("participant_joined", room, member)

    def participant_left(self, room: object, member: Member) -> None:
        self._each("participant_left", room, member)

    def layout_changed(self, room: object) -> None:
        self._each("layout_changed", room)
