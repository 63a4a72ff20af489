"""Co-streaming over room events: guests on mic and PK battles (docs/protocol.md).

The media side is the relay's (Room.claim_guest, Room.link_pk and the layout); this module owns
invitations, the battle timer, the scoreboard and the result, and tells both rooms about them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.errors import PkBusy, RelayError
from relay.room import Room, Rooms
from signaling.auth import TokenService
from signaling.events.protocol import ClientFrame, ProtocolError, text_field

if TYPE_CHECKING:
    from signaling.events.hub import Client, EventHub

log = logging.getLogger("cherry.signaling.costream")


@dataclass(frozen=True, slots=True)
class CostreamSettings:
    pk_duration: float = 300.0
    pk_invite_timeout: float = 15.0
    pk_host_grace: float = 10.0
    pk_tick: float = 1.0
    guest_invite_timeout: float = 30.0


@dataclass
class PkInvitation:
    id: str
    from_room: str
    to_room: str
    from_identity: str
    expires_at: float
    timer: asyncio.TimerHandle | None = None


@dataclass
class Battle:
    id: str
    rooms: tuple[str, str]
    hosts: dict[str, str | None]
    started_at: float
    ends_at: float
    scores: dict[str, int] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    ticker: asyncio.Task[None] | None = None
    grace: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

    def other(self, room: str) -> str:
        return self.rooms[1] if room == self.rooms[0] else self.rooms[0]

    def remaining(self, now: float) -> float:
        return max(0.0, self.ends_at - now)


@dataclass
class GuestInvitation:
    id: str
    room: str
    identity: str
    by: str
    timer: asyncio.TimerHandle | None = None


class Costream:
    def __init__(self, hub: EventHub, rooms: Rooms, tokens: TokenService, settings: CostreamSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.hub = hub
        self.rooms = rooms
        self.tokens = tokens
        self.settings = settings
        self._clock = clock
        self._ids = itertools.count(1)
        self.invitations: dict[str, PkInvitation] = {}
        self.battles: dict[str, Battle] = {}  # by room name, both rooms of a battle
        self.guest_invitations: dict[str, GuestInvitation] = {}
        self.results: list[dict[str, Any]] = []  # finished battles, newest last (bounded)

    # -- dispatch ------------------------------------------------------------

    def handle(self, client: Client, frame: ClientFrame) -> None:
        kind = frame.type
        if kind == "pk_invite":
            self._pk_invite(client, frame)
        elif kind in ("pk_accept", "pk_reject"):
            self._pk_answer(client, frame, kind == "pk_accept")
        elif kind == "pk_end":
            self._require_host(client, frame)
            battle = self.battles.get(client.room)
            if battle is None:
                raise ProtocolError("pk_not_active", "this room is not in a PK battle", frame.ref)
            self.end_battle(battle, f"ended early by {client.identity}")
        elif kind == "guest_invite":
            self._guest_invite(client, frame)
        elif kind in ("guest_accept", "guest_reject"):
            self._guest_answer(client, frame, kind == "guest_accept")
        elif kind == "guest_end":
            self._guest_end(client, frame)

    def _require_host(self, client: Client, frame: ClientFrame) -> Room:
        room = self.rooms.get(client.room)
        if client.role not in ("host", "admin") or room is None:
            raise ProtocolError("not_allowed", f"only the host may {frame.type.replace('_', ' ')}", frame.ref)
        return room

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    # -- PK invitations --------------------------------------------------------

    def _pending_for(self, room: str) -> PkInvitation | None:
        for invitation in self.invitations.values():
            if room in (invitation.from_room, invitation.to_room):
                return invitation
        return None

    def _pk_invite(self, client: Client, frame: ClientFrame) -> None:
        room = self._require_host(client, frame)
        target = text_field(frame, "room", 64)
        other = self.rooms.get(target)
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
            self._drop_invitation(crossing)
            self.start_battle(crossing.id, target, room.name)
            return
        for name in (room.name, target):
            pending = self._pending_for(name)
            if pending is not None:
                raise ProtocolError("pk_busy", f"room {name!r} has a PK invitation pending", frame.ref)
        now = self._clock()
        invitation = PkInvitation(self._new_id("pk"), room.name, target, client.identity,
                                  now + self.settings.pk_invite_timeout)
        invitation.timer = asyncio.get_running_loop().call_later(
            self.settings.pk_invite_timeout, self._invitation_expired, invitation.id)
        self.invitations[invitation.id] = invitation
        expires = int(invitation.expires_at * 1000)
        self.hub.to_role(target, ("host",), {"type": "pk_invitation", "id": invitation.id, "from_room": room.name,
                                             "from": client.identity, "expires_at": expires})
        self.hub.to_role(room.name, ("host",), {"type": "pk_invite_sent", "id": invitation.id, "to_room": target,
                                               "expires_at": expires})
        log.info("room=%s participant=%s PK invitation %s to room %s", room.name, client.identity,
                 invitation.id, target)

    def _drop_invitation(self, invitation: PkInvitation) -> None:
        self.invitations.pop(invitation.id, None)
        if invitation.timer is not None:
            invitation.timer.cancel()

    def _invitation_expired(self, invitation_id: str) -> None:
        invitation = self.invitations.get(invitation_id)
        if invitation is None:
            return
        self._drop_invitation(invitation)
        self._tell_rejected(invitation, "no answer in time")

    def _tell_rejected(self, invitation: PkInvitation, reason: str) -> None:
        message = {"type": "pk_rejected", "id": invitation.id, "from_room": invitation.from_room,
                   "to_room": invitation.to_room, "reason": reason}
        self.hub.to_role(invitation.from_room, ("host",), message)
        self.hub.to_role(invitation.to_room, ("host",), message)

    def _pk_answer(self, client: Client, frame: ClientFrame, accept: bool) -> None:
        self._require_host(client, frame)
        invitation = self.invitations.get(str(frame.data.get("id", "")))
        if invitation is None or invitation.to_room != client.room:
            raise ProtocolError("unknown_invitation", "no such PK invitation for this room (expired?)", frame.ref)
        self._drop_invitation(invitation)
        if not accept:
            self._tell_rejected(invitation, f"rejected by {client.identity}")
            return
        self.start_battle(invitation.id, invitation.from_room, invitation.to_room)

    # -- battles -----------------------------------------------------------------

    def start_battle(self, battle_id: str, a: str, b: str) -> None:
        room_a, room_b = self.rooms.get(a), self.rooms.get(b)
        if room_a is None or room_b is None or not room_a.live or not room_b.live:
            for name in (a, b):
                self.hub.to_role(name, ("host",), {"type": "pk_rejected", "id": battle_id, "from_room": a,
                                                   "to_room": b, "reason": "a room is no longer live"})
            return
        try:
            room_a.link_pk(room_b)
        except (PkBusy, RelayError) as exc:
            for name in (a, b):
                self.hub.to_role(name, ("host",), {"type": "pk_rejected", "id": battle_id, "from_room": a,
                                                   "to_room": b, "reason": str(exc)})
            return
        now = self._clock()
        battle = Battle(battle_id, (a, b), {a: room_a.host.identity if room_a.host else None,
                                            b: room_b.host.identity if room_b.host else None},
                        now, now + self.settings.pk_duration, {a: 0, b: 0})
        loop = asyncio.get_running_loop()
        battle.timer = loop.call_later(self.settings.pk_duration, self.end_battle, battle, "time is up")
        battle.ticker = asyncio.ensure_future(self._tick(battle))
        self.battles[a] = self.battles[b] = battle
        message = {"type": "pk_started", "id": battle_id, "rooms": [a, b], "hosts": battle.hosts,
                   "duration_s": self.settings.pk_duration, "ends_at": int(battle.ends_at * 1000),
                   "scores": dict(battle.scores)}
        for name in (a, b):
            self.hub.broadcast(name, message)
            partner = battle.other(name)
            host = battle.hosts[name]
            if host is not None:
                # The host hears and sees its partner over a plain WHEP session to the partner's room.
                # A PK grant: the relay honours it only while this link lasts.
                token = self.tokens.mint(partner, "viewer", host, int(self.settings.pk_duration) + 600, scope="pk")
                self.hub.to_identity(name, host, {"type": "pk_partner", "id": battle_id, "room": partner,
                                                  "host": battle.hosts[partner], "token": token})
        self.hub.notify_pk(battle_id, "started", [a, b], None)
        log.info("room=%s PK %s started with room %s", a, battle_id, b)

    async def _tick(self, battle: Battle) -> None:
        try:
            while True:
                await asyncio.sleep(self.settings.pk_tick)
                self._send_scores(battle)
        except asyncio.CancelledError:
            pass

    def _send_scores(self, battle: Battle) -> None:
        message = {"type": "pk_score", "id": battle.id, "scores": dict(battle.scores),
                   "remaining_s": round(battle.remaining(self._clock()), 1)}
        for name in battle.rooms:
            self.hub.broadcast(name, message)

    def on_gift(self, room: str, identity: str, points: int, side: str | None) -> None:
        battle = self.battles.get(room)
        if battle is None or points <= 0:
            return
        target = side if side in battle.rooms else room
        battle.scores[target] += points
        self._send_scores(battle)

    def end_battle(self, battle: Battle, reason: str, winner: str | None = None) -> None:
        a, b = battle.rooms
        if self.battles.get(a) is not battle:
            return  # already ended
        del self.battles[a]
        del self.battles[b]
        for handle in (battle.timer, *battle.grace.values()):
            if handle is not None:
                handle.cancel()
        if battle.ticker is not None:
            battle.ticker.cancel()
        if winner is None and battle.scores[a] != battle.scores[b]:
            winner = a if battle.scores[a] > battle.scores[b] else b
        result = {name: ("draw" if winner is None else "win" if name == winner else "lose") for name in (a, b)}
        message = {"type": "pk_ended", "id": battle.id, "scores": dict(battle.scores), "result": result,
                   "winner": winner, "reason": reason}
        self.results.append({**message, "ended_at": self._clock()})
        del self.results[:-100]
        room = self.rooms.get(a)
        if room is not None:
            room.unlink_pk()
        for name in (a, b):
            self.hub.broadcast(name, message)
        self.hub.notify_pk(battle.id, "ended", [a, b], result)
        log.info("room=%s PK %s with room %s ended (%s): %s", a, battle.id, b, reason, result)

    # -- host presence during a battle -------------------------------------------

    def host_changed(self, room: str, live: bool) -> None:
        battle = self.battles.get(room)
        if battle is None:
            invitation = self._pending_for(room)
            if invitation is not None and not live:
                self._drop_invitation(invitation)
                self._tell_rejected(invitation, f"room {room!r} went offline")
            return
        if live:
            handle = battle.grace.pop(room, None)
            if handle is not None:
                handle.cancel()
                log.info("room=%s host is back within the PK grace period", room)
            return
        if room not in battle.grace:
            other = battle.other(room)
            battle.grace[room] = asyncio.get_running_loop().call_later(
                self.settings.pk_host_grace, self.end_battle, battle, f"the host of {room} left", other)

    def room_closed(self, room: str) -> None:
        battle = self.battles.get(room)
        if battle is not None:
            self.end_battle(battle, f"room {room} ended", battle.other(room))
        invitation = self._pending_for(room)
        if invitation is not None:
            self._drop_invitation(invitation)
            self._tell_rejected(invitation, f"room {room!r} ended")

    # -- guests on mic -------------------------------------------------------------

    def _guest_invite(self, client: Client, frame: ClientFrame) -> None:
        room = self._require_host(client, frame)
        identity = text_field(frame, "identity", 128)
        if not self.hub.has_socket(room.name, identity):
            raise ProtocolError("unknown_target", f"{identity!r} is not in this room", frame.ref)
        if len(room.guests) >= self.rooms.max_guests:
            raise ProtocolError("guest_slots_full", "all guest slots are taken", frame.ref)
        invitation = GuestInvitation(self._new_id("g"), room.name, identity, client.identity)
        invitation.timer = asyncio.get_running_loop().call_later(
            self.settings.guest_invite_timeout, self._guest_expired, invitation.id)
        self.guest_invitations[invitation.id] = invitation
        self.hub.to_identity(room.name, identity, {"type": "guest_invitation", "id": invitation.id,
                                                   "from": client.identity})
        log.info("room=%s participant=%s invites %s on mic", room.name, client.identity, identity)

    def _guest_expired(self, invitation_id: str) -> None:
        invitation = self.guest_invitations.pop(invitation_id, None)
        if invitation is not None:
            self.hub.to_role(invitation.room, ("host",), {"type": "guest_rejected", "id": invitation.id,
                                                          "identity": invitation.identity, "reason": "no answer"})

    def _guest_answer(self, client: Client, frame: ClientFrame, accept: bool) -> None:
        invitation = self.guest_invitations.get(str(frame.data.get("id", "")))
        if invitation is None or invitation.identity != client.identity or invitation.room != client.room:
            raise ProtocolError("unknown_invitation", "no such guest invitation for you (expired?)", frame.ref)
        del self.guest_invitations[invitation.id]
        if invitation.timer is not None:
            invitation.timer.cancel()
        if not accept:
            self.hub.to_role(client.room, ("host",), {"type": "guest_rejected", "id": invitation.id,
                                                      "identity": client.identity, "reason": "declined"})
            return
        room = self.rooms.get(client.room)
        if room is None:
            raise ProtocolError("unknown_invitation", "this room has ended", frame.ref)
        room.grant_guest(client.identity)  # the grant the token carries holds only while this lasts
        token = self.tokens.mint(client.room, "guest", client.identity)
        self.hub.to_identity(client.room, client.identity, {"type": "guest_token", "id": invitation.id,
                                                            "room": client.room, "token": token})
        self.hub.to_role(client.room, ("host",), {"type": "guest_accepted", "id": invitation.id,
                                                  "identity": client.identity})

    def _guest_end(self, client: Client, frame: ClientFrame) -> None:
        # The host names who leaves the mic; anyone else can only take themselves off.
        is_host = client.role in ("host", "admin")
        identity = text_field(frame, "identity", 128) if is_host else client.identity
        room = self.rooms.get(client.room)
        if room is None or identity not in room.guest_grants:
            raise ProtocolError("unknown_target", f"{identity!r} is not on mic", frame.ref)
        room.revoke_guest(identity, f"off mic ({client.identity})")
