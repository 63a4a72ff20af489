"""Room events across workers: one owner decides each room, Redis carries its frames and its events.

Who decides a room's events (its *owner*), in the order a room meets them:

1. the first worker with a socket in the room (or with its host, when the host comes first) claims
   the room's events lease, ``owner:{room}`` (SET NX), and renews it every interval while it holds
   anything of the room;
2. the worker holding the room's host (its origin) decides it once there is one: an origin that is not
   the owner asks for the room (``handoff:{room}``); the owner appends what it still holds, writes the
   room's state and hands the lease over (compare-and-set);
3. when the owner's own room closes (nobody left there), it hands the room to the worker with the
   most sockets still in it, or lets the lease go;
4. a lease nobody renews (the owner died) is claimed by a worker with sockets there once it has been
   gone a whole lease: an owner that only lost its lease with a Redis restart claims it back first.

What moves through Redis (keys prefixed ``cherry:events:``):

* ``inbox:{worker}``: items for one worker: client frames with the sender's identity, role and
  socket, sockets joining and leaving, relay changes, events another worker's PK battle sends into a
  room, PK messages; numbered per sender and kept until acknowledged (``cluster.event_log.Channel``);
* ``room:{room}``: the room's events, entry ids ``{epoch}-{n}`` allocated by the owner and appended
  only by the lease holder (one Lua script checks the lease and the stream's end); every worker
  with sockets in the room reads it, de-duplicates by position and delivers locally;
* ``state:{room}``: the owner's snapshot of the room's state (chat history, totals, layout, PK, live
  host, mutes) and the position it includes: a joiner elsewhere gets it plus the stream after it;
* ``control`` and ``bans``: kicks and bans, applied by every worker (bans also refuse WHIP, WHEP and
  sockets there); ``bans`` holds the bans in force for workers that start later.

While Redis is away the owner keeps deciding and delivering to its own sockets; events it could not
append, frames other workers could not forward, and control entries wait in bounded backlogs and go
once it is back (the append skips what the stream still has; receivers skip what they have seen).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster import events_redis as wire
from cluster.config import ClusterConfig
from cluster.event_log import Channel, Cursor, Inlet, Outbox
from cluster.events_control import ControlStream
from cluster.events_ports import ClusterFanout, ClusterModeratedRooms
from cluster.pk_media import PkMedia, PkSide
from cluster.registry import RedisRegistry, RegistryUnavailable
from relay.participant import RANK
from relay.room import Rooms
from signaling.events.bus import BusHost, Delivery, RemoteSender
from signaling.events.client import Client
from signaling.events.ports import Fanout, Sender
from signaling.events.protocol import ClientFrame, Message
from signaling.events.state import RoomState

log = logging.getLogger("cherry.cluster.events")
# How long stop() waits for its cancelled loops.
STOP_TIMEOUT_S = 2.0
# Stream entries the reader handles before it lets the rest of the worker run.
YIELD_EVERY = 64

NEW, FOLLOWER, TAKING_OVER, OWNER, HANDING_OFF = "new", "follower", "taking_over", "owner", "handing_off"


@dataclass(frozen=True, slots=True)
class BusSettings:
    interval_s: float = 2.0  # ownership checks, lease renewal, state snapshots, resends
    lease_s: float = 6.0
    resend_after_s: float = 4.0  # an item not acknowledged this long is sent again (with all after it)
    read_block_ms: int = 200  # a room followed anew waits at most this long for its first read
    stream_length: int = 1000  # events kept per room stream (approximately)
    inbox_length: int = 100000
    retain: int = 1000  # appended events an owner keeps to fill a stream Redis lost
    backlog_limit: int = 10000  # per room: events an owner holds while Redis is away
    channel_limit: int = 10000  # per destination worker: items held until acknowledged
    prepare_timeout_s: float = 3.0  # a joiner waits at most this long for the room's state
    state_ttl_s: int = 3600
    batch: int = 200

    @classmethod
    def of(cls, config: ClusterConfig) -> BusSettings:
        interval = config.heartbeat_interval_s
        return cls(interval_s=interval, lease_s=max(config.stale_after_s, 3 * interval),
                   resend_after_s=max(1.0, 2 * interval))


class _Room:
    """One room as this worker's bus knows it."""

    __slots__ = ("name", "phase", "owner", "outbox", "cursor", "replica", "pending", "seen_owner", "seen_at",
                 "snapshot_at", "elsewhere", "presence", "asked_at", "settling")

    def __init__(self, name: str, pending_limit: int) -> None:
        self.name = name
        self.phase = NEW
        self.owner: str | None = None  # the worker deciding it, as far as we know
        self.outbox: Outbox | None = None  # owner: its events
        self.cursor: Cursor | None = None  # follower: its place in the stream
        self.replica: RoomState | None = None  # follower with sockets here: the room's state
        self.pending: deque[dict[str, Any]] = deque(maxlen=pending_limit)  # items waiting for an owner
        self.seen_owner: str | None = None  # the last lease holder seen in Redis, and when (monotonic)
        self.seen_at = 0.0
        self.snapshot_at: tuple[int, int] | None = None  # owner: the position of the last state written
        self.elsewhere: dict[str, int] = {}  # owner: the room's viewers on other workers
        self.presence: dict[str, RemoteSender] = {}  # owner: the room's sockets on other workers, by ref
        self.asked_at: float | None = None  # origin, not owner: when it asked for the room
        self.settling: asyncio.Task[None] | None = None


