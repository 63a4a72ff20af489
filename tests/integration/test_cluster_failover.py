"""A cluster losing a worker, and draining one: what survives, and where new rooms go.

Two nodes on a real redis-server, each its own module-scoped cluster (these tests kill and drain nodes).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import GatewayProcess, NodesOnRedis, dev_token, free_port
from tests.integration.peers import Host, Viewer
from tests.integration.test_cluster import node_config
from tests.integration.test_forwarding import close_all


class TwoNodes(NodesOnRedis):
    def __init__(self, tmp: Path, extra: str = "") -> None:
        super().__init__(tmp)
        self.nodes = {name: GatewayProcess([], node_config(self.redis.url, name, free_port()).replace(
            "worker_viewer_capacity = 2", "worker_viewer_capacity = 1") + extra, tmp / name)
            for name in ("a", "b")}


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[TwoNodes]:
    for name in ("a", "b", "redis"):
        (tmp_path / name).mkdir()
    cluster = TwoNodes(tmp_path, "\n[drain]\ntimeout_s = 6.0\n")
    yield cluster
    cluster.stop()


async def placed_on(http, node: GatewayProcess, room: str, identity: str) -> tuple[Host, str]:  # type: ignore[no-untyped-def]
    host = Host(node.base, room, await dev_token(http, node.base, room, "host", identity))
    await host.publish(http)
    assert host.location is not None
    return host, host.location.rsplit("~", 1)[1].split("-w")[0]


async def test_a_killed_origin_gets_no_new_rooms_and_its_edges_keep_their_viewers_for_the_hosts_return(
        two_nodes, http):
    a, b = two_nodes.nodes["a"], two_nodes.nodes["b"]
    room = "phoenix"
    host, origin = await placed_on(http, a, room, "phoenix-host")
    assert origin == "a"
    near = Viewer(a.base, room, await dev_token(http, a.base, room, "viewer", "near"))
    await near.watch(http)  # the origin's one seat (cap 1)
    far = Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", "far"))
    await far.watch(http)  # an edge on node b
    assert far.location is not None and far.location.endswith("~b-w0"), far.location
    again = None
    try:
        await asyncio.gather(near.wait_frames(20, 10), far.wait_frames(20, 10))
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        killed = time.monotonic()
        await host.pc.close()
        # Within 5 s of the kill the dead worker gets no new room: placement skips its stale heartbeat.
        while True:
            other, where = await placed_on(http, b, f"fresh{int((time.monotonic() - killed) * 10)}", "newcomer")
            await other.stop(http)
            if where == "b":
                break
            assert time.monotonic() - killed < 5, "a killed worker still got new rooms after 5 s"
        assert time.monotonic() - killed < 5
        # The host reconnects (through node b): the room gets a new origin, and the edge's viewer resumes at
        # the host's next keyframe without posting again.
        again, origin = await placed_on(http, b, room, "phoenix-host")
        assert origin == "b"
        before = len(far.video_times)
        await far.wait_frames(30, 15)
        assert len(far.video_times) >= before + 30 and far.pc.connectionState == "connected"
    finally:
        await close_all(http, far, *([again] if again else []))
        await near.pc.close()


async def test_a_draining_node_takes_no_new_room_and_keeps_its_sessions_until_the_deadline(two_nodes, http):
    a, b = two_nodes.nodes["a"], two_nodes.nodes["b"]
    host, origin = await placed_on(http, a, "stage", "stage-host")
    viewer = Viewer(a.base, "stage", await dev_token(http, a.base, "stage", "viewer"))
    await viewer.watch(http)
    try:
        await viewer.wait_frames(15, 10)
        a.proc.send_signal(signal.SIGTERM)  # drain: 6 s deadline
        drained = time.monotonic()
        # New rooms go elsewhere at once (the draining state is in the next heartbeat, half a second away).
        deadline = time.monotonic() + 3
        while True:
            other, where = await placed_on(http, b, f"later{int(time.monotonic() * 10)}", "later-host")
            await other.stop(http)
            if where == "b":
                break
            assert time.monotonic() < deadline, "a draining node still got new rooms"
        # The session on the draining node keeps its picture until the deadline.
        await viewer.wait_frames(60, 10)
        assert time.monotonic() - drained < 6.0 and viewer.pc.connectionState == "connected"
        assert a.proc.poll() is None
    finally:
        await close_all(http, host, viewer)
