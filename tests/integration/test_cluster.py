"""Two nodes of two workers each on one Redis: signaling terminates on any worker, media goes straight to
the worker holding it.

Real ``redis-server`` on a free loopback port, two real ``serve --workers 2`` supervisors (four gateway
workers, each node's sharing its public port); all traffic on 127.0.0.1. A request to a node's public
port reaches either of its workers (the kernel picks): what a test says about one worker it reads from
that worker (``stats_of``) or from the registry (``/api/cluster``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aiortc_bridge.client import request_keyframe
from cluster.config import ClusterConfig
from cluster.registry import RedisRegistry
from loadtests.webrtc.process import free_port_range
from signaling.auth import TokenService
from tests.cluster import WORKER_HEADER, answering_workers
from tests.integration.conftest import GatewayProcess, NodesOnRedis, dev_token, free_port
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host, Viewer, wait_slot_quiet
from tests.integration.test_congestion import Downlink
from tests.integration.test_costream import bucket, lumas
from tests.integration.test_errors import offer_sdp
from tests.integration.test_forwarding import assert_smooth, close_all

SECRET = "cluster-test-secret-0123456789abcdef"


def node_config(redis_url: str, node: str, internal_port: int, node_url: str = "") -> str:
    return f"""
[auth]
secret = "{SECRET}"
[cluster]
redis_url = "{redis_url}"
node_id = "{node}"
advertise_url = "http://127.0.0.1:{internal_port}"
node_url = "{node_url}"
heartbeat_interval_s = 0.5
stale_after_s = 2.0
worker_viewer_capacity = 2
edge_linger_s = 1.0
"""


WORKERS = 2  # per node


class Cluster(NodesOnRedis):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.internal: dict[str, int] = {}  # each worker's internal API port, by worker id
        try:
            for name in ("a", "b"):
                first, _ = free_port_range(WORKERS, kind=socket.SOCK_STREAM)  # worker i: advertised port + i
                self.internal.update({f"{name}-w{i}": first + i for i in range(WORKERS)})
                public = free_port()
                config = node_config(self.redis.url, name, first, f"http://127.0.0.1:{public}")
                self.nodes[name] = GatewayProcess(["--workers", str(WORKERS)], config, tmp / name, port=public)
        except BaseException:
            self.stop()
            raise

    @property
    def workers(self) -> list[str]:
        return sorted(self.internal)

    async def ready(self) -> None:
        """Until every worker of both nodes answers on its node's shared port."""
        for name, node in self.nodes.items():
            await answering_workers(node.base + "/healthz", {w for w in self.internal if w.startswith(name + "-")})

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    for name in ("a", "b", "redis"):
        (tmp / name).mkdir()
    started = Cluster(tmp)
    try:
        asyncio.run(started.ready())
        yield started
    finally:
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
        view = await until_view(http, b, room, 2)
        entry = next(r for r in view["rooms"] if r["room"] == room)
        assert (entry["origin"], entry["origin_viewers"], entry["edges"]) == (holder, 2, {}), entry  # one worker
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


