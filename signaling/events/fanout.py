"""Fan-out: the sockets of each room, and delivery to them (the gateway's :class:`~.ports.Fanout`).

A frame is encoded once and queued to each recipient's bounded queue; nothing here awaits a client,
so one slow socket never delays another (it is cut off when its queue overflows, see ``Client.offer``).
Sockets are indexed by room and, within a room, by identity: no delivery scans for an identity.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from signaling.events.client import Client
from signaling.events.ports import Sender
from signaling.events.protocol import Message, encode
from signaling.events.stats import EventStats


class _Channel:
    __slots__ = ("clients", "by_identity")

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.by_identity: dict[str, set[Client]] = {}


class Channels:
    def __init__(self, stats: EventStats) -> None:
        self._rooms: dict[str, _Channel] = {}
        self._stats = stats

    # -- membership ---------------------------------------------------------------------------------

    def add(self, client: Client) -> None:
        channel = self._rooms.get(client.room)
        if channel is None:
            channel = self._rooms[client.room] = _Channel()
        channel.clients.add(client)
        channel.by_identity.setdefault(client.identity, set()).add(client)
        self._stats["sockets"] += 1

    def remove(self, client: Client) -> bool:
        """Forget ``client``; False if it was not here (leaving is idempotent)."""
        channel = self._rooms.get(client.room)
        if channel is None or client not in channel.clients:
            return False
        channel.clients.discard(client)
        same = channel.by_identity.get(client.identity)
        if same is not None:
            same.discard(client)
            if not same:
                del channel.by_identity[client.identity]
        if not channel.clients:
            del self._rooms[client.room]
        self._stats["sockets"] -= 1
        return True

    def online(self, room: str) -> int:
        channel = self._rooms.get(room)
        return len(channel.clients) if channel else 0

    def rooms(self) -> list[str]:
        return list(self._rooms)

    def clients(self, room: str) -> list[Client]:
        channel = self._rooms.get(room)
        return list(channel.clients) if channel else []

    def all_clients(self) -> Iterator[Client]:
        for channel in list(self._rooms.values()):
            yield from list(channel.clients)

    # -- ports.Fanout -------------------------------------------------------------------------------

    def broadcast(self, room: str, message: Message) -> None:
        channel = self._rooms.get(room)
        if channel is None:
            return
        data = encode(message)
        for client in list(channel.clients):  # a client cut off as too slow leaves the set meanwhile
            client.offer(data)

    def to_roles(self, room: str, roles: Collection[str], message: Message) -> int:
        channel = self._rooms.get(room)
        if channel is None:
            return 0
        data = encode(message)
        return sum(client.offer(data) for client in list(channel.clients) if client.role in roles)

    def to_identity(self, room: str, identity: str, message: Message) -> int:
        channel = self._rooms.get(room)
        same = channel.by_identity.get(identity) if channel else None
        if not same:
            return 0
        data = encode(message)
        return sum(client.offer(data) for client in list(same))

    def send(self, client: Sender, message: Message) -> None:
        assert isinstance(client, Client)
        client.send(message)

    def disconnect(self, client: Sender, code: int, reason: str) -> None:
        assert isinstance(client, Client)
        client.cut(code, reason)
