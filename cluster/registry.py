"""The cluster's shared state in Redis: workers and their load, room origins, where each room's viewers are.

Keys (all prefixed ``cherry:``):

* ``worker:{id}``: hash of a worker's heartbeat (node, internal URL, state, load, time), expiring after
  ``stale_after_s``; ``workers`` is the set of ids ever seen (stale ones are skipped and pruned);
* ``origin:{room}``: the worker holding the room's host and guests, a lease the owner renews with each
  heartbeat; claimed with SET NX, taken over only from a worker that is no longer available;
* ``load:{room}``: hash worker -> "viewers:unix time", written by every worker holding viewers of the room
  (origin and edges), read by placement (entries older than ``stale_after_s`` are ignored).

A worker is available when its heartbeat is fresh and its state is ``serving`` (a draining worker keeps
its sessions but gets nothing new). The registry never decides placement: ``cluster.placement`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cluster.config import ClusterConfig

log = logging.getLogger("cherry.cluster.registry")

PREFIX = "cherry:"
ORIGIN_LEASE_S = 15.0  # an origin whose worker stopped renewing is free again after this long

# Take over an origin only from the owner we saw (compare and set), so two workers never both win.
_TAKEOVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
# Renew only what we own; a lease that is gone (a Redis restart lost it) is written back by its holder,
# which still has the room's host: without it, viewers of a live room would be told it is not live.
_RENEW = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Release only what we own.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """What one worker reports about itself in each heartbeat."""

    state: str  # "serving" or "draining"
    viewers: int
    sessions: int
    rooms: int
    capacity: int  # viewers it takes in all
    room_viewers: dict[str, int]  # viewers per room it holds (as origin or edge)
    origins: tuple[str, ...]  # rooms whose host or guests it holds


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    node_id: str
    url: str  # its internal API
    state: str
    viewers: int
    sessions: int
    rooms: int
    capacity: int
    updated_at: float
    # Its rooms as of that heartbeat (the busiest VIEW_ROOMS): viewers per room, and the rooms it is origin of.
    room_viewers: dict[str, int] = field(default_factory=dict)
    origins: tuple[str, ...] = ()
    node_url: str = ""  # its node's public base URL, if configured (the WHIP redirect's target)

    def available(self, now: float, stale_after: float) -> bool:
        return self.state == "serving" and self.fresh(now, stale_after)

    def fresh(self, now: float, stale_after: float) -> bool:
        """Its last heartbeat is recent: it runs (serving or draining) and its report can be believed."""
        return now - self.updated_at <= stale_after

    @property
    def load(self) -> float:
        """Share of its viewer capacity in use: what least-loaded placement compares."""
        return self.viewers / self.capacity if self.capacity else float("inf")


VIEW_ROOMS = 200  # rooms per worker in the cluster view: the busiest; the heartbeat stays small


def _held(load: WorkerLoad) -> str:
    busiest = sorted(load.room_viewers.items(), key=lambda item: -item[1])[:VIEW_ROOMS]
    return json.dumps({"v": dict(busiest), "o": list(load.origins[:VIEW_ROOMS])}, separators=(",", ":"))


def _parse_held(text: str) -> tuple[dict[str, int], tuple[str, ...]]:
    """A worker's room report; one from another version or a damaged one reads as empty (views only)."""
    try:
        held = json.loads(text) if text else {}
        viewers = {str(room): int(n) for room, n in dict(held.get("v", {})).items()}
        return viewers, tuple(str(room) for room in held.get("o", ()))
    except (ValueError, TypeError, AttributeError):
        return {}, ()


class RegistryUnavailable(Exception):
    """Redis cannot be reached now: placement falls back to this worker where it can."""


