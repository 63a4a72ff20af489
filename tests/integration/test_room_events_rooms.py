"""Room sockets are relay participants: they count against the room limit and keep their room open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient

GRACE_S = 0.5
CONFIG = f"""
[limits]
max_rooms = 2
retry_after = 7

[rooms]
empty_room_grace_s = {GRACE_S}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-rooms"))
    yield proc
    proc.stop()


async def join(http: aiohttp.ClientSession, gateway: GatewayProcess, room: str) -> EventsClient:
    return await EventsClient.connect(http, gateway.base, room, await dev_token(http, gateway.base, room, "viewer"))


async def rooms(http: aiohttp.ClientSession, gateway: GatewayProcess) -> dict[str, Any]:
    token = await dev_token(http, gateway.base, "ops", "admin")
    async with http.get(gateway.base + "/api/rooms", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        return {room["room"]: room for room in (await r.json())["rooms"]}


async def closed(http: aiohttp.ClientSession, gateway: GatewayProcess, *names: str) -> None:
    """Wait (bounded) until the rooms ``names`` have closed: empty, they close after the grace period."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE_S + 5
    while set(names) & set(await rooms(http, gateway)):
        assert loop.time() < deadline, f"rooms {names} did not close"
        await asyncio.sleep(0.1)  # polled over HTTP: the room closing has no event a client can await


async def test_a_socket_for_a_new_room_past_the_room_limit_is_refused_before_the_upgrade(gateway, http):
    first, second = await join(http, gateway, "one"), await join(http, gateway, "two")
    try:
        token = await dev_token(http, gateway.base, "three", "viewer")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{gateway.base.replace('http', 'ws', 1)}/ws/three?token={token}")
        assert refused.value.status == 503 and refused.value.headers is not None
        assert refused.value.headers["Retry-After"] == "7"
        async with http.get(f"{gateway.base}/ws/three?token={token}") as plain:  # the same refusal, readable
            assert plain.status == 503 and json.loads(await plain.text())["error"]["code"] == "capacity"
        again = await join(http, gateway, "one")  # an existing room takes more sockets
        await again.close()
    finally:
        await first.close()
        await second.close()
    await closed(http, gateway, "one", "two")  # and the next test has the room limit to itself


async def test_a_socket_keeps_its_room_open_and_the_rooms_chat_ends_with_the_room(gateway, http):
    talker = await join(http, gateway, "keep")
    await talker.send(type="chat", text="remember me")
    await talker.next("chat")
    listed = await rooms(http, gateway)
    assert listed["keep"]["online"] == 1 and not listed["keep"]["live"]
    await asyncio.sleep(GRACE_S * 3)  # what must not happen (the room closing) has no event to await
    assert "keep" in await rooms(http, gateway), "a room with a socket in it closed"
    late = await join(http, gateway, "keep")
    assert [m["text"] for m in late.of("welcome")[0]["snapshot"]["chat"]] == ["remember me"]
    await late.close()
    await talker.close()

    await closed(http, gateway, "keep")  # empty now: it closes after the grace period
    fresh = await join(http, gateway, "keep")
    assert fresh.of("welcome")[0]["snapshot"]["chat"] == [], "chat history outlived its room"
    await fresh.close()
