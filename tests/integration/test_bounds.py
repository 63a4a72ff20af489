"""Every input a client controls is bounded before the work, and overload refuses newcomers.

Measured before these bounds: a trickle PATCH of 1000 candidates blocked the event loop that forwards
all media for 0.9 s (6 s on the third), a WHEP offer with 500 m-lines for 0.6 s. Here such requests
are refused at once with a 400 and a reason, a live viewer keeps its picture, and the gateway's own
event-loop lag (what its admission watches) stays far below what those requests used to cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.peers import Host, Viewer, post_sdp
from tests.integration.test_errors import expect_error, offer_sdp
from tests.integration.test_forwarding import assert_smooth, close_all

CONFIG = """
[limits]
process_viewer_capacity = 3
max_loop_lag_ms = 200
retry_after = 3
max_candidates_per_patch = 20
max_remote_candidates = 40
"""
STALL_S = 0.5  # what the unbounded requests cost at the least; the lag must stay far below it


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-bounds"))
    yield proc
    proc.stop()


async def admin_stats(gateway: GatewayProcess, http: aiohttp.ClientSession) -> dict:  # type: ignore[type-arg]
    token = await dev_token(http, gateway.base, "any", "admin")
    async with http.get(gateway.base + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
        return dict(await r.json())


def candidates(n: int, first_port: int = 20000) -> str:
    return "".join(f"a=candidate:{i} 1 udp 2130706431 127.0.0.1 {first_port + i} typ host\r\n" for i in range(n))


async def patch(http: aiohttp.ClientSession, base: str, peer: Host | Viewer, body: str) -> tuple[int, str]:
    assert peer.location is not None
    async with http.patch(base + peer.location, data=body, headers={
            "Content-Type": "application/trickle-ice-sdpfrag", "Authorization": f"Bearer {peer.token}"}) as r:
        return r.status, await r.text()


async def test_oversized_requests_are_refused_before_any_work_and_stall_nothing(gateway, http):
    host = Host(gateway.base, "b1", await dev_token(http, gateway.base, "b1", "host", "bob"))
    await host.publish(http)
    viewer = Viewer(gateway.base, "b1", await dev_token(http, gateway.base, "b1", "viewer", "vera"))
    await viewer.watch(http)
    try:
        await viewer.wait_frames(15, 10)
        start = time.monotonic()
        # A trickle PATCH of 1000 candidates, three times.
        for _ in range(3):
            status, body = await patch(http, gateway.base, viewer, candidates(1000))
            assert status == 400 and "too_many_candidates" in body, body
        # Within the per-PATCH bound, but past the per-session one (the offer's own candidates count too).
        offered = viewer.pc.localDescription.sdp.count("a=candidate:")
        assert (await patch(http, gateway.base, viewer, candidates(20 - offered, 30000)))[0] == 204
        assert (await patch(http, gateway.base, viewer, candidates(20, 31000)))[0] == 204
        status, body = await patch(http, gateway.base, viewer, candidates(1, 32000))
        assert status == 400 and "too_many_candidates" in body, body
        # A WHEP offer with 500 m-lines (each a recvonly video) and one with a 5000-character line.
        many = await offer_sdp(("video",) * 2, direction="recvonly")
        head, _, tail = many.partition("m=video")
        block = "m=video" + tail.split("m=video")[0]
        huge = head + block * 500
        token = await dev_token(http, gateway.base, "b1", "viewer")
        await expect_error(await post_sdp(http, f"{gateway.base}/whep/b1", token, huge[:65000]), 400, "bad_sdp")
        long_line = many.replace("a=msid-semantic:WMS *", "a=msid-semantic:WMS " + "x" * 5000)
        response = await post_sdp(http, f"{gateway.base}/whep/b1", token, long_line)
        await expect_error(response, 400, "bad_sdp")
        assert "longer than" in response[1]
        end = time.monotonic()
        stats = await admin_stats(gateway, http)
        assert stats["admission"]["loop_lag_ms"] < STALL_S * 1000 / 2, stats["admission"]
        await viewer.wait_frames(30, 10)
        # The live viewer saw no freeze from half a second before the requests to a second after them.
        assert_smooth(viewer, start - 0.5, max(end + 1.0, time.monotonic()))
    finally:
        await close_all(http, host, viewer)


async def test_viewers_past_the_process_capacity_get_503_and_those_watching_keep_going(gateway, http):
    host = Host(gateway.base, "cap", await dev_token(http, gateway.base, "cap", "host", "cap-host"))
    await host.publish(http)
    viewers = [Viewer(gateway.base, "cap", await dev_token(http, gateway.base, "cap", "viewer")) for _ in range(3)]
    for v in viewers:
        await v.watch(http)
    try:
        await asyncio.gather(*(v.wait_frames(10, 10) for v in viewers))
        token = await dev_token(http, gateway.base, "cap", "viewer")
        headers = await expect_error(
            await post_sdp(http, f"{gateway.base}/whep/cap", token, await offer_sdp(direction="recvonly")),
            503, "capacity")
        assert headers["Retry-After"] == "3"
        assert (await admin_stats(gateway, http))["admission"]["refused"]["capacity"] >= 1
        start = time.monotonic()
        await asyncio.gather(*(v.wait_frames(30, 10) for v in viewers))
        for v in viewers:
            assert_smooth(v, start, time.monotonic())
        # A seat frees when a viewer leaves.
        await viewers.pop().stop(http)
        late = Viewer(gateway.base, "cap", token)
        await late.watch(http)
        viewers.append(late)
        await asyncio.wait_for(late.first_video.wait(), 10)
    finally:
        await close_all(http, host, *viewers)


async def test_a_lagging_event_loop_refuses_new_sessions_until_it_catches_up(gateway, http):
    token = await dev_token(http, gateway.base, "lag", "host", "lag-host")
    async with http.post(f"{gateway.base}/test/block-loop?seconds=0.6") as r:
        assert r.status == 200, await r.text()
    # The lag monitor's next tick sees the stall: wait for it to be reported, then offer.
    deadline = time.monotonic() + 5
    while (await admin_stats(gateway, http))["admission"]["loop_lag_ms"] < 200:
        assert time.monotonic() < deadline, "the stall was never measured"
        await asyncio.sleep(0.02)
    headers = await expect_error(await post_sdp(http, f"{gateway.base}/whip/lag", token, await offer_sdp()),
                                 503, "overloaded")
    assert headers["Retry-After"] == "3"
    # A second later the window has passed: the same offer is taken.
    deadline = time.monotonic() + 5
    while (await admin_stats(gateway, http))["admission"]["loop_lag_ms"] >= 200:
        assert time.monotonic() < deadline, "the lag never cleared"
        await asyncio.sleep(0.1)
    host = Host(gateway.base, "lag", token)
    await host.publish(http)
    await host.stop(http)
