"""Rooms as the room list shows them: title, category and tags set by the host going live; search and categories."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.peers import Host, post_sdp


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], None, tmp_path_factory.mktemp("gw-listing"))
    yield proc
    proc.stop()


async def listed(http: aiohttp.ClientSession, gateway: GatewayProcess, query: str = "") -> list[dict[str, Any]]:
    async with http.get(f"{gateway.base}/rooms{query}") as r:
        assert r.status == 200, await r.text()
        return list((await r.json())["rooms"])


async def test_hosts_list_their_rooms_and_visitors_search_them(gateway, http):
    hosts = [
        Host(gateway.base, "gig", await dev_token(http, gateway.base, "gig", "host", "lena"),
             query="?title=Acoustic%20night&category=Music&tags=guitar,chill"),
        Host(gateway.base, "speedrun", await dev_token(http, gateway.base, "speedrun", "host", "max"),
             query="?title=Any%25%20attempts&category=Gaming&tags=retro"),
    ]
    try:
        for host in hosts:
            await host.publish(http)
        rooms = {r["room"]: r for r in await listed(http, gateway)}
        gig = rooms["gig"]
        assert (gig["title"], gig["category"], gig["tags"]) == ("Acoustic night", "Music", ["guitar", "chill"]), gig
        assert gig["guests"] == 0 and gig["pk"] is False, gig
        searches = {"?q=guitar": ["gig"], "?q=MAX": ["speedrun"], "?q=night%20chill": ["gig"],
                    "?q=night%20retro": [], "?category=Gaming": ["speedrun"], "?category=Music&q=lena": ["gig"],
                    "?category=Food": []}
        for query, names in searches.items():
            assert sorted(r["room"] for r in await listed(http, gateway, query)) == names, query
        async with http.get(f"{gateway.base}/rooms?q={'x' * 65}") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_query"
        # The categories the pages offer are the configured ones; one outside them is refused before any work.
        async with http.get(f"{gateway.base}/pages/config") as r:
            assert "Music" in (await r.json())["categories"]
        token = await dev_token(http, gateway.base, "bad", "host", "eve")
        status, body, _ = await post_sdp(http, f"{gateway.base}/whip/bad?category=Cooking", token, hosts[0].answer)
        assert status == 400 and "category" in body, body
        assert "bad" not in {r["room"] for r in await listed(http, gateway)}
    finally:
        for host in hosts:
            await host.stop(http)
