"""The cluster's room list in a real redis-server: published with heartbeats, read by any worker at most once a
second, a silent worker's rooms left out (and cleared), a clean stop withdrawing its rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from cluster.listings import READ_EVERY_S, ClusterListings
from cluster.registry import WorkerInfo
from loadtests.webrtc.process import RedisServer

STALE_S = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def worker(worker_id: str, at: float, room_viewers: dict[str, int]) -> WorkerInfo:
    return WorkerInfo(worker_id, worker_id[0], "http://127.0.0.1:9", "serving", sum(room_viewers.values()), 0,
                      len(room_viewers), 10, at, room_viewers)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/8", decode_responses=True)
    await redis.flushdb()
    yield redis
    await redis.aclose()


async def test_any_worker_reads_the_whole_clusters_rooms(client: aioredis.Redis) -> None:
    clock = Clock()
    a, b = (ClusterListings(client, w, STALE_S, clock) for w in ("a-w0", "b-w0"))
    fleet = [worker("a-w0", clock.now, {"gig": 2}), worker("b-w0", clock.now, {"gig": 3, "quiz": 1})]

    async def workers() -> list[WorkerInfo]:
        return fleet

    await a.publish({"gig": {"room": "gig", "title": "Gig", "viewers": 2}})
    await b.publish({"quiz": {"room": "quiz", "title": "Quiz", "viewers": 1}})
    rooms = await b.read(workers)
    # The origin's listing, with the room's audience summed over origin and edge (b is gig's edge).
    assert [(r["room"], r["viewers"]) for r in rooms] == [("gig", 5), ("quiz", 1)], rooms
    assert "_worker" not in rooms[0] and "_at" not in rooms[0]

    await a.publish({})  # gig ended at its origin: gone from the next read on
    assert len(await b.read(workers)) == 2, "read again within a second: the same answer"
    clock.now += READ_EVERY_S
    assert [r["room"] for r in await b.read(workers)] == ["quiz"]

    # b goes silent (no heartbeat for longer than the staleness bound): its room is left out and cleared.
    clock.now += STALE_S + 1
    await a.publish({"gig": {"room": "gig", "viewers": 2}})  # a goes on beating
    fleet[:] = [worker("a-w0", clock.now, {"gig": 2}), worker("b-w0", clock.now - STALE_S - 1, {"quiz": 1})]
    assert [r["room"] for r in await a.read(workers)] == ["gig"]
    assert await client.hexists("cherry:listings", "quiz") is False

    await a.withdraw()  # a clean stop
    assert await client.hlen("cherry:listings") == 0
