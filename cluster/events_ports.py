"""The room-event concerns' ports on a worker of a cluster: their fan-out, and the rooms moderation sees.

Both are thin: every event goes through the bus (``ClusterBus.emit``: sequenced and appended at the
room's owner, forwarded to it from anywhere else), and a kick or ban reaches every worker through the
control stream (cluster/events_control.py).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from relay.participant import RANK
from relay.room import Room, Rooms
from signaling.events.bus import Delivery, RemoteSender
from signaling.events.client import Client
from signaling.events.ports import ModeratedRoom, Sender
from signaling.events.protocol import Message


class EventsBus(Protocol):
    """What these ports need of ``cluster.events_bus.ClusterBus``."""

    def emit(self, room: str, delivery: Delivery) -> int: ...

    def control(self, kind: str, room: str, identity: str, until: float | None, reason: str) -> None: ...

    def remote_role(self, room: str, identity: str) -> str | None: ...

    def remote_sockets(self, room: str, identity: str) -> int: ...


class ClusterFanout:
    """``ports.Fanout``: every event through the bus; a reply to a socket here goes straight to it."""

    def __init__(self, bus: EventsBus) -> None:
        self._bus = bus

    def broadcast(self, room: str, message: Message) -> None:
        self._bus.emit(room, Delivery("all", message))

    def to_roles(self, room: str, roles: Collection[str], message: Message) -> int:
        return self._bus.emit(room, Delivery("roles", message, roles=tuple(roles)))

    def to_identity(self, room: str, identity: str, message: Message) -> int:
        return self._bus.emit(room, Delivery("identity", message, identity=identity))

    def send(self, client: Sender, message: Message) -> None:
        if isinstance(client, Client):
            client.send(message)
        else:
            assert isinstance(client, RemoteSender)
            self._bus.emit(client.room, Delivery("socket", message, socket=client.ref))

    def disconnect(self, client: Sender, code: int, reason: str) -> None:
        if isinstance(client, Client):
            client.cut(code, reason)
        else:
            assert isinstance(client, RemoteSender)
            self._bus.emit(client.room, Delivery("cut", socket=client.ref, code=code, reason=reason))


class _ModeratedRoom:
    """A relay room whose kicks and bans reach the identity's sessions and sockets on every worker."""

    def __init__(self, room: Room, bus: EventsBus) -> None:
        self._room = room
        self._bus = bus

    def role_of(self, identity: str) -> str | None:
        roles = [r for r in (self._room.role_of(identity), self._bus.remote_role(self._room.name, identity)) if r]
        return max(roles, key=RANK.__getitem__) if roles else None

    def kick(self, identity: str, reason: str, why: str = "kicked") -> tuple[int, int]:
        sessions, sockets = self._room.kick(identity, reason, why)
        remote = self._bus.remote_sockets(self._room.name, identity)
        self._bus.control("kick", self._room.name, identity, None, reason)
        return sessions, sockets + remote

    def ban(self, identity: str, seconds: float, reason: str) -> float:
        until = self._room.ban(identity, seconds, reason)
        self._bus.control("ban", self._room.name, identity, until, reason)
        return until

    def unban(self, identity: str, reason: str) -> bool:
        # Every worker learns each ban (the control stream), so this worker's list answers for the cluster.
        lifted = self._room.unban(identity, reason)
        if lifted:
            self._bus.control("unban", self._room.name, identity, None, reason)
        return lifted


class ClusterModeratedRooms:
    """``ports.ModeratedRooms`` for the moderator of a worker in a cluster."""

    def __init__(self, rooms: Rooms, bus: EventsBus) -> None:
        self._rooms = rooms
        self._bus = bus

    def get(self, name: str) -> ModeratedRoom | None:
        room = self._rooms.get(name)
        return _ModeratedRoom(room, self._bus) if room is not None else None
