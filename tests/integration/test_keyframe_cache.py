"""The keyframe cache through a real gateway and real aiortc peers on 127.0.0.1.

The test host (aiortc's VP8 encoder) sends a keyframe first and then only when asked, like a browser:
so a joiner that starts without asking can only have started from the cache.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loadtests.webrtc.process import free_port_range
from tests.cluster import answering_workers
from tests.integration.conftest import GatewayProcess, NodesOnRedis, dev_token, free_port
from tests.integration.peers import Host, Viewer
from tests.integration.test_cluster import WORKERS, node_config, stats_of
from tests.integration.test_forwarding import close_all, start_host

MODULE = "tests.integration.keyframe_cache_gateway"
FIRST_FRAME_TIMEOUT = 10.0


def gateway_with(tmp_path_factory: pytest.TempPathFactory, name: str, media: str) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], "[media]\n" + media, tmp_path_factory.mktemp(name), module=MODULE)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A cache that stays fresh for the whole test."""
    yield from gateway_with(tmp_path_factory, "gw-kfc-fresh", "keyframe_cache_max_age_ms = 60000\n")


@pytest.fixture(scope="module")
def aging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A cache stale after 1 s; the host's keyframe throttle (5 s) outlasts the test's joins, so a second
    request inside the test could only come from a second joiner asking."""
    yield from gateway_with(tmp_path_factory, "gw-kfc-aging",
                            "keyframe_cache_max_age_ms = 1000\nkeyframe_request_interval_ms = 5000\n")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A cache too small for the test host's GOP after its first few frames."""
    yield from gateway_with(tmp_path_factory, "gw-kfc-small", "keyframe_cache_bytes = 20000\n")


