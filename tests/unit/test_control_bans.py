"""The Redis ban table follows a worker's bans as they end up, whatever order a batch holds them in."""

from __future__ import annotations

import asyncio
from typing import Any

from cluster import events_redis as wire
from cluster.events_control import ControlStream


class Pipeline:
    """Records what a write sends to Redis (a pure-logic stand-in for redis-py's pipeline)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def xadd(self, *args: Any, **kwargs: Any) -> None:
        pass

    def hset(self, key: str, field: str, value: str) -> None:
        assert key == wire.BANS
        self.table[field] = value

    def hdel(self, key: str, field: str) -> None:
        assert key == wire.BANS
        self.table.pop(field, None)

    async def execute(self) -> None:
        pass


class Redis:
    def __init__(self) -> None:
        self.table: dict[str, str] = {}

    def pipeline(self, transaction: bool = False) -> Pipeline:
        return Pipeline(self.table)


def stream() -> ControlStream:
    return ControlStream("boot", 100, clock=lambda: 0.0, wall=lambda: 1000.0)


def test_a_ban_lifted_and_laid_again_in_one_batch_stays() -> None:
    control, redis = stream(), Redis()
    control.add("ban", "r", "troll", 2000.0, "banned")
    control.add("unban", "r", "troll", None, "unbanned")
    control.add("ban", "r", "troll", 3000.0, "banned again")
    asyncio.run(control.write(redis))  # type: ignore[arg-type]
    assert redis.table == {"r\ntroll": "3000.000"}


def test_an_unban_deletes_the_entry_written_before() -> None:
    control, redis = stream(), Redis()
    control.add("ban", "r", "troll", 2000.0, "banned")
    control.add("ban", "r", "other", 2000.0, "banned")
    asyncio.run(control.write(redis))  # type: ignore[arg-type]
    control.add("unban", "r", "troll", None, "unbanned")
    asyncio.run(control.write(redis))  # type: ignore[arg-type]
    assert redis.table == {"r\nother": "2000.000"}


def test_after_a_restart_every_ban_in_force_is_written_again() -> None:
    control, redis = stream(), Redis()
    control.add("ban", "r", "a", 2000.0, "banned")
    control.add("ban", "r", "gone", 500.0, "banned long ago")  # expired by the wall clock: not written
    asyncio.run(control.write(redis))  # type: ignore[arg-type]
    redis.table.clear()  # Redis restarted empty
    control.recovered()
    asyncio.run(control.write(redis))  # type: ignore[arg-type]
    assert redis.table == {"r\na": "2000.000"}
