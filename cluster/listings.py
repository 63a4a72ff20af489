"""The public room list of a whole cluster, not of the worker a visitor's request happened to reach.

Each worker, with its heartbeat, writes the listings of the live rooms it is the origin of (title, host,
category, tags, cover, PK and guests: what ``GET /rooms`` shows) into one Redis hash, and removes those it no
longer holds. Any worker answers ``GET /rooms`` from that hash, read at most once per ``READ_EVERY_S`` however
many visitors ask, with each room's audience summed over the workers' heartbeats (origin and edges). A listing
whose worker went silent for longer than the registry's staleness bound is left out, as its rooms are.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.registry import PREFIX, RegistryUnavailable, WorkerInfo

log = logging.getLogger("cherry.cluster.listings")

KEY = f"{PREFIX}listings"
READ_EVERY_S = 1.0  # a worker reads the cluster's list at most this often: visitors poll it every few seconds
MAX_LISTINGS = 5000  # rooms read back; past it the list is the busiest by the origins' own counts

Listings = dict[str, dict[str, Any]]  # room -> its summary as GET /rooms shows it


class ClusterListings:
    def __init__(self, redis: aioredis.Redis, worker_id: str, stale_after_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._worker_id = worker_id
        self._stale_after = stale_after_s
        self._clock = clock
        self._published: set[str] = set()
        self._read_at = -1e9
        self._last: list[dict[str, Any]] | None = None

    async def publish(self, listings: Listings) -> None:
        """This worker's rooms as they are now: written, and the ones it wrote before and holds no more removed."""
        now = self._clock()
        gone = self._published - set(listings)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if listings:
                    pipe.hset(KEY, mapping={room: json.dumps({**entry, "_worker": self._worker_id, "_at": now},
                                                             separators=(",", ":"))
                                            for room, entry in listings.items()})
                if gone:
                    pipe.hdel(KEY, *gone)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        self._published = set(listings)

    async def withdraw(self) -> None:
        """A clean stop: this worker's rooms leave the list now, not once they go stale."""
        if self._published:
            try:
                await self._redis.hdel(KEY, *self._published)
            except (RedisError, OSError) as exc:
                log.warning("could not withdraw this worker's room listings: %s", exc)
            self._published = set()

    async def read(self, workers: Callable[[], Awaitable[list[WorkerInfo]]]) -> list[dict[str, Any]]:
        """The cluster's live rooms, busiest first (``workers``: the registry's worker list, for the audiences);
        what was read less than ``READ_EVERY_S`` ago is answered again. Raises RegistryUnavailable."""
        now = self._clock()
        if self._last is not None and now - self._read_at < READ_EVERY_S:
            return self._last
        try:
            raw = await self._redis.hgetall(KEY)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        fresh = [w for w in await workers() if w.fresh(now, self._stale_after)]
        audience: dict[str, int] = {}
        for worker in fresh:
            for room, viewers in worker.room_viewers.items():
                audience[room] = audience.get(room, 0) + viewers
        alive = {w.worker_id for w in fresh}
        rooms: list[dict[str, Any]] = []
        stale: list[str] = []
        for key, text in list(raw.items())[:MAX_LISTINGS]:
            room = str(key)  # the registry's client decodes replies: keys and values are text
            try:
                entry = json.loads(text)
            except ValueError:
                stale.append(room)
                continue
            if entry.pop("_worker", None) not in alive or now - float(entry.pop("_at", 0)) > self._stale_after:
                stale.append(room)
                continue
            entry["viewers"] = max(int(entry.get("viewers", 0)), audience.get(room, 0))
            rooms.append(entry)
        if stale:  # a dead worker's rooms: whoever reads first clears them
            try:
                await self._redis.hdel(KEY, *stale)
            except (RedisError, OSError):
                pass
        rooms.sort(key=lambda r: (-int(r.get("viewers", 0)), str(r.get("room"))))
        self._last, self._read_at = rooms, now
        return rooms
