"""Plain stand-ins for the room-event concerns' ports (signaling/events/ports.py); no tests of its own.

A hand-driven scheduler, a fan-out that records what it was asked to deliver, senders, and rooms that
keep the relay's rules the concerns rely on (one PK partner at a time, guest grants, kick counts).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from relay.config import CostreamConfig
from relay.errors import NotOnMic, PkBusy
from relay.room import Room
from signaling.auth import TokenService
from signaling.config import EventsConfig
from signaling.events.chat import Chat
from signaling.events.dispatch import Concerns, Dispatcher
from signaling.events.guests import GuestsOnMic
from signaling.events.moderation import Moderation, WordMask
from signaling.events.moderator import Moderator
from signaling.events.pk import PkBattles
from signaling.events.quality import Quality
from signaling.events.stats import new_stats

EPOCH = 1_800_000_000.0


class FakeTimer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """Timers fire only when a test advances the clock, in due order, each at its own due time."""

    def __init__(self, now: float = EPOCH) -> None:
        self.t = now
        self._heap: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.t + max(delay, 0.0), callback)
        heapq.heappush(self._heap, (timer.due, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        end = self.t + seconds
        while self._heap and self._heap[0][0] <= end:
            due, _, timer = heapq.heappop(self._heap)
            self.t = due
            if not timer.cancelled:
                timer.callback()
        self.t = end

    def pending(self) -> int:
        return sum(not t.cancelled for _, _, t in self._heap)


@dataclass(eq=False)
class FakeSender:
    identity: str
    room: str
    role: str = "viewer"
    granted_role: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        self.granted_role = self.granted_role or self.role


class RecordingFanout:
    """Delivers to registered senders by appending (sender identity, message) to ``inbox``."""

    def __init__(self) -> None:
        self.sockets: list[FakeSender] = []
        self.inbox: list[tuple[FakeSender, dict[str, Any]]] = []
        self.disconnected: list[tuple[FakeSender, int, str]] = []

    def join(self, sender: FakeSender) -> FakeSender:
        self.sockets.append(sender)
        return sender

    def _deliver(self, targets: list[FakeSender], message: dict[str, Any]) -> int:
        for target in targets:
            self.inbox.append((target, message))
        return len(targets)

    def broadcast(self, room: str, message: dict[str, Any]) -> None:
        self._deliver([s for s in self.sockets if s.room == room], message)

    def to_roles(self, room: str, roles: Collection[str], message: dict[str, Any]) -> int:
        return self._deliver([s for s in self.sockets if s.room == room and s.role in roles], message)

    def to_identity(self, room: str, identity: str, message: dict[str, Any]) -> int:
        return self._deliver([s for s in self.sockets if s.room == room and s.identity == identity], message)

    def send(self, client: Any, message: dict[str, Any]) -> None:
        self._deliver([client], message)

    def disconnect(self, client: Any, code: int, reason: str) -> None:
        self.disconnected.append((client, code, reason))

    def got(self, sender: FakeSender, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [m for s, m in self.inbox if s is sender and m["type"] == kind
                and all(m.get(k) == v for k, v in match.items())]

    def types(self, sender: FakeSender) -> list[str]:
        return [m["type"] for s, m in self.inbox if s is sender]


@dataclass(frozen=True)
class FakeHost:
    identity: str


@dataclass(eq=False)
class FakeRoom:
    """A relay room as far as the concerns use it."""

    name: str
    live: bool = True
    host: FakeHost | None = None
    pk_partner: FakeRoom | None = None
    guests: dict[str, object] = field(default_factory=dict)
    guest_grants: set[str] = field(default_factory=set)
    present: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # identity -> (role, sessions, sockets)
    kicked: list[tuple[str, str, str]] = field(default_factory=list)
    banned: list[tuple[str, float]] = field(default_factory=list)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    media_mutes: list[tuple[str, str, bool]] = field(default_factory=list)
    clock: Callable[[], float] = lambda: EPOCH
    acting_role = Room.acting_role  # the relay's own rule, not a copy of it

    def link_pk(self, other: FakeRoom) -> None:
        if other is self:
            raise PkBusy("a room cannot battle itself")
        for room in (self, other):
            if room.pk_partner is not None:
                raise PkBusy(f"room {room.name!r} is already in a PK")
        self.pk_partner, other.pk_partner = other, self

    def unlink_pk(self) -> None:
        if self.pk_partner is not None:
            self.pk_partner.pk_partner = None
            self.pk_partner = None

    def grant_guest(self, identity: str) -> None:
        self.guest_grants.add(identity)

    def revoke_guest(self, identity: str, reason: str) -> int:
        self.guest_grants.discard(identity)
        self.revoked.append((identity, reason))
        return 0

    def mute_guest(self, identity: str, kind: str, muted: bool) -> bool:
        if identity not in self.guest_grants:
            raise NotOnMic(f"{identity!r} is not on mic")
        self.media_mutes.append((identity, kind, muted))
        return True

    def role_of(self, identity: str) -> str | None:
        entry = self.present.get(identity)
        return entry[0] if entry else None

    def kick(self, identity: str, reason: str, why: str = "kicked") -> tuple[int, int]:
        self.guest_grants.discard(identity)
        entry = self.present.pop(identity, None)
        if entry is None:
            return 0, 0
        self.kicked.append((identity, reason, why))
        return entry[1], entry[2]

    def ban(self, identity: str, seconds: float, reason: str) -> float:
        until = self.clock() + seconds
        self.banned.append((identity, until))
        self.kick(identity, reason, "banned")
        return until

    def unban(self, identity: str, reason: str) -> bool:
        before = len(self.banned)
        self.banned = [(who, until) for who, until in self.banned if who != identity]
        return len(self.banned) < before


class FakeRooms:
    def __init__(self, max_guests: int = 2) -> None:
        self.max_guests = max_guests
        self.rooms: dict[str, FakeRoom] = {}

    def add(self, name: str, live: bool = True, host: str | None = "") -> FakeRoom:
        identity = f"host-{name}" if host == "" else host
        room = self.rooms[name] = FakeRoom(name, live, FakeHost(identity) if identity else None)
        return room

    def get(self, name: str) -> FakeRoom | None:
        return self.rooms.get(name)


COSTREAM = CostreamConfig(max_guests=1, pk_duration_s=60.0, pk_invite_timeout_s=15.0, pk_host_grace_s=10.0,
                          pk_tick_s=5.0, guest_invite_timeout_s=30.0)
TOKENS = TokenService("unit-test-secret-0123456789abcdef", "cherry-test", 3600)


class World:
    """The room-event concerns wired to the fakes above, as the hub wires them to the real plane."""

    def __init__(self, events: EventsConfig | None = None, costream: CostreamConfig = COSTREAM,
                 max_guests: int = 1) -> None:
        self.events = events or EventsConfig()
        self.scheduler = FakeScheduler()
        self.rooms = FakeRooms(max_guests)
        self.fanout = RecordingFanout()
        self.mutes = Moderation(self.scheduler.now)
        self.stats = new_stats()
        self.clock = self.scheduler.now
        self.chat = Chat(self.fanout, self.events, self.mutes, WordMask(("scam",)), self.scheduler.now)
        self.quality = Quality(self.events, self.stats, self.scheduler.now)
        self.moderator = Moderator(self.fanout, self.rooms, self.mutes, self.events)
        self.pk = PkBattles(self.fanout, self.rooms, TOKENS, costream, self.scheduler)
        self.guests = GuestsOnMic(self.fanout, self.rooms, TOKENS, costream, self.scheduler)
        self.dispatcher = Dispatcher(Concerns(self.fanout, self.chat, self.quality, self.moderator, self.pk,
                                              self.guests))

    def live_room(self, name: str) -> tuple[FakeRoom, FakeSender]:
        """A live room with its host's socket."""
        room = self.rooms.add(name)
        assert room.host is not None
        room.present[room.host.identity] = ("host", 1, 1)
        return room, self.fanout.join(FakeSender(room.host.identity, name, "host"))

    def socket(self, room: str, identity: str, role: str = "viewer") -> FakeSender:
        target = self.rooms.get(room)
        if target is not None:
            target.present.setdefault(identity, (role, 0, 1))
        return self.fanout.join(FakeSender(identity, room, role))
