"""PK battles over room events: invitations, the battle timer, the scoreboard and the result.

The media side is the relay's (``Room.link_pk`` and the layout); this module is the state machine
around it, driven by client frames, gifts, the relay's host and room changes, and injected timers:

    invited --accept / crossing invite--> battle --time up / pk_end / host away past grace / room closed--> ended
       \\--reject / timeout / room offline or closed--> rejected
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from relay.config import CostreamConfig
from relay.errors import RelayError
from signaling.events.ports import Fanout, Minter, Scheduler, Sender, StageRooms, Timer
from signaling.events.protocol import ClientFrame, Message, ProtocolError, text_field
from signaling.events.roles import HOSTS, require_host

log = logging.getLogger("cherry.signaling.costream")

# Told when a battle starts or ends: (battle id, "started"/"ended", rooms, result or None).
PkListener = Callable[[str, str, list[str], dict[str, str] | None], None]


@dataclass
class PkInvitation:
    id: str
    from_room: str
    to_room: str
    from_identity: str
    expires_at: float
    timer: Timer | None = None


@dataclass
class Battle:
    id: str
    rooms: tuple[str, str]
    hosts: dict[str, str | None]
    started_at: float
    ends_at: float
    scores: dict[str, int] = field(default_factory=dict)
    timer: Timer | None = None  # the end of the battle
    ticker: Timer | None = None  # the next score tick
    grace: dict[str, Timer] = field(default_factory=dict)  # by room: its host has until then to return

    def other(self, room: str) -> str:
        return self.rooms[1] if room == self.rooms[0] else self.rooms[0]

    def remaining(self, now: float) -> float:
        return max(0.0, self.ends_at - now)


class PkBattles:
    def __init__(self, fanout: Fanout, rooms: StageRooms, tokens: Minter, config: CostreamConfig,
                 scheduler: Scheduler) -> None:
        self._fanout = fanout
        self._rooms = rooms
        self._tokens = tokens
        self._config = config
        self._scheduler = scheduler
        self._ids: Iterator[object] = itertools.count(1)
        self.invitations: dict[str, PkInvitation] = {}
        self.battles: dict[str, Battle] = {}  # by room name: both rooms of a battle
        self.results: list[dict[str, Any]] = []  # finished battles, newest last (bounded)
        self.listeners: list[PkListener] = []

    # -- client frames ------------------------------------------------------------------------------

    def handle(self, sender: Sender, frame: ClientFrame) -> None:
        if frame.type == "pk_invite":
            self._invite(sender, frame)
        elif frame.type in ("pk_accept", "pk_reject"):
            self._answer(sender, frame, frame.type == "pk_accept")
        elif frame.type == "pk_end":
            require_host(self._rooms, sender, frame)
            battle = self.battles.get(sender.room)
            if battle is None:
                raise ProtocolError("pk_not_active", "this room is not in a PK battle", frame.ref)
            self.end_battle(battle, f"ended early by {sender.identity}")

    def _pending_for(self, room: str) -> PkInvitation | None:
        for invitation in self.invitations.values():  # at most one per room: a handful at any time
            if room in (invitation.from_room, invitation.to_room):
                return invitation
        return None

    def _invite(self, sender: Sender, frame: ClientFrame) -> None:
        room = require_host(self._rooms, sender, frame)
        target = text_field(frame, "room", 64)
        other = self._rooms.get(target)
        if target == room.name:
            raise ProtocolError("pk_refused", "a room cannot battle itself", frame.ref)
        if not room.live:
            raise ProtocolError("pk_refused", "go live before inviting another host", frame.ref)
        if other is None or not other.live:
            raise ProtocolError("pk_refused", f"room {target!r} is not live", frame.ref)
        for linked in (room, other):
            if linked.name in self.battles or linked.pk_partner is not None:
                raise ProtocolError("pk_busy", f"room {linked.name!r} is already in a PK battle", frame.ref)
        crossing = self._pending_for(target)
        if crossing is not None and crossing.from_room == target and crossing.to_room == room.name:
            # Both hosts invited each other: that is a yes from both sides, and exactly one link.
            self._drop(crossing)
            self.start_battle(crossing.id, target, room.name)
            return
        for name in (room.name, target):
            if self._pending_for(name) is not None:
                raise ProtocolError("pk_busy", f"room {name!r} has a PK invitation pending", frame.ref)
        timeout = self._config.pk_invite_timeout_s
        invitation = PkInvitation(f"pk{next(self._ids)}", room.name, target, sender.identity,
                                  self._scheduler.now() + timeout)
        invitation.timer = self._scheduler.call_later(timeout, lambda: self._expired(invitation.id))
        self.invitations[invitation.id] = invitation
        expires = int(invitation.expires_at * 1000)
        self._fanout.to_roles(target, HOSTS, {"type": "pk_invitation", "id": invitation.id, "from_room": room.name,
                                              "from": sender.identity, "expires_at": expires})
        self._fanout.to_roles(room.name, HOSTS, {"type": "pk_invite_sent", "id": invitation.id, "to_room": target,
                                                 "expires_at": expires})
        log.info("room=%s participant=%s PK invitation %s to room %s", room.name, sender.identity, invitation.id,
                 target)

    def _drop(self, invitation: PkInvitation) -> None:
        self.invitations.pop(invitation.id, None)
        if invitation.timer is not None:
            invitation.timer.cancel()

    def _expired(self, invitation_id: str) -> None:
        invitation = self.invitations.get(invitation_id)
        if invitation is not None:
            self._drop(invitation)
            self._rejected(invitation.id, invitation.from_room, invitation.to_room, "no answer in time")

    def _rejected(self, battle_id: str, from_room: str, to_room: str, reason: str) -> None:
        message = {"type": "pk_rejected", "id": battle_id, "from_room": from_room, "to_room": to_room,
                   "reason": reason}
        for name in (from_room, to_room):
            self._fanout.to_roles(name, HOSTS, message)

    def _answer(self, sender: Sender, frame: ClientFrame, accept: bool) -> None:
        require_host(self._rooms, sender, frame)
        invitation = self.invitations.get(text_field(frame, "id", 64))
        if invitation is None or invitation.to_room != sender.room:
            raise ProtocolError("unknown_invitation", "no such PK invitation for this room (expired?)", frame.ref)
        self._drop(invitation)
        if accept:
            self.start_battle(invitation.id, invitation.from_room, invitation.to_room)
        else:
            self._rejected(invitation.id, invitation.from_room, invitation.to_room, f"rejected by {sender.identity}")

    # -- battles ------------------------------------------------------------------------------------

    def start_battle(self, battle_id: str, a: str, b: str) -> None:
        room_a, room_b = self._rooms.get(a), self._rooms.get(b)
        if room_a is None or room_b is None or not room_a.live or not room_b.live:
            self._rejected(battle_id, a, b, "a room is no longer live")
            return
        try:
            room_a.link_pk(room_b)
        except RelayError as exc:  # PkBusy, RoomClosed
            self._rejected(battle_id, a, b, str(exc))
            return
        now = self._scheduler.now()
        duration = self._config.pk_duration_s
        hosts = {a: room_a.host.identity if room_a.host else None, b: room_b.host.identity if room_b.host else None}
        battle = Battle(battle_id, (a, b), hosts, now, now + duration, {a: 0, b: 0})
        battle.timer = self._scheduler.call_later(duration, lambda: self.end_battle(battle, "time is up"))
        self.battles[a] = self.battles[b] = battle
        self._schedule_tick(battle)
        message = {"type": "pk_started", "id": battle_id, "rooms": [a, b], "hosts": battle.hosts,
                   "duration_s": duration, "ends_at": int(battle.ends_at * 1000), "scores": dict(battle.scores)}
        for name in (a, b):
            self._fanout.broadcast(name, message)
            partner, host = battle.other(name), battle.hosts[name]
            if host is not None:
                # The host hears and sees its partner over a plain WHEP session to the partner's room.
                # A PK grant: the relay honours it only while this link lasts.
                token = self._tokens.mint(partner, "viewer", host, int(duration) + 600, scope="pk")
                self._fanout.to_identity(name, host, {"type": "pk_partner", "id": battle_id, "room": partner,
                                                      "host": battle.hosts[partner], "token": token})
        self._notify(battle_id, "started", [a, b], None)
        log.info("room=%s PK %s started with room %s", a, battle_id, b)

    def _schedule_tick(self, battle: Battle) -> None:
        def tick() -> None:
            if self.battles.get(battle.rooms[0]) is battle:
                self._send_scores(battle)
                self._schedule_tick(battle)

        battle.ticker = self._scheduler.call_later(self._config.pk_tick_s, tick)

    def _send_scores(self, battle: Battle) -> None:
        message = {"type": "pk_score", "id": battle.id, "scores": dict(battle.scores),
                   "remaining_s": round(battle.remaining(self._scheduler.now()), 1)}
        for name in battle.rooms:
            self._fanout.broadcast(name, message)

    def on_gift(self, room: str, points: int, side: str | None) -> None:
        battle = self.battles.get(room)
        if battle is None or points <= 0:
            return
        battle.scores[side if side in battle.rooms else room] += points
        self._send_scores(battle)

    def end_battle(self, battle: Battle, reason: str, winner: str | None = None) -> None:
        a, b = battle.rooms
        if self.battles.get(a) is not battle:
            return  # already ended
        del self.battles[a]
        del self.battles[b]
        for timer in (battle.timer, battle.ticker, *battle.grace.values()):
            if timer is not None:
                timer.cancel()
        if winner is None and battle.scores[a] != battle.scores[b]:
            winner = a if battle.scores[a] > battle.scores[b] else b
        result = {name: ("draw" if winner is None else "win" if name == winner else "lose") for name in (a, b)}
        message: Message = {"type": "pk_ended", "id": battle.id, "scores": dict(battle.scores), "result": result,
                            "winner": winner, "reason": reason}
        self.results.append({**message, "ended_at": self._scheduler.now()})
        del self.results[:-100]
        room = self._rooms.get(a)
        if room is not None:
            room.unlink_pk()
        for name in (a, b):
            self._fanout.broadcast(name, message)
        self._notify(battle.id, "ended", [a, b], result)
        log.info("room=%s PK %s with room %s ended (%s): %s", a, battle.id, b, reason, result)

    def _notify(self, battle_id: str, event: str, rooms: list[str], result: dict[str, str] | None) -> None:
        for listener in self.listeners:
            try:
                listener(battle_id, event, rooms, result)
            except Exception:
                log.exception("PK listener failed")

    def snapshot(self, room: str) -> dict[str, Any] | None:
        battle = self.battles.get(room)
        if battle is None:
            return None
        return {"id": battle.id, "rooms": list(battle.rooms), "hosts": battle.hosts, "scores": dict(battle.scores),
                "ends_at": int(battle.ends_at * 1000),
                "remaining_s": round(battle.remaining(self._scheduler.now()), 1)}

    # -- the relay's changes ------------------------------------------------------------------------

    def host_changed(self, room: str, live: bool) -> None:
        battle = self.battles.get(room)
        if battle is None:
            invitation = self._pending_for(room)
            if invitation is not None and not live:
                self._drop(invitation)
                self._rejected(invitation.id, invitation.from_room, invitation.to_room, f"room {room!r} went offline")
            return
        if live:
            timer = battle.grace.pop(room, None)
            if timer is not None:
                timer.cancel()
                log.info("room=%s host is back within the PK grace period", room)
        elif room not in battle.grace:
            other = battle.other(room)
            battle.grace[room] = self._scheduler.call_later(
                self._config.pk_host_grace_s, lambda: self.end_battle(battle, f"the host of {room} left", other))

    def room_closed(self, room: str) -> None:
        battle = self.battles.get(room)
        if battle is not None:
            self.end_battle(battle, f"room {room} ended", battle.other(room))
        invitation = self._pending_for(room)
        if invitation is not None:
            self._drop(invitation)
            self._rejected(invitation.id, invitation.from_room, invitation.to_room, f"room {room!r} ended")
