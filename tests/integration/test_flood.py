"""A flood of offers from one address is refused with 429 while live sessions keep streaming."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.peers import Host, Viewer, post_sdp

CONFIG = """
[limits]
offers_per_second = 2.0
offer_burst = 4
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-flood"))
    yield proc
    proc.stop()


async def test_offer_flood_gets_429_and_live_room_is_untouched(gateway, http):
    host = Host(gateway.base, "calm", await dev_token(http, gateway.base, "calm", "host"))
    await host.publish(http)
    viewer = Viewer(gateway.base, "calm", await dev_token(http, gateway.base, "calm", "viewer"))
    await viewer.watch(http)
    try:
        await asyncio.wait_for(viewer.first_video.wait(), 10)
        token = await dev_token(http, gateway.base, "calm", "viewer")
        results = await asyncio.gather(*(post_sdp(http, f"{gateway.base}/whep/calm", token, "v=0 garbage")
                                         for _ in range(100)))
        statuses = [status for status, _, _ in results]
        assert statuses.count(429) >= 95, statuses
        limited = next(r for r in results if r[0] == 429)
        assert '"code": "rate_limited"' in limited[1] and int(limited[2]["Retry-After"]) >= 1
        await viewer.wait_frames(60, 10)
    finally:
        await asyncio.gather(host.stop(http), viewer.stop(http), return_exceptions=True)
