"""The room events hub: admits sockets into relay rooms, parses their frames, routes frames and relay changes.

What each frame does lives in its concern (chat.py, quality.py, moderator.py, pk.py, guests.py), which
sees sockets only through the fan-out (fanout.py, client.py); this module only composes them:

- a socket joins: its :class:`~.client.Client` becomes a room socket of the relay room's participant
  (``Room.attach_socket``), which keeps the room open and is how a kick, ban or room close ends it;
- a frame arrives: parse it within bounds (protocol.py), dispatch it (dispatch.py), answer a refusal
  with an error frame; too many refusals in a row cut the socket off;
- the relay tells of a change (a ``relay.ports.RoomObserver``): route it to the concerns;
- every ``events.aggregate_interval_s``: send changed viewer counts and pending likes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from relay.config import CostreamConfig
from relay.core import Relay
from relay.room import Room
from signaling.auth import TokenService
from signaling.config import EventsConfig
from signaling.events.chat import Chat
from signaling.events.client import Client
from signaling.events.dispatch import Concerns, Dispatcher
from signaling.events.fanout import Channels
from signaling.events.guests import GuestsOnMic
from signaling.events.moderation import ChatFilter, Moderation
from signaling.events.moderator import Moderator
from signaling.events.pk import PkBattles
from signaling.events.ports import Scheduler
from signaling.events.protocol import (
    CLOSE_EXPIRED,
    CLOSE_TOO_MANY_ERRORS,
    VERSION,
    Message,
    ProtocolError,
    error_frame,
    parse_frame,
)
from signaling.events.quality import Quality
from signaling.events.scheduler import LoopScheduler
from signaling.events.stats import new_stats

log = logging.getLogger("cherry.signaling.events")


def layout_of(room: Room) -> list[dict[str, Any]]:
    return [{"slot": s.index, "role": s.role, "room": s.room, "identity": s.identity,
             "live": bool(s.publications)} for s in room.layout()]


class EventHub:
    def __init__(self, config: EventsConfig, costream: CostreamConfig, relay: Relay, mutes: Moderation,
                 chat_filter: ChatFilter, tokens: TokenService, scheduler: Scheduler | None = None) -> None:
        self.config = config
        self.rooms = relay.rooms
        self.mutes = mutes
        self.stats = new_stats()
        self.scheduler = scheduler or LoopScheduler()
        self.channels = Channels(self.stats)
        self.chat = Chat(self.channels, config, mutes, chat_filter, self.scheduler.now)
        self.reports = Quality(config, self.stats)
        self.pk = PkBattles(self.channels, self.rooms, tokens, costream, self.scheduler)
        self.guests = GuestsOnMic(self.channels, self.rooms, tokens, costream, self.scheduler)
        self.pk_listeners = self.pk.listeners  # PK webhooks (gateway/app.py)
        self._dispatcher = Dispatcher(Concerns(self.channels, self.chat, self.reports,
                                               Moderator(self.channels, self.rooms, mutes, config),
                                               self.pk, self.guests))
        self._counts: dict[str, tuple[int, int]] = {}  # last (viewers, online) sent per room
        self.rooms.observers.add(self)

    # -- sockets ------------------------------------------------------------------------------------

    def capacity_left(self, room: str) -> bool:
        return self.channels.online(room) < self.config.max_sockets_per_room

    def join(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, identity: str,
             role: str, room_name: str, expires_at: float) -> Client:
        """Attach an upgraded socket to its relay room (raises ``CapacityExceeded`` at the room limit)."""
        room = self.rooms.get_or_create(room_name)
        client = Client(ws, transport, identity, role, room, self.config.send_queue_limit, self.stats, self.leave)
        room.attach_socket(identity, client)
        self.channels.add(client)
        self.reports.joined(client)
        client.expiry = self.scheduler.call_later(expires_at - self.scheduler.now(),
                                                  lambda: client.cut(CLOSE_EXPIRED, "token expired"))
        client.start()
        client.send(self._welcome(client))
        return client

    def leave(self, client: Client) -> None:
        """The socket is gone (it closed, or was cut off); idempotent."""
        client.stop()
        if self.channels.remove(client):
            client.relay_room.detach_socket(client.identity, client)
            self.reports.left(client)

    def _welcome(self, client: Client) -> Message:
        room = client.relay_room
        return {"type": "welcome", "v": VERSION, "room": room.name,
                "you": {"identity": client.identity, "role": client.role},
                "snapshot": {
                    "title": room.title or room.name,
                    "live": room.live,
                    "host": room.host.identity if room.host else None,
                    "viewers": room.viewer_count,
                    "online": self.channels.online(room.name),
                    **self.chat.snapshot(room.name, client.identity),
                    "layout": layout_of(room),
                    "pk": self.pk.snapshot(room.name),
                }}

    # -- client frames ------------------------------------------------------------------------------

    def handle(self, client: Client, text: str) -> None:
        self.stats["messages_in"] += 1
        try:
            frame = parse_frame(text, self.config.max_frame_bytes, self.config.max_frame_depth)
            self._dispatcher.dispatch(client, frame)
        except ProtocolError as exc:
            self._refuse(client, exc)
            return
        except Exception:
            # A bug in one handler costs this frame, never the socket or the room.
            self.stats["internal_errors"] += 1
            log.exception("%s handling a frame failed", client.tag())
            self._refuse(client, ProtocolError("internal_error", "the gateway could not handle this frame"))
            return
        client.errors = 0

    def reject_binary(self, client: Client) -> None:
        self._refuse(client, ProtocolError("bad_message", "binary frames are not accepted"))

    def _refuse(self, client: Client, exc: ProtocolError) -> None:
        self.stats["errors"] += 1
        if exc.code == "rate_limited":
            self.stats["rate_limited"] += 1  # a flooder is slowed down, not disconnected
        else:
            client.errors += 1
        client.send(error_frame(exc.code, exc.message, exc.ref))
        if client.errors >= self.config.max_errors:
            client.cut(CLOSE_TOO_MANY_ERRORS, "too many protocol errors")

    # -- aggregates ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Send changed viewer counts and pending likes; called every aggregate interval."""
        counts: dict[str, tuple[int, int]] = {}
        for name in self.channels.rooms():
            room = self.rooms.get(name)
            counts[name] = now = (room.viewer_count if room else 0, self.channels.online(name))
            if self._counts.get(name) != now:
                self.channels.broadcast(name, {"type": "viewers", "count": now[0], "online": now[1]})
        self._counts = counts
        self.chat.tick()
        self.mutes.purge()
        self.rooms.bans.purge()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.aggregate_interval_s)
            try:
                self.tick()
            except Exception:
                log.exception("room events aggregation failed")

    def quality(self, room: str) -> dict[str, float] | None:
        return self.reports.summary(room)

    def quality_rooms(self) -> dict[str, dict[str, float]]:
        return self.reports.rooms()

    def online(self, room: str) -> int:
        return self.channels.online(room)

    def broadcast_all(self, message: Message) -> None:
        for name in self.channels.rooms():
            self.channels.broadcast(name, message)

    def close_all(self, code: int, reason: str) -> int:
        """Cut every socket off with ``code`` (shutdown); how many."""
        clients = list(self.channels.all_clients())
        for client in clients:
            client.cut(code, reason)
        return len(clients)

    # -- relay.ports.RoomObserver -------------------------------------------------------------------

    def room_closed(self, room: object, reason: str) -> None:
        assert isinstance(room, Room)
        # The room's event state lives as long as the relay room; its sockets are ended right after this.
        self.pk.room_closed(room.name)
        self.guests.room_closed(room.name)
        self.chat.room_closed(room.name)
        self.reports.room_closed(room.name)

    def host_changed(self, room: object, live: bool) -> None:
        assert isinstance(room, Room)
        self.pk.host_changed(room.name, live)
        self.channels.broadcast(room.name, {"type": "host", "live": live,
                                            "host": room.host.identity if room.host and live else None,
                                            "title": room.title or room.name})

    def layout_changed(self, room: object) -> None:
        assert isinstance(room, Room)
        self.channels.broadcast(room.name, {"type": "layout", "slots": layout_of(room)})
