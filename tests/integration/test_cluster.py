"""Two nodes on one Redis: signaling terminates on any node, media goes straight to the worker holding it.

Real ``redis-server`` on a free loopback port, real gateway processes (one worker each here: the
supervisor's own tests cover several workers per node); all traffic on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess, dev_token, free_port
from tests.integration.peers import Host, Viewer
from tests.integration.test_forwarding import assert_smooth, close_all
from tests.redis_server import RedisServer

SECRET = "cluster-test-secret-0123456789abcdef"


def node_config(redis_url: str, node: str, internal_port: int) -> str:
    return f"""
[auth]
secret = "{SECRET}"
[cluster]
redis_url = "{redis_url}"
node_id = "{node}"
advertise_url = "http://127.0.0.1:{internal_port}"
heartbeat_interval_s = 0.5
stale_after_s = 2.0
"""


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.redis = RedisServer(tmp / "redis")
        self.nodes: dict[str, GatewayProcess] = {}
        for name in ("a", "b"):
            self.nodes[name] = GatewayProcess([], node_config(self.redis.url, name, free_port()), tmp / name)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    for name in ("a", "b", "redis"):
        (tmp / name).mkdir()
    started = Cluster(tmp)
    yield started
    started.stop()


async def test_viewers_posting_to_another_node_get_the_hosts_stream_straight_from_its_worker(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "across"
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "star"))
    await host.publish(http)
    assert host.location is not None and "~" in host.location
    holder = host.location.rsplit("~", 1)[1]
    viewers = [Viewer(b.base, room, await dev_token(http, b.base, room, "viewer")) for _ in range(2)]
    try:
        for viewer in viewers:
            await viewer.watch(http)
        await asyncio.gather(*(asyncio.wait_for(v.first_video.wait(), 10) for v in viewers))
        start = asyncio.get_running_loop().time()
        await asyncio.gather(*(v.wait_frames(45, 10) for v in viewers))
        for viewer in viewers:
            # The viewer's session lives on the host's worker, and its media comes from there directly.
            assert viewer.location is not None and viewer.location.endswith("~" + holder), viewer.location
            assert_smooth(viewer, start, asyncio.get_running_loop().time())
        on = {name: await room_viewers(http, node, room) for name, node in cluster.nodes.items()}
        assert sorted(on.values()) == [0, 2], on  # both viewers on the one worker holding the room
        # PATCH and DELETE on a Location work through the other node too.
        await viewers[0].stop(http)
        async with http.delete(b.base + viewers[1].location, headers={  # type: ignore[operator]
                "Authorization": f"Bearer {viewers[1].token}"}) as r:
            assert r.status == 200, await r.text()
        viewers[1].location = None
        async with http.delete(b.base + host.location, headers={"Authorization": "Bearer " + await dev_token(
                http, b.base, room, "viewer", "someone-else")}) as r:
            assert r.status == 403, await r.text()
    finally:
        await close_all(http, host, *viewers)


async def test_a_host_publishing_through_either_node_lands_on_the_rooms_one_origin(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "one-origin"
    first = Host(b.base, room, await dev_token(http, b.base, room, "host", "dj"))
    await first.publish(http)
    try:
        intruder = Host(a.base, room, await dev_token(http, a.base, room, "host", "other-dj"))
        with pytest.raises(AssertionError, match="409"):
            await intruder.publish(http)  # the room's origin refuses a second host, whichever node was asked
        await intruder.pc.close()
    finally:
        await first.stop(http)


async def test_unknown_and_forged_internal_requests_are_refused(cluster, http):
    node = cluster.nodes["a"]
    internal = _internal_url(node.log_path.parent / "gateway.toml")
    async with http.post(internal + "/internal/open", json={"endpoint": "whep"}) as r:
        assert r.status == 401
    async with http.post(internal + "/internal/open", json={"endpoint": "whep"},
                         headers={"X-Cherry-Time": "0", "X-Cherry-Signature": "00"}) as r:
        assert r.status == 401


async def room_viewers(http: aiohttp.ClientSession, node: GatewayProcess, room: str) -> int:
    token = await dev_token(http, node.base, "any", "admin")
    async with http.get(node.base + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
        stats = await r.json()
    return sum(entry["viewers"] for entry in stats["rooms"] if entry["room"] == room)


def _internal_url(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("advertise_url"):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError("no advertise_url")

