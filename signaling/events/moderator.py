"""Moderation frames: mute, unmute, kick, ban, unban.

Kicks and bans go through the relay room (``Room.kick`` / ``Room.ban``), the one place that ends an
identity's media sessions and room sockets; mutes are chat-only and live in :class:`.Moderation`.
"""

from __future__ import annotations

import logging
import time

from signaling.config import EventsConfig
from signaling.events.moderation import Moderation
from signaling.events.ports import Fanout, ModeratedRooms, Sender
from signaling.events.protocol import ClientFrame, ProtocolError, int_field, text_field
from signaling.events.roles import BANNERS, MODERATORS

log = logging.getLogger("cherry.signaling.events")

class Moderator:
    def __init__(self, fanout: Fanout, rooms: ModeratedRooms, mutes: Moderation, config: EventsConfig) -> None:
        self._fanout = fanout
        self._rooms = rooms
        self._mutes = mutes
        self._config = config

    def handle(self, sender: Sender, frame: ClientFrame) -> None:
        action = frame.type
        role = sender.role
        if role not in (BANNERS if action in ("ban", "unban") else MODERATORS):
            raise ProtocolError("not_allowed", f"{role} may not {action}", frame.ref)
        target = text_field(frame, "identity", 128)
        room = self._rooms.get(sender.room)
        if room is None:  # the sender's own socket keeps its room open; only a race gets here
            raise ProtocolError("unknown_target", "this room has ended", frame.ref)
        if sender.granted_role != "admin" and room.role_of(target) in ("host", "admin"):
            raise ProtocolError("not_allowed", f"cannot {action} the host or an admin", frame.ref)
        until: float | None = None
        if action == "mute":
            seconds = int_field(frame, "duration_s", 1, 86400 * 30, self._config.default_mute_s)
            until = self._mutes.mute(sender.room, target, seconds)
        elif action == "unmute":
            self._mutes.unmute(sender.room, target)
        elif action == "kick":
            if sum(room.kick(target, f"kicked by {sender.identity}")) == 0:
                raise ProtocolError("unknown_target", f"{target!r} is not in this room", frame.ref)
        elif action == "ban":
            seconds = int_field(frame, "duration_s", 1, 86400 * 365, self._config.default_ban_s)
            until = room.ban(target, seconds, f"banned by {sender.identity}")
        elif action == "unban":
            lifted = room.unban(target, f"unbanned by {sender.identity}")
            if not lifted:
                raise ProtocolError("unknown_target", f"{target!r} is not banned from this room", frame.ref)
        log.info("room=%s participant=%s moderation=%s target=%s until=%s", sender.room, sender.identity, action,
                 target, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(until)) if until else "-")
        self._fanout.broadcast(sender.room, {"type": "moderation", "action": action, "target": target,
                                             "by": sender.identity, "until": int(until * 1000) if until else None})
