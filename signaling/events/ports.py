"""The small interfaces the room-event concerns depend on (and unit tests implement with plain objects).

Chat, quality, moderation, PK battles and guests on mic each see the sockets of a room only through
:class:`Fanout`, the relay's rooms only through the few room methods they use, and time only through
a :class:`Scheduler`; none of them sees another concern or the hub.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Protocol, Self

from signaling.events.protocol import Message


class Sender(Protocol):
    """A room socket as a concern sees it: who sent a frame, where, acting as what."""

    @property
    def identity(self) -> str: ...

    @property
    def room(self) -> str: ...

    @property
    def name(self) -> str:
        """Display name from the token (empty: show the identity)."""

    @property
    def role(self) -> str:
        """The role it acts with now (a guest token acts as guest only while on mic)."""

    @property
    def granted_role(self) -> str:
        """The role its token grants."""


class Fanout(Protocol):
    """Delivery to the sockets of a room; never awaits a client."""

    def broadcast(self, room: str, message: Message) -> None: ...

    def to_roles(self, room: str, roles: Collection[str], message: Message) -> int:
        """Send to the sockets acting with one of ``roles``; how many got it."""

    def to_identity(self, room: str, identity: str, message: Message) -> int:
        """Send to every socket of ``identity`` in ``room``; how many got it."""

    def send(self, client: Sender, message: Message) -> None: ...

    def disconnect(self, client: Sender, code: int, reason: str) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Timers and the wall clock (``asyncio`` in the gateway, a hand-driven fake in unit tests)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    def now(self) -> float:
        """Seconds since the epoch."""


# -- the relay's rooms, as far as the concerns use them ----------------------------------------------


class HasIdentity(Protocol):
    @property
    def identity(self) -> str: ...


class ModeratedRoom(Protocol):
    def role_of(self, identity: str) -> str | None: ...

    def kick(self, identity: str, reason: str, why: str = "kicked") -> tuple[int, int]: ...

    def ban(self, identity: str, seconds: float, reason: str) -> float: ...

    def unban(self, identity: str, reason: str) -> bool: ...


class StageRoom(Protocol):
    """A room as co-streaming sees it: its host, its guests on mic, its PK link."""

    @property
    def name(self) -> str: ...

    @property
    def live(self) -> bool: ...

    @property
    def host(self) -> HasIdentity | None: ...

    @property
    def pk_partner(self) -> Self | None: ...

    @property
    def guests(self) -> Mapping[str, object]: ...

    @property
    def guest_grants(self) -> Collection[str]: ...

    def link_pk(self, other: Self) -> None: ...

    def unlink_pk(self) -> None: ...

    def grant_guest(self, identity: str) -> None: ...

    def revoke_guest(self, identity: str, reason: str) -> int: ...

    def mute_guest(self, identity: str, kind: str, muted: bool) -> bool: ...


class ModeratedRooms(Protocol):
    def get(self, name: str) -> ModeratedRoom | None: ...


class StageRooms(Protocol):
    @property
    def max_guests(self) -> int: ...

    def get(self, name: str) -> StageRoom | None: ...


class Minter(Protocol):
    """Mints the grants co-streaming hands out (signaling.auth.TokenService)."""

    def mint(self, room: str, role: str, identity: str | None = None, ttl: int | None = None,
             scope: str = "") -> str: ...
