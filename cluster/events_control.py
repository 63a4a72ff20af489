"""Kicks, bans and unbans across workers: a room's owner decides them, every worker applies them to its own.

A kick or ban is decided once, at the room's owner, which ends the identity's sessions and sockets
there (``relay.room.Room.kick`` / ``ban``). The decision also goes to the ``control`` stream that every
worker reads: each ends the identity's sessions and sockets it holds in the room, and a ban goes into
its own ``Rooms.bans``, so WHIP, WHEP and sockets are refused on every worker for as long as it lasts.
Bans in force are also kept in the ``bans`` hash, loaded by a worker when it starts; an unban deletes
its entry there and lifts the ban on every worker.

Entries wait in a bounded backlog while Redis is away, and the last minute's go again after Redis
was away or restarted; receivers apply each entry once (by its id), so a repeated kick never ends a
session that started after it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from cluster import events_redis as wire
from relay.room import Rooms

log = logging.getLogger("cherry.cluster.events")

REPEAT_S = 60.0  # after Redis was away, control entries this recent are written again


class ControlStream:
    def __init__(self, boot: str, backlog_limit: int, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._boot = boot
        self._clock = clock
        self._wall = wall
        self._out: deque[dict[str, Any]] = deque(maxlen=backlog_limit)
        self._recent: deque[tuple[float, dict[str, Any]]] = deque(maxlen=1000)
        self._seen: deque[str] = deque(maxlen=10000)
        self._seen_set: set[str] = set()
        self._bans: dict[tuple[str, str], float] = {}  # decided or learned here: written again after a restart
        self._rewrite_bans = False
        self._ids = itertools.count(1)
        self.last_id = "0-0"  # the last entry read

    def add(self, kind: str, room: str, identity: str, until: float | None, reason: str) -> None:
        """A kick or ban decided here (and already applied here)."""
        entry = {"k": kind, "room": room, "identity": identity, "until": until, "reason": reason,
                 "cid": f"{self._boot}:{next(self._ids)}", "from": self._boot}
        if kind == "ban" and until is not None:
            self._bans[(room, identity)] = until
        elif kind == "unban":
            self._bans.pop((room, identity), None)
        self._out.append(entry)
        self._recent.append((self._clock(), entry))

    @property
    def waiting(self) -> bool:
        return bool(self._out) or self._rewrite_bans

    def recovered(self) -> None:
        """Redis was away or restarted: what it may have lost goes again (receivers skip repeats)."""
        now = self._clock()
        self._out.extend(entry for at, entry in self._recent if now - at < REPEAT_S)
        self._rewrite_bans = True

    async def write(self, redis: aioredis.Redis) -> None:
        if not self.waiting:
            return
        batch = list(self._out)
        now = self._wall()
        # The ban table follows this worker's bans as they are now: every ban or unban in the batch (a ban lifted
        # and laid again in one batch ends banned), and after a restart all of them.
        touched = {(e["room"], e["identity"]) for e in batch if e["k"] in ("ban", "unban")}
        if self._rewrite_bans:
            touched |= self._bans.keys()
        async with redis.pipeline(transaction=False) as pipe:
            for entry in batch:
                pipe.xadd(wire.CONTROL, {"e": wire.dumps(entry)}, maxlen=10000, approximate=True)
            for room, identity in touched:
                until = self._bans.get((room, identity))
                if until is not None and until > now:
                    pipe.hset(wire.BANS, f"{room}\n{identity}", f"{until:.3f}")
                else:
                    pipe.hdel(wire.BANS, f"{room}\n{identity}")
            await pipe.execute()
        for _ in batch:
            self._out.popleft()
        self._rewrite_bans = False

    def apply(self, entry: dict[str, Any], rooms: Rooms) -> None:
        """An entry of the control stream: applied once, unless this worker decided it."""
        cid = str(entry.get("cid"))
        if entry.get("from") == self._boot or cid in self._seen_set:
            return
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(cid)
        self._seen_set.add(cid)
        room_name, identity, reason = str(entry["room"]), str(entry["identity"]), str(entry.get("reason", ""))
        room = rooms.get(room_name)
        if entry.get("k") == "ban":
            until = float(entry.get("until") or 0)
            left = until - self._wall()
            if left <= 0:
                return
            self._bans[(room_name, identity)] = until
            rooms.bans.ban(room_name, identity, left)
            if room is not None:
                room.kick(identity, reason, "banned")
        elif entry.get("k") == "kick" and room is not None:
            room.kick(identity, reason)
        elif entry.get("k") == "unban":
            self._bans.pop((room_name, identity), None)
            rooms.bans.unban(room_name, identity)
        log.info("room=%s participant=%s %s decided on another worker applied here", room_name, identity,
                 entry.get("k"))

    async def load(self, redis: aioredis.Redis, rooms: Rooms) -> None:
        """At start: the bans in force, and where the stream ends (what came before is in the bans)."""
        rows = await redis.hgetall(wire.BANS)
        now = self._wall()
        expired = []
        for field, value in rows.items():
            room, _, identity = str(field).partition("\n")
            until = float(value)
            if until > now:
                self._bans[(room, identity)] = until
                rooms.bans.ban(room, identity, until - now)
            else:
                expired.append(field)
        if expired:
            await redis.hdel(wire.BANS, *expired)
        last = await redis.xrevrange(wire.CONTROL, "+", "-", count=1)
        self.last_id = str(last[0][0]) if last else "0-0"