class ClusterBus:
    """``signaling.events.bus.RoomBus`` across the workers of a cluster, on Redis."""

    clustered = True

    def __init__(self, worker_id: str, settings: BusSettings, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.worker_id = worker_id
        self.boot = f"{worker_id}/{secrets.token_hex(4)}"  # this incarnation: receivers number per boot
        self.settings = settings
        self.counters: dict[str, int] = {}  # the hub's event stats once bound (signaling/events/stats.py)
        self._clock = clock
        self._wall = wall
        self._redis: aioredis.Redis | None = None
        self._registry: RedisRegistry | None = None
        self._host: BusHost | None = None
        self._rooms: dict[str, _Room] = {}
        self._channels: dict[str, Channel] = {}
        self._inlets: dict[str, Inlet] = {}  # by sender boot
        self._peer_boots: dict[str, str] = {}  # worker id -> the incarnation its acknowledgements come from
        self._last_fresh: dict[str, float] = {}  # worker id -> when it last had a fresh heartbeat (monotonic)
        self._by_ref: dict[str, Client] = {}
        self.pk_media: PkMedia | None = None  # PK media across workers (set by cluster.runtime)
        self._control = ControlStream(self.boot, settings.backlog_limit, clock, wall)
        self._inbox_id = "0-0"
        self._healthy = True
        self._run_id = ""
        self._work = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._releases: set[asyncio.Task[None]] = set()
        self._append_script: Any = None
        self._hand_script: Any = None

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None, "ClusterBus.start() first"
        return self._redis

    @property
    def host(self) -> BusHost:
        assert self._host is not None, "ClusterBus.bind() first"
        return self._host

    async def start(self, registry: RedisRegistry) -> None:
        self._registry = registry
        self._redis = registry.client
        self._append_script = self._redis.register_script(wire.APPEND)
        self._hand_script = self._redis.register_script(wire.HAND)
        await self._control.load(self.redis, self.host.rooms)
        # What a previous incarnation of this worker left in its inbox is not ours: senders send again
        # whatever it did not acknowledge.
        self._inbox_id = await self._last_id(wire.key("inbox", self.worker_id))
        self._run_id = str((await self.redis.info("server")).get("run_id", ""))
        self._tasks = [asyncio.ensure_future(self._forever("reader", self._read_once)),
                       asyncio.ensure_future(self._forever("pump", self._pump_once)),
                       asyncio.ensure_future(self._forever("maintenance", self._maintain_once))]
        log.info("room events bus of worker %s (%s) started", self.worker_id, self.boot)

    async def stop(self) -> None:
        if self._releases:  # rooms that closed at shutdown hand their events over first (bounded)
            await asyncio.wait(list(self._releases), timeout=self.settings.prepare_timeout_s)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        # Bounded: a loop stuck in a Redis read that ignores its cancellation must not hold up the
        # worker's exit (seen once: a SIGTERM'd worker outliving its supervisor's grace period).
        _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        if stuck:
            log.warning("room events bus: %d loop(s) did not stop within %.1f s; leaving them",
                        len(stuck), STOP_TIMEOUT_S)

    async def _forever(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run one of the bus's loops until cancelled: Redis going away is expected, anything else is logged."""
        failures = 0
        try:
            while True:
                try:
                    await body()
                    failures = 0
                except (RedisError, OSError, RegistryUnavailable) as exc:
                    self._failed(exc)
                    failures += 1
                    await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)))
                except Exception:
                    log.exception("room events bus: %s loop failed; going on", name)
                    await asyncio.sleep(0.5)
        finally:
            log.info("room events bus: %s loop stopped", name)

    def _failed(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning("room events: Redis unreachable (%s): owners keep deciding and delivering locally, "
                        "the rest waits in bounded backlogs", exc)
        self._healthy = False

    def _ok(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.warning("room events: Redis reachable again; sending what waited")
            self._recovered()

    def _recovered(self) -> None:
        """Redis was away or restarted: offer again everything it may have lost (receivers skip duplicates)."""
        now = self._clock()
        for channel in self._channels.values():
            channel.rewind()
        for r in self._rooms.values():
            # The time Redis was away does not count against an owner's lease: it gets a whole lease from now
            # to claim its rooms back, before any other worker may (two owners would each number the events).
            r.seen_at = now
            if r.outbox is not None:
                r.outbox.rewind()
                r.snapshot_at = None
        self._control.recovered()
        self._wake()

    def _wake(self) -> None:
        self._work.set()

    # -- RoomBus: what the hub asks -------------------------------------------------------------------

    def bind(self, host: BusHost) -> Fanout:
        self._host = host
        self.counters = host.stats
        return ClusterFanout(self)

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[f"cluster_{what}"] = self.counters.get(f"cluster_{what}", 0) + n

    def decides(self, room: str) -> bool:
        r = self._rooms.get(room)
        return r is not None and r.phase == OWNER

    def decided_rooms(self) -> list[str]:
        return [name for name, r in self._rooms.items() if r.phase == OWNER]

    def position(self, room: str) -> tuple[int, int]:
        r = self._rooms.get(room)
        if r is not None and r.outbox is not None:
            return r.outbox.epoch, r.outbox.seq
        if r is not None and r.cursor is not None:
            return r.cursor.epoch, r.cursor.last
        return (0, 0)

    def replica(self, room: str) -> RoomState | None:
        r = self._rooms.get(room)
        return r.replica if r is not None and r.phase != OWNER else None

    def viewers(self, room: str, local: int) -> int:
        r = self._rooms.get(room)
        return local + sum(r.elsewhere.values()) if r is not None and r.phase == OWNER else local

    def online(self, room: str, local: int) -> int:
        r = self._rooms.get(room)
        return local + len(r.presence) if r is not None and r.phase == OWNER else local

    async def prepare(self, room: str) -> None:
        r = self._room(room)
        for _ in range(2):
            if r.phase == OWNER or (r.phase == FOLLOWER and r.replica is not None):
                return
            task = self._settle_soon(r, replica=True)
            try:
                await asyncio.wait_for(asyncio.shield(task), self.settings.prepare_timeout_s)
            except TimeoutError:
                log.warning("room=%s its events owner is not known yet; the socket joins without its state", room)
                return
            r = self._room(room)

    def joined(self, client: Client) -> None:
        self._by_ref[self._ref(client)] = client
        if not self.decides(client.room):
            self._to_owner(client.room, {"t": "join", "room": client.room, "s": self._sender_wire(client)})

    def left(self, client: Client) -> None:
        ref = self._ref(client)
        self._by_ref.pop(ref, None)
        if not self.decides(client.room):
            self._to_owner(client.room, {"t": "leave", "room": client.room, "ref": ref})

    def forward(self, client: Client, text: str) -> None:
        self._to_owner(client.room, {"t": "frame", "room": client.room, "s": self._sender_wire(client), "text": text})

    def observed(self, room: str, message: Message, live: bool | None) -> None:
        self._to_owner(room, {"t": "observed", "room": room, "msg": message, "live": live})

    def release(self, room: str, state: RoomState | None) -> None:
        r = self._rooms.get(room)
        if r is None:
            return
        if r.phase != OWNER or r.outbox is None:
            if not r.pending:
                del self._rooms[room]  # nothing of the room here any more: stop following it
            return
        by_worker: dict[str, int] = {}
        for sender in r.presence.values():
            by_worker[sender.worker] = by_worker.get(sender.worker, 0) + 1
        successor = max(by_worker, key=lambda w: (by_worker[w], w)) if by_worker else ""
        r.phase = HANDING_OFF
        task = asyncio.ensure_future(self._release(r, state, successor))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def moderated(self, rooms: Rooms) -> ClusterModeratedRooms:
        return ClusterModeratedRooms(rooms, self)

    def pk_transport(self) -> ClusterBus:
        return self

    # -- PkTransport ----------------------------------------------------------------------------------

    def link_media(self, a: str, host_a: str | None, b: str, host_b: str | None) -> None:
        if self.pk_media is not None:
            self.pk_media.start_link(PkSide(a, host_a), PkSide(b, host_b))

    def unlink_media(self, a: str, b: str) -> None:
        if self.pk_media is not None:
            self.pk_media.start_unlink(a, b)

    def send(self, worker: str, item: dict[str, Any]) -> None:
        self._send(worker, {"t": "pk", "to": "worker", "pk": item})

    def forward_frame(self, worker: str, sender: Sender, frame: ClientFrame) -> None:
        self._send(worker, {"t": "frame", "to": "worker", "room": sender.room, "s": self._sender_wire(sender),
                            "text": wire.dumps(frame.data)})

    # -- emitting (the owner's fan-out) ---------------------------------------------------------------

    def emit(self, room: str, delivery: Delivery) -> int:
        """An event of ``room``: at its owner, sequenced, delivered here and appended; elsewhere, to its owner."""
        r = self._rooms.get(room)
        if r is None or r.phase != OWNER or r.outbox is None:
            self._to_owner(room, {"t": "emit", "room": room, "d": delivery.to_wire(), "by": self.worker_id})
            return 0
        count = self._deliver_local(room, delivery) + self._remote_count(r, delivery)
        r.outbox.add(wire.dumps(delivery.to_wire()))
        self._wake()
        return count

    def _deliver_local(self, room: str, delivery: Delivery) -> int:
        channels = self.host.channels
        kind = delivery.kind
        if kind == "all":
            channels.broadcast(room, delivery.message)
            return channels.online(room)
        if kind == "roles":
            return channels.to_roles(room, delivery.roles, delivery.message)
        if kind == "identity":
            return channels.to_identity(room, delivery.identity, delivery.message)
        client = self._by_ref.get(delivery.socket)
        if client is None or client.room != room:
            return 0
        if kind == "socket":
            client.send(delivery.message)
        elif kind == "cut":
            client.cut(delivery.code, delivery.reason)
        return 1

    @staticmethod
    def _remote_count(r: _Room, delivery: Delivery) -> int:
        senders = r.presence.values()
        if delivery.kind == "all":
            return len(r.presence)
        if delivery.kind == "roles":
            return sum(s.role in delivery.roles for s in senders)
        if delivery.kind == "identity":
            return sum(s.identity == delivery.identity for s in senders)
        return int(delivery.socket in r.presence)

    # -- moderation across workers --------------------------------------------------------------------

    def control(self, kind: str, room: str, identity: str, until: float | None, reason: str) -> None:
        """A kick, ban or unban decided here: every worker applies it to its own sessions, sockets and ban list."""
        self._control.add(kind, room, identity, until, reason)
        self._wake()

    def remote_role(self, room: str, identity: str) -> str | None:
        r = self._rooms.get(room)
        if r is None or r.phase != OWNER:
            return None
        roles = [s.role for s in r.presence.values() if s.identity == identity]
        return max(roles, key=RANK.__getitem__) if roles else None

    def remote_sockets(self, room: str, identity: str) -> int:
        r = self._rooms.get(room)
        return sum(s.identity == identity for s in r.presence.values()) if r is not None else 0

    # -- routing items ----------------------------------------------------------------------------------

    def _room(self, name: str) -> _Room:
        r = self._rooms.get(name)
        if r is None:
            r = self._rooms[name] = _Room(name, self.settings.channel_limit)
            self._settle_soon(r)
        return r

    def _ref(self, client: Client) -> str:
        return f"{self.boot}#{client.ref}"

    def _sender_wire(self, sender: Sender) -> dict[str, Any]:
        if isinstance(sender, RemoteSender):
            return {**sender.to_wire(), "acting": sender.role}
        assert isinstance(sender, Client)
        return {"ref": self._ref(sender), "room": sender.room, "identity": sender.identity,
                "role": sender.granted_role, "acting": sender.role, "worker": self.worker_id, "name": sender.name}

    def _role_of(self, sender: RemoteSender) -> str:
        """A remote socket's acting role: the owner's relay room holds the guest grants."""
        room = self.host.rooms.get(sender.room) if self.decides(sender.room) else None
        return room.acting_role(sender.identity, sender.granted_role) if room is not None else sender.acting

    def _to_owner(self, room: str, item: dict[str, Any]) -> None:
        r = self._room(room)
        if r.phase == OWNER:
            self._receive(item)
        elif r.phase == FOLLOWER and r.owner is not None:
            self._send(r.owner, item)
        else:
            if len(r.pending) == r.pending.maxlen:
                self._count("dropped")
            r.pending.append(item)
            self._settle_soon(r)

    def _send(self, worker: str, item: dict[str, Any]) -> None:
        if worker == self.worker_id:
            asyncio.get_running_loop().call_soon(self._receive, item)
            return
        channel = self._channels.get(worker)
        if channel is None:
            channel = self._channels[worker] = Channel(self.settings.channel_limit, self.settings.resend_after_s,
                                                       self._clock)
        dropped = channel.dropped
        channel.add(item)
        self._count("dropped", channel.dropped - dropped)
        self._count("forwarded")
        self._wake()

    def _receive(self, item: dict[str, Any]) -> None:
        """One item for this worker, taken once and in order from its sender (or from a local queue)."""
        kind, room = item.get("t"), str(item.get("room", ""))
        host = self.host
        if item.get("to") == "worker":  # PK: for the battle decided here, whichever room it is about
            if kind == "frame":
                host.decide(RemoteSender.from_wire(item["s"], self._role_of), str(item["text"]))
            else:
                host.pk_item(dict(item.get("pk") or {}))
            return
        r = self._rooms.get(room)
        if r is None or r.phase != OWNER:
            # Not decided here (any more): on to whoever decides it now.
            self._to_owner(room, {k: v for k, v in item.items() if k not in wire.CHANNEL_FIELDS})
            return
        if kind == "frame":
            host.decide(self._sender_of(r, item["s"]), str(item["text"]))
        elif kind == "join":
            if item["s"]["worker"] != self.worker_id:  # queued here before this worker took the room over
                sender = RemoteSender.from_wire(item["s"], self._role_of)
                r.presence[sender.ref] = sender
        elif kind == "leave":
            r.presence.pop(str(item.get("ref")), None)
        elif kind == "presence":
            worker = str(item.get("worker"))
            for ref in [ref for ref, s in r.presence.items() if s.worker == worker]:
                del r.presence[ref]
            for socket in item.get("sockets") or []:
                if socket["worker"] != self.worker_id:
                    sender = RemoteSender.from_wire(socket, self._role_of)
                    r.presence[sender.ref] = sender
        elif kind == "observed":
            live = item.get("live")
            host.observed(room, dict(item["msg"]), None if live is None else bool(live))
        elif kind == "emit":
            delivery = Delivery.from_wire(dict(item["d"]))
            if host.admit(room, delivery.message, str(item.get("by"))):
                self.emit(room, delivery)
        else:
            log.warning("room=%s unknown room events item %r", room, kind)

    def _sender_of(self, r: _Room, socket: dict[str, Any]) -> Client | RemoteSender:
        """Who sent a frame: a socket here (a frame queued before this worker took the room over), or a
        socket elsewhere, kept in the room's presence (its refusals in a row are counted there)."""
        ref = str(socket["ref"])
        local = self._by_ref.get(ref) if socket["worker"] == self.worker_id else None
        if local is not None:
            return local
        sender = r.presence.get(ref)
        if sender is None:
            sender = r.presence[ref] = RemoteSender.from_wire(socket, self._role_of)
        return sender

    # -- ownership ------------------------------------------------------------------------------------

    def _present(self, name: str) -> bool:
        """This worker holds something of the room: sockets, or sessions on mic."""
        room = self.host.rooms.get(name)
        return self.host.channels.online(name) > 0 or (room is not None and room.held_here)

    def _holds_host(self, name: str) -> bool:
        room = self.host.rooms.get(name)
        return room is not None and room.held_here

    def _may_claim(self, r: _Room, joining: bool) -> bool:
        if not (joining or self._present(r.name)):
            return False
        # Right after Redis lost the lease, its holder claims it back within an interval: give it a lease.
        return r.seen_owner is None or r.seen_owner == self.worker_id \
            or self._clock() - r.seen_at > self.settings.lease_s

    def _settle_soon(self, r: _Room, replica: bool = False) -> asyncio.Task[None]:
        if r.settling is None or r.settling.done():
            r.settling = asyncio.ensure_future(self._settle_safely(r, replica))
        return r.settling

    async def _settle_safely(self, r: _Room, replica: bool) -> None:
        try:
            await self._settle(r, replica)
        except (RedisError, OSError) as exc:
            self._failed(exc)
        except Exception:
            log.exception("room=%s could not learn who decides its events", r.name)

    async def _settle(self, r: _Room, replica: bool) -> None:
        """Learn who decides the room; take it over when that is this worker."""
        if r.phase in (OWNER, TAKING_OVER, HANDING_OFF):
            return
        key = wire.key("owner", r.name)
        owner = await self.redis.get(key)
        if owner is None and self._may_claim(r, replica):
            if await self.redis.set(key, self.worker_id, nx=True, px=int(self.settings.lease_s * 1000)):
                owner = self.worker_id
                log.info("room=%s its events are decided here (first worker with a socket or its host)", r.name)
            else:
                owner = await self.redis.get(key)
        self._ok()
        if owner is None:
            return  # nobody decides it yet, and it is not ours to claim now: the maintenance loop tries again
        owner = str(owner)
        r.seen_owner, r.seen_at = owner, self._clock()
        if owner == self.worker_id:
            await self._take_over(r)
        else:
            await self._follow(r, owner, replica or self.host.channels.online(r.name) > 0)

    async def _load(self, name: str, known: RoomState | None) -> tuple[RoomState, tuple[int, int]]:
        """The room's state (the owner's snapshot or ``known``, whichever is newer, plus the stream after
        it) and the stream's last position."""
        raw = await self.redis.get(wire.key("state", name))
        state = known
        if raw:
            snapshot = RoomState.from_json(str(raw))
            if state is None or (snapshot.epoch, snapshot.seq) > (state.epoch, state.seq):
                state = snapshot
        state = state or RoomState(name)
        stream = wire.key("room", name)
        entries: Any = await self.redis.xrange(stream, min=f"({state.epoch}-{state.seq}", max="+",
                                               count=self.settings.stream_length * 2)
        for entry_id, fields in entries:
            delivery = Delivery.from_wire(json.loads(fields["e"]))
            if delivery.kind == "all":
                state.apply(delivery.message, self.host.history)
            state.epoch, state.seq = wire.position(str(entry_id))
        last = await self.redis.xrevrange(stream, "+", "-", count=1)
        top = wire.position(str(last[0][0])) if last else (0, 0)
        return state, top

    async def _take_over(self, r: _Room) -> None:
        previous = r.phase
        stateless = r.replica is None and previous != OWNER and self.host.channels.online(r.name) > 0
        r.phase = TAKING_OVER
        try:
            state, top = await self._load(r.name, r.replica)
        except BaseException:
            r.phase = previous
            raise
        position = max(top, (state.epoch, state.seq))
        if position == (0, 0):
            # Nothing to continue from: a new numbering, sorting after anything a follower has seen.
            seen = r.cursor.epoch if r.cursor is not None else 0
            position = (max(int(self._wall() * 1000), seen + 1), 0)
        r.outbox = Outbox(position[0], position[1], self.settings.retain, self.settings.backlog_limit)
        state.epoch, state.seq = position
        r.phase, r.owner, r.cursor, r.replica = OWNER, self.worker_id, None, None
        r.presence, r.elsewhere, r.snapshot_at, r.asked_at = {}, {}, None, None
        log.info("room=%s events decided here from %d-%d", r.name, position[0], position[1])
        self._count("taken_over")
        self.host.take_over(r.name, state)
        if stateless:  # sockets here joined before the room's state was known (Redis away): now it is
            self._count("resynced", self.host.resync(r.name))
        pending = list(r.pending)
        r.pending.clear()
        for item in pending:
            self._receive(item)
        self._wake()

    async def _follow(self, r: _Room, owner: str, replica: bool) -> None:
        changed = r.owner != owner
        resync = False
        if replica and r.replica is None:
            state, _ = await self._load(r.name, None)
            r.replica, r.cursor = state, Cursor(state.epoch, state.seq)
            # Sockets here that joined before this worker knew the room's state (Redis away), or while it decided
            # the room itself: the owner's state covers what they missed, so they get it as a welcome again.
            resync = self.host.channels.online(r.name) > 0
        r.owner, r.phase = owner, FOLLOWER
        if changed:
            log.info("room=%s events decided by worker %s", r.name, owner)
            self._announce(r)
        if resync:
            self._count("resynced", self.host.resync(r.name))
        pending = list(r.pending)
        r.pending.clear()
        for item in pending:
            self._send(owner, item)

    def _announce(self, r: _Room) -> None:
        """Tell the room's (new) owner about this worker's sockets in it."""
        clients = self.host.channels.clients(r.name)
        if clients and r.owner is not None:
            self._send(r.owner, {"t": "presence", "room": r.name, "worker": self.worker_id,
                                 "sockets": [self._sender_wire(c) for c in clients]})

    def _become_follower(self, r: _Room, owner: str, state: RoomState | None) -> None:
        r.outbox, r.owner, r.phase = None, owner, FOLLOWER
        r.replica = state
        r.cursor = Cursor(state.epoch, state.seq) if state is not None else None
        r.presence, r.elsewhere, r.snapshot_at = {}, {}, None
        self.host.step_down(r.name)
        self._announce(r)
        pending = list(r.pending)
        r.pending.clear()
        for item in pending:
            self._send(owner, item)

    async def _flush(self, r: _Room) -> None:
        """Append what the room's outbox holds (bounded: a hand-off does not wait forever for Redis)."""
        deadline = self._clock() + self.settings.prepare_timeout_s
        while r.outbox is not None and r.outbox.backlog and self._clock() < deadline:
            await self._append(r)

    async def _hand_off(self, r: _Room, to: str) -> None:
        assert r.outbox is not None
        r.phase = HANDING_OFF
        try:
            await self._flush(r)
            if r.outbox.backlog:
                r.phase = OWNER  # Redis is slow or away: hand over only what the stream holds, next round
                return
            state = self.host.room_state(r.name)
            await self.redis.set(wire.key("state", r.name), state.to_json(), ex=self.settings.state_ttl_s)
            done = await self._hand_script(keys=[wire.key("owner", r.name)],
                                           args=[self.worker_id, to, int(self.settings.lease_s * 1000)])
        except BaseException:
            r.phase = OWNER
            raise
        if not done:
            r.phase = OWNER  # the lease is not ours any more: the next round sees whose it is
            return
        await self.redis.delete(wire.key("handoff", r.name))
        log.info("room=%s events handed to worker %s (its host is there) at %d-%d", r.name, to, state.epoch,
                 state.seq)
        self._count("handed_off")
        self._become_follower(r, to, state)

    async def _lost(self, r: _Room, owner: str) -> None:
        """Another worker holds the lease (ours expired while we could not renew it)."""
        if r.outbox is not None and r.outbox.backlog:
            self._count("lost", r.outbox.backlog)
            log.warning("room=%s worker %s decides its events now; %d events decided here were never appended",
                        r.name, owner or "?", r.outbox.backlog)
        r.outbox, r.phase, r.owner, r.replica, r.cursor = None, NEW, None, None, None
        self.host.step_down(r.name)
        if owner:
            await self._follow(r, owner, self.host.channels.online(r.name) > 0)

    async def _release(self, r: _Room, state: RoomState | None, successor: str) -> None:
        try:
            await self._flush(r)
            if state is not None and r.outbox is not None:
                state.epoch, state.seq = r.outbox.epoch, r.outbox.seq
                await self.redis.set(wire.key("state", r.name), state.to_json(), ex=self.settings.state_ttl_s)
            await self._hand_script(keys=[wire.key("owner", r.name)],
                                    args=[self.worker_id, successor, int(self.settings.lease_s * 1000)])
            log.info("room=%s closed here; its events go to %s", r.name, f"worker {successor}" if successor
                     else "the next worker with a socket there")
            self._count("handed_off")
        except (RedisError, OSError) as exc:
            log.warning("room=%s could not hand its events over: %s", r.name, exc)
        finally:
            if self._rooms.get(r.name) is r:
                del self._rooms[r.name]
            for item in r.pending:
                self._to_owner(r.name, item)

    async def _write_state(self, r: _Room) -> None:
        assert r.outbox is not None
        position = (r.outbox.epoch, r.outbox.seq)
        state = self.host.room_state(r.name)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(wire.key("state", r.name), state.to_json(), ex=self.settings.state_ttl_s)
            pipe.expire(wire.key("room", r.name), self.settings.state_ttl_s)
            await pipe.execute()
        r.snapshot_at = position

    # -- the loops --------------------------------------------------------------------------------------

    async def _read_once(self) -> None:
        inbox = wire.key("inbox", self.worker_id)
        streams: dict[Any, Any] = {inbox: self._inbox_id, wire.CONTROL: self._control.last_id}
        followed: dict[str, _Room] = {}
        for r in self._rooms.values():
            if r.phase == FOLLOWER and r.cursor is not None:
                key = wire.key("room", r.name)
                streams[key] = r.cursor.position
                followed[key] = r
        result: Any = await self.redis.xread(streams, count=500, block=self.settings.read_block_ms)
        self._ok()
        acks: dict[str, tuple[str, int]] = {}  # sender boot -> (its worker, last taken)
        nacks: dict[str, tuple[str, int]] = {}
        handled = 0
        for key, entries in result or []:
            key = str(key)
            for entry_id, fields in entries:
                handled += 1
                if handled % YIELD_EVERY == 0:
                    # A backlog (what waited while Redis was away) is delivered in rounds: the sockets' writers
                    # drain between them, so a burst cannot fill a reading client's send queue and cut it off.
                    await asyncio.sleep(0)
                try:
                    if key == inbox:
                        self._inbox_id = str(entry_id)
                        self._on_inbox(json.loads(fields["m"]), acks, nacks)
                    elif key == wire.CONTROL:
                        self._control.last_id = str(entry_id)
                        self._control.apply(json.loads(fields["e"]), self.host.rooms)
                    else:
                        r = followed[key]
                        if self._rooms.get(r.name) is r and r.phase == FOLLOWER:
                            self._on_event(r, str(entry_id), fields)
                except Exception:  # one bad entry costs itself, never the loop
                    log.exception("room events: could not handle an entry of %s", key)
        if acks or nacks:
            async with self.redis.pipeline(transaction=False) as pipe:
                for kind, answers in (("ack", acks), ("nack", nacks)):
                    for boot, (worker, number) in answers.items():
                        answer = {"t": kind, "from": self.boot, "w": self.worker_id, "to": boot,
                                  "upto" if kind == "ack" else "expected": number}
                        pipe.xadd(wire.key("inbox", worker), {"m": wire.dumps(answer)},
                                  maxlen=self.settings.inbox_length, approximate=True)
                await pipe.execute()

    def _on_inbox(self, message: dict[str, Any], acks: dict[str, tuple[str, int]],
                  nacks: dict[str, tuple[str, int]]) -> None:
        kind, sender_boot, worker = message.get("t"), str(message.get("from")), str(message.get("w"))
        if kind in ("ack", "nack"):
            if message.get("to") != self.boot:
                return  # for an earlier incarnation of this worker
            channel = self._channels.get(worker)
            if self._peer_boots.get(worker, sender_boot) != sender_boot:
                # The receiver restarted: it knows nothing of our sockets in the rooms it decides.
                for r in self._rooms.values():
                    if r.owner == worker and r.phase == FOLLOWER:
                        self._announce(r)
            self._peer_boots[worker] = sender_boot
            if channel is not None:
                if kind == "ack":
                    channel.ack(int(message["upto"]))
                else:
                    channel.rewind(int(message["expected"]))
                    self._wake()
            return
        inlet = self._inlets.get(sender_boot)
        if inlet is None:
            inlet = self._inlets[sender_boot] = Inlet()
        verdict = inlet.offer(int(message["c"]), int(message["b"]))
        acks[sender_boot] = (worker, inlet.done)
        if verdict == "take":
            nacks.pop(sender_boot, None)
            self._receive(message)
        elif verdict == "gap":
            nacks[sender_boot] = (worker, inlet.expected or 0)
        else:
            self._count("duplicates")

    def _on_event(self, r: _Room, entry_id: str, fields: dict[str, Any]) -> None:
        assert r.cursor is not None
        epoch, n = wire.position(entry_id)
        gaps = r.cursor.gaps
        if not r.cursor.accept(epoch, n):
            self._count("duplicates")
            return
        if r.cursor.gaps != gaps:
            self._count("gaps", r.cursor.gaps - gaps)
            log.warning("room=%s %d events never reached this worker (lost beyond its owner's backlog)", r.name,
                        r.cursor.gaps - gaps)
        delivery = Delivery.from_wire(json.loads(fields["e"]))
        if r.replica is not None:
            if delivery.kind == "all":
                r.replica.apply(delivery.message, self.host.history)
            r.replica.epoch, r.replica.seq = epoch, n
        self._deliver_local(r.name, delivery)

    async def _pump_once(self) -> None:
        await self._work.wait()
        self._work.clear()
        try:
            await self._write_channels()
            for r in list(self._rooms.values()):
                if r.outbox is not None and r.phase in (OWNER, HANDING_OFF):
                    for _ in range(20):  # a long backlog goes in rounds, so other rooms get their turn
                        if not await self._append(r):
                            break
                    else:
                        self._wake()
            await self._control.write(self.redis)
        except BaseException:
            self._wake()  # nothing was lost: try again after the loop's back-off
            raise
        self._ok()

    async def _write_channels(self) -> None:
        for worker, channel in list(self._channels.items()):
            batch = channel.unsent()
            if not batch:
                continue
            inbox = wire.key("inbox", worker)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for cseq, base, item in batch:
                        pipe.xadd(inbox, {"m": wire.dumps({**item, "c": cseq, "b": base, "from": self.boot,
                                                       "w": self.worker_id})},
                                  maxlen=self.settings.inbox_length, approximate=True)
                    await pipe.execute()
            except BaseException:
                channel.unwritten([cseq for cseq, _, _ in batch])
                raise

    async def _append(self, r: _Room) -> bool:
        """One append of the room's outbox; True if there may be more to append."""
        outbox = r.outbox
        if outbox is None:
            return False
        first, payloads = outbox.pending(self.settings.batch)
        if not payloads:
            return False
        result = await self._append_script(
            keys=[wire.key("room", r.name), wire.key("owner", r.name)],
            args=[self.worker_id, int(self.settings.lease_s * 1000), self.settings.stream_length, outbox.epoch,
                  first, 1 if first <= outbox.oldest else 0, *payloads])
        code = int(result[0])
        if code == 0:
            last, top = first + len(payloads) - 1, int(result[3])
            refilled = min(outbox.appended, last) - max(top, first - 1)  # appended once already, lost since
            if refilled > 0:
                self._count("refilled", refilled)
            outbox.confirm(last)
            return True
        if code == -2:
            log.warning("room=%s its stream ends at %d, before %d: Redis lost events; appending them again", r.name,
                        int(result[1]), first - 1)
            outbox.restart_from(int(result[1]))
            return True
        if r.outbox is outbox:
            await self._lost(r, str(result[1]))
        return False

    async def _maintain_once(self) -> None:
        await asyncio.sleep(self.settings.interval_s)
        run_id = str((await self.redis.info("server")).get("run_id", ""))
        if run_id != self._run_id:
            if self._run_id:
                log.warning("room events: Redis restarted (run id %s -> %s); sending what it lost again",
                            self._run_id[:8], run_id[:8])
                self._recovered()
            self._run_id = run_id
        self._ok()
        for channel in self._channels.values():
            if channel.due():
                channel.rewind()
                self._count("resent")
                self._wake()
        for room in self.host.rooms:
            if room.held_here and room.name not in self._rooms:
                self._room(room.name)  # the room's host is here: its events should be decided here
        rooms = list(self._rooms.values())
        if not rooms:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in rooms:
                pipe.get(wire.key("owner", r.name))
                pipe.get(wire.key("handoff", r.name))
            values = await pipe.execute()
        for r, owner, handoff in zip(rooms, values[0::2], values[1::2], strict=True):
            if self._rooms.get(r.name) is not r:
                continue
            try:
                await self._maintain_room(r, None if owner is None else str(owner),
                                          None if handoff is None else str(handoff))
            except (RedisError, OSError):
                raise
            except Exception:
                log.exception("room=%s events maintenance failed", r.name)
        await self._refresh_owned()

    async def _maintain_room(self, r: _Room, owner: str | None, handoff: str | None) -> None:
        me, now = self.worker_id, self._clock()
        lease_ms = int(self.settings.lease_s * 1000)
        if owner is not None:
            r.seen_owner, r.seen_at = owner, now
        if r.phase == OWNER:
            if owner == me:
                await self.redis.pexpire(wire.key("owner", r.name), lease_ms)
            elif owner is None:
                if not await self.redis.set(wire.key("owner", r.name), me, nx=True, px=lease_ms):
                    return  # someone claimed it just now: the next round sees who
                r.snapshot_at = None  # Redis lost the lease, so it lost the state too
                log.warning("room=%s its events lease was gone (Redis restarted?): claimed it back", r.name)
            else:
                await self._lost(r, owner)
                return
            if handoff and handoff != me:
                await self._hand_off(r, handoff)
                return
            if r.outbox is not None and r.snapshot_at != (r.outbox.epoch, r.outbox.seq):
                await self._write_state(r)
            return
        if r.phase in (TAKING_OVER, HANDING_OFF) or (r.settling is not None and not r.settling.done()):
            return
        if not self._present(r.name) and not r.pending:
            del self._rooms[r.name]  # nothing of the room here any more
            return
        sockets = self.host.channels.online(r.name) > 0
        if owner == me:
            await self._take_over(r)  # handed to us
        elif owner is None:
            if self._may_claim(r, False):
                await self._settle(r, sockets)
        elif owner != r.owner or r.phase == NEW or (sockets and r.replica is None):
            await self._follow(r, owner, sockets)
        if owner not in (None, me) and self._holds_host(r.name) and \
                (r.asked_at is None or now - r.asked_at > 2 * self.settings.lease_s):
            # The room's host is here: its events should be decided here too. Ask; its owner hands it over.
            await self.redis.set(wire.key("handoff", r.name), me, px=2 * lease_ms)
            r.asked_at = now
            log.info("room=%s its host is here: asking worker %s for its events", r.name, owner)

    async def _refresh_owned(self) -> None:
        """Viewer counts of the rooms decided here; forget workers that have been gone for a while."""
        if self._registry is None:
            return
        now = self._clock()
        stale_after = self._registry.config.stale_after_s
        for info in await self._registry.workers():
            if info.fresh(self._wall(), 2 * stale_after):
                self._last_fresh[info.worker_id] = now
        # Right after a Redis restart no worker has a heartbeat on record yet: gone means gone for long.
        gone_after = 3 * max(self.settings.lease_s, stale_after)
        known = set(self._channels) | {s.worker for r in self._rooms.values() for s in r.presence.values()}
        gone = {w for w in known if now - self._last_fresh.setdefault(w, now) > gone_after}
        for r in [r for r in self._rooms.values() if r.phase == OWNER]:
            counts = await self._registry.room_viewers(r.name)
            r.elsewhere = {w: n for w, n in counts.items() if w != self.worker_id}
            for ref in [ref for ref, s in r.presence.items() if s.worker in gone]:
                del r.presence[ref]  # its worker is gone, and its sockets with it
        for worker in gone:
            channel = self._channels.pop(worker, None)
            self._last_fresh.pop(worker, None)
            if channel is not None and len(channel):
                self._count("dropped", len(channel))
                log.warning("room events: worker %s is gone; %d items for it dropped", worker, len(channel))

    async def _last_id(self, stream: str) -> str:
        last = await self.redis.xrevrange(stream, "+", "-", count=1)
        return str(last[0][0]) if last else "0-0"
