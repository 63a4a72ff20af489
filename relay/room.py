"""Rooms: who publishes, who watches, who is present, how co-streams are laid out, how long a room lives.

A viewer's session carries one subscription per (kind, slot). Slot 0 is always the room's own host;
further slots show the PK partner's host and then guests on mic. A layout change (host back, guest
on, PK linked or unlinked) switches subscription sources; each switch starts at a keyframe, so no
session is renegotiated and no viewer decodes a broken frame. Players that offered one audio and
one video simply have slot 0 only.

Participants (sessions and room sockets of one identity) are indexed by identity. A room lives
while anyone is present; with nobody on mic its viewers wait ``host_absent_timeout_s`` before their
sessions end, and an empty room closes after ``empty_room_grace_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from relay.config import LimitsConfig, RoomsConfig
from relay.dump import ParticipantDump, PublicationDump, RoomDump, Traffic
from relay.errors import (
    CapacityExceeded,
    GuestSlotsFull,
    HostAlreadyLive,
    NotOnMic,
    PkBusy,
    RoomClosed,
    RoomNotLive,
)
from relay.participant import Participant, RoomSocket
from relay.ports import CodecInfo, Member, Observers
from relay.publication import Publication
from relay.subscription import Subscription

log = logging.getLogger("cherry.relay.room")


@dataclass(frozen=True, slots=True)
class Listing:
    """How a room shows in the room list, as its host set it going live (checked by signaling)."""

    title: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Slot:
    """Who a viewer sees in one slot of a room's layout."""

    index: int
    role: str  # "host", "partner" or "guest"
    room: str
    identity: str | None
    publications: dict[str, Publication]
    muted: frozenset[str] = frozenset()  # kinds the host silenced for everyone: the slot carries none of them


@dataclass(slots=True)
class _Viewer:
    session: Member
    subscriptions: list[Subscription]
    pk_view: bool  # a PK partner host watching this room: ends with the link
    monitor: bool = False  # the host or a guest hearing the co-stream slots (not slot 0): not an audience member


