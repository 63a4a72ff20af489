"""Webhooks against a real aiohttp receiver on 127.0.0.1: signatures, retries, backoff, bounded queues."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import WebhooksConfig
from gateway.webhooks import SIGNATURE_HEADER, RoomWebhooks, WebhookEmitter, sign, verify_signature
from relay.room import Rooms

SECRET = "webhook-secret-0123456789"


@dataclass
class Receiver:
    """Answers each POST with the next status of ``script`` (then 200) and records what it got."""

    script: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    hold: asyncio.Event | None = None
    requested: asyncio.Event = field(default_factory=asyncio.Event)  # set at each request's arrival

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        self.requested.set()
        if self.hold is not None:
            await self.hold.wait()
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            self.arrived.put_nowait(json.loads(body))
        return web.Response(status=status, headers={"Retry-After": "0"} if status == 429 else None)

    async def next(self, what: str, timeout: float = 5.0) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self.arrived.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {what} delivered within {timeout}s; got {len(self.received)} requests") from None


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield rec, str(server.make_url("/hook"))
    finally:
        await server.close()


def config(url: str, **kw: Any) -> WebhooksConfig:
    settings: dict[str, Any] = dict(urls=[url], secret=SECRET, backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)
    settings.update(kw)
    return WebhooksConfig(**settings)


@pytest.fixture
async def started() -> AsyncIterator[list[WebhookEmitter]]:
    emitters: list[WebhookEmitter] = []
    yield emitters
    for emitter in emitters:
        await emitter.stop()


async def start(emitters: list[WebhookEmitter], cfg: WebhooksConfig) -> WebhookEmitter:
    emitter = WebhookEmitter(cfg)
    await emitter.start()
    emitters.append(emitter)
    return emitter


def test_signature_round_trip_and_rejections() -> None:
    body = b'{"event":"room_started"}'
    header = sign(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature(SECRET, header, body, now=1_700_000_010)
    assert not verify_signature(SECRET, header, body + b" ", now=1_700_000_010)  # tampered body
    assert not verify_signature("another-secret-0123456", header, body, now=1_700_000_010)
    assert not verify_signature(SECRET, header, body, now=1_700_000_000 + 3600)  # replayed an hour later
    assert not verify_signature(SECRET, "v1=abc", body)


async def test_event_is_delivered_signed(receiver: tuple[Receiver, str], started: list[WebhookEmitter]) -> None:
    rec, url = receiver
    emitter = await start(started, config(url))
    emitter.emit("room_started", {"room": {"name": "r1", "title": "r1"}})
    event = await rec.next("room_started")
    headers, body = rec.received[0]
    assert event["event"] == "room_started" and event["room"]["name"] == "r1" and event["seq"] == 1
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    assert headers["X-Cherry-Event"] == "room_started" and headers["X-Cherry-Delivery"] == event["id"]
    assert headers["Content-Type"] == "application/json"


async def test_server_errors_are_retried_with_backoff_under_one_delivery_id(
        receiver: tuple[Receiver, str], started: list[WebhookEmitter]) -> None:
    rec, url = receiver
    rec.script = [500, 503, 429]
    emitter = await start(started, config(url, max_attempts=5))
    emitter.emit("participant_joined", {"room": {"name": "r"}, "participant": {"identity": "amy"}})
    event = await rec.next("participant_joined after three failures")
    attempts = [h["X-Cherry-Attempt"] for h, _ in rec.received]
    assert attempts == ["1", "2", "3", "4"]
    assert {h["X-Cherry-Delivery"] for h, _ in rec.received} == {event["id"]}
    assert emitter.stats["retries"] == 3 and emitter.stats["delivered"] == 1 and emitter.stats["failed"] == 0


async def test_client_errors_are_final_and_attempts_are_bounded(
        receiver: tuple[Receiver, str], started: list[WebhookEmitter]) -> None:
    rec, url = receiver
    rec.script = [400, 500, 500, 500]
    emitter = await start(started, config(url, max_attempts=3, concurrency=1))
    emitter.emit("room_ended", {"room": {"name": "a"}, "reason": "x"})  # refused: not retried
    emitter.emit("room_ended", {"room": {"name": "b"}, "reason": "x"})  # 3 attempts, all 500
    emitter.emit("room_ended", {"room": {"name": "c"}, "reason": "x"})  # the script is used up: 200
    event = await rec.next("the third event")
    assert event["room"]["name"] == "c"
    await emitter.stop(flush_timeout=5)
    names = [json.loads(b)["room"]["name"] for _, b in rec.received]
    assert sorted(names) == ["a", "b", "b", "b", "c"]
    assert emitter.stats["failed"] == 2 and emitter.stats["delivered"] == 1


async def test_unreachable_receiver_is_retried_then_given_up(started: list[WebhookEmitter]) -> None:
    from tests.integration.conftest import free_port

    emitter = await start(started, config(f"http://127.0.0.1:{free_port()}/hook", max_attempts=3))
    emitter.emit("room_started", {"room": {"name": "r"}})
    await emitter.stop(flush_timeout=5)
    assert emitter.stats["retries"] == 2 and emitter.stats["failed"] == 1


async def test_emit_never_blocks_and_a_full_queue_drops(receiver: tuple[Receiver, str],
                                                        started: list[WebhookEmitter]) -> None:
    rec, url = receiver
    rec.hold = asyncio.Event()  # the receiver hangs: nothing is delivered until released
    emitter = await start(started, config(url, queue_size=3, concurrency=1))
    # emit is plain synchronous code: it cannot wait for the network, whatever the receiver does
    assert not inspect.iscoroutinefunction(emitter.emit)
    assert emitter.emit("room_started", {"room": {"name": "r0"}}) is None
    await asyncio.wait_for(rec.requested.wait(), 5)  # the one worker now hangs in r0's delivery
    assert [json.loads(b)["room"]["name"] for _, b in rec.received] == ["r0"]
    for i in range(1, 50):
        emitter.emit("room_started", {"room": {"name": f"r{i}"}})
    # every emit returned without anything reaching the receiver, and without a delivery
    assert len(rec.received) == 1 and emitter.stats["delivered"] == 0
    # r0 in flight, r1-r3 fill the queue of 3, r4-r49 are dropped: the newest go, the oldest stay
    assert emitter.stats["emitted"] == 50 and emitter.stats["dropped"] == 46, emitter.stats
    rec.hold.set()
    await emitter.stop(flush_timeout=5)
    assert [json.loads(b)["room"]["name"] for _, b in rec.received] == ["r0", "r1", "r2", "r3"]
    assert emitter.stats["delivered"] == 4 and emitter.stats["failed"] == 0, emitter.stats


async def test_disabled_events_and_no_urls_send_nothing() -> None:
    emitter = WebhookEmitter(WebhooksConfig())
    emitter.emit("room_started", {})
    assert not emitter.enabled and emitter.stats["emitted"] == 0
    only = WebhookEmitter(WebhooksConfig(urls=["http://127.0.0.1:9/x"], secret=SECRET, events=["room_ended"]))
    only.emit("room_started", {})
    assert only.stats["emitted"] == 0
    with pytest.raises(ValueError):
        only.emit("no_such_event", {})


async def test_room_lifecycle_becomes_events_in_order(receiver: tuple[Receiver, str],
                                                      started: list[WebhookEmitter]) -> None:
    from relay.config import LimitsConfig, MediaConfig, RoomsConfig
    from relay.ports import CodecInfo
    from relay.publication import Publication
    from relay.subscription import Subscription
    from tests.unit.fakes import FakeMember, FakeSink, FakeUpstream

    rec, url = receiver
    emitter = await start(started, config(url, concurrency=1, roles=["host", "viewer"]))
    rooms = Rooms(LimitsConfig(max_rooms=5, max_viewers_per_room=5), RoomsConfig(), 2)
    rooms.observers.add(RoomWebhooks(emitter))
    room = rooms.get_or_create("party")
    host = FakeMember("amy", "s1", "host").attach(room)
    room.claim_host(host)
    room.publish(host, Publication("video", CodecInfo("video/VP8", 90000), FakeUpstream(), cache_size=64,
                                   keyframe_interval=0.1))
    viewer = FakeMember("bob", "s2", "viewer").attach(room)
    room.add_viewer(viewer, [Subscription("video", 90000, FakeSink(), media=MediaConfig(), cname="c")])
    room.close("host ended the show")  # no participant_left from the relay: the observer fills them in

    events = [await rec.next(f"event {i}") for i in range(7)]
    got = [(e["event"], e.get("participant", {}).get("identity")) for e in events]
    assert got == [("room_started", None), ("participant_joined", "amy"), ("stream_started", None),
                   ("participant_joined", "bob"), ("participant_left", "amy"), ("participant_left", "bob"),
                   ("room_ended", None)]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[-1]["reason"] == "host ended the show"
    assert events[2]["room"]["host"] == "amy"


async def test_pk_events_are_one_call(receiver: tuple[Receiver, str], started: list[WebhookEmitter]) -> None:
    rec, url = receiver
    emitter = await start(started, config(url, concurrency=1))
    hooks = RoomWebhooks(emitter)
    hooks.pk_started("pk1", ["a", "b"], duration_s=300)
    hooks.pk_ended("pk1", ["a", "b"], winner="a", scores={"a": 120, "b": 80}, reason="timer")
    started_event, ended = await rec.next("pk_started"), await rec.next("pk_ended")
    assert started_event["event"] == "pk_started" and started_event["pk_id"] == "pk1"
    assert [r["name"] for r in started_event["rooms"]] == ["a", "b"] and started_event["duration_s"] == 300
    assert ended["event"] == "pk_ended" and ended["winner"] == "a" and ended["scores"] == {"a": 120, "b": 80}
