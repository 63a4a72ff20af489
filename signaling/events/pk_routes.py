"""PK battles between rooms that different workers decide.

A battle is decided once, by the worker deciding the room whose host invited (the battle's
*coordinator*): the invitation and its timer, the scoreboard, the battle timer, the result and the
webhooks all live there, in the unchanged :class:`~.pk.PkBattles` state machine. The invited room's
owner only routes:

* an invitation reaching a room decided here is a claim on it: refused (answered to the coordinator,
  which tells its host ``pk_rejected``) when the room is not live or already has a battle or an
  invitation; otherwise the room's PK frames (``pk_accept``, ``pk_end``...), its gifts' points, its
  host going and coming and its end go to the coordinator until the battle or invitation is over;
* the coordinator's frames for the room (``pk_started``, ``pk_score``, ``pk_ended``...) are emitted
  into the room here, with the room's own sequence numbers, and kept for the welcome snapshot.

Linking the two rooms' media (the partner's host in slot 1): both rooms here, the relay links them in
this process; across workers the coordinator asks the transport (``link_media``), which has each
origin pull its partner room over a pipe (``cluster.pk_media``).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from relay.room import Room, Rooms
from signaling.events.pk import PkBattles
from signaling.events.ports import Fanout, HasIdentity, Minter, Scheduler, Sender
from signaling.events.protocol import ClientFrame, Message
from signaling.events.roles import HOSTS
from signaling.events.state import RoomState

log = logging.getLogger("cherry.signaling.costream")

MARGIN_S = 10.0  # a route outlives its invitation or battle by this much, then goes on its own


class PkTransport(Protocol):
    """How PK messages reach another worker (``cluster.events_bus``); reliable and in order."""

    @property
    def worker_id(self) -> str: ...

    def decides(self, room: str) -> bool: ...

    def send(self, worker: str, item: dict[str, Any]) -> None: ...

    def forward_frame(self, worker: str, sender: Sender, frame: ClientFrame) -> None: ...

    def link_media(self, a: str, host_a: str | None, b: str, host_b: str | None) -> None:
        """Link two rooms' media at their origins (in the background: frames do not wait for pipes)."""

    def unlink_media(self, a: str, b: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Identity:
    identity: str


@dataclass(slots=True)
class RemoteStatus:
    live: bool
    host: str | None


class Stage:
    """A room as this worker's battles see it (``ports.StageRoom``)."""

    def __init__(self, rooms: ClusterStageRooms, name: str) -> None:
        self._rooms = rooms
        self.name = name

    @property
    def live(self) -> bool:
        raise NotImplementedError

    @property
    def host(self) -> HasIdentity | None:
        raise NotImplementedError

    @property
    def guests(self) -> Mapping[str, object]:
        return {}

    @property
    def guest_grants(self) -> Collection[str]:
        return ()

    @property
    def pk_partner(self) -> Stage | None:
        partner = self._rooms.links.get(self.name)
        return self._rooms.get(partner) if partner is not None else None

    def link_pk(self, other: Stage) -> None:
        # A room decided elsewhere: its origin is another worker, so the media link goes through pipes.
        self._rooms.links[self.name] = other.name
        self._rooms.links[other.name] = self.name
        self._rooms.transport.link_media(self.name, _identity(self.host), other.name, _identity(other.host))
        log.info("room=%s PK with room %s, decided on different workers: media linked through pipes",
                 self.name, other.name)

    def unlink_pk(self) -> None:
        partner = self._rooms.links.pop(self.name, None)
        if partner is not None:
            self._rooms.links.pop(partner, None)
            self._rooms.transport.unlink_media(self.name, partner)

    def grant_guest(self, identity: str) -> None:
        raise NotImplementedError("guests are granted by the room's owner")

    def revoke_guest(self, identity: str, reason: str) -> int:
        raise NotImplementedError("guests are granted by the room's owner")

    def mute_guest(self, identity: str, kind: str, muted: bool) -> bool:
        raise NotImplementedError("guests are muted by the room's owner")


def _identity(host: HasIdentity | None) -> str | None:
    return host.identity if host is not None else None


class LocalStage(Stage):
    """A room decided here: the relay room itself."""

    def __init__(self, rooms: ClusterStageRooms, room: Room) -> None:
        super().__init__(rooms, room.name)
        self.room = room

    @property
    def live(self) -> bool:
        return self.room.live

    @property
    def host(self) -> HasIdentity | None:
        return self.room.host

    @property
    def guests(self) -> Mapping[str, object]:
        return self.room.guests

    @property
    def guest_grants(self) -> Collection[str]:
        return self.room.guest_grants

    @property
    def pk_partner(self) -> Stage | None:
        partner = self.room.pk_partner
        if partner is not None and partner.pulled_from is None:
            return LocalStage(self._rooms, partner)
        # A partner pulled from elsewhere is a battle of this module's links: the relay's link to its mirror
        # follows them through the origins, a moment later.
        return super().pk_partner

    def link_pk(self, other: Stage) -> None:
        if isinstance(other, LocalStage):
            self.room.link_pk(other.room)  # both rooms here: the relay links their media
        else:
            super().link_pk(other)

    def unlink_pk(self) -> None:
        if self.name in self._rooms.links:
            super().unlink_pk()  # a partner elsewhere: its origin unlinks the mirror (cluster.pk_media)
        else:
            self.room.unlink_pk()

    def grant_guest(self, identity: str) -> None:
        self.room.grant_guest(identity)

    def revoke_guest(self, identity: str, reason: str) -> int:
        return self.room.revoke_guest(identity, reason)

    def mute_guest(self, identity: str, kind: str, muted: bool) -> bool:
        return self.room.mute_guest(identity, kind, muted)


class RemoteStage(Stage):
    """A room another worker decides, as far as its owner told this worker."""

    @property
    def live(self) -> bool:
        # Unknown until its owner answers the invitation: optimistic, since the owner checks on arrival.
        status = self._rooms.status.get(self.name)
        return status.live if status is not None else True

    @property
    def host(self) -> HasIdentity | None:
        status = self._rooms.status.get(self.name)
        return _Identity(status.host) if status is not None and status.host else None


class ClusterStageRooms:
    """``ports.StageRooms`` for battles that may span workers."""

    def __init__(self, rooms: Rooms, transport: PkTransport) -> None:
        self._rooms = rooms
        self.transport = transport
        self.links: dict[str, str] = {}  # battles with a room decided elsewhere, both ways
        self.status: dict[str, RemoteStatus] = {}  # rooms decided elsewhere, as their owners said

    @property
    def max_guests(self) -> int:
        return self._rooms.max_guests

    def get(self, name: str) -> Stage | None:
        if self.transport.decides(name):
            room = self._rooms.get(name)
            return LocalStage(self, room) if room is not None else None
        return RemoteStage(self, name)


@dataclass(slots=True)
class RemotePk:
    """A room decided here whose invitation or battle another worker decides."""

    worker: str
    id: str
    deadline: float  # the route goes by itself after this (the coordinator may be gone)
    state: RoomState  # the battle as its frames told it (for the welcome snapshot)


class ClusterPk(PkBattles):
    def __init__(self, fanout: Fanout, rooms: ClusterStageRooms, tokens: Minter, config: Any, scheduler: Scheduler,
                 transport: PkTransport) -> None:
        super().__init__(fanout, rooms, tokens, config, scheduler)
        self._stage = rooms
        self._transport = transport
        tag = secrets.token_hex(3)
        # Ids unique across workers: a room's route names one invitation of one coordinator.
        self._ids = (f"{tag}.{n}" for n in itertools.count(1))
        self.routes: dict[str, RemotePk] = {}

    # -- a room decided here, its battle decided elsewhere ---------------------------------------------

    def handle(self, sender: Sender, frame: ClientFrame) -> None:
        route = self.routes.get(sender.room)
        if route is not None:
            self._transport.forward_frame(route.worker, sender, frame)
            return
        super().handle(sender, frame)

    def on_gift(self, room: str, points: int, side: str | None) -> None:
        route = self.routes.get(room)
        if route is not None:
            self._transport.send(route.worker, {"op": "gift", "room": room, "points": points, "side": side})
            return
        super().on_gift(room, points, side)

    def host_changed(self, room: str, live: bool) -> None:
        route = self.routes.get(room)
        if route is not None:
            stage = self._stage.get(room)
            host = stage.host.identity if stage is not None and stage.host is not None else None
            self._transport.send(route.worker, {"op": "host", "room": room, "live": live, "host": host})
            return
        super().host_changed(room, live)

    def room_closed(self, room: str) -> None:
        route = self.routes.pop(room, None)
        if route is not None:
            self._transport.send(route.worker, {"op": "closed", "room": room})
        super().room_closed(room)

    def snapshot(self, room: str) -> dict[str, Any] | None:
        route = self.routes.get(room)
        if route is not None:
            return route.state.pk_snapshot(self._scheduler.now())
        return super().snapshot(room)

    def admit(self, room: str, message: Message, by: str) -> bool:
        """A frame another worker's battle sends into ``room`` (decided here): deliver it or not."""
        kind = message.get("type")
        battle_id = str(message.get("id"))
        route = self.routes.get(room)
        if kind == "pk_invitation":
            refusal = self._refusal(room, battle_id)
            if refusal is not None:
                self._transport.send(by, {"op": "refused", "id": battle_id, "room": room, "reason": refusal})
                return False
            self.routes[room] = RemotePk(by, battle_id, self._scheduler.now() + self._config.pk_invite_timeout_s
                                         + MARGIN_S, RoomState(room))
            stage = self._stage.get(room)
            host = stage.host.identity if stage is not None and stage.host is not None else None
            self._transport.send(by, {"op": "claimed", "id": battle_id, "room": room, "host": host})
            log.info("room=%s PK invitation %s decided by worker %s", room, battle_id, by)
            return True
        if route is not None and route.worker == by and route.id == battle_id:
            route.state.apply(message, 0)
            if kind == "pk_started":
                ends_at = float(message.get("ends_at") or 0) / 1000
                route.deadline = ends_at + self._config.pk_host_grace_s + MARGIN_S
            elif kind in ("pk_rejected", "pk_ended"):
                del self.routes[room]
        return True

    def _refusal(self, room: str, battle_id: str) -> str | None:
        stage = self._stage.get(room)
        if stage is None or not stage.live:
            return f"room {room!r} is not live"
        route = self.routes.get(room)
        if room in self.battles or stage.pk_partner is not None:
            return f"room {room!r} is already in a PK battle"
        if self._pending_for(room) is not None or (route is not None and route.id != battle_id):
            return f"room {room!r} has a PK invitation pending"
        return None

    # -- a battle decided here, one of its rooms decided elsewhere ---------------------------------------

    def on_item(self, item: dict[str, Any]) -> None:
        """What a room's owner told this worker about a battle or invitation decided here."""
        op, room = item.get("op"), str(item.get("room"))
        if op == "gift":
            side = item.get("side")
            super().on_gift(room, int(item.get("points", 0)), str(side) if side is not None else None)
        elif op == "host":
            live = bool(item.get("live"))
            self._stage.status[room] = RemoteStatus(live, item.get("host"))
            super().host_changed(room, live)
        elif op == "closed":
            super().room_closed(room)
        elif op == "claimed":
            self._stage.status[room] = RemoteStatus(True, item.get("host"))
        elif op == "refused":
            invitation = self.invitations.get(str(item.get("id")))
            if invitation is not None and invitation.to_room == room:
                self._drop(invitation)
                self._fanout.to_roles(invitation.from_room, HOSTS, {
                    "type": "pk_rejected", "id": invitation.id, "from_room": invitation.from_room,
                    "to_room": room, "reason": str(item.get("reason"))})
        else:
            log.warning("unknown PK message %r from another worker", op)

    def expire(self) -> None:
        """Routes whose coordinator never ended them (it is gone) end by themselves."""
        now = self._scheduler.now()
        for room, route in list(self.routes.items()):
            if now > route.deadline:
                log.warning("room=%s PK %s of worker %s never ended: dropping its route", room, route.id,
                            route.worker)
                del self.routes[room]
        referenced = {name for battle in self.battles.values() for name in battle.rooms}
        referenced.update(name for i in self.invitations.values() for name in (i.from_room, i.to_room))
        for name in [n for n in self._stage.status if n not in referenced]:
            del self._stage.status[name]
