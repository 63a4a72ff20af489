"""The room events hub: who is connected where, fan-out with bounded queues, aggregation."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay.core import Relay
from relay.room import Room
from signaling.auth import TokenService
from signaling.events.costream import Costream, CostreamSettings
from signaling.events.moderation import ChatFilter, Moderation
from signaling.events.protocol import (
    COSTREAM,
    MODERATION,
    VERSION,
    ClientFrame,
    ProtocolError,
    encode,
    int_field,
    number_field,
    parse_frame,
    text_field,
)
from signaling.ratelimit import RateLimiter

log = logging.getLogger("cherry.signaling.events")

CLOSE_EXPIRED = 4001
CLOSE_KICKED = 4003
CLOSE_TOO_SLOW = 4008
CLOSE_TOO_MANY_ERRORS = 4009
MODERATORS = ("host", "guest", "admin")
BANNERS = ("host", "admin")


@dataclass(frozen=True, slots=True)
class EventSettings:
    max_chat_length: int = 200
    chat_rate: tuple[float, int] = (1.0, 5)
    gift_rate: tuple[float, int] = (5.0, 20)
    like_rate: tuple[float, int] = (20.0, 100)
    max_gift_count: int = 999
    gift_values: tuple[tuple[str, int], ...] = (("heart", 1), ("rose", 5))
    send_queue_limit: int = 256
    max_frame_bytes: int = 4096
    max_errors: int = 20
    aggregate_interval: float = 1.0
    default_mute_s: int = 600
    default_ban_s: int = 3600
    chat_history: int = 20
    max_sockets_per_room: int = 20000


class Client:
    """One socket: a bounded queue of encoded frames drained by its own writer task."""

    __slots__ = ("ws", "identity", "role", "room", "queue", "writer", "errors", "closed", "expiry",
                 "watch_s", "freeze_s", "connected_at", "close_code", "close_reason")

    def __init__(self, ws: web.WebSocketResponse, identity: str, role: str, room: str, limit: int) -> None:
        self.ws = ws
        self.identity = identity
        self.role = role
        self.room = room
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(limit)
        self.writer: asyncio.Task[None] | None = None
        self.errors = 0
        self.closed = False
        self.expiry: asyncio.TimerHandle | None = None
        self.watch_s = 0.0
        self.freeze_s = 0.0
        self.connected_at = time.time()
        self.close_code = 1000
        self.close_reason = ""

    async def run_writer(self) -> None:
        try:
            while (text := await self.queue.get()) is not None:
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass  # the socket went away; the reader loop notices too


@dataclass
class QualityAggregate:
    """Real-user playback quality of one room, from watch pages' own getStats() reports."""

    reports: int = 0
    watch_seconds: float = 0.0
    freeze_seconds: float = 0.0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    fps: deque[float] = field(default_factory=lambda: deque(maxlen=512))

    @property
    def stutter_ratio(self) -> float:
        return self.freeze_seconds / self.watch_seconds if self.watch_seconds > 0 else 0.0

    def summary(self) -> dict[str, float]:
        latencies = sorted(self.latency_ms)

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

        return {"reports": self.reports, "watch_seconds": self.watch_seconds,
                "freeze_seconds": self.freeze_seconds, "stutter_ratio": self.stutter_ratio,
                "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95),
                "fps_mean": sum(self.fps) / len(self.fps) if self.fps else 0.0}


class Channel:
    """The event state of one room name; lives while it has sockets or a live room."""

    def __init__(self, name: str, history: int) -> None:
        self.name = name
        self.clients: set[Client] = set()
        self.chat: deque[dict[str, Any]] = deque(maxlen=history)
        self.likes_total = 0
        self.likes_pending = 0
        self.gifts: dict[str, int] = {}
        self.last_counts: tuple[int, int] = (-1, -1)
        self.quality = QualityAggregate()


