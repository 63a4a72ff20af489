"""The room-event bus: where a room's client frames are decided, and how its events reach every socket.

One worker decides each room (its *owner*): it runs every client frame of the room through the
concerns, so rate limits, mutes, scores and PK results are decided once. With one worker that is
this process, and :class:`LocalBus` is all there is: frames are decided where they arrive and events
go straight to the room's sockets (``Channels``), as they always did. ``cluster.events_bus`` is the
same port across workers: frames from a socket elsewhere are forwarded to the owner, and the owner's
events reach every worker with sockets in the room through a sequenced stream.

The hub talks to a :class:`RoomBus`; the bus calls back into the hub through :class:`BusHost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from signaling.events.ports import Fanout, ModeratedRooms
from signaling.events.protocol import Message
from signaling.events.state import RoomState

if TYPE_CHECKING:
    from relay.room import Rooms
    from signaling.events.client import Client
    from signaling.events.fanout import Channels
    from signaling.events.pk_routes import PkTransport


@dataclass(frozen=True, slots=True)
class Delivery:
    """Who in a room one event is for: everyone, some roles, one identity's sockets, or one socket."""

    kind: str  # "all", "roles", "identity", "socket" (send ``message``) or "cut" (close the socket)
    message: Message = field(default_factory=dict)
    roles: tuple[str, ...] = ()
    identity: str = ""
    socket: str = ""  # a socket's cluster-wide reference (``RemoteSender.ref``)
    code: int = 0  # "cut": the close code and reason
    reason: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"k": self.kind}
        if self.message:
            wire["m"] = self.message
        if self.roles:
            wire["r"] = list(self.roles)
        if self.identity:
            wire["i"] = self.identity
        if self.socket:
            wire["s"] = self.socket
        if self.kind == "cut":
            wire["c"], wire["why"] = self.code, self.reason
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Delivery:
        return cls(str(wire["k"]), dict(wire.get("m") or {}), tuple(wire.get("r") or ()), str(wire.get("i", "")),
                   str(wire.get("s", "")), int(wire.get("c", 0)), str(wire.get("why", "")))


class RemoteSender:
    """A socket on another worker, as the room's owner sees it: a ``Sender`` the concerns can answer.

    Its acting role is the owner's to say (guest grants live at the owner), so ``role`` asks the bus;
    ``acting`` is what the socket's own worker said, used where the deciding worker holds no room.
    """

    __slots__ = ("ref", "room", "identity", "name", "granted_role", "acting", "worker", "errors", "_role_of")

    def __init__(self, ref: str, room: str, identity: str, granted_role: str, acting: str, worker: str,
                 role_of: Callable[[RemoteSender], str] | None = None, name: str = "") -> None:
        self.ref = ref
        self.name = name
        self.room = room
        self.identity = identity
        self.granted_role = granted_role
        self.acting = acting
        self.worker = worker
        self.errors = 0  # refusals in a row, counted where the frames are decided
        self._role_of = role_of

    @property
    def role(self) -> str:
        return self._role_of(self) if self._role_of is not None else self.acting

    def to_wire(self) -> dict[str, Any]:
        return {"ref": self.ref, "room": self.room, "identity": self.identity, "role": self.granted_role,
                "acting": self.acting, "worker": self.worker, "name": self.name}

    @classmethod
    def from_wire(cls, wire: dict[str, Any], role_of: Callable[[RemoteSender], str] | None = None) -> RemoteSender:
        return cls(str(wire["ref"]), str(wire["room"]), str(wire["identity"]), str(wire["role"]),
                   str(wire.get("acting") or wire["role"]), str(wire["worker"]), role_of, str(wire.get("name") or ""))

    def __repr__(self) -> str:
        return f"RemoteSender({self.ref!r}, room={self.room!r}, identity={self.identity!r})"