class BanList:
    """Bans by (room, identity) with expiry; they outlive sessions, sockets and the room itself."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._bans: dict[tuple[str, str], float] = {}

    def ban(self, room: str, identity: str, seconds: float) -> float:
        until = self._clock() + seconds
        self._bans[(room, identity)] = until
        return until

    def unban(self, room: str, identity: str) -> bool:
        return self._bans.pop((room, identity), None) is not None

    def banned_until(self, room: str, identity: str) -> float | None:
        until = self._bans.get((room, identity))
        if until is None:
            return None
        if until <= self._clock():
            del self._bans[(room, identity)]
            return None
        return until

    def in_room(self, room: str) -> dict[str, float]:
        now = self._clock()
        return {identity: until for (name, identity), until in self._bans.items() if name == room and until > now}

    def purge(self) -> None:
        now = self._clock()
        for key in [k for k, until in self._bans.items() if until <= now]:
            del self._bans[key]


class Room:
    """One live channel: its host, guests on mic, viewers, present participants, and at most one PK partner."""

    def __init__(self, name: str, registry: Rooms) -> None:
        self.name = name
        self.title = ""
        self.category = ""  # what its host lists it under (rooms.categories), and its tags
        self.tags: tuple[str, ...] = ()
        self.created_at = time.time()
        self.live_since: float | None = None
        self.participants: dict[str, Participant] = {}
        self.host: Member | None = None
        self.publications: dict[str, Publication] = {}
        # Codecs of the last host: viewers negotiated them, so a returning host is held to them.
        self.codecs: dict[str, CodecInfo] = {}
        self.guests: dict[str, Member] = {}  # by session id
        self.guest_publications: dict[str, dict[str, Publication]] = {}
        self.guest_grants: set[str] = set()  # identities the host put on mic (until guest_end)
        self.guest_mutes: dict[str, frozenset[str]] = {}  # guest identity -> kinds the host muted for everyone
        self.pk_partner: Room | None = None
        self.viewers: dict[str, _Viewer] = {}  # by session id
        # Pipes to edge workers (each carries every slot of the layout once); not viewers of this room.
        self.pipes: dict[str, _Viewer] = {}
        # On an edge: slots 1.. as the origin lays them out, pulled through the pipe (slot 0 is the host's).
        self.mirror: list[dict[str, Publication]] | None = None
        # On a worker that pulls this room from its origin for a PK: who hosts it there (this room's own host
        # is the pipe).
        self.remote_host: str | None = None
        # On an edge (or a PK partner's mirror): the origin worker it is pulled from. Its host here is the pipe,
        # so what it reports of its host and layout is a copy: the origin's own room is the one that counts.
        self.pulled_from: str | None = None
        self.retired = Traffic()  # counters of this room's closed publications and subscriptions
        self.closed = False
        self._registry = registry
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_kind = ""

    @property
    def live(self) -> bool:
        return self.host is not None and bool(self.publications)

    @property
    def viewer_count(self) -> int:
        """The audience: a co-streamer's monitor of the other slots is not one of it."""
        return sum(1 for viewer in self.viewers.values() if not viewer.monitor)

    @property
    def retire_into(self) -> tuple[Traffic, Traffic]:
        """Where this room's publications and subscriptions leave their counters when they close."""
        return self.retired, self._registry.retired

    def _log(self, msg: str, *args: object) -> None:
        log.info("room=%s " + msg, self.name, *args)

    # -- participants --------------------------------------------------------------------------------

    def participant(self, identity: str, display_name: str = "") -> Participant:
        """The participant of this identity, created on first sight."""
        participant = self.participants.get(identity)
        if participant is None:
            participant = self.participants[identity] = Participant(self.name, identity, display_name)
        elif display_name:
            participant.display_name = display_name
        return participant

    def attach_session(self, session: Member, display_name: str = "") -> Participant:
        self._check_open()
        participant = self.participant(session.identity, display_name)
        participant.sessions[session.session_id] = session
        self._check_idle()
        return participant

    def detach_session(self, session: Member) -> None:
        participant = self.participants.get(session.identity)
        if participant is not None and participant.sessions.get(session.session_id) is session:
            del participant.sessions[session.session_id]
            self._forget_if_absent(participant)

    def attach_socket(self, identity: str, socket: RoomSocket, display_name: str = "") -> Participant:
        self._check_open()
        participant = self.participant(identity, display_name)
        participant.sockets.add(socket)
        self._check_idle()
        return participant

    def detach_socket(self, identity: str, socket: RoomSocket) -> None:
        participant = self.participants.get(identity)
        if participant is not None:
            participant.sockets.discard(socket)
            self._forget_if_absent(participant)

    def _forget_if_absent(self, participant: Participant) -> None:
        if not participant.present and self.participants.get(participant.identity) is participant:
            del self.participants[participant.identity]
        self._check_idle()

    def role_of(self, identity: str) -> str | None:
        """The role ``identity`` acts with here now; None if not present.

        A guest grant counts only while the host keeps the identity on mic (``guest_grants``).
        """
        participant = self.participants.get(identity)
        return None if participant is None else self.acting_role(identity, participant.granted_role())

    def acting_role(self, identity: str, granted: str) -> str:
        """The one home of the rule: a guest grant is a guest's only while the host keeps it on mic."""
        return "viewer" if granted == "guest" and identity not in self.guest_grants else granted

    def kick(self, identity: str, reason: str, why: str = "kicked") -> tuple[int, int]:
        """End ``identity``'s sessions and sockets here; (sessions, sockets) ended."""
        self.guest_grants.discard(identity)
        self.guest_mutes.pop(identity, None)
        participant = self.participants.get(identity)
        if participant is None:
            return 0, 0
        self._log("participant=%s %s: %s", identity, why, reason)
        return participant.end_sessions(reason), participant.end_sockets(why, reason)

    def ban(self, identity: str, seconds: float, reason: str) -> float:
        until = self._registry.bans.ban(self.name, identity, seconds)
        self.kick(identity, reason, "banned")
        return until

    def unban(self, identity: str, reason: str) -> bool:
        """Lift ``identity``'s ban here; False if it had none (or it had expired)."""
        lifted = self._registry.bans.unban(self.name, identity)
        if lifted:
            self._log("participant=%s unbanned: %s", identity, reason)
        return lifted

    def bans_here(self) -> dict[str, float]:
        """The bans in force in this room: identity -> until (epoch seconds)."""
        return self._registry.bans.in_room(self.name)

    def banned_until(self, identity: str) -> float | None:
        return self._registry.bans.banned_until(self.name, identity)

    # -- layout --------------------------------------------------------------------------------------

    def layout(self) -> list[Slot]:
        slots = [Slot(0, "host", self.name, self.host_identity, self.publications)]
        if self.mirror is not None:
            return slots + [Slot(i, "mirror", self.name, None, tracks) for i, tracks in enumerate(self.mirror, 1)]
        partner = self.pk_partner
        if partner is not None:
            slots.append(Slot(len(slots), "partner", partner.name, partner.host_identity, partner.publications))
        for sid, guest in self.guests.items():
            slots.append(Slot(len(slots), "guest", self.name, guest.identity, self.guest_publications.get(sid, {}),
                              self.guest_mutes.get(guest.identity, frozenset())))
        return slots

    def _follow(self, subscriptions: list[Subscription], slots: list[Slot]) -> None:
        for subscription in subscriptions:
            slot = slots[subscription.slot] if subscription.slot < len(slots) else None
            carried = slot is not None and subscription.kind not in slot.muted
            subscription.switch_source(slot.publications.get(subscription.kind) if slot and carried else None)

    def _refresh(self) -> None:
        """Point every viewer subscription at its slot's current publication."""
        slots = self.layout()
        for viewer in (*self.viewers.values(), *self.pipes.values()):
            self._follow(viewer.subscriptions, slots)
        self._registry.observers.layout_changed(self)

    def _refresh_linked(self) -> None:
        self._refresh()
        if self.pk_partner is not None:
            self.pk_partner._refresh()

    # -- host and guests -----------------------------------------------------------------------------

    def claim_host(self, session: Member) -> None:
        """Make ``session`` the host's; the same identity replaces its stale session."""
        self._check_open()
        current = self.host
        if current is not None and current.session_id != session.session_id:
            if current.identity != session.identity:
                raise HostAlreadyLive(f"room {self.name!r} already has a live host")
            self._log("participant=%s replaces stale host session %s", session.identity, current.session_id)
            self.release_host(current)
            current.close("replaced by a new session of the same host")
        self.host = session
        self._check_idle()
        self._registry.observers.participant_joined(self, session)

    def grant_guest(self, identity: str) -> None:
        """The host put ``identity`` on mic: a guest grant for it now publishes here."""
        self._check_open()
        self.guest_grants.add(identity)

    def revoke_guest(self, identity: str, reason: str) -> int:
        """Off mic: the grant ends and so do the identity's guest sessions; how many ended."""
        self.guest_grants.discard(identity)
        self.guest_mutes.pop(identity, None)
        ended = [g for g in self.guests.values() if g.identity == identity]
        for guest in ended:
            guest.close(reason)
        return len(ended)

    def mute_guest(self, identity: str, kind: str, muted: bool) -> bool:
        """The host silences (or gives back) a guest's audio or video for everyone: its slot stops carrying
        that track, so no viewer, edge or monitor gets a packet of it, whatever the guest's own page does.
        Lasts while the guest is on mic (a new session of it stays muted); True if it changed anything."""
        if identity not in self.guest_grants:
            raise NotOnMic(f"{identity!r} is not on mic in room {self.name!r}")
        current = self.guest_mutes.get(identity, frozenset())
        wanted = current | {kind} if muted else current - {kind}
        if wanted == current:
            return False
        if wanted:
            self.guest_mutes[identity] = wanted
        else:
            del self.guest_mutes[identity]
        self._log("participant=%s %s %s for everyone", identity, "muted" if muted else "unmuted", kind)
        self._refresh()
        return True

    def claim_guest(self, session: Member) -> None:
        """A guest on mic takes a slot; the same identity replaces its stale session."""
        self._check_open()
        if session.identity not in self.guest_grants:
            raise NotOnMic(f"{session.identity!r} is not on mic in room {self.name!r} (the host invites guests)")
        for sid, guest in list(self.guests.items()):
            if guest.identity == session.identity and sid != session.session_id:
                self.release_guest(guest)
                guest.close("replaced by a new session of the same guest")
        if session.session_id not in self.guests and len(self.guests) >= self._registry.max_guests:
            raise GuestSlotsFull(f"room {self.name!r} already has {len(self.guests)} guests on mic")
        self.guests[session.session_id] = session
        self._check_idle()
        self._registry.observers.participant_joined(self, session)

    def publish(self, session: Member, publication: Publication) -> None:
        """Make ``publication`` the session's track of its kind; viewers follow at a keyframe."""
        self._check_open()
        kind = publication.kind
        if self.host is session:
            old = self.publications.get(kind)
            self.publications[kind] = publication
            self.codecs[kind] = publication.codec
        elif session.session_id in self.guests:
            tracks = self.guest_publications.setdefault(session.session_id, {})
            old = tracks.get(kind)
            tracks[kind] = publication
        else:
            raise HostAlreadyLive("only the room's host or its guests publish here")
        if old is not None and old is not publication:
            old.close()
        if self.host is session and self.live_since is None:
            self.live_since = time.time()
            self._registry.observers.host_changed(self, True)
        self._log("participant=%s publishes %s %s", session.identity, kind, publication.codec.mime_type)
        self._refresh_linked()

    def release_host(self, session: Member) -> None:
        """The host's session ended: viewers stay and wait for it to come back."""
        if self.host is not session:
            return
        self.host = None
        was_live = self.live_since is not None
        self.live_since = None
        for publication in self.publications.values():
            publication.close()
        self.publications.clear()
        if was_live:
            self._registry.observers.host_changed(self, False)
        self._registry.observers.participant_left(self, session)
        self._refresh_linked()
        self._log("participant=%s host left; %d viewers wait", session.identity, len(self.viewers))
        self._check_idle()

    def release_guest(self, session: Member) -> None:
        if self.guests.pop(session.session_id, None) is None:
            return
        for publication in self.guest_publications.pop(session.session_id, {}).values():
            publication.close()
        self._registry.observers.participant_left(self, session)
        self._refresh()
        self._log("participant=%s guest left the mic", session.identity)
        self._check_idle()

    @property
    def on_mic(self) -> bool:
        """Someone (host or guest) holds an ingest session here."""
        return self.host is not None or bool(self.guests)

    @property
    def held_here(self) -> bool:
        """This worker is the room's origin: its host or a guest publishes here (not through a pipe)."""
        return self.on_mic and self.pulled_from is None

    def host_video(self) -> Publication | None:
        """The host's own video here, what the room's snapshot (its cover) is taken from. None on an edge or a PK
        mirror (its host is a pipe: the origin takes the room's snapshot), and while the host sends no video."""
        if self.closed or self.host is None or self.pulled_from is not None:
            return None
        return self.publications.get("video")

    # -- PK --------------------------------------------------------------------------------------------

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
        """End the link; the partner hosts' views of each other's room end with it."""
        other = self.pk_partner
        if other is None:
            return
        self.pk_partner = other.pk_partner = None
        self._log("PK unlinked from room %s", other.name)
        for room in (self, other):
            for viewer in [v for v in room.viewers.values() if v.pk_view]:
                viewer.session.close("the PK battle ended")
        self._refresh()
        other._refresh()

    @property
    def host_identity(self) -> str | None:
        """Who hosts this room: its host's identity, or for a room pulled from its origin, the origin's host."""
        if self.remote_host is not None:
            return self.remote_host
        return self.host.identity if self.host is not None else None

    def pk_view_allowed(self, identity: str) -> bool:
        """A PK grant to watch this room holds while ``identity`` hosts the linked partner room."""
        partner = self.pk_partner
        return partner is not None and partner.host is not None and partner.host_identity == identity

    # -- viewers -----------------------------------------------------------------------------------------

    def check_live(self) -> None:
        """Raise unless something here can be watched: a host has published (its codecs are known)."""
        self._check_open()
        if not self.codecs:  # no host has published yet (or one is still negotiating)
            raise RoomNotLive(f"room {self.name!r} has no live host")

    def check_can_view(self) -> None:
        """Raise unless a new viewer may join now."""
        self.check_live()
        limit = self._registry.limits.viewers_per_room()
        if len(self.viewers) >= limit:
            raise CapacityExceeded(f"room {self.name!r} is full ({limit} viewers)")

    def add_viewer(self, session: Member, subscriptions: list[Subscription], pk_view: bool = False,
                   monitor: bool = False) -> None:
        # The partner host's view (one per link) is the battle itself, and a co-streamer's monitor the room's own
        # stage: a full room refuses neither.
        if pk_view or monitor:
            self.check_live()
        else:
            self.check_can_view()
        self.viewers[session.session_id] = _Viewer(session, subscriptions, pk_view, monitor)
        self._follow(subscriptions, self.layout())
        self._check_idle()
        self._registry.observers.participant_joined(self, session)

    def add_pipe(self, session: Member, subscriptions: list[Subscription]) -> None:
        """An edge worker pulls every slot of this room once, for all of its viewers."""
        self.check_live()
        self.pipes[session.session_id] = _Viewer(session, subscriptions, False)
        self._follow(subscriptions, self.layout())
        self._check_idle()

    def set_mirror(self, slots: list[dict[str, Publication]]) -> None:
        """On an edge: the origin's co-stream slots, as its pipe carries them."""
        self.mirror = slots
        self._refresh()

    def remove_viewer(self, session: Member) -> None:
        pipe = self.pipes.pop(session.session_id, None)
        if pipe is not None:
            for subscription in pipe.subscriptions:
                subscription.close()
            self._check_idle()
            return
        viewer = self.viewers.pop(session.session_id, None)
        if viewer is None:
            return
        for subscription in viewer.subscriptions:
            subscription.close()
        self._registry.observers.participant_left(self, session)
        self._check_idle()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RoomClosed(f"room {self.name!r} is closed")

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._idle_kind = ""

    def _check_idle(self) -> None:
        """Schedule what happens to a room nobody is on mic in (or cancel it)."""
        if self.closed:
            return
        if self.on_mic:
            self._cancel_idle_timer()
            return
        settings = self._registry.settings
        if not self.participants:
            kind, delay = "empty", settings.empty_room_grace_s
        elif self.viewers or self.pipes:
            kind, delay = "host_absent", settings.host_absent_timeout_s
        else:
            self._cancel_idle_timer()  # only room sockets: the room lives as long as they do
            return
        if self._idle_kind == kind:
            return  # already counting down from when it began
        self._cancel_idle_timer()
        self._idle_kind = kind
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_expired, kind)

    def _idle_expired(self, kind: str) -> None:
        self._idle_timer = None
        self._idle_kind = ""
        if self.on_mic or self.closed:
            return
        if kind == "empty":
            if not self.participants:
                self.close("empty room grace period over")
            return
        for viewer in [*self.viewers.values(), *self.pipes.values()]:
            viewer.session.close("the host did not return")
        self._check_idle()

    def close(self, reason: str) -> None:
        """Idempotent; ends every participant's sessions and sockets and forgets the room."""
        if self.closed:
            return
        self.unlink_pk()
        self.closed = True
        self._cancel_idle_timer()
        self._log("closed: %s", reason)
        participants = list(self.participants.values())
        for viewer in (*self.viewers.values(), *self.pipes.values()):
            for subscription in viewer.subscriptions:
                subscription.close()
        for publication in self.publications.values():
            publication.close()
        for tracks in self.guest_publications.values():
            for publication in tracks.values():
                publication.close()
        self.viewers.clear()
        self.pipes.clear()
        self.publications.clear()
        self.guests.clear()
        self.guest_publications.clear()
        self.guest_grants.clear()
        self.guest_mutes.clear()
        self.host = None
        self._registry._forget(self, reason)
        for participant in participants:
            participant.end_sessions(f"room closed: {reason}")
            participant.end_sockets("room_closed", reason)
        self.participants.clear()

    # -- introspection -------------------------------------------------------------------------------------

    def _publication_dumps(self) -> list[PublicationDump]:
        publications = [p.dump() for p in self.publications.values()]
        for tracks in self.guest_publications.values():
            publications.extend(p.dump() for p in tracks.values())
        return publications

    def live_traffic(self) -> Traffic:
        """The counters of this room's open publications and subscriptions."""
        traffic = Traffic()
        for publication in self._publication_dumps():
            traffic.add_publication(publication)
        for viewer in (*self.viewers.values(), *self.pipes.values()):
            for subscription in viewer.subscriptions:
                traffic.add_subscription(subscription.dump())
        return traffic

    def participant_dumps(self) -> tuple[ParticipantDump, ...]:
        """Who is in the room, by identity, with their sessions (the detailed dump's, and the participant list's
        without the rest of a dump)."""
        return tuple(
            ParticipantDump(p.identity, p.display_name, self.role_of(p.identity) or "viewer",
                            tuple(s.dump() for s in p.sessions.values() if hasattr(s, "dump")),
                            len(p.sockets), p.identity in self.guest_grants)
            for p in sorted(self.participants.values(), key=lambda p: p.identity))

    def dump(self, detailed: bool = False, live: Traffic | None = None) -> RoomDump:
        publications = self._publication_dumps()
        traffic = self.retired.plus(live if live is not None else self.live_traffic())
        participants = self.participant_dumps() if detailed else ()
        return RoomDump(
            name=self.name, title=self.title or self.name, live=self.live, live_since=self.live_since,
            created_at=self.created_at, host=self.host.identity if self.host else None,
            viewers=self.viewer_count, guests=tuple(g.identity for g in self.guests.values()),
            pk_partner=self.pk_partner.name if self.pk_partner else None, publications=tuple(publications),
            traffic=traffic, participants=participants)


class Rooms:
    """The process's room directory, and what outlives rooms: bans and traffic totals."""

    def __init__(self, limits: LimitsConfig, settings: RoomsConfig, max_guests: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.settings = settings
        self.max_guests = max_guests
        self.bans = BanList(clock)
        self.retired = Traffic()  # every closed publication's and subscription's counters
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
        room._check_idle()
        return room

    def _forget(self, room: Room, reason: str) -> None:
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            self.observers.room_closed(room, reason)

    def close_all(self, reason: str) -> None:
        for room in list(self._rooms.values()):
            room.close(reason)