async def stats_of(http: aiohttp.ClientSession, cluster: Cluster, worker: str,
                   timeout: float = 10.0) -> dict:  # type: ignore[type-arg]
    """``/api/stats`` of one worker: its node's shared port answers from either worker, so ask on a new
    connection each time (the kernel picks per connection) until that one answers; bounded."""
    node = cluster.nodes[worker.split("-w")[0]]  # worker ids are "{node}-w{index}"
    token = await dev_token(http, node.base, "any", "admin")
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        while True:
            async with fresh.get(node.base + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
                if r.headers.get(WORKER_HEADER) == worker:
                    return dict(await r.json())
            assert asyncio.get_running_loop().time() < deadline, f"worker {worker} never answered on {node.base}"


async def test_a_room_past_the_per_worker_cap_spreads_to_an_edge_with_one_copy_across_the_hop(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "spread"
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "festival"))
    await host.publish(http)
    origin = host.location.rsplit("~", 1)[1]  # type: ignore[union-attr]
    viewers = []
    try:
        for i in range(4):  # capacity 2 per worker: two on the origin, then two on an edge
            viewer = Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", f"fan{i}"))
            await viewer.watch(http)
            viewers.append(viewer)
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        # Placement counts lag a heartbeat behind: the origin itself refuses past its cap, and the viewer goes
        # to an edge instead.
        holders = [v.location.rsplit("~", 1)[1] for v in viewers]  # type: ignore[union-attr]
        assert holders.count(origin) == 2 and len(set(holders)) == 2, holders
        start = asyncio.get_running_loop().time()
        await asyncio.gather(*(v.wait_frames(45, 10) for v in viewers))
        for viewer in viewers:
            assert_smooth(viewer, start, asyncio.get_running_loop().time())
        # Origin egress: its own two viewers plus one copy for the edge, whatever the edge serves.
        edge = next(h for h in holders if h != origin)
        first = {n: await stats_of(http, cluster, w) for n, w in (("origin", origin), ("edge", edge))}
        await asyncio.sleep(2.0)  # a measured window of media, nothing to await but time
        second = {n: await stats_of(http, cluster, w) for n, w in (("origin", origin), ("edge", edge))}

        def rate(which: str, field: str) -> float:
            def value(snapshot: dict) -> float:  # type: ignore[type-arg]
                entry = next(r for r in snapshot["rooms"] if r["room"] == room)
                if field == "in":
                    return float(sum(p["packets_in"] for p in entry["publications"].values()))
                return float(entry["packets_out"])
            return value(second[which]) - value(first[which])

        ingest = rate("origin", "in")
        assert ingest > 0
        assert 2.7 * ingest <= rate("origin", "out") <= 3.3 * ingest, (rate("origin", "out"), ingest)
        assert 0.9 * ingest <= rate("edge", "in") <= 1.1 * ingest, (rate("edge", "in"), ingest)
        assert 1.8 * ingest <= rate("edge", "out") <= 2.2 * ingest, (rate("edge", "out"), ingest)
        # Past the origin and that edge, the next edge opens only when the first is full.
        more = [Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", f"late{i}")) for i in range(2)]
        viewers += more
        for viewer in more:
            await viewer.watch(http)
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        later = [v.location.rsplit("~", 1)[1] for v in more]  # type: ignore[union-attr]
        assert len(set(later)) == 1 and later[0] not in (origin, edge), (holders, later)
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


async def listed_by_every_worker(cluster: Cluster, want: set[str], unwanted: frozenset[str] = frozenset(),
                                 timeout: float = 15.0) -> dict[str, list[str]]:
    """GET /rooms on new connections to both nodes (the kernel picks a worker each time) until every worker has
    answered with all of ``want`` and none of ``unwanted`` listed; what each listed last. Listings travel with
    heartbeats (another process's), so this polls, bounded, and says which worker did not list what."""
    seen: dict[str, list[str]] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as fresh:
        while True:
            for node in cluster.nodes.values():
                async with fresh.get(node.base + "/rooms") as r:
                    seen[r.headers[WORKER_HEADER]] = [e["room"] for e in (await r.json())["rooms"]]
            good = {w for w, rooms in seen.items() if want <= set(rooms) and not unwanted & set(rooms)}
            if good == set(cluster.workers):
                return seen
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not every worker lists {want} without {unwanted}: {seen}")
            await asyncio.sleep(0.1)


async def status_from_every_worker(cluster: Cluster, room: str, timeout: float = 15.0) -> dict[str, Any]:
    """GET /rooms/{room} on new connections to both nodes until every worker has answered; each one's answer."""
    seen: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as fresh:
        while set(seen) != set(cluster.workers):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not every worker answered for {room}: {sorted(seen)} of {cluster.workers}")
            for node in cluster.nodes.values():
                async with fresh.get(f"{node.base}/rooms/{room}") as r:
                    body = await r.json()
                    assert r.status == (200 if body["live"] else 404), (r.status, body)
                    seen[r.headers[WORKER_HEADER]] = body
    return seen


async def test_every_worker_lists_every_live_room_of_the_cluster(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    hosts = [Host(a.base, "list-a", await dev_token(http, a.base, "list-a", "host", "ann"),
                  query="?title=Morning%20run&category=Sports&tags=5k"),
             Host(b.base, "list-b", await dev_token(http, b.base, "list-b", "host", "bo"))]
    try:
        for host in hosts:
            await host.publish(http)
        await listed_by_every_worker(cluster, {"list-a", "list-b"})
        async with http.get(b.base + "/rooms?category=Sports") as r:
            (entry,) = (await r.json())["rooms"]
        assert (entry["room"], entry["title"], entry["host"], entry["tags"]) == ("list-a", "Morning run", "ann",
                                                                                 ["5k"]), entry
        # One room's status (the player's title, "waiting for host") is its origin's, whichever worker is asked.
        statuses = await status_from_every_worker(cluster, "list-a")
        assert {(s["live"], s["title"], s["host"]) for s in statuses.values()} == {(True, "Morning run", "ann")}, \
            statuses
        await hosts.pop(0).stop(http)  # a room that ends leaves every worker's list
        await listed_by_every_worker(cluster, {"list-b"}, frozenset({"list-a"}))
        statuses = await status_from_every_worker(cluster, "list-a")
        assert {s["live"] for s in statuses.values()} == {False}, statuses
    finally:
        for host in hosts:
            await host.stop(http)


async def test_unknown_and_forged_internal_requests_are_refused(cluster, http):
    node = cluster.nodes["a"]
    internal = _internal_url(node.log_path.parent / "gateway.toml")
    async with http.post(internal + "/internal/open", json={"endpoint": "whep"}) as r:
        assert r.status == 401
    async with http.post(internal + "/internal/open", json={"endpoint": "whep"},
                         headers={"X-Cherry-Time": "0", "X-Cherry-Signature": "00"}) as r:
        assert r.status == 401


def _internal_url(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("advertise_url"):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError("no advertise_url")


LUMA_A, LUMA_B, LUMA_GUEST = 220, 110, 60




async def idle_workers(cluster: Cluster, timeout: float = 10.0) -> None:
    """Until both workers report no viewer (the last test's leave in their next heartbeat): placement is by
    load, so a test that needs its rooms on different workers starts from a tie. Heartbeats are another
    process's: this polls the registry, bounded."""
    registry = RedisRegistry(cluster.redis.url, ClusterConfig(), "probe", "test", "http://127.0.0.1:9")
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            workers = await registry.workers()
            if len(workers) == len(cluster.workers) and all(w.viewers == 0 for w in workers):
                return
            assert asyncio.get_running_loop().time() < deadline, f"workers never idle: {workers}"
            await asyncio.sleep(0.1)
    finally:
        await registry.close()


async def test_a_pk_between_rooms_on_two_nodes_shows_both_hosts_to_both_audiences_and_their_edges(cluster, http):
    """The battle is started and ended by the hosts' room sockets (each on the other node): the battle's
    node links both rooms' media at their origins, and every viewer gets the partner as one more slot."""
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    host_a = Host(a.base, "pka", await dev_token(http, a.base, "pka", "host", "alice"), luma=LUMA_A)
    host_b = Host(b.base, "pkb", await dev_token(http, b.base, "pkb", "host", "bob"), luma=LUMA_B)
    await idle_workers(cluster)  # a tie: each host's room goes to the worker it posted to
    await host_a.publish(http)
    await host_b.publish(http)
    origins = {h.location.rsplit("~", 1)[1] for h in (host_a, host_b)}  # type: ignore[union-attr]
    assert len(origins) == 2, f"both rooms on one worker ({origins}): this test needs them apart"
    # Room A's audience spills over to an edge (cap 2); B's watches through the other node.
    va = [Viewer(b.base, "pka", await dev_token(http, b.base, "pka", "viewer", f"a{i}"), slots=2) for i in range(3)]
    vb = [Viewer(a.base, "pkb", await dev_token(http, a.base, "pkb", "viewer", f"b{i}"), slots=2) for i in range(2)]
    partner_view = None
    sockets: list[EventsClient] = []
    try:
        for viewer in va + vb:
            await viewer.watch(http)
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        assert len({v.location.rsplit("~", 1)[1] for v in va}) == 2  # type: ignore[union-attr]
        alice = await EventsClient.connect(http, b.base, "pka", await dev_token(http, b.base, "pka", "host", "alice"))
        bob = await EventsClient.connect(http, a.base, "pkb", await dev_token(http, a.base, "pkb", "host", "bob"))
        sockets = [alice, bob]
        await alice.send(type="pk_invite", room="pkb")
        invitation = await bob.next("pk_invitation", timeout=10)
        await bob.send(type="pk_accept", id=invitation["id"])
        for socket in sockets:
            await socket.next("pk_started", timeout=10)
        # Every viewer of both rooms, on the origins and on the edge, gets the other host in slot 1 without
        # posting again: the partner is one more pulled slot of the pipes already there.
        await asyncio.gather(*(v.wait_slot_frames(1, 30, 15) for v in va + vb))
        await asyncio.gather(*(v.wait_slot_audio(1, 5, 15) for v in va + vb))
        for v in va:
            assert lumas(v.bars[-3:]) == {bucket(LUMA_A)} and lumas(v.slot_bars[1][-3:]) == {bucket(LUMA_B)}
        for v in vb:
            assert lumas(v.bars[-3:]) == {bucket(LUMA_B)} and lumas(v.slot_bars[1][-3:]) == {bucket(LUMA_A)}
        # Host A watches its partner with a PK grant; B's origin honours it while the link lasts.
        partner_token = TokenService(SECRET, "cherry-gateway", 60).mint("pkb", "viewer", "alice", scope="pk")
        partner_view = Viewer(a.base, "pkb", partner_token)
        await partner_view.watch(http)
        await partner_view.wait_frames(10, 10)
        assert lumas(partner_view.bars[-3:]) == {bucket(LUMA_B)}
        await bob.send(type="pk_end")
        await asyncio.wait_for(_closed(partner_view), 10)
        # Back to solo: slot 1 goes quiet, slot 0 plays on.
        await wait_slot_quiet(va + vb, 1, "partner still forwarded after the unlink")
        assert all(v.pc.connectionState == "connected" for v in va + vb)
    finally:
        await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
        await close_all(http, host_a, host_b, *va, *vb, *([partner_view] if partner_view else []))


async def _closed(viewer: Viewer) -> None:
    """Until the gateway ends the viewer's session (its connection then fails or closes)."""
    ended = asyncio.Event()

    def check() -> None:
        if viewer.pc.connectionState in ("failed", "closed"):
            ended.set()

    viewer.pc.on("connectionstatechange", check)
    check()
    await ended.wait()


async def admin(http: aiohttp.ClientSession, node: GatewayProcess, method: str, path: str,
                body: dict | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    token = await dev_token(http, node.base, "any", "admin")
    async with http.request(method, node.base + path, json=body,
                            headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, dict(await r.json())


async def until_view(http: aiohttp.ClientSession, node: GatewayProcess, room: str, viewers: int,
                     timeout: float = 10.0) -> dict:  # type: ignore[type-arg]
    """The cluster view from ``node`` once it shows ``viewers`` in ``room``: it is built from heartbeats,
    which other processes send every 0.5 s; this polls, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, view = await admin(http, node, "GET", "/api/cluster")
        assert status == 200, view
        entry = next((r for r in view["rooms"] if r["room"] == room), None)
        if entry is not None and entry["viewers"] == viewers:
            return view
        assert asyncio.get_running_loop().time() < deadline, f"the view never showed {viewers} in {room}: {view}"
        await asyncio.sleep(0.1)


async def test_the_cluster_view_and_the_admin_api_answer_for_the_whole_cluster_from_either_node(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "ops"
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "anchor"))
    await idle_workers(cluster)
    await host.publish(http)
    origin = host.location.rsplit("~", 1)[1]  # type: ignore[union-attr]
    viewers = [Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", f"fan{i}")) for i in range(3)]
    try:
        for viewer in viewers:  # capacity 2 per worker: the third goes to an edge
            await viewer.watch(http)
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        edge = next(v.location.rsplit("~", 1)[1] for v in viewers  # type: ignore[union-attr]
                    if not v.location.endswith("~" + origin))  # type: ignore[union-attr]
        for node in (a, b):
            view = await until_view(http, node, room, 3)
            entry = next(r for r in view["rooms"] if r["room"] == room)
            assert entry["origin"] == origin and entry["origin_viewers"] == 2 and entry["edges"] == {edge: 1}, entry
            assert [n["id"] for n in view["nodes"]] == ["a", "b"] and view["available_workers"] == 4, view
        # The open dashboard's copy of the view carries no internal address.
        async with http.get(b.base + "/dashboard/cluster") as r:
            assert r.status == 200 and "url" not in (await r.json())["nodes"][0]["workers"][0]
        # The admin API on either node sees the room whole: the origin's stage, the audience summed.
        for node in (a, b):
            status, listing = await admin(http, node, "GET", "/api/rooms")
            assert status == 200 and "partial" not in listing, listing
            entry = next(r for r in listing["rooms"] if r["room"] == room)
            assert entry["host"] == "anchor" and entry["origin"] == origin and entry["viewers"] == 3, entry
            assert entry["workers"] == {origin: 2, edge: 1}, entry
        status, detail = await admin(http, b, "GET", f"/api/rooms/{room}")
        assert status == 200, detail
        where = {p["identity"]: p["worker"] for p in detail["participants"] if p["sessions"]}
        assert where["anchor"] == origin and sorted(where.values()).count(edge) >= 1, where
        assert detail["publications"], detail
        # The host's paged participant list, asked at the node holding neither origin nor edge alone: everyone
        # once (the host first), across workers, with the host's own token.
        async with http.get(f"{b.base}/api/rooms/{room}/participants?limit=2",
                            headers={"Authorization": f"Bearer {host.token}"}) as r:
            first = await r.json()
            assert r.status == 200, first
        async with http.get(f"{b.base}/api/rooms/{room}/participants?offset=2&limit=2",
                            headers={"Authorization": f"Bearer {host.token}"}) as r:
            second = await r.json()
        assert first["count"] == second["count"] == 4, (first["participants"], second["participants"])
        listed = [p["identity"] for p in first["participants"] + second["participants"]]
        assert listed == ["anchor", "fan0", "fan1", "fan2"], listed
        # A kick from the node that holds neither session ends it where it is.
        edge_viewer = next(v for v in viewers if v.location.endswith("~" + edge))  # type: ignore[union-attr]
        target = next(i for i, v in enumerate(viewers) if v is edge_viewer)
        other = a if edge.startswith("b") else b
        status, kicked = await admin(http, other, "POST", f"/api/rooms/{room}/kick", {"identity": f"fan{target}"})
        assert status == 200 and kicked["sessions"] == 1, kicked
        await asyncio.wait_for(_closed(edge_viewer), 10)
        status, missing = await admin(http, b, "POST", f"/api/rooms/{room}/kick", {"identity": "nobody"})
        assert status == 404, missing
        # Ending the room from node b ends it on its origin (node a's worker) and on its edge.
        status, ended = await admin(http, b, "DELETE", f"/api/rooms/{room}")
        assert status == 200 and origin in ended["workers"], ended
        await asyncio.gather(*(asyncio.wait_for(_closed(v), 10) for v in viewers))
        status, gone = await admin(http, b, "GET", f"/api/rooms/{room}")
        assert status == 404, gone
    finally:
        await close_all(http, host, *viewers)


async def test_each_worker_serves_its_own_metrics_labelled_with_its_node_and_worker(cluster, http):
    for worker, port in cluster.internal.items():
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:  # unsigned, read-only
            assert r.status == 200
            text = await r.text()
        node = worker.split("-w")[0]
        assert f'node="{node}"' in text and f'worker="{worker}"' in text
        assert all(f'worker="{worker}"' in line for line in text.splitlines()
                   if line.startswith("cherry_") and "{" in line), f"a series of {worker} without its label"
        async with http.post(f"http://127.0.0.1:{port}/internal/admin", json={"op": "rooms"}) as r:
            assert r.status == 401  # the admin operations are signed like every other internal call


async def test_an_encoder_asking_for_a_redirect_is_sent_to_the_node_of_the_rooms_origin(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "encoder"
    await idle_workers(cluster)
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "obs"))
    await host.publish(http)  # a tie: the room's origin is a worker of node a
    token = await dev_token(http, b.base, room, "host", "obs")
    try:
        # The encoder reconnects through node b and asks for a redirect (RFC 9725 4.5): 307 to node a, with
        # its other query parameters; the offer itself is only read there.
        sdp = await offer_sdp()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with http.post(f"{b.base}/whip/{room}?redirect=307&title=Night%20set", data=sdp, headers=headers,
                             allow_redirects=False) as r:
            assert r.status == 307, await r.text()
            location = r.headers["Location"]
        assert location == f"{a.base}/whip/{room}?title=Night+set", location
        async with http.post(location, data=sdp, headers=headers) as r:
            assert r.status == 201, await r.text()  # the same host: its new session replaces the old one
            assert r.headers["Location"].rsplit("~", 1)[1].startswith("a-"), r.headers["Location"]
            replaced = r.headers["Location"]
        # Asked on the origin's own node, it is not redirected.
        async with http.post(f"{a.base}/whip/{room}?redirect=307", data=await offer_sdp(), headers=headers,
                             allow_redirects=False) as r:
            assert r.status == 201, await r.text()
            replaced = r.headers["Location"]
        async with http.delete(a.base + replaced, headers={"Authorization": f"Bearer {token}"}):
            pass
        # A bad token is refused before anything is placed or redirected.
        async with http.post(f"{b.base}/whip/{room}?redirect=307", data=sdp, headers={
                "Authorization": "Bearer nope", "Content-Type": "application/sdp"}, allow_redirects=False) as r:
            assert r.status == 401
    finally:
        await close_all(http, host)



def retransmitted(detail: dict, worker: str, identity: str) -> int:  # type: ignore[type-arg]
    """Video retransmissions to ``identity``'s sessions held by ``worker``, from the admin room detail."""
    return sum(sub["retransmitted"] for p in detail["participants"] if p["identity"] == identity
               and p["worker"] == worker for s in p["sessions"] for sub in s["subscriptions"] if sub["kind"] == "video")


async def test_an_edge_answers_its_viewers_nacks_and_the_host_sees_throttled_keyframe_requests(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "lossy-edge"
    await idle_workers(cluster)
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "lossy-host"))
    await host.publish(http)
    origin = host.location.rsplit("~", 1)[1]  # type: ignore[union-attr]
    named = {f"lossy{i}": Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", f"lossy{i}"))
             for i in range(4)}
    viewers = list(named.values())
    try:
        for viewer in viewers:  # capacity 2: two on the origin, two on an edge
            await viewer.watch(http)
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        far_identity, far = next((i, v) for i, v in named.items()
                                 if not v.location.endswith("~" + origin))  # type: ignore[union-attr]
        edge = far.location.rsplit("~", 1)[1]  # type: ignore[union-attr]
        downlink = Downlink(far.pc, lose=1)  # a viewer of the edge loses one media datagram in ten
        await far.wait_frames(20, 15)  # a few seconds of loss: a lost keyframe packet may hold frames back
        downlink.impaired = False
        await far.wait_frames(10, 10)
        assert downlink.dropped > 5, downlink.dropped  # the loss happened
        status, detail = await admin(http, b, "GET", f"/api/rooms/{room}")
        assert status == 200, detail
        pipe = f"edge:{edge}"
        # Its NACKs were answered from the edge's own packet cache: the pipe from the origin repaired nothing.
        assert retransmitted(detail, edge, far_identity) > 0, detail["participants"]
        assert retransmitted(detail, origin, pipe) == 0, detail["participants"]

        # Every viewer, on the origin and on the edge, asks for a keyframe ten times a second for 3 s: the host
        # gets at most one request per keyframe_request_interval_ms (300 ms), however many edges relay them.
        async def storm(viewer: Viewer) -> int:
            sent = 0
            for _ in range(30):
                video = next(t for t in viewer.pc.getTransceivers() if t.kind == "video")
                sent += await request_keyframe(video.receiver)
                await asyncio.sleep(0.1)  # the storm's own pace
            return sent

        before = await stats_of(http, cluster, origin)
        asked = sum(await asyncio.gather(*(storm(v) for v in viewers)))
        after = await stats_of(http, cluster, origin)
        window = after["uptime_s"] - before["uptime_s"]

        def requests(snapshot: dict) -> int:  # type: ignore[type-arg]
            entry = next(r for r in snapshot["rooms"] if r["room"] == room)
            return int(entry["publications"]["video"]["keyframe_requests"])
        got = requests(after) - requests(before)
        assert asked >= 100 and 1 <= got <= window / 0.3 + 1, (asked, got, window)
    finally:
        await close_all(http, host, *viewers)


async def test_a_guest_on_mic_reaches_edge_viewers_as_one_more_pulled_slot_and_an_idle_edge_lets_go(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "duet"
    await idle_workers(cluster)
    host = Host(a.base, room, await dev_token(http, a.base, room, "host", "lead"), luma=LUMA_A)
    await host.publish(http)
    origin = host.location.rsplit("~", 1)[1]  # type: ignore[union-attr]
    viewers = [Viewer(b.base, room, await dev_token(http, b.base, room, "viewer", f"duet{i}"), slots=2)
               for i in range(3)]
    lead = fan = None
    guest: Host | None = None
    try:
        for viewer in viewers:  # capacity 2: two on the origin, one on an edge
            await viewer.watch(http)
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        on_edge = [v for v in viewers if not v.location.endswith("~" + origin)]  # type: ignore[union-attr]
        assert len(on_edge) == 1, [v.location for v in viewers]
        edge = on_edge[0].location.rsplit("~", 1)[1]  # type: ignore[union-attr]
        # The host puts a fan on mic from a room socket on the other node; the guest publishes through node b.
        lead = await EventsClient.connect(http, b.base, room, await dev_token(http, b.base, room, "host", "lead"))
        fan = await EventsClient.connect(http, b.base, room, await dev_token(http, b.base, room, "viewer", "singer"))
        await lead.send(type="guest_invite", identity="singer")
        invitation = await fan.next("guest_invitation", timeout=10)
        await fan.send(type="guest_accept", id=invitation["id"])
        granted = await fan.next("guest_token", timeout=10)
        guest = Host(b.base, room, granted["token"], luma=LUMA_GUEST)
        await guest.publish(http)
        assert guest.location is not None and guest.location.endswith("~" + origin), guest.location
        # Every viewer, the edge's too, gets the guest in slot 1 without posting again.
        await asyncio.gather(*(v.wait_slot_frames(1, 20, 15) for v in viewers))
        for viewer in viewers:
            assert lumas(viewer.slot_bars[1][-3:]) == {bucket(LUMA_GUEST)}, viewer.location
            assert lumas(viewer.bars[-3:]) == {bucket(LUMA_A)}, viewer.location
        # The edge's last viewer leaves: after edge_linger_s (1 s) the edge lets the room go and the origin's
        # pipe to it ends (the registry shows no edge; the origin holds no pipe participant).
        await on_edge[0].stop(http)
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            status, view = await admin(http, a, "GET", "/api/cluster")
            entry = next((r for r in view["rooms"] if r["room"] == room), None)
            status, detail = await admin(http, a, "GET", f"/api/rooms/{room}")
            pipes = [p for p in detail.get("participants", []) if p["identity"] == f"edge:{edge}"]
            if entry is not None and not entry["edges"] and not pipes:
                break
            assert asyncio.get_running_loop().time() < deadline, f"the edge kept the room: {entry} {pipes}"
            await asyncio.sleep(0.2)  # the linger timer and the next heartbeat are other processes'
    finally:
        await asyncio.gather(*(c.close() for c in (lead, fan) if c is not None), return_exceptions=True)
        await close_all(http, host, *viewers, *([guest] if guest else []))
