"""Room covers: one decode per room per round and only for a new keyframe, never per viewer, only at the origin,
in one worker thread; served over HTTP (in-process app on 127.0.0.1), and through the cluster store elsewhere."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

import gateway.snapshots
from gateway.app import create_app
from gateway.config import SnapshotsConfig, load_config
from gateway.snapshots import SNAPSHOTS, Snapshots
from relay.config import LimitsConfig, MediaConfig, RoomsConfig
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.room import Room, Rooms
from relay.subscription import Subscription
from tests.unit.fakes import VP8_DELTA, FakeMember, FakeSink, FakeUpstream
from tests.unit.test_snapshot_decode import keyframe

VP8 = CodecInfo("video/VP8", 90000)
KEY = keyframe("video/VP8", 320, 180)


class Feed:
    """A host's video publication in a room, fed real VP8 keyframes (and fake delta frames) by hand."""

    def __init__(self, room: Room) -> None:
        self.host = FakeMember(f"host-{room.name}", f"h-{room.name}", "host").attach(room)
        room.claim_host(self.host)
        self.pub = Publication("video", VP8, FakeUpstream(), cache_size=1024, keyframe_interval=0.1,
                               keyframe_cache_bytes=1 << 20)
        room.publish(self.host, self.pub)
        self.seq = 1
        self.ts = 0

    def frame(self, payloads: list[bytes]) -> None:
        self.ts += 3000
        for i, payload in enumerate(payloads):
            self.pub.on_rtp(0x1234, self.seq, self.ts, i == len(payloads) - 1, payload, time.monotonic())
            self.seq += 1


def registry() -> Rooms:
    return Rooms(LimitsConfig(max_rooms=10, max_viewers_per_room=20), RoomsConfig(empty_room_grace_s=60,
                                                                                  host_absent_timeout_s=60), 2)


def value(snapshots: Snapshots, name: str, labels: dict[str, str] | None = None) -> float:
    found = snapshots.registry.get_sample_value(name, labels or {})
    assert found is not None, f"no sample {name} {labels}"
    return found


def service(rooms: Rooms, store: FakeStore | None = None) -> Snapshots:
    return Snapshots(SnapshotsConfig(interval_s=1.0, width=160), rooms, CollectorRegistry(auto_describe=False),
                     store=store)


class FakeStore:
    def __init__(self) -> None:
        self.covers: dict[str, tuple[int, bytes]] = {}
        self.touched: list[list[str]] = []
        self.gets = 0

    async def put(self, room: str, version: int, jpeg: bytes, ttl_s: float) -> None:
        assert ttl_s >= 2.0, "a stored cover outlives a round or two"
        self.covers[room] = (version, jpeg)

    async def touch(self, rooms: list[str], ttl_s: float) -> None:
        self.touched.append(rooms)

    async def get(self, room: str) -> tuple[int, bytes] | None:
        self.gets += 1
        return self.covers.get(room)

    async def versions(self, rooms: list[str]) -> dict[str, int]:
        return {room: self.covers[room][0] for room in rooms if room in self.covers}


@pytest.fixture(autouse=True)
def no_keyframe_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.snapshots, "KEYFRAME_WAIT_S", 0.0)  # keyframes here come by hand, not by waiting


async def test_one_decode_per_new_keyframe_and_none_for_viewers():
    rooms = registry()
    room = rooms.get_or_create("r")
    feed = Feed(room)
    now = [1000.0]
    snapshots = Snapshots(SnapshotsConfig(interval_s=1.0, width=160), rooms, CollectorRegistry(auto_describe=False),
                          clock=lambda: now[0])
    assert await snapshots.take_round() == 0 and snapshots.cover("r") is None, "no keyframe yet"
    assert value(snapshots, "cherry_snapshot_keyframe_requests_total") == 1, "no keyframe: the host is asked"
    feed.frame(KEY)
    feed.frame([VP8_DELTA])
    assert await snapshots.take_round() == 1
    first = snapshots.cover("r")
    assert first is not None and first.jpeg[:2] == b"\xff\xd8"
    for i in range(5):  # viewers join: they start from the keyframe cache, and cost the covers nothing
        member = FakeMember(f"v{i}", f"s{i}").attach(room)
        sub = Subscription("video", 90000, FakeSink(), media=MediaConfig(), cname="c")
        room.add_viewer(member, [sub])
    assert [await snapshots.take_round() for _ in range(3)] == [0, 0, 0], "the keyframe did not change"
    assert value(snapshots, "cherry_snapshot_keyframe_requests_total") == 1, "a fresh cover asks for nothing"
    now[0] += 1.0  # an interval on: the cover is due, and the host is asked once per round
    assert await snapshots.take_round() == 0
    assert value(snapshots, "cherry_snapshot_keyframe_requests_total") == 2
    feed.frame(KEY)
    feed.frame(KEY)  # two keyframes within one round: one decode
    assert await snapshots.take_round() == 1
    second = snapshots.cover("r")
    assert second is not None and second.version > first.version
    assert value(snapshots, "cherry_snapshot_decodes_total") == 2
    assert value(snapshots, "cherry_snapshot_rounds_total") == 7


async def test_an_edge_or_a_room_without_video_is_not_decoded():
    rooms = registry()
    edge = rooms.get_or_create("edge")
    Feed(edge).frame(KEY)
    edge.pulled_from = "worker-a"  # its host is the pipe from the origin, which takes the room's cover
    rooms.get_or_create("empty")
    snapshots = service(rooms)
    assert await snapshots.take_round() == 0
    assert snapshots.cover("edge") is None and snapshots.cover("empty") is None


