"""A room's event state as any worker can hold it: what a welcome snapshot shows, kept by applying frames.

The room's owner decides every event; the other workers with sockets in the room hold a replica of
this state, fed by the owner's snapshots and the room's event stream, so that a socket joining there
gets the same welcome as it would at the owner. The state is nothing but what the room's broadcast
frames say (:meth:`RoomState.apply`), so a replica cannot drift from the frames its sockets were sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from signaling.config import EventsConfig
from signaling.events.protocol import Message


def default_layout(room: str) -> list[dict[str, Any]]:
    """The layout of a room nobody is on mic in (what ``hub.layout_of`` says of such a room)."""
    return [{"slot": 0, "role": "host", "room": room, "identity": None, "live": False}]


@dataclass
class RoomState:
    room: str
    seq: int = 0  # the last room event this state includes (its number within ``epoch``)
    epoch: int = 0
    title: str = ""
    live: bool = False
    host: str | None = None
    viewers: int = 0
    online: int = 0
    likes: int = 0
    gifts: dict[str, int] = field(default_factory=dict)
    chat: list[Message] = field(default_factory=list)
    layout: list[dict[str, Any]] | None = None
    pk: dict[str, Any] | None = None  # id, rooms, hosts, scores, ends_at (ms)
    mutes: dict[str, float] = field(default_factory=dict)  # identity -> muted until (s since the epoch)

    def apply(self, message: Message, history: int) -> None:
        """Fold one frame broadcast to the room into the state; frames that change nothing are ignored."""
        kind = message.get("type")
        if kind == "chat":
            self.chat.append(message)
            del self.chat[:-history]
        elif kind == "gift":
            gift = str(message.get("kind"))
            self.gifts[gift] = self.gifts.get(gift, 0) + int(message.get("count", 0))
        elif kind == "likes":
            self.likes = int(message.get("total", self.likes))
        elif kind == "host":
            self.live = bool(message.get("live"))
            self.host = message.get("host")
            self.title = str(message.get("title") or self.title)
        elif kind == "layout":
            self.layout = list(message.get("slots") or [])
        elif kind == "viewers":
            self.viewers = int(message.get("count", 0))
            self.online = int(message.get("online", 0))
        elif kind == "moderation":
            target = str(message.get("target"))
            if message.get("action") == "mute" and message.get("until"):
                self.mutes[target] = float(message["until"]) / 1000
            elif message.get("action") == "unmute":
                self.mutes.pop(target, None)
        elif kind == "pk_started":
            self.pk = {"id": message.get("id"), "rooms": list(message.get("rooms") or []),
                       "hosts": dict(message.get("hosts") or {}), "scores": dict(message.get("scores") or {}),
                       "ends_at": message.get("ends_at")}
        elif kind == "pk_score" and self.pk is not None and self.pk.get("id") == message.get("id"):
            self.pk["scores"] = dict(message.get("scores") or {})
        elif kind == "pk_ended" and self.pk is not None and self.pk.get("id") == message.get("id"):
            self.pk = None

    def pk_snapshot(self, now: float) -> dict[str, Any] | None:
        """The running battle as the welcome shows it (``PkBattles.snapshot``'s shape)."""
        if self.pk is None:
            return None
        ends_at = float(self.pk.get("ends_at") or 0)
        return {**self.pk, "remaining_s": round(max(0.0, ends_at / 1000 - now), 1)}

    def snapshot(self, identity: str, now: float, config: EventsConfig) -> dict[str, Any]:
        """The welcome's ``snapshot`` for ``identity``, in the owner's shape (hub.EventHub._welcome)."""
        muted = self.mutes.get(identity)
        return {"title": self.title or self.room, "live": self.live, "host": self.host, "viewers": self.viewers,
                "online": self.online, "likes": self.likes, "gifts": dict(self.gifts),
                "gift_catalog": [{"kind": g.kind, "value": g.value} for g in config.gifts],
                "max_chat_length": config.max_chat_length, "chat": list(self.chat),
                "muted_until": int(muted * 1000) if muted and muted > now else None,
                "layout": self.layout if self.layout is not None else default_layout(self.room),
                "pk": self.pk_snapshot(now)}

    # -- the wire (Redis) ---------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"room": self.room, "seq": self.seq, "epoch": self.epoch, "title": self.title,
                           "live": self.live, "host": self.host, "viewers": self.viewers, "online": self.online,
                           "likes": self.likes, "gifts": self.gifts, "chat": self.chat, "layout": self.layout,
                           "pk": self.pk, "mutes": self.mutes}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RoomState:
        data = json.loads(text)
        return cls(room=str(data["room"]), seq=int(data.get("seq", 0)), epoch=int(data.get("epoch", 0)),
                   title=str(data.get("title", "")), live=bool(data.get("live")), host=data.get("host"),
                   viewers=int(data.get("viewers", 0)), online=int(data.get("online", 0)),
                   likes=int(data.get("likes", 0)),
                   gifts={str(k): int(v) for k, v in (data.get("gifts") or {}).items()},
                   chat=list(data.get("chat") or []), layout=data.get("layout"), pk=data.get("pk"),
                   mutes={str(k): float(v) for k, v in (data.get("mutes") or {}).items()})
