"""Participant: one identity in one room, with the sessions and room sockets it holds.

A room indexes its participants by identity, so kicking, banning or asking who someone is never
scans every session of the process. The role a participant acts with is the highest role among the
grants it presented, except that a guest grant counts only while the room says the identity is
on mic: a grant a room gives ends when the role ends, whatever the token's lifetime.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

ROLES = ("viewer", "guest", "host", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token lets its holder be in one room (signaling verifies; the relay decides)."""

    room: str
    identity: str
    role: str
    display_name: str = ""
    # "pk": a PK partner's view of this room, valid only while the link lasts; "costream": the host's or a
    # guest's monitor of the co-stream slots (WHEP ``?monitor=costream``)
    scope: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the gateway did to a participant that its pages should say (never a silent track)."""

    kind: str  # "session_closed"
    reason: str
    session_id: str = ""
    endpoint: str = ""  # "whip" or "whep"


class RoomSocket(Protocol):
    """A room-event socket as the relay sees it: it can be told things, and ended."""

    @property
    def role(self) -> str: ...

    def notify(self, notice: Notice) -> None: ...

    def end(self, why: str, reason: str) -> None:
        """Close the socket; ``why`` is "kicked", "banned" or "room_closed"."""


class SessionHandle(Protocol):
    """A media session as its participant sees it."""

    @property
    def session_id(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def close(self, reason: str) -> None: ...


class Participant:
    __slots__ = ("identity", "room_name", "display_name", "sessions", "sockets")

    def __init__(self, room_name: str, identity: str, display_name: str = "") -> None:
        self.room_name = room_name
        self.identity = identity
        self.display_name = display_name or identity
        self.sessions: dict[str, SessionHandle] = {}
        self.sockets: set[RoomSocket] = set()

    @property
    def present(self) -> bool:
        return bool(self.sessions or self.sockets)

    def granted_role(self) -> str:
        """The highest role among the grants of its live sessions and sockets."""
        roles = [s.role for s in self.sessions.values()] + [s.role for s in self.sockets]
        ranked = [role for role in roles if role in RANK]
        if ranked:
            return max(ranked, key=RANK.__getitem__)
        return roles[0] if roles else "viewer"  # a pipe to an edge worker: a role outside the ranks

    def tag(self) -> str:
        return f"room={self.room_name} participant={self.identity}"

    def notify(self, notice: Notice) -> None:
        for socket in list(self.sockets):
            socket.notify(notice)

    def end_sessions(self, reason: str) -> int:
        sessions = list(self.sessions.values())
        for session in sessions:
            session.close(reason)
        return len(sessions)

    def end_sockets(self, why: str, reason: str) -> int:
        sockets = list(self.sockets)
        for socket in sockets:
            socket.end(why, reason)
        return len(sockets)

    def __iter__(self) -> Iterator[SessionHandle]:
        return iter(list(self.sessions.values()))
