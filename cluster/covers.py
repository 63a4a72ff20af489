"""Room covers in Redis: the origin writes each room's latest snapshot, any worker serves it.

Key ``cherry:cover:{room}``: ``"<version> <base64 JPEG>"``, and ``cherry:cover-version:{room}``: the version
alone (what an edge's room list names, without reading the picture); both expire a few snapshot intervals
after they were last written or touched, so the cover of a room whose origin died goes with it. Base64
because the cluster's one Redis client decodes replies as text (``RedisRegistry`` opens it with
``decode_responses``); a 320-pixel cover is 10-30 KB, a third more of that is nothing next to the media.
"""

from __future__ import annotations

import base64
import binascii

import redis.asyncio as aioredis

from cluster.registry import PREFIX


def cover_key(room: str) -> str:
    return f"{PREFIX}cover:{room}"


def version_key(room: str) -> str:
    return f"{PREFIX}cover-version:{room}"


class RedisCovers:
    """``gateway.snapshots.CoverStore`` on the cluster's Redis client; errors reach the caller (it counts them)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def put(self, room: str, version: int, jpeg: bytes, ttl_s: float) -> None:
        value = f"{version} {base64.b64encode(jpeg).decode('ascii')}"
        ttl_ms = max(1, int(ttl_s * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(cover_key(room), value, px=ttl_ms)
            pipe.set(version_key(room), str(version), px=ttl_ms)
            await pipe.execute()

    async def touch(self, rooms: list[str], ttl_s: float) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.pexpire(cover_key(room), max(1, int(ttl_s * 1000)))
                pipe.pexpire(version_key(room), max(1, int(ttl_s * 1000)))
            await pipe.execute()

    async def versions(self, rooms: list[str]) -> dict[str, int]:
        values = await self._redis.mget([version_key(room) for room in rooms])
        found = {}
        for room, value in zip(rooms, values, strict=True):
            if value is not None and str(value).isdigit():
                found[room] = int(value)
        return found

    async def get(self, room: str) -> tuple[int, bytes] | None:
        value = await self._redis.get(cover_key(room))
        if not value:
            return None
        version, _, encoded = str(value).partition(" ")
        try:
            return int(version), base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            return None  # not ours, or cut short: no cover rather than a broken picture
