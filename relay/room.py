"""Rooms: who publishes, who watches, how co-streams are laid out, and how long an idle room lives.

A viewer's session carries one subscription per (kind, slot). Slot 0 is always the room's own host;
further slots show the PK partner's host and then guests on mic. A layout change (host back, guest
on, PK linked or unlinked) switches subscription sources; each switch starts at a keyframe, so no
session is renegotiated and no viewer decodes a broken frame. Players that offered one audio and
one video simply have slot 0 only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from relay.errors import (
    CapacityExceeded,
    GuestSlotsFull,
    HostAlreadyLive,
    PkBusy,
    RoomClosed,
    RoomNotLive,
)
from relay.ports import CodecInfo, Observers, Participant
from relay.publication import Publication
from relay.subscription import Subscription

log = logging.getLogger("cherry.relay.room")


@dataclass(frozen=True, slots=True)
class RoomLimits:
    max_rooms: int
    max_viewers_per_room: int
    empty_room_grace: float  # seconds an empty room lingers before it is closed
    host_absent_timeout: float  # seconds viewers wait for a host before the room closes
    max_guests: int = 2


@dataclass(frozen=True, slots=True)
class Slot:
    """Who a viewer sees in one slot of a room's layout."""

    index: int
    role: str  # "host", "partner" or "guest"
    room: str
    identity: str | None
    publications: dict[str, Publication]


