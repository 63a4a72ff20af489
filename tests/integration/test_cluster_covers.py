"""Room covers in a cluster: only the room's origin decodes (never an edge), and any node serves its cover.

Real ``redis-server`` on a free loopback port and two real gateway nodes (one worker each) on it; all traffic
on 127.0.0.1. Each worker can hold one viewer of a room, so a room's second viewer is served by an edge on the
other node.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.conftest import NodesOnRedis, dev_token
from tests.integration.peers import Host, Viewer
from tests.integration.test_covers import get_cover, jpeg_size, until
from tests.integration.test_forwarding import close_all

SECRET = "cluster-covers-test-secret-0123456789abcdef"
INTERVAL = 1.0


def node_config(redis_url: str, node: str, internal_port: int) -> str:
    return f"""
[auth]
secret = "{SECRET}"
[snapshots]
interval_s = {INTERVAL}
width = 160
[cluster]
redis_url = "{redis_url}"
node_id = "{node}"
advertise_url = "http://127.0.0.1:{internal_port}"
heartbeat_interval_s = 0.5
stale_after_s = 2.0
worker_viewer_capacity = 1
edge_linger_s = 1.0
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodesOnRedis]:
    started = NodesOnRedis.single_workers(tmp_path_factory.mktemp("cluster-covers"), node_config)
    yield started
    started.stop()


async def worker_metric(http: aiohttp.ClientSession, cluster: NodesOnRedis, node: str, name: str) -> float:
    """One worker's own series, from its internal port (the shared public port may answer from any worker)."""
    async with http.get(f"http://127.0.0.1:{cluster.internal[node]}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    found = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    assert found, f"node {node}: /metrics has no {name}"
    return float(found.group(1))


async def test_only_the_origin_decodes_and_either_node_serves_the_same_cover(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "covered-across"
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "star"))
    await host.publish(http)
    origin = host.location.rsplit("~", 1)[1]  # type: ignore[union-attr]
    viewers = []
    try:
        for i in range(2):  # one per worker: the second one is served by an edge
            viewer = Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", f"fan{i}"))
            await viewer.watch(http)
            viewers.append(viewer)
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        holders = {v.location.rsplit("~", 1)[1] for v in viewers}  # type: ignore[union-attr]
        assert len(holders) == 2 and origin in holders, holders
        origin_node = next(n for n in cluster.nodes if origin.startswith(n))
        edge_node = next(n for n in cluster.nodes if n != origin_node)

        served: list[tuple[int, bytes, str]] = []

        async def both_serve_one_cover() -> bool:
            # Equal ETags: a snapshot taken between the two reads reaches the store within a round.
            served[:] = [await get_cover(http, node, room) for node in (a, b)]
            return served[0][0] == served[1][0] == 200 and served[0][2] == served[1][2]

        await until(both_serve_one_cover, 10 * INTERVAL, "the nodes did not both serve the one cover")
        jpeg_a, jpeg_b = served[0][1], served[1][1]
        assert jpeg_a == jpeg_b, "one version, two pictures"
        assert jpeg_a[:2] == b"\xff\xd8" and jpeg_size(jpeg_a) == (160, 120)

        async def edge_lists_it() -> bool:  # the edge's room list names the origin's cover, by its version
            version = (await get_cover(http, cluster.nodes[origin_node], room))[2].strip('"')
            async with http.get(cluster.nodes[edge_node].base + "/rooms") as r:
                listed = {entry["room"]: entry for entry in (await r.json())["rooms"]}
            return room in listed and listed[room]["cover"] == f"/rooms/{room}/cover.jpg?v={version}"

        await until(edge_lists_it, 5 * INTERVAL, "the edge's room list did not name the origin's cover")

        rounds = await worker_metric(http, cluster, edge_node, "cherry_snapshot_rounds_total")

        async def edge_ran_rounds() -> bool:
            return await worker_metric(http, cluster, edge_node, "cherry_snapshot_rounds_total") >= rounds + 3

        await until(edge_ran_rounds, 3 * INTERVAL + 10, "the edge's snapshot rounds did not run")
        assert await worker_metric(http, cluster, edge_node, "cherry_snapshot_decodes_total") == 0, (
            "an edge decoded its copy of the room")
        assert await worker_metric(http, cluster, origin_node, "cherry_snapshot_decodes_total") >= 1
    finally:
        await close_all(http, host, *viewers)


async def test_no_node_has_a_cover_for_a_room_nobody_hosts(cluster, http):
    for node in cluster.nodes.values():
        status, body, _ = await get_cover(http, node, "nobody-hosts-this")
        assert status == 404, body[:100]
