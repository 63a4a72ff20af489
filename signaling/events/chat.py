"""Chat (danmaku), gifts and likes: per-room history and totals, per-identity rate limits, the word filter.

A room's history and totals live as long as its relay room: :meth:`Chat.room_closed` forgets them.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signaling.config import EventsConfig
from signaling.events.moderation import ChatFilter, Moderation
from signaling.events.ports import Fanout, Sender
from signaling.events.protocol import ClientFrame, Message, ProtocolError, int_field, optional_text, text_field
from signaling.ratelimit import RateLimiter


@dataclass(frozen=True, slots=True)
class GiftSent:
    """What a gift is worth to a PK battle: points for ``side`` (a room), or for the sender's room."""

    room: str
    points: int
    side: str | None


class _RoomChat:
    __slots__ = ("history", "likes_total", "likes_pending", "gifts")

    def __init__(self, history: int) -> None:
        self.history: deque[Message] = deque(maxlen=history)
        self.likes_total = 0
        self.likes_pending = 0
        self.gifts: dict[str, int] = {}


class Chat:
    def __init__(self, fanout: Fanout, config: EventsConfig, mutes: Moderation, chat_filter: ChatFilter,
                 clock: Callable[[], float] = time.time) -> None:
        self._fanout = fanout
        self._config = config
        self._mutes = mutes
        self._filter = chat_filter
        self._clock = clock
        self._gift_values = {gift.kind: gift.value for gift in config.gifts}
        self._chat_limit = RateLimiter(config.chat_per_second, config.chat_burst)
        self._gift_limit = RateLimiter(config.gifts_per_second, config.gift_burst)
        self._like_limit = RateLimiter(config.likes_per_second, config.like_burst)
        self._rooms: dict[str, _RoomChat] = {}
        self._ids = itertools.count(1)

    def _room(self, name: str) -> _RoomChat:
        state = self._rooms.get(name)
        if state is None:
            state = self._rooms[name] = _RoomChat(self._config.chat_history)
        return state

    @staticmethod
    def _limit(limiter: RateLimiter, sender: Sender, frame: ClientFrame) -> None:
        if limiter.allow(f"{sender.room}/{sender.identity}") > 0:
            raise ProtocolError("rate_limited", f"too many {frame.type} messages; slow down", frame.ref)

    def _from(self, sender: Sender) -> dict[str, str]:
        return {"identity": sender.identity, "role": sender.role, "name": sender.name or sender.identity}

    # -- client frames ------------------------------------------------------------------------------

    def chat(self, sender: Sender, frame: ClientFrame) -> None:
        text = text_field(frame, "text", self._config.max_chat_length)
        muted = self._mutes.muted_until(sender.room, sender.identity)
        if muted:
            raise ProtocolError("muted", f"you are muted until {time.strftime('%H:%M:%S', time.localtime(muted))}",
                                frame.ref)
        self._limit(self._chat_limit, sender, frame)
        published = self._filter(text)
        if published is None:
            raise ProtocolError("filtered", "message was not published", frame.ref)
        message = {"type": "chat", "id": next(self._ids), "from": self._from(sender), "text": published,
                   "ts": int(self._clock() * 1000)}
        self._room(sender.room).history.append(message)
        self._fanout.broadcast(sender.room, message)

    def gift(self, sender: Sender, frame: ClientFrame) -> GiftSent:
        kind = frame.data.get("kind")
        if not isinstance(kind, str) or kind not in self._gift_values:
            raise ProtocolError("bad_message", f"'kind' must be one of {', '.join(self._gift_values)}", frame.ref)
        count = int_field(frame, "count", 1, self._config.max_gift_count, default=1)
        side = optional_text(frame, "side", 64)
        self._limit(self._gift_limit, sender, frame)
        state = self._room(sender.room)
        state.gifts[kind] = state.gifts.get(kind, 0) + count
        self._fanout.broadcast(sender.room, {"type": "gift", "id": next(self._ids), "from": self._from(sender),
                                             "kind": kind, "count": count, "ts": int(self._clock() * 1000)})
        return GiftSent(sender.room, count * self._gift_values[kind], side)

    def like(self, sender: Sender, frame: ClientFrame) -> None:
        count = int_field(frame, "count", 1, 100, default=1)
        self._limit(self._like_limit, sender, frame)
        state = self._room(sender.room)
        state.likes_pending += count
        state.likes_total += count

    # -- aggregates and snapshots -------------------------------------------------------------------

    def tick(self) -> None:
        """Likes go out aggregated: one ``likes`` frame per room and interval, never one per like."""
        for name, state in list(self._rooms.items()):
            if state.likes_pending:
                self._fanout.broadcast(name, {"type": "likes", "total": state.likes_total,
                                              "delta": state.likes_pending})
                state.likes_pending = 0

    def snapshot(self, room: str, identity: str) -> dict[str, Any]:
        state = self._rooms.get(room)
        muted = self._mutes.muted_until(room, identity)
        return {"likes": state.likes_total if state else 0,
                "gifts": dict(state.gifts) if state else {},
                "gift_catalog": [{"kind": g.kind, "value": g.value} for g in self._config.gifts],
                "max_chat_length": self._config.max_chat_length,
                "chat": list(state.history) if state else [],
                "muted_until": int(muted * 1000) if muted else None}

    def restore(self, room: str, history: list[Message], likes: int, gifts: dict[str, int]) -> None:
        """Take a room over from another worker: its history and totals as that worker left them."""
        state = self._room(room)
        state.history.clear()
        state.history.extend(history)
        state.likes_total, state.likes_pending, state.gifts = likes, 0, dict(gifts)
        # Message ids go on past the restored ones: a client keys its chat list by them.
        top = max((int(m["id"]) for m in history if isinstance(m.get("id"), int)), default=0)
        peek = next(self._ids)
        self._ids = itertools.count(max(peek, top + 1))

    def room_closed(self, room: str) -> None:
        self._rooms.pop(room, None)