class RedisRegistry:
    def __init__(self, url: str, config: ClusterConfig, worker_id: str, node_id: str, internal_url: str,
                 clock: Callable[[], float] = time.time, node_url: str = "") -> None:
        self.worker_id = worker_id
        self.node_id = node_id
        self.internal_url = internal_url
        self.node_url = node_url
        self.config = config
        self._clock = clock
        self._redis: aioredis.Redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                        decode_responses=True, health_check_interval=10)
        self._takeover = self._redis.register_script(_TAKEOVER)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._load_rooms: set[str] = set()

    @property
    def client(self) -> aioredis.Redis:
        return self._redis

    async def close(self) -> None:
        await self._redis.aclose()

    # -- heartbeats ------------------------------------------------------------------------------------

    async def heartbeat(self, load: WorkerLoad) -> None:
        """Publish this worker's load, renew its origin leases, refresh its rooms' viewer counts."""
        now = self._clock()
        ttl_ms = int(self.config.stale_after_s * 1000)
        key = f"{PREFIX}worker:{self.worker_id}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping={
                    "node": self.node_id, "url": self.internal_url, "state": load.state,
                    "viewers": load.viewers, "sessions": load.sessions, "rooms": load.rooms,
                    "capacity": load.capacity, "ts": f"{now:.3f}", "held": _held(load),
                    "public": self.node_url})
                pipe.pexpire(key, ttl_ms)
                pipe.sadd(f"{PREFIX}workers", self.worker_id)
                for room, viewers in load.room_viewers.items():
                    pipe.hset(f"{PREFIX}load:{room}", self.worker_id, f"{viewers}:{now:.3f}")
                    pipe.pexpire(f"{PREFIX}load:{room}", int(ORIGIN_LEASE_S * 4000))
                for room in self._load_rooms - set(load.room_viewers):
                    pipe.hdel(f"{PREFIX}load:{room}", self.worker_id)
                await pipe.execute()
            for room in load.origins:
                await self._renew(keys=[f"{PREFIX}origin:{room}"], args=[self.worker_id, int(ORIGIN_LEASE_S * 1000)])
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        self._load_rooms = set(load.room_viewers)

    async def withdraw(self) -> None:
        """Leave the registry at once (a clean stop), instead of waiting for the heartbeat to go stale."""
        try:
            await self._redis.delete(f"{PREFIX}worker:{self.worker_id}")
            for room in self._load_rooms:
                await self._redis.hdel(f"{PREFIX}load:{room}", self.worker_id)
        except (RedisError, OSError) as exc:
            log.warning("could not leave the registry: %s", exc)

    # -- reading ---------------------------------------------------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """Every worker with a heartbeat on record (fresh or not: callers judge with ``available``)."""
        try:
            ids = sorted(str(i) for i in await self._redis.smembers(f"{PREFIX}workers"))
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.hgetall(f"{PREFIX}worker:{worker_id}")
                rows = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        found = []
        gone = []
        for worker_id, row in zip(ids, rows, strict=True):
            if not row:
                gone.append(worker_id)
                continue
            room_viewers, origins = _parse_held(row.get("held", ""))
            found.append(WorkerInfo(worker_id, row.get("node", ""), row.get("url", ""), row.get("state", ""),
                                    int(row.get("viewers", 0)), int(row.get("sessions", 0)), int(row.get("rooms", 0)),
                                    int(row.get("capacity", 0)), float(row.get("ts", 0)), room_viewers, origins,
                                    row.get("public", "")))
        if gone:
            await self._prune(gone)
        return found

    async def _prune(self, gone: Iterable[str]) -> None:
        try:
            await self._redis.srem(f"{PREFIX}workers", *gone)
        except (RedisError, OSError):
            pass  # pruning is housekeeping: the next reader tries again

    async def fresh(self) -> list[WorkerInfo]:
        """Workers with a recent heartbeat, serving or draining: all that still hold sessions."""
        now = self._clock()
        return [w for w in await self.workers() if w.fresh(now, self.config.stale_after_s)]

    async def available(self) -> list[WorkerInfo]:
        now = self._clock()
        return [w for w in await self.workers() if w.available(now, self.config.stale_after_s)]

    async def room_viewers(self, room: str) -> dict[str, int]:
        """Viewers of ``room`` per worker holding some, from fresh reports only."""
        try:
            rows = await self._redis.hgetall(f"{PREFIX}load:{room}")
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        now = self._clock()
        counts: dict[str, int] = {}
        for worker_id, value in rows.items():
            viewers, _, stamp = str(value).partition(":")
            try:
                if now - float(stamp) <= self.config.stale_after_s:
                    counts[str(worker_id)] = int(viewers)
            except ValueError:
                continue
        return counts

    # -- room origins -----------------------------------------------------------------------------------

    async def origin(self, room: str) -> str | None:
        try:
            value = await self._redis.get(f"{PREFIX}origin:{room}")
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return value if isinstance(value, str) else None

    async def claim_origin(self, room: str, candidate: str, stale_owner: str | None = None) -> str:
        """Make ``candidate`` the room's origin unless another available worker already is; the owner after."""
        key = f"{PREFIX}origin:{room}"
        lease = int(ORIGIN_LEASE_S * 1000)
        try:
            if stale_owner is not None:
                await self._takeover(keys=[key], args=[stale_owner, candidate, lease])
            elif await self._redis.set(key, candidate, nx=True, px=lease):
                return candidate
            owner = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(str(exc)) from exc
        return owner if isinstance(owner, str) else candidate

    async def release_origin(self, room: str) -> None:
        try:
            await self._release(keys=[f"{PREFIX}origin:{room}"], args=[self.worker_id])
        except (RedisError, OSError) as exc:
            log.warning("room=%s could not release its origin: %s", room, exc)


async def wait_for_redis(registry: RedisRegistry, timeout: float) -> None:
    """Fail fast with a clear message when the configured Redis is not there at start."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await registry.client.ping()
            return
        except (RedisError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise RegistryUnavailable(f"Redis at cluster.redis_url does not answer: {exc}") from exc
            await asyncio.sleep(0.2)