class Room:
    """One live channel: its host, guests on mic, viewers, and at most one PK partner."""

    def __init__(self, name: str, registry: Rooms) -> None:
        self.name = name
        self.title = ""
        self.created_at = time.time()
        self.live_since: float | None = None
        self.host: Participant | None = None
        self.publications: dict[str, Publication] = {}
        # Codecs of the last host: viewers negotiated them, so a returning host is held to them.
        self.codecs: dict[str, CodecInfo] = {}
        self.guests: dict[str, Participant] = {}
        self.guest_publications: dict[str, dict[str, Publication]] = {}
        self.pk_partner: Room | None = None
        self.viewers: dict[str, tuple[Participant, list[Subscription]]] = {}
        self.closed = False
        self._registry = registry
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def live(self) -> bool:
        return self.host is not None and bool(self.publications)

    @property
    def viewer_count(self) -> int:
        return len(self.viewers)

    def _log(self, msg: str, *args: object) -> None:
        log.info("room=%s " + msg, self.name, *args)

    # -- layout ------------------------------------------------------------

    def layout(self) -> list[Slot]:
        slots = [Slot(0, "host", self.name, self.host.identity if self.host else None, self.publications)]
        partner = self.pk_partner
        if partner is not None:
            slots.append(Slot(len(slots), "partner", partner.name,
                              partner.host.identity if partner.host else None, partner.publications))
        for pid, guest in self.guests.items():
            slots.append(Slot(len(slots), "guest", self.name, guest.identity,
                              self.guest_publications.get(pid, {})))
        return slots

    def _refresh(self) -> None:
        """Point every viewer subscription at its slot's current publication."""
        slots = self.layout()
        for _, subscriptions in self.viewers.values():
            for subscription in subscriptions:
                slot = slots[subscription.slot] if subscription.slot < len(slots) else None
                subscription.switch_source(slot.publications.get(subscription.kind) if slot else None)
        self._registry.observers.layout_changed(self)

    def _refresh_linked(self) -> None:
        self._refresh()
        if self.pk_partner is not None:
            self.pk_partner._refresh()

    # -- host side -------------------------------------------------------

    def claim_host(self, participant: Participant) -> None:
        """Make ``participant`` the host; the same identity replaces its stale session."""
        self._check_open()
        current = self.host
        if current is not None and current.participant_id != participant.participant_id:
            if current.identity != participant.identity:
                raise HostAlreadyLive(f"room {self.name!r} already has a live host")
            self._log("participant=%s replaces stale host session %s", participant.identity,
                      current.participant_id)
            self.release_host(current)
            current.close("replaced by a new session of the same host")
        self.host = participant
        self._cancel_idle_timer()
        self._registry.observers.participant_joined(self, participant)

    def claim_guest(self, participant: Participant) -> None:
        """A guest on mic takes a slot; the same identity replaces its stale session."""
        self._check_open()
        for pid, guest in list(self.guests.items()):
            if guest.identity == participant.identity and pid != participant.participant_id:
                self.release_guest(guest)
                guest.close("replaced by a new session of the same guest")
        if participant.participant_id not in self.guests and len(self.guests) >= self._registry.limits.max_guests:
            raise GuestSlotsFull(f"room {self.name!r} already has {len(self.guests)} guests on mic")
        self.guests[participant.participant_id] = participant
        self._cancel_idle_timer()
        self._registry.observers.participant_joined(self, participant)

    def publish(self, participant: Participant, publication: Publication) -> None:
        """Make ``publication`` the participant's track of its kind; viewers follow at a keyframe."""
        self._check_open()
        kind = publication.kind
        if self.host is participant:
            old = self.publications.get(kind)
            self.publications[kind] = publication
            self.codecs[kind] = publication.codec
        elif participant.participant_id in self.guests:
            tracks = self.guest_publications.setdefault(participant.participant_id, {})
            old = tracks.get(kind)
            tracks[kind] = publication
        else:
            raise HostAlreadyLive("only the room's host or its guests publish here")
        if old is not None and old is not publication:
            old.close()
        if self.host is participant and self.live_since is None:
            self.live_since = time.time()
            self._registry.observers.host_changed(self, True)
        self._log("participant=%s publishes %s %s", participant.identity, kind, publication.codec.mime_type)
        self._refresh_linked()

    def release_host(self, participant: Participant) -> None:
        """The host's session ended: viewers stay and wait for it to come back."""
        if self.host is not participant:
            return
        self.host = None
        was_live = self.live_since is not None
        self.live_since = None
        for publication in self.publications.values():
            publication.close()
        self.publications.clear()
        if was_live:
            self._registry.observers.host_changed(self, False)
        self._registry.observers.participant_left(self, participant)
        self._refresh_linked()
        self._log("participant=%s host left; %d viewers wait", participant.identity, len(self.viewers))
        self._schedule_idle_check()

    def release_guest(self, participant: Participant) -> None:
        if self.guests.pop(participant.participant_id, None) is None:
            return
        for publication in self.guest_publications.pop(participant.participant_id, {}).values():
            publication.close()
        self._registry.observers.participant_left(self, participant)
        self._refresh()
        self._log("participant=%s guest left the mic", participant.identity)
        self._schedule_idle_check()

    # -- PK ----------------------------------------------------------------

    def link_pk(self, other: Room) -> None:
        """Link two rooms for a PK battle: each room's viewers get the other host in slot 1."""
        self._check_open()
        other._check_open()
        if other is self:
            raise PkBusy("a room cannot battle itself")
        for room in (self, other):
            if room.pk_partner is not None:
                raise PkBusy(f"room {room.name!r} is already in a PK")
        self.pk_partner, other.pk_partner = other, self
        self._log("PK linked with room %s", other.name)
        self._refresh()
        other._refresh()

    def unlink_pk(self) -> None:
        other = self.pk_partner
        if other is None:
            return
        self.pk_partner = other.pk_partner = None
        self._log("PK unlinked from room %s", other.name)
        self._refresh()
        other._refresh()

    # -- viewer side -----------------------------------------------------

    def check_can_view(self) -> None:
        """Raise unless a new viewer may join now."""
        self._check_open()
        if not self.codecs:  # no host has published yet (or one is still negotiating)
            raise RoomNotLive(f"room {self.name!r} has no live host")
        if len(self.viewers) >= self._registry.limits.max_viewers_per_room:
            raise CapacityExceeded(f"room {self.name!r} is full")

    def add_viewer(self, participant: Participant, subscriptions: list[Subscription]) -> None:
        self.check_can_view()
        self.viewers[participant.participant_id] = (participant, subscriptions)
        slots = self.layout()
        for subscription in subscriptions:
            slot = slots[subscription.slot] if subscription.slot < len(slots) else None
            subscription.switch_source(slot.publications.get(subscription.kind) if slot else None)
        self._cancel_idle_timer()
        self._registry.observers.participant_joined(self, participant)

    def remove_viewer(self, participant: Participant) -> None:
        entry = self.viewers.pop(participant.participant_id, None)
        if entry is None:
            return
        for subscription in entry[1]:
            subscription.close()
        self._registry.observers.participant_left(self, participant)
        self._schedule_idle_check()

    # -- lifecycle -------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RoomClosed(f"room {self.name!r} is closed")

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _schedule_idle_check(self) -> None:
        if self.closed or self.host is not None or self.guests:
            return
        limits = self._registry.limits
        delay = limits.empty_room_grace if not self.viewers else limits.host_absent_timeout
        self._cancel_idle_timer()
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.host is None and not self.guests:
            reason = "empty room grace period over" if not self.viewers else "host did not return"
            self.close(reason)

    def close(self, reason: str) -> None:
        """Idempotent; ends every participant's sessions and forgets the room."""
        if self.closed:
            return
        self.unlink_pk()
        self.closed = True
        self._cancel_idle_timer()
        self._log("closed: %s", reason)
        participants = [p for p, _ in self.viewers.values()] + list(self.guests.values())
        if self.host is not None:
            participants.append(self.host)
        for _, subscriptions in self.viewers.values():
            for subscription in subscriptions:
                subscription.close()
        for publication in self.publications.values():
            publication.close()
        for tracks in self.guest_publications.values():
            for publication in tracks.values():
                publication.close()
        self.viewers.clear()
        self.publications.clear()
        self.guests.clear()
        self.guest_publications.clear()
        self.host = None
        self._registry._forget(self, reason)
        for participant in participants:
            participant.close(f"room closed: {reason}")


class Rooms:
    """The process's room directory."""

    def __init__(self, limits: RoomLimits) -> None:
        self.limits = limits
        self._rooms: dict[str, Room] = {}
        self.observers = Observers()

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def get_or_create(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is not None:
            return room
        if len(self._rooms) >= self.limits.max_rooms:
            raise CapacityExceeded("the gateway is at its room limit")
        room = Room(name, self)
        self._rooms[name] = room
        log.info("room=%s created", name)
        self.observers.room_opened(room)
        # Until someone claims it, a new room is an empty room: it must expire on its own.
        room._schedule_idle_check()
        return room

    def _forget(self, room: Room, reason: str) -> None:
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            self.observers.room_closed(room, reason)

    def close_all(self, reason: str) -> None:
        for room in list(self._rooms.values()):
            room.close(reason)
