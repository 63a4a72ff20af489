"""The room events hub: admits sockets into relay rooms, parses their frames, routes frames and relay changes.

What each frame does lives in its concern (chat.py, quality.py, moderator.py, pk.py, guests.py), which
sees sockets only through the fan-out (fanout.py, client.py); this module only composes them:

- a socket joins: its :class:`~.client.Client` becomes a room socket of the relay room's participant
  (``Room.attach_socket``), which keeps the room open and is how a kick, ban or room close ends it;
- a frame arrives: parse it within bounds (protocol.py), dispatch it (dispatch.py), answer a refusal
  with an error frame; too many refusals in a row cut the socket off;
- the relay tells of a change (a ``relay.ports.RoomObserver``): route it to the concerns;
- every ``events.aggregate_interval_s``: send changed viewer counts and pending likes.

Where a frame is decided is the bus's to say (bus.py): with one worker, here; in a cluster, at the
room's owner, which may be another worker (``cluster.events_bus``). Frames of a room decided elsewhere
are parsed here (bounds first, as always) and forwarded; the hub is the bus's ``BusHost`` for frames
forwarded to rooms decided here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from aiohttp import web

from relay.config import CostreamConfig
from relay.core import Relay
from relay.room import Room
from signaling.auth import TokenService
from signaling.config import EventsConfig
from signaling.events.bus import LocalBus, RemoteSender, RoomBus
from signaling.events.chat import Chat
from signaling.events.client import Client
from signaling.events.dispatch import Concerns, Dispatcher
from signaling.events.fanout import Channels
from signaling.events.guests import GuestsOnMic
from signaling.events.moderation import ChatFilter, Moderation
from signaling.events.moderator import Moderator
from signaling.events.pk import PkBattles
from signaling.events.pk_routes import ClusterPk, ClusterStageRooms
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
from signaling.events.roles import BANNERS
from signaling.events.scheduler import LoopScheduler
from signaling.events.state import RoomState, default_layout
from signaling.events.stats import new_stats

log = logging.getLogger("cherry.signaling.events")


def layout_of(room: Room) -> list[dict[str, Any]]:
    return [{"slot": s.index, "role": s.role, "room": s.room, "identity": s.identity,
             "live": bool(s.publications), "muted": sorted(s.muted)} for s in room.layout()]


class EventHub:
    def __init__(self, config: EventsConfig, costream: CostreamConfig, relay: Relay, mutes: Moderation,
                 chat_filter: ChatFilter, tokens: TokenService, scheduler: Scheduler | None = None,
                 bus: RoomBus | None = None) -> None:
        self.config = config
        self.rooms = relay.rooms
        self.mutes = mutes
        self.stats = new_stats()
        self.scheduler = scheduler or LoopScheduler()
        self.channels = Channels(self.stats)
        self.bus: RoomBus = bus or LocalBus()
        self.fanout = self.bus.bind(self)
        self.chat = Chat(self.fanout, config, mutes, chat_filter, self.scheduler.now)
        self.reports = Quality(config, self.stats)
        transport = self.bus.pk_transport()
        if transport is None:
            self.pk = PkBattles(self.fanout, self.rooms, tokens, costream, self.scheduler)
        else:
            self.pk = ClusterPk(self.fanout, ClusterStageRooms(self.rooms, transport), tokens, costream,
                                self.scheduler, transport)
        self.guests = GuestsOnMic(self.fanout, self.rooms, tokens, costream, self.scheduler)
        self.pk_listeners = self.pk.listeners  # PK webhooks (gateway/app.py)
        self._dispatcher = Dispatcher(Concerns(self.fanout, self.chat, self.reports,
                                               Moderator(self.fanout, self.bus.moderated(self.rooms), mutes, config),
                                               self.pk, self.guests))
        self._counts: dict[str, tuple[int, int]] = {}  # last (viewers, online) sent per room
        # Cluster only: the last host and layout frames of each room decided here, for its welcome while the
        # room's host is on another worker (the relay room here knows no host then).
        self._stage: dict[str, dict[str, Message]] = {}
        self._socket_ids = itertools.count(1)
        self.rooms.observers.add(self)

    @property
    def history(self) -> int:
        return self.config.chat_history

    # -- sockets ------------------------------------------------------------------------------------

    def capacity_left(self, room: str) -> bool:
        return self.channels.online(room) < self.config.max_sockets_per_room

    async def prepare(self, room: str) -> None:
        """Before a socket joins: the bus learns who decides the room (and holds its state if not us)."""
        await self.bus.prepare(room)

    def join(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, identity: str,
             role: str, room_name: str, expires_at: float, name: str = "") -> Client:
        """Attach an upgraded socket to its relay room (raises ``CapacityExceeded`` at the room limit)."""
        room = self.rooms.get_or_create(room_name)
        client = Client(ws, transport, identity, role, room, self.config.send_queue_limit, self.stats, self.leave,
                        name=name)
        client.ref = str(next(self._socket_ids))
        room.attach_socket(identity, client)
        self.channels.add(client)
        self.reports.joined(client)
        client.expiry = self.scheduler.call_later(expires_at - self.scheduler.now(),
                                                  lambda: client.cut(CLOSE_EXPIRED, "token expired"))
        client.start()
        client.send(self._welcome(client))
        self.bus.joined(client)
        return client

    def leave(self, client: Client) -> None:
        """The socket is gone (it closed, or was cut off); idempotent."""
        client.stop()
        if self.channels.remove(client):
            client.relay_room.detach_socket(client.identity, client)
            self.reports.left(client)
            self.bus.left(client)

    def _welcome(self, client: Client) -> Message:
        room = client.relay_room
        you = {"identity": client.identity, "role": client.role, "name": client.name or client.identity}
        replica = None if self.bus.decides(room.name) else self.bus.replica(room.name)
        if replica is not None:
            # Decided elsewhere: the state this worker holds of it, fed by the owner's stream.
            snapshot = replica.snapshot(client.identity, self.scheduler.now(), self.config)
        else:
            snapshot = self._snapshot(room, client.identity)
        if client.role in BANNERS:  # the studio's unban list (every worker knows every ban)
            snapshot = {**snapshot, "bans": [{"identity": identity, "until": int(until * 1000)}
                                             for identity, until in sorted(room.bans_here().items())]}
        return {"type": "welcome", "v": VERSION, "room": room.name, "you": you, "snapshot": snapshot}

    def _snapshot(self, room: Room, identity: str) -> dict[str, Any]:
        stage = self._stage.get(room.name, {}) if not room.held_here else {}
        host, layout = stage.get("host"), stage.get("layout")
        return {
            "title": host["title"] if host else room.title or room.name,
            "live": host["live"] if host else room.live,
            "host": host["host"] if host else room.host.identity if room.host else None,
            "viewers": self.bus.viewers(room.name, room.viewer_count),
            "online": self.bus.online(room.name, self.channels.online(room.name)),
            **self.chat.snapshot(room.name, identity),
            "layout": layout["slots"] if layout else layout_of(room),
            "pk": self.pk.snapshot(room.name),
        }

    # -- client frames ------------------------------------------------------------------------------

    def handle(self, client: Client, text: str) -> None:
        self.stats["messages_in"] += 1
        try:
            frame = parse_frame(text, self.config.max_frame_bytes, self.config.max_frame_depth)
        except ProtocolError as exc:
            self._refuse(client, exc)
            return
        # Quality reports are this socket's telemetry (never fanned out): counted where the socket is.
        if frame.type != "quality" and not self.bus.decides(client.room):
            self.bus.forward(client, text)
            client.errors = 0
            return
        self._run(client, frame)

    def decide(self, sender: Any, text: str) -> None:
        """``BusHost``: a frame of a room decided here, from a socket on another worker."""
        try:
            frame = parse_frame(text, self.config.max_frame_bytes, self.config.max_frame_depth)
        except ProtocolError as exc:
            self._refuse(sender, exc)
            return
        self._run(sender, frame)

    def _run(self, sender: Client | RemoteSender, frame: Any) -> None:
        try:
            self._dispatcher.dispatch(sender, frame)
        except ProtocolError as exc:
            self._refuse(sender, exc)
            return
        except Exception:
            # A bug in one handler costs this frame, never the socket or the room.
            self.stats["internal_errors"] += 1
            log.exception("room=%s participant=%s handling a frame failed", sender.room, sender.identity)
            self._refuse(sender, ProtocolError("internal_error", "the gateway could not handle this frame"))
            return
        sender.errors = 0

    def reject_binary(self, client: Client) -> None:
        self._refuse(client, ProtocolError("bad_message", "binary frames are not accepted"))

    def _refuse(self, sender: Client | RemoteSender, exc: ProtocolError) -> None:
        self.stats["errors"] += 1
        if exc.code == "rate_limited":
            self.stats["rate_limited"] += 1  # a flooder is slowed down, not disconnected
        else:
            sender.errors += 1
        self.fanout.send(sender, error_frame(exc.code, exc.message, exc.ref))
        if sender.errors >= self.config.max_errors:
            self.fanout.disconnect(sender, CLOSE_TOO_MANY_ERRORS, "too many protocol errors")

    # -- aggregates ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Send changed viewer counts and pending likes; called every aggregate interval."""
        counts: dict[str, tuple[int, int]] = {}
        for name in self.bus.decided_rooms():
            room = self.rooms.get(name)
            counts[name] = now = (self.bus.viewers(name, room.viewer_count if room else 0),
                                  self.bus.online(name, self.channels.online(name)))
            if self._counts.get(name) != now:
                self.fanout.broadcast(name, {"type": "viewers", "count": now[0], "online": now[1]})
        self._counts = counts
        self.chat.tick()
        self.mutes.purge()
        self.rooms.bans.purge()
        if isinstance(self.pk, ClusterPk):
            self.pk.expire()

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
        return self.bus.online(room, self.channels.online(room))

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
        name = room.name
        if not self.bus.decides(name):
            self._stage.pop(name, None)
            self.bus.release(name, None)  # its sockets here are gone; the room goes on where it is decided
            return
        # The room's event state lives as long as the relay room; its sockets are ended right after this.
        self.pk.room_closed(name)
        self.guests.room_closed(name)
        # In a cluster, other workers may still have sockets in the room: its state goes to one of them.
        self.bus.release(name, self.room_state(name) if self.bus.clustered else None)
        self.chat.room_closed(name)
        self.reports.room_closed(name)
        self._stage.pop(name, None)

    def host_changed(self, room: object, live: bool) -> None:
        assert isinstance(room, Room)
        if room.pulled_from is not None:
            return  # an edge's copy of the room: its origin reports the host
        self._observe(room.name, {"type": "host", "live": live,
                                  "host": room.host.identity if room.host and live else None,
                                  "title": room.title or room.name}, live)

    def layout_changed(self, room: object) -> None:
        assert isinstance(room, Room)
        if room.pulled_from is not None:
            return  # an edge's copy of the room: its origin reports the layout
        self._observe(room.name, {"type": "layout", "slots": layout_of(room)}, None)

    def _observe(self, name: str, message: Message, live: bool | None) -> None:
        if self.bus.decides(name):
            self.observed(name, message, live)
        else:
            self.bus.observed(name, message, live)  # the room's host is here, its events are decided elsewhere

    # -- cluster.events_bus: the hub as a BusHost ---------------------------------------------------------

    def observed(self, room: str, message: Message, live: bool | None) -> None:
        if live is not None:
            self.pk.host_changed(room, live)
        if self.bus.clustered:
            self._stage.setdefault(room, {})[str(message["type"])] = message
        self.fanout.broadcast(room, message)

    def room_state(self, room: str) -> RoomState:
        relay_room = self.rooms.get(room)
        stage = self._stage.get(room, {})
        host, layout = stage.get("host"), stage.get("layout")
        if relay_room is not None and (relay_room.held_here or not host):
            title, live = relay_room.title or room, relay_room.live
            host_identity = relay_room.host.identity if relay_room.host else None
        else:
            title, live, host_identity = (host["title"], host["live"], host["host"]) if host else (room, False, None)
        if layout is not None and (relay_room is None or not relay_room.held_here):
            slots = layout["slots"]
        else:
            slots = layout_of(relay_room) if relay_room is not None else default_layout(room)
        chat = self.chat.snapshot(room, "")
        pk = self.pk.snapshot(room)
        viewers = self.bus.viewers(room, relay_room.viewer_count if relay_room is not None else 0)
        online = self.bus.online(room, self.channels.online(room))
        epoch, seq = self.bus.position(room)
        return RoomState(room, seq=seq, epoch=epoch, title=title, live=live, host=host_identity, viewers=viewers,
                         online=online, likes=chat["likes"], gifts=chat["gifts"], chat=chat["chat"], layout=slots,
                         pk={k: v for k, v in pk.items() if k != "remaining_s"} if pk else None,
                         mutes=self.mutes.in_room(room))

    def take_over(self, room: str, state: RoomState) -> None:
        self.chat.restore(room, state.chat, state.likes, state.gifts)
        self.mutes.restore(room, state.mutes)
        relay_room = self.rooms.get(room)
        if relay_room is None or not relay_room.held_here:
            self._stage[room] = {
                "host": {"type": "host", "live": state.live, "host": state.host, "title": state.title or room},
                "layout": {"type": "layout", "slots": state.layout or default_layout(room)}}
        self._counts[room] = (state.viewers, state.online)  # the first tick here sends only a change

    def resync(self, room: str) -> int:
        clients = self.channels.clients(room)
        for client in clients:
            client.send(self._welcome(client))
        if clients:
            log.info("room=%s its state is known again: %d sockets here welcomed again", room, len(clients))
        return len(clients)

    def step_down(self, room: str) -> None:
        self.chat.room_closed(room)
        self.guests.room_closed(room)
        self._counts.pop(room, None)
        self._stage.pop(room, None)

    def pk_item(self, item: dict[str, Any]) -> None:
        if isinstance(self.pk, ClusterPk):
            self.pk.on_item(item)

    def admit(self, room: str, message: Message, by: str) -> bool:
        return self.pk.admit(room, message, by) if isinstance(self.pk, ClusterPk) else True