async def cache(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str) -> dict[str, Any]:
    async with http.get(f"{gateway.base}/test/keyframe-cache/{room}") as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def until(what: str, probe: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll a gateway-side condition (there is no event to await across the process boundary)."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def host_video(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str) -> dict[str, Any]:
    video = (await cache(gateway, http, room))["host"]
    assert video is not None, f"room {room} has no host video"
    return dict(video)


async def watch(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str, n: int) -> list[Viewer]:
    viewers = [Viewer(gateway.base, room, await dev_token(http, gateway.base, room, "viewer")) for _ in range(n)]
    await asyncio.gather(*(v.watch(http) for v in viewers))
    await asyncio.gather(*(asyncio.wait_for(v.first_video.wait(), FIRST_FRAME_TIMEOUT) for v in viewers))
    return viewers


def assert_host_picture(viewer: Viewer) -> None:
    assert viewer.bars and all(luma > 150 for _, luma in viewer.bars), \
        f"the viewer does not see the host's bar cleanly: {viewer.bars[:5]}"


async def test_late_joiners_start_from_the_cache_and_the_host_is_never_asked(fresh, http):
    room = "kfc-late"
    host = await start_host(fresh, http, room)
    viewers: list[Viewer] = []
    try:
        async def cached() -> bool:
            return (await host_video(fresh, http, room))["cache_packets"] > 0
        await until("the host's first keyframe in the cache", cached)
        for _ in range(3):  # one after the other, each later into the GOP
            viewers += await watch(fresh, http, room, 1)
            await viewers[-1].wait_frames(20, 10)
        await asyncio.gather(*(v.wait_frames(30, 10) for v in viewers))
        video = await host_video(fresh, http, room)
        assert video["keyframe_requests"] == 0, f"the host was asked for a keyframe: {video}"
        assert video["cache_starts"] == 3 and video["cache_fallbacks"] == 0, video
        state = await cache(fresh, http, room)
        assert all(s["from_cache"] > 0 for s in state["viewers"]), state["viewers"]
        async with http.get(f"{fresh.base}/metrics") as r:
            scrape = await r.text()
        assert 'cherry_keyframe_cache_joins_total{start="cache"} 3.0' in scrape, "the cache starts reach /metrics"
        for viewer in viewers:
            assert_host_picture(viewer)
    finally:
        await close_all(http, host, *viewers)


async def test_a_stale_cache_asks_the_host_once_for_several_joiners(aging, http):
    room = "kfc-stale"
    host = await start_host(aging, http, room)
    viewers: list[Viewer] = []
    try:
        async def stale() -> bool:
            age = (await host_video(aging, http, room))["cache_age_ms"]
            return age is not None and age > 1000
        await until("the cache to pass its age", stale)
        before = await host_video(aging, http, room)
        viewers = await watch(aging, http, room, 3)
        await asyncio.gather(*(v.wait_frames(30, 10) for v in viewers))
        after = await host_video(aging, http, room)
        assert after["keyframe_requests"] - before["keyframe_requests"] == 1, (before, after)
        assert after["keyframes_in"] > before["keyframes_in"], "the refreshing keyframe came"
        assert after["cache_starts"] - before["cache_starts"] == 3, after
        assert after["cache_stale_starts"] >= 1, after
        for viewer in viewers:
            assert_host_picture(viewer)
    finally:
        await close_all(http, host, *viewers)


async def test_a_gop_too_big_for_the_cache_falls_back_to_a_keyframe_request_and_is_counted(small, http):
    room = "kfc-big"
    host = await start_host(small, http, room)
    viewers: list[Viewer] = []
    try:
        async def overflowed() -> bool:
            return (await host_video(small, http, room))["gops_overflowed"] > 0
        await until("the host's GOP to outgrow the cache", overflowed)
        before = await host_video(small, http, room)
        viewers = await watch(small, http, room, 1)
        await viewers[0].wait_frames(30, 10)
        after = await host_video(small, http, room)
        assert after["cache_fallbacks"] - before["cache_fallbacks"] == 1, after
        assert after["keyframe_requests"] > before["keyframe_requests"], "the joiner asked, as without a cache"
        assert_host_picture(viewers[0])
    finally:
        await close_all(http, host, *viewers)


class FreshCacheCluster(NodesOnRedis):
    """test_cluster's two nodes of two workers on one Redis, with a cache that stays fresh."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.internal: dict[str, int] = {}
        try:
            for name in ("a", "b"):
                first, _ = free_port_range(WORKERS, kind=socket.SOCK_STREAM)
                self.internal.update({f"{name}-w{i}": first + i for i in range(WORKERS)})
                public = free_port()
                config = node_config(self.redis.url, name, first, f"http://127.0.0.1:{public}")
                config += "[media]\nkeyframe_cache_max_age_ms = 60000\n"
                self.nodes[name] = GatewayProcess(["--workers", str(WORKERS)], config, tmp / name, port=public)
        except BaseException:
            self.stop()
            raise

    @property
    def workers(self) -> list[str]:
        return sorted(self.internal)

    async def ready(self) -> None:
        for name, node in self.nodes.items():
            await answering_workers(node.base + "/healthz", {w for w in self.internal if w.startswith(name + "-")})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshCacheCluster]:
    tmp = tmp_path_factory.mktemp("kfc-cluster")
    for name in ("a", "b", "redis"):
        (tmp / name).mkdir()
    started = FreshCacheCluster(tmp)
    try:
        asyncio.run(started.ready())
        yield started
    finally:
        started.stop()


async def test_an_edge_and_its_viewers_start_from_caches_without_asking_the_host(cluster, http):
    """The pipe's subscription on the origin starts from the origin's cache, the edge's publication caches
    what the pipe brings, and the edge's viewer starts from that: the host is never asked for a keyframe."""
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "kfc-edge"
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "kfc-star"))
    await host.publish(http)
    origin = host.location.rsplit("~", 1)[1]  # type: ignore[union-attr]
    viewers = [Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", f"kfc{i}")) for i in range(3)]
    try:
        for viewer in viewers:  # capacity 2: two on the origin, one on an edge
            await viewer.watch(http)
            await asyncio.wait_for(viewer.first_video.wait(), FIRST_FRAME_TIMEOUT)
        await asyncio.gather(*(v.wait_frames(30, 10) for v in viewers))
        on_edge = [v for v in viewers if not v.location.endswith("~" + origin)]  # type: ignore[union-attr]
        assert len(on_edge) == 1, [v.location for v in viewers]
        assert_host_picture(on_edge[0])
        stats = await stats_of(http, cluster, origin)  # type: ignore[arg-type]
        video = next(r for r in stats["rooms"] if r["room"] == room)["publications"]["video"]
        assert video["keyframe_requests"] == 0, f"the host was asked for a keyframe: {video}"
    finally:
        await close_all(http, host, *viewers)