class BusHost(Protocol):
    """What a bus needs of the hub it serves."""

    @property
    def rooms(self) -> Rooms:
        """The relay's rooms on this worker."""

    @property
    def channels(self) -> Channels: ...

    @property
    def history(self) -> int:
        """Chat messages a room's state keeps."""

    @property
    def stats(self) -> dict[str, int]:
        """The room-event counters (signaling/events/stats.py): the bus counts its own there too."""

    def decide(self, sender: Any, text: str) -> None:
        """Run a client frame forwarded from another worker (this worker decides its room)."""

    def observed(self, room: str, message: Message, live: bool | None) -> None:
        """A relay change another worker saw in a room decided here (``host``/``layout`` frames)."""

    def room_state(self, room: str) -> RoomState:
        """The room's state as decided here, for a snapshot or a hand-off."""

    def take_over(self, room: str, state: RoomState) -> None:
        """This worker decides the room from now on, starting from ``state``."""

    def step_down(self, room: str) -> None:
        """Another worker decides the room from now on: forget what only the owner keeps."""

    def resync(self, room: str) -> int:
        """The room's state became known here after its sockets here joined: each gets a welcome again (how
        many)."""

    def pk_item(self, item: dict[str, Any]) -> None:
        """A PK message another worker sent this one (a battle decided here, or a room owned here)."""

    def admit(self, room: str, message: Message, by: str) -> bool:
        """Whether a frame another worker's PK battle sends into a room decided here is delivered."""


class RoomBus(Protocol):
    clustered: bool

    def bind(self, host: BusHost) -> Fanout:
        """Serve ``host``; returns the fan-out its concerns send through."""

    def decides(self, room: str) -> bool: ...

    def decided_rooms(self) -> list[str]:
        """Rooms decided here (viewer counts and likes go out for these)."""

    async def prepare(self, room: str) -> None:
        """Before a socket joins ``room`` here: know who decides it, and hold its state if not us."""

    def joined(self, client: Client) -> None: ...

    def left(self, client: Client) -> None: ...

    def forward(self, client: Client, text: str) -> None:
        """A client frame of a room decided elsewhere: to its owner."""

    def observed(self, room: str, message: Message, live: bool | None) -> None:
        """A relay change seen here in a room decided elsewhere: to its owner."""

    def replica(self, room: str) -> RoomState | None:
        """The room's state as this worker holds it (rooms decided elsewhere)."""

    def viewers(self, room: str, local: int) -> int: ...

    def online(self, room: str, local: int) -> int: ...

    def position(self, room: str) -> tuple[int, int]:
        """The room's last event as (epoch, sequence number); (0, 0) without a stream."""

    def release(self, room: str, state: RoomState | None) -> None:
        """The room closed on this worker (``state``: as decided here, when it was)."""

    def moderated(self, rooms: Rooms) -> ModeratedRooms:
        """The rooms as moderation sees them (kicks and bans reach every worker)."""

    def pk_transport(self) -> PkTransport | None:
        """How PK battles reach rooms decided elsewhere (None: every room is decided here)."""


class LocalBus:
    """One worker, no Redis: every room is decided here and its events go straight to its sockets."""

    clustered = False

    def __init__(self) -> None:
        self._channels: Channels | None = None

    def bind(self, host: BusHost) -> Fanout:
        self._channels = host.channels
        return host.channels

    def decides(self, room: str) -> bool:
        return True

    def decided_rooms(self) -> list[str]:
        return self._channels.rooms() if self._channels is not None else []

    async def prepare(self, room: str) -> None:
        return None

    def joined(self, client: Client) -> None:
        return None

    def left(self, client: Client) -> None:
        return None

    def forward(self, client: Client, text: str) -> None:
        raise AssertionError("one worker decides every room: nothing is forwarded")

    def observed(self, room: str, message: Message, live: bool | None) -> None:
        raise AssertionError("one worker decides every room: nothing is observed elsewhere")

    def replica(self, room: str) -> RoomState | None:
        return None

    def viewers(self, room: str, local: int) -> int:
        return local

    def online(self, room: str, local: int) -> int:
        return local

    def position(self, room: str) -> tuple[int, int]:
        return (0, 0)

    def release(self, room: str, state: RoomState | None) -> None:
        return None

    def moderated(self, rooms: Rooms) -> ModeratedRooms:
        return rooms

    def pk_transport(self) -> PkTransport | None:
        return None
