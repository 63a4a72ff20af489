"""Guests on mic over room events: the host invites, the invitee answers, a guest grant follows.

    invited --guest_accept--> on mic (Room.grant_guest; a guest token to publish with WHIP) --guest_end--> off mic
       \\--guest_reject / no answer in costream.guest_invite_timeout_s / room closed--> dropped

While a guest is on mic the host may mute its audio or video for everyone (``guest_mute``): the relay
stops carrying that track, and the layout says so (``muted``).

The relay holds the grant (``Room.guest_grants``): a guest token acts as guest only while it lasts.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from relay.config import CostreamConfig
from relay.errors import NotOnMic
from signaling.events.ports import Fanout, Minter, Scheduler, Sender, StageRooms, Timer
from signaling.events.protocol import ClientFrame, ProtocolError, bool_field, choice_field, text_field
from signaling.events.roles import HOSTS, require_host

log = logging.getLogger("cherry.signaling.costream")


@dataclass
class GuestInvitation:
    id: str
    room: str
    identity: str
    by: str
    timer: Timer | None = None


class GuestsOnMic:
    def __init__(self, fanout: Fanout, rooms: StageRooms, tokens: Minter, config: CostreamConfig,
                 scheduler: Scheduler) -> None:
        self._fanout = fanout
        self._rooms = rooms
        self._tokens = tokens
        self._config = config
        self._scheduler = scheduler
        self._ids = itertools.count(1)
        self.invitations: dict[str, GuestInvitation] = {}

    def handle(self, sender: Sender, frame: ClientFrame) -> None:
        if frame.type == "guest_invite":
            self._invite(sender, frame)
        elif frame.type in ("guest_accept", "guest_reject"):
            self._answer(sender, frame, frame.type == "guest_accept")
        elif frame.type == "guest_end":
            self._end(sender, frame)
        elif frame.type == "guest_mute":
            self._mute(sender, frame)

    def _invite(self, sender: Sender, frame: ClientFrame) -> None:
        room = require_host(self._rooms, sender, frame)
        identity = text_field(frame, "identity", 128)
        if len(room.guests) >= self._rooms.max_guests:
            raise ProtocolError("guest_slots_full", "all guest slots are taken", frame.ref)
        invitation = GuestInvitation(f"g{next(self._ids)}", room.name, identity, sender.identity)
        if not self._fanout.to_identity(room.name, identity, {"type": "guest_invitation", "id": invitation.id,
                                                              "from": sender.identity}):
            raise ProtocolError("unknown_target", f"{identity!r} is not in this room", frame.ref)
        invitation.timer = self._scheduler.call_later(self._config.guest_invite_timeout_s,
                                                      lambda: self._expired(invitation.id))
        self.invitations[invitation.id] = invitation
        log.info("room=%s participant=%s invites %s on mic", room.name, sender.identity, identity)

    def _drop(self, invitation: GuestInvitation) -> None:
        self.invitations.pop(invitation.id, None)
        if invitation.timer is not None:
            invitation.timer.cancel()

    def _expired(self, invitation_id: str) -> None:
        invitation = self.invitations.pop(invitation_id, None)
        if invitation is not None:
            self._fanout.to_roles(invitation.room, HOSTS, {"type": "guest_rejected", "id": invitation.id,
                                                           "identity": invitation.identity, "reason": "no answer"})

    def _answer(self, sender: Sender, frame: ClientFrame, accept: bool) -> None:
        invitation = self.invitations.get(text_field(frame, "id", 64))
        if invitation is None or invitation.identity != sender.identity or invitation.room != sender.room:
            raise ProtocolError("unknown_invitation", "no such guest invitation for you (expired?)", frame.ref)
        self._drop(invitation)
        if not accept:
            self._fanout.to_roles(sender.room, HOSTS, {"type": "guest_rejected", "id": invitation.id,
                                                       "identity": sender.identity, "reason": "declined"})
            return
        room = self._rooms.get(sender.room)
        if room is None:
            raise ProtocolError("unknown_invitation", "this room has ended", frame.ref)
        room.grant_guest(sender.identity)  # the grant the token carries holds only while this lasts
        token = self._tokens.mint(sender.room, "guest", sender.identity)
        self._fanout.to_identity(sender.room, sender.identity, {"type": "guest_token", "id": invitation.id,
                                                                "room": sender.room, "token": token})
        self._fanout.to_roles(sender.room, HOSTS, {"type": "guest_accepted", "id": invitation.id,
                                                   "identity": sender.identity})

    def _end(self, sender: Sender, frame: ClientFrame) -> None:
        # The host names who leaves the mic; anyone else can only take themselves off.
        identity = text_field(frame, "identity", 128) if sender.role in HOSTS else sender.identity
        room = self._rooms.get(sender.room)
        if room is None or identity not in room.guest_grants:
            raise ProtocolError("unknown_target", f"{identity!r} is not on mic", frame.ref)
        room.revoke_guest(identity, f"off mic ({sender.identity})")

    def _mute(self, sender: Sender, frame: ClientFrame) -> None:
        room = require_host(self._rooms, sender, frame)
        identity = text_field(frame, "identity", 128)
        kind = choice_field(frame, "kind", ("audio", "video"))
        try:
            room.mute_guest(identity, kind, bool_field(frame, "muted", True))  # the layout frame tells everyone
        except NotOnMic as exc:
            raise ProtocolError("unknown_target", f"{identity!r} is not on mic", frame.ref) from exc

    def room_closed(self, room: str) -> None:
        for invitation in [i for i in self.invitations.values() if i.room == room]:
            self._drop(invitation)
