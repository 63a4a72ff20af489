"""A room's paged participant list for its host (the studio's viewer list): counted, ordered, bounded, guarded."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], None, tmp_path_factory.mktemp("gw-participants"))
    yield proc
    proc.stop()


async def page(http: aiohttp.ClientSession, gateway: GatewayProcess, room: str, token: str,
               query: str = "") -> tuple[int, dict]:  # type: ignore[type-arg]
    async with http.get(f"{gateway.base}/api/rooms/{room}/participants{query}",
                        headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, dict(await r.json())


async def test_the_host_pages_through_its_rooms_participants(gateway, http):
    host_token = await dev_token(http, gateway.base, "crowd", "host", "anchor")
    sockets = [await EventsClient.connect(http, gateway.base, "crowd", host_token)]
    for name in ("zed", "amy", "mia", "bob", "kai"):
        sockets.append(await EventsClient.connect(http, gateway.base, "crowd",
                                                  await dev_token(http, gateway.base, "crowd", "viewer", name)))
    try:
        seen: list[str] = []
        offset = 0
        while True:
            status, body = await page(http, gateway, "crowd", host_token, f"?offset={offset}&limit=2")
            assert status == 200 and body["count"] == 6 and body["limit"] == 2, body
            if not body["participants"]:
                break
            seen += [p["identity"] for p in body["participants"]]
            offset += 2
        assert seen == ["anchor", "amy", "bob", "kai", "mia", "zed"], seen  # the host first, then by identity
        status, body = await page(http, gateway, "crowd", host_token)
        assert body["limit"] == 50 and len(body["participants"]) == 6, body
        entry = next(p for p in body["participants"] if p["identity"] == "amy")
        assert entry["role"] == "viewer" and entry["sockets"] == 1 and entry["sessions"] == 0, entry

        # Only the room's host (or an admin) lists it; bounds are checked before any work.
        viewer = await dev_token(http, gateway.base, "crowd", "viewer", "amy")
        other_host = await dev_token(http, gateway.base, "elsewhere", "host", "rival")
        admin = await dev_token(http, gateway.base, "any", "admin")
        refusals = [(viewer, "", 403), (other_host, "", 403), ("garbage", "", 401),
                    (host_token, "?limit=101", 400), (host_token, "?offset=-1", 400), (host_token, "?limit=x", 400)]
        for token, query, code in refusals:
            status, body = await page(http, gateway, "crowd", token, query)
            assert status == code, (query, body)
        assert (await page(http, gateway, "crowd", admin))[0] == 200
        nobody = await dev_token(http, gateway.base, "nobody-here", "host")
        assert (await page(http, gateway, "nobody-here", nobody))[0] == 404
    finally:
        for socket in sockets:
            await socket.close()
