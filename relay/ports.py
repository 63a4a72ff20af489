"""The small interfaces through which the relay sees the outside world.

Signaling implements them on top of aiortc sessions; unit tests implement
them with plain objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    payload_type: int
    rtx_ssrc: int
    rtx_payload_type: int | None  # None when RTX was not negotiated

    def send(self, data: bytes) -> bool:
        """Protect and send one RTP/RTCP packet now; False if the session cannot send yet."""

    def backlog(self) -> int:
        """Bytes queued in user space on the way to this viewer."""


class KeyframeSource(Protocol):
    """The ingest side of a publication: where keyframe requests go."""

    def request_keyframe(self) -> None: ...


class Participant(Protocol):
    """A connected client as a room sees it."""

    @property
    def participant_id(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def role(self) -> str: ...

    def close(self, reason: str) -> None:
        """End every session of this participant (asynchronously, idempotent)."""