class EventHub:
    def __init__(self, settings: EventSettings, relay: Relay,
                 moderation: Moderation, chat_filter: ChatFilter, tokens: TokenService,
                 costream: CostreamSettings | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.rooms = rooms = relay.rooms
        self.moderation = moderation
        self.chat_filter = chat_filter
        self.channels: dict[str, Channel] = {}
        self.stats = {"messages_in": 0, "messages_out": 0, "dropped_slow": 0, "rate_limited": 0,
                      "errors": 0, "sockets": 0}
        self.gift_values = dict(settings.gift_values)
        # Called when a PK battle starts or ends: (battle id, "started"/"ended", rooms, result or None).
        self.pk_listeners: list[Callable[[str, str, list[str], dict[str, str] | None], None]] = []
        self.costream = Costream(self, rooms, tokens, costream or CostreamSettings(), clock)
        self._clock = clock
        self._ids = itertools.count(1)
        self._chat_limit = RateLimiter(*settings.chat_rate)
        self._gift_limit = RateLimiter(*settings.gift_rate)
        self._like_limit = RateLimiter(*settings.like_rate)
        self._tasks: set[asyncio.Task[Any]] = set()
        rooms.observers.add(self)

    # -- sockets -----------------------------------------------------------

    def capacity_left(self, room: str) -> bool:
        channel = self.channels.get(room)
        return channel is None or len(channel.clients) < self.settings.max_sockets_per_room

    def join(self, ws: web.WebSocketResponse, identity: str, role: str, room: str, expires_at: int) -> Client:
        channel = self.channels.get(room)
        if channel is None:
            channel = self.channels[room] = Channel(room, self.settings.chat_history)
        client = Client(ws, identity, role, room, self.settings.send_queue_limit)
        client.writer = asyncio.ensure_future(client.run_writer())
        delay = expires_at - self._clock()
        client.expiry = asyncio.get_running_loop().call_later(
            max(delay, 0), self._disconnect, client, CLOSE_EXPIRED, "token expired")
        channel.clients.add(client)
        self.stats["sockets"] += 1
        self._send(client, self._welcome(channel, client))
        return client

    def leave(self, client: Client) -> None:
        channel = self.channels.get(client.room)
        if channel is not None and client in channel.clients:
            channel.clients.discard(client)
            self.stats["sockets"] -= 1
            if not channel.clients and self.rooms.get(channel.name) is None:
                del self.channels[channel.name]
        if client.expiry is not None:
            client.expiry.cancel()
        if not client.closed:
            client.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)

    def _welcome(self, channel: Channel, client: Client) -> dict[str, Any]:
        room = self.rooms.get(channel.name)
        muted = self.moderation.muted_until(channel.name, client.identity)
        return {"type": "welcome", "v": VERSION, "room": channel.name,
                "you": {"identity": client.identity, "role": client.role},
                "snapshot": {
                    "title": (room.title if room else "") or channel.name,
                    "live": bool(room and room.live),
                    "host": room.host.identity if room and room.host else None,
                    "viewers": room.viewer_count if room else 0,
                    "online": len(channel.clients),
                    "likes": channel.likes_total,
                    "gifts": dict(channel.gifts),
                    "gift_catalog": [{"kind": k, "value": v} for k, v in self.settings.gift_values],
                    "max_chat_length": self.settings.max_chat_length,
                    "chat": list(channel.chat),
                    "muted_until": int(muted * 1000) if muted else None,
                    "layout": self._layout(room) if room else [],
                    "pk": self._battle_state(channel.name),
                }}

    def _layout(self, room: Room) -> list[dict[str, Any]]:
        return [{"slot": s.index, "role": s.role, "room": s.room, "identity": s.identity,
                 "live": bool(s.publications)} for s in room.layout()]

    def _battle_state(self, room: str) -> dict[str, Any] | None:
        battle = self.costream.battles.get(room)
        if battle is None:
            return None
        return {"id": battle.id, "rooms": list(battle.rooms), "hosts": battle.hosts, "scores": dict(battle.scores),
                "ends_at": int(battle.ends_at * 1000), "remaining_s": round(battle.remaining(self._clock()), 1)}

    def _send(self, client: Client, message: dict[str, Any]) -> None:
        self._enqueue(client, encode(message))

    def _enqueue(self, client: Client, text: str) -> None:
        if client.closed:
            return
        try:
            client.queue.put_nowait(text)
            self.stats["messages_out"] += 1
        except asyncio.QueueFull:
            self.stats["dropped_slow"] += 1
            log.info("room=%s participant=%s socket too slow, disconnecting", client.room, client.identity)
            self._disconnect(client, CLOSE_TOO_SLOW, "too slow")

    def broadcast(self, room: str, message: dict[str, Any]) -> None:
        """Encode once, queue to every socket of the room; never awaits a client."""
        channel = self.channels.get(room)
        if channel is None:
            return
        text = encode(message)
        for client in list(channel.clients):
            self._enqueue(client, text)

    def to_role(self, room: str, roles: tuple[str, ...], message: dict[str, Any]) -> None:
        channel = self.channels.get(room)
        text = encode(message)
        for client in list(channel.clients) if channel else ():
            if client.role in roles or client.role == "admin":
                self._enqueue(client, text)

    def to_identity(self, room: str, identity: str, message: dict[str, Any]) -> None:
        channel = self.channels.get(room)
        text = encode(message)
        for client in list(channel.clients) if channel else ():
            if client.identity == identity:
                self._enqueue(client, text)

    def has_socket(self, room: str, identity: str) -> bool:
        channel = self.channels.get(room)
        return any(c.identity == identity for c in channel.clients) if channel else False

    def notify_pk(self, battle_id: str, event: str, rooms: list[str], result: dict[str, str] | None) -> None:
        for listener in self.pk_listeners:
            try:
                listener(battle_id, event, rooms, result)
            except Exception:
                log.exception("PK listener failed")

    def _disconnect(self, client: Client, code: int, reason: str) -> None:
        if client.closed:
            return
        client.close_code, client.close_reason = code, reason
        self.leave(client)
        if client.writer is not None:
            client.writer.cancel()
        self._spawn(client.ws.close(code=code, message=reason.encode()))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- client frames -----------------------------------------------------

    async def handle(self, client: Client, text: str) -> None:
        self.stats["messages_in"] += 1
        try:
            frame = parse_frame(text, self.settings.max_frame_bytes)
            self._dispatch(client, frame)
            client.errors = 0
        except ProtocolError as exc:
            self.stats["errors"] += 1
            if exc.code == "rate_limited":
                self.stats["rate_limited"] += 1
            else:
                client.errors += 1
            self._send(client, {"type": "error", "code": exc.code, "message": exc.message, "ref": exc.ref})
            if client.errors >= self.settings.max_errors:
                self._disconnect(client, CLOSE_TOO_MANY_ERRORS, "too many protocol errors")

    def reject_binary(self, client: Client) -> None:
        self.stats["errors"] += 1
        client.errors += 1
        self._send(client, {"type": "error", "code": "bad_message", "message": "binary frames are not accepted",
                            "ref": None})

    def _limit(self, limiter: RateLimiter, client: Client, frame: ClientFrame) -> None:
        if limiter.allow(f"{client.room}/{client.identity}") > 0:
            raise ProtocolError("rate_limited", f"too many {frame.type} messages; slow down", frame.ref)

    def _dispatch(self, client: Client, frame: ClientFrame) -> None:
        kind = frame.type
        if kind == "ping":
            self._send(client, {"type": "pong", "ref": frame.ref})
        elif kind == "chat":
            self._chat(client, frame)
        elif kind == "gift":
            self._gift(client, frame)
        elif kind == "like":
            count = int_field(frame, "count", 1, 100, default=1)
            self._limit(self._like_limit, client, frame)
            channel = self.channels[client.room]
            channel.likes_pending += count
            channel.likes_total += count
        elif kind == "quality":
            self._quality(client, frame)
        elif kind in MODERATION:
            self._moderate(client, frame)
        elif kind in COSTREAM:
            self.costream.handle(client, frame)

    def _chat(self, client: Client, frame: ClientFrame) -> None:
        text = text_field(frame, "text", self.settings.max_chat_length)
        muted = self.moderation.muted_until(client.room, client.identity)
        if muted:
            raise ProtocolError("muted", f"you are muted until {time.strftime('%H:%M:%S', time.localtime(muted))}",
                                frame.ref)
        self._limit(self._chat_limit, client, frame)
        published = self.chat_filter(text)
        if published is None:
            raise ProtocolError("filtered", "message was not published", frame.ref)
        message = {"type": "chat", "id": next(self._ids), "from": {"identity": client.identity, "role": client.role},
                   "text": published, "ts": int(self._clock() * 1000)}
        self.channels[client.room].chat.append(message)
        self.broadcast(client.room, message)

    def _gift(self, client: Client, frame: ClientFrame) -> None:
        kind = frame.data.get("kind")
        if kind not in self.gift_values:
            raise ProtocolError("bad_message", f"'kind' must be one of {', '.join(self.gift_values)}", frame.ref)
        count = int_field(frame, "count", 1, self.settings.max_gift_count, default=1)
        self._limit(self._gift_limit, client, frame)
        channel = self.channels[client.room]
        channel.gifts[kind] = channel.gifts.get(kind, 0) + count
        self.broadcast(client.room, {"type": "gift", "id": next(self._ids),
                                     "from": {"identity": client.identity, "role": client.role},
                                     "kind": kind, "count": count, "ts": int(self._clock() * 1000)})
        points = count * self.gift_values[kind]
        side = frame.data.get("side")
        self.costream.on_gift(client.room, client.identity, points, side if isinstance(side, str) else None)

    def _quality(self, client: Client, frame: ClientFrame) -> None:
        watch = number_field(frame, "watch_s", 0, 86400 * 7)
        freeze = number_field(frame, "freeze_s", 0, 86400 * 7)
        aggregate = self.channels[client.room].quality
        if watch >= client.watch_s and freeze >= client.freeze_s:
            aggregate.watch_seconds += watch - client.watch_s
            aggregate.freeze_seconds += min(freeze - client.freeze_s, watch - client.watch_s)
        client.watch_s, client.freeze_s = watch, freeze
        aggregate.reports += 1
        if "latency_ms" in frame.data and frame.data["latency_ms"] is not None:
            aggregate.latency_ms.append(number_field(frame, "latency_ms", 0, 60000))
        if "fps" in frame.data and frame.data["fps"] is not None:
            aggregate.fps.append(number_field(frame, "fps", 0, 240))

    def acting_role(self, client: Client) -> str:
        """The role a socket acts with now: a guest token counts only while the host keeps it on mic."""
        if client.role != "guest":
            return client.role
        room = self.rooms.get(client.room)
        return "guest" if room is not None and client.identity in room.guest_grants else "viewer"

    def _moderate(self, client: Client, frame: ClientFrame) -> None:
        action = frame.type
        allowed = BANNERS if action == "ban" else MODERATORS
        role = self.acting_role(client)
        if role not in allowed:
            raise ProtocolError("not_allowed", f"{role} may not {action}", frame.ref)
        target = text_field(frame, "identity", 128)
        room = client.room
        if client.role != "admin" and self._role_of(room, target) in ("host", "admin"):
            raise ProtocolError("not_allowed", f"cannot {action} the host or an admin", frame.ref)
        until: float | None = None
        if action == "mute":
            until = self.moderation.mute(room, target, int_field(frame, "duration_s", 1, 86400 * 30,
                                                                 self.settings.default_mute_s))
        elif action == "unmute":
            self.moderation.unmute(room, target)
        elif action == "kick":
            if sum(self.kick(room, target, f"kicked by {client.identity}")) == 0:
                raise ProtocolError("unknown_target", f"{target!r} is not in this room", frame.ref)
        elif action == "ban":
            until = self.rooms.bans.ban(room, target, int_field(frame, "duration_s", 1, 86400 * 365,
                                                                self.settings.default_ban_s))
            self.kick(room, target, f"banned by {client.identity}")
        log.info("room=%s participant=%s moderation=%s target=%s until=%s", room, client.identity, action,
                 target, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(until)) if until else "-")
        self.broadcast(room, {"type": "moderation", "action": action, "target": target, "by": client.identity,
                              "until": int(until * 1000) if until else None})

    def _role_of(self, room: str, identity: str) -> str | None:
        channel = self.channels.get(room)
        for client in channel.clients if channel else ():
            if client.identity == identity:
                return client.role
        relay_room = self.rooms.get(room)
        return relay_room.role_of(identity) if relay_room is not None else None

    def kick(self, room: str, identity: str, reason: str) -> tuple[int, int]:
        """End ``identity``'s sessions and sockets in ``room``; (sessions, sockets) ended."""
        relay_room = self.rooms.get(room)
        sessions = relay_room.kick(identity, reason)[0] if relay_room is not None else 0
        channel = self.channels.get(room)
        sockets = [c for c in (channel.clients if channel else ()) if c.identity == identity]
        for client in sockets:
            self._send(client, {"type": "moderation", "action": "kick", "target": identity, "by": reason,
                                "until": None})
            self._disconnect(client, CLOSE_KICKED, reason[:100])
        return sessions, len(sockets)

    def close_room(self, room: str, reason: str) -> int:
        channel = self.channels.pop(room, None)
        if channel is None:
            return 0
        for client in list(channel.clients):
            self._disconnect(client, 1000, reason[:100])
        return len(channel.clients)

    # -- aggregates --------------------------------------------------------

    def tick(self) -> None:
        """Send changed viewer counts and pending likes; called every aggregate interval."""
        for channel in list(self.channels.values()):
            room = self.rooms.get(channel.name)
            counts = (room.viewer_count if room else 0, len(channel.clients))
            if counts != channel.last_counts:
                channel.last_counts = counts
                self.broadcast(channel.name, {"type": "viewers", "count": counts[0], "online": counts[1]})
            if channel.likes_pending:
                self.broadcast(channel.name, {"type": "likes", "total": channel.likes_total,
                                              "delta": channel.likes_pending})
                channel.likes_pending = 0
        self.moderation.purge()
        self.rooms.bans.purge()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.aggregate_interval)
            try:
                self.tick()
            except Exception:
                log.exception("room events aggregation failed")

    def quality(self, room: str) -> dict[str, float] | None:
        channel = self.channels.get(room)
        return channel.quality.summary() if channel else None

    def quality_rooms(self) -> dict[str, dict[str, float]]:
        return {name: c.quality.summary() for name, c in self.channels.items() if c.quality.reports}

    async def broadcast_all(self, message: dict[str, Any]) -> None:
        for name in list(self.channels):
            self.broadcast(name, message)

    async def close_all(self, code: int, reason: str) -> None:
        for channel in list(self.channels.values()):
            for client in list(channel.clients):
                self._disconnect(client, code, reason)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    # -- relay.ports.RoomObserver ------------------------------------------

    def room_opened(self, room: object) -> None:
        pass

    def room_closed(self, room: object, reason: str) -> None:
        assert isinstance(room, Room)
        self.costream.room_closed(room.name)
        channel = self.channels.get(room.name)
        if channel is not None and not channel.clients:
            del self.channels[room.name]

    def host_changed(self, room: object, live: bool) -> None:
        assert isinstance(room, Room)
        self.costream.host_changed(room.name, live)
        self.broadcast(room.name, {"type": "host", "live": live,
                                   "host": room.host.identity if room.host and live else None,
                                   "title": room.title or room.name})

    def participant_joined(self, room: object, participant: object) -> None:
        pass

    def participant_left(self, room: object, participant: object) -> None:
        pass

    def layout_changed(self, room: object) -> None:
        assert isinstance(room, Room)
        self.broadcast(room.name, {"type": "layout", "slots": self._layout(room)})
