"""Plain stand-ins for the relay's ports (pure-logic tests only)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from relay.dump import SessionDump
from relay.participant import Notice


@dataclass
class FakeSink:
    ssrc: int = 0x11111111
    payload_type: int = 96
    rtx_ssrc: int = 0x22222222
    rtx_payload_type: int | None = None
    connected: bool = True
    codecs: tuple[str, ...] = ("video/vp8", "audio/opus", "video/h264")
    queued: int = 0
    sent: list[bytes] = field(default_factory=list)

    def send_rtp(self, second: int, seq: int, ts: int, payload: bytes, sent: float) -> bool:
        if not self.connected:
            return False
        self.sent.append(struct.pack("!BBHII", 0x80, second, seq, ts, self.ssrc) + payload)
        return True

    def send_rtx(self, second: int, seq: int, ts: int, original_seq: int, payload: bytes, sent: float) -> bool:
        if not self.connected:
            return False
        self.sent.append(struct.pack("!BBHIIH", 0x80, second, seq, ts, self.rtx_ssrc, original_seq) + payload)
        return True

    def payload_types(self, mime_type: str) -> tuple[int, int | None] | None:
        if mime_type.lower() not in self.codecs:
            return None
        offset = self.codecs.index(mime_type.lower())
        return self.payload_type + 2 * offset, (self.rtx_payload_type + 2 * offset if self.rtx_payload_type else None)

    def backlog(self) -> int:
        return self.queued

    def headers(self) -> list[tuple[int, int, int, int, int]]:
        """(payload type, marker, seq, timestamp, ssrc) of every packet sent."""
        out = []
        for data in self.sent:
            b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
            out.append((b1 & 0x7F, b1 >> 7, seq, ts, ssrc))
        return out


@dataclass
class FakeUpstream:
    requests: int = 0

    def request_keyframe(self) -> None:
        self.requests += 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


VP8_KEY = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A])  # S=1, PID=0, P=0
VP8_DELTA = bytes([0x10, 0x01, 0x00])  # S=1, P=1
VP8_CONT = bytes([0x00, 0x01, 0x00])  # continuation packet of a frame


class FakeMember:
    """A media session as a room sees it (relay.ports.Member)."""

    def __init__(self, identity: str, session_id: str, role: str = "viewer") -> None:
        self.identity = identity
        self.session_id = session_id
        self.role = role
        self.closed = False
        self.reasons: list[str] = []
        self.room: Any = None  # set by attach(): close() then leaves it as a real session does

    def attach(self, room: Any) -> FakeMember:
        self.room = room
        room.attach_session(self)
        return self

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.reasons.append(reason)
        self.closed = True
        if self.room is not None:
            self.room.release_host(self)
            self.room.release_guest(self)
            self.room.remove_viewer(self)
            self.room.detach_session(self)

    def dump(self) -> SessionDump:
        return SessionDump(self.session_id, "fake", self.identity, self.role, "connected", 0.0, None)


class FakeSocket:
    """A room socket as the relay sees it (relay.participant.RoomSocket)."""

    def __init__(self, role: str = "viewer") -> None:
        self.role = role
        self.notices: list[Notice] = []
        self.ended: list[tuple[str, str]] = []

    def notify(self, notice: Notice) -> None:
        self.notices.append(notice)

    def end(self, why: str, reason: str) -> None:
        self.ended.append((why, reason))
