"""Rooms: who publishes, who watches, and how long an idle room lives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from relay.errors import CapacityExceeded, HostAlreadyLive, RoomClosed, RoomNotLive
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


class Room:
    """One live channel: a host's publications and the viewers subscribed to them."""

    def __init__(self, name: str, registry: Rooms) -> None:
        self.name = name
        self.title = ""
        self.created_at = time.time()
        self.live_since: float | None = None
        self.host: Participant | None = None
        self.publications: dict[str, Publication] = {}
        # Codecs of the last host: viewers negotiated them, so a returning host is held to them.
        self.codecs: dict[str, CodecInfo] = {}
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

    def publish(self, participant: Participant, publication: Publication) -> None:
        """Make ``publication`` the room's source of its kind; every viewer follows it."""
        self._check_open()
        if self.host is not participant:
            raise HostAlreadyLive("only the room's host publishes here")
        old = self.publications.get(publication.kind)
        self.publications[publication.kind] = publication
        self.codecs[publication.kind] = publication.codec
        if old is not None and old is not publication:
            old.close()
        for _, subscriptions in self.viewers.values():
            for subscription in subscriptions:
                if subscription.kind == publication.kind:
                    subscription.switch_source(publication)
        if self.live_since is None:
            self.live_since = time.time()
            self._registry.observers.host_changed(self, True)
        self._log("participant=%s publishes %s %s", participant.identity,
                  publication.kind, publication.codec.mime_type)

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
        for _, subscriptions in self.viewers.values():
            for subscription in subscriptions:
                subscription.switch_source(None)
        self._log("participant=%s host left; %d viewers wait", participant.identity,
                  len(self.viewers))
        self._schedule_idle_check()

    # -- viewer side -----------------------------------------------------

    def check_can_view(self) -> None:
        """Raise unless a new viewer may join now."""
        self._check_open()
        if self.host is None and not self.codecs:
            raise RoomNotLive(f"room {self.name!r} has no live host")
        if len(self.viewers) >= self._registry.limits.max_viewers_per_room:
            raise CapacityExceeded(f"room {self.name!r} is full")

    def add_viewer(self, participant: Participant, subscriptions: list[Subscription]) -> None:
        self.check_can_view()
        self.viewers[participant.participant_id] = (participant, subscriptions)
        for subscription in subscriptions:
            subscription.switch_source(self.publications.get(subscription.kind))
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
        if self.closed or self.host is not None:
            return
        limits = self._registry.limits
        delay = limits.empty_room_grace if not self.viewers else limits.host_absent_timeout
        self._cancel_idle_timer()
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.host is None:
            reason = "empty room grace period over" if not self.viewers else "host did not return"
            self.close(reason)

    def close(self, reason: str) -> None:
        """Idempotent; ends every participant's sessions and forgets the room."""
        if self.closed:
            return
        self.closed = True
        self._cancel_idle_timer()
        self._log("closed: %s", reason)
        participants = [p for p, _ in self.viewers.values()]
        if self.host is not None:
            participants.append(self.host)
        for _, subscriptions in self.viewers.values():
            for subscription in subscriptions:
                subscription.close()
        for publication in self.publications.values():
            publication.close()
        self.viewers.clear()
        self.publications.clear()
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