async def test_an_undecodable_keyframe_is_counted_once_by_reason_and_the_cover_kept():
    rooms = registry()
    room = rooms.get_or_create("r")
    feed = Feed(room)
    snapshots = service(rooms)
    feed.frame(KEY)
    await snapshots.take_round()
    good = snapshots.cover("r")
    feed.frame([b"\x10\x00\x9d\x01\x2a" + b"\xff" * 40])  # flagged a keyframe, decodes to nothing
    assert await snapshots.take_round() == 1 and await snapshots.take_round() == 0, "not tried again"
    assert value(snapshots, "cherry_snapshot_failures_total", {"reason": "decode"}) == 1
    assert snapshots.cover("r") == good, "the last good cover stays"


async def test_a_cover_goes_with_its_room():
    rooms = registry()
    room = rooms.get_or_create("r")
    Feed(room).frame(KEY)
    snapshots = service(rooms)
    await snapshots.take_round()
    assert snapshots.cover("r") is not None
    room.close("test")
    assert snapshots.cover("r") is None


async def test_decodes_run_one_at_a_time_in_the_snapshot_thread(monkeypatch):
    rooms = registry()
    for name in ("a", "b", "c"):
        Feed(rooms.get_or_create(name)).frame(KEY)
    running, most, threads = 0, 0, set()
    lock = threading.Lock()
    real = gateway.snapshots.decode_keyframe

    def watched(mime_type: str, payloads: list[bytes], width: int) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        threads.add(threading.current_thread().name)
        time.sleep(0.02)
        try:
            return real(mime_type, payloads, width)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(gateway.snapshots, "decode_keyframe", watched)
    snapshots = service(rooms)
    loop_ticks = 0

    async def ticker() -> None:
        nonlocal loop_ticks
        while True:
            await asyncio.sleep(0.005)
            loop_ticks += 1

    task = asyncio.ensure_future(ticker())
    try:
        assert await snapshots.take_round() == 3
    finally:
        task.cancel()
        snapshots.close()
    assert most == 1 and len(threads) == 1 and next(iter(threads)).startswith("cherry-snapshot"), (most, threads)
    assert loop_ticks >= 5, "the event loop ran while the decodes did"


async def test_another_worker_serves_the_origins_cover_from_the_store():
    store = FakeStore()
    origin_rooms = registry()
    feed = Feed(origin_rooms.get_or_create("r"))
    feed.frame(KEY)
    origin = service(origin_rooms, store)
    await origin.take_round()
    assert "r" in store.covers
    await origin.take_round()
    assert store.touched == [["r"]], "an unchanged cover is kept alive in the store"
    other = service(registry(), store)
    assert other.cover("r") is None
    cover = await other.lookup("r")
    assert cover is not None and (cover.version, cover.jpeg) == store.covers["r"]
    assert other.cover("r") == cover, "now known here too (the room list can name it)"
    await other.lookup("r")
    assert store.gets == 1, "read again only after a short while"
    assert await other.lookup("nowhere") is None


async def test_an_edge_names_its_origins_cover_version_in_the_room_list():
    store = FakeStore()
    origin_rooms = registry()
    Feed(origin_rooms.get_or_create("r")).frame(KEY)
    origin = service(origin_rooms, store)
    await origin.take_round()
    edge_rooms = registry()
    edge_room = edge_rooms.get_or_create("r")
    Feed(edge_room).frame(KEY)
    edge_room.pulled_from = "worker-a"
    edge = service(edge_rooms, store)
    assert await edge.take_round() == 0, "an edge never decodes"
    assert edge.version("r") == store.covers["r"][0]
    edge_room.close("test")
    assert edge.version("r") is None


async def test_cover_route_serves_the_jpeg_with_its_version_and_404_without_one():
    app = create_app(load_config(None, {"dev": True, "ice.hosts": ["127.0.0.1"], "snapshots.width": 160}))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        rooms = app[SNAPSHOTS]._rooms
        Feed(rooms.get_or_create("r")).frame(KEY)
        async with client.get("/rooms/r/cover.jpg") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "no_cover"
        async with client.get("/rooms") as response:
            assert (await response.json())["rooms"][0]["cover"] is None
        await app[SNAPSHOTS].take_round()
        async with client.get("/rooms/r/cover.jpg") as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            assert (await response.read())[:2] == b"\xff\xd8"
            assert response.headers["Cache-Control"] == "max-age=10"
            etag = response.headers["ETag"]
        version = app[SNAPSHOTS].cover("r").version  # type: ignore[union-attr]
        async with client.get("/rooms") as response:
            assert (await response.json())["rooms"][0]["cover"] == f"/rooms/r/cover.jpg?v={version}"
        async with client.get("/rooms/r") as response:
            assert (await response.json())["cover"] == f"/rooms/r/cover.jpg?v={version}"
        async with client.get("/rooms/r/cover.jpg", headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        async with client.get("/rooms/no%20such/cover.jpg") as response:
            assert response.status == 400


async def test_covers_can_be_turned_off():
    app = create_app(load_config(None, {"dev": True, "ice.hosts": ["127.0.0.1"], "snapshots.enabled": False}))
    assert SNAPSHOTS not in app
    async with TestClient(TestServer(app, host="127.0.0.1")) as client, client.get("/rooms/r/cover.jpg") as r:
        assert r.status == 404
