"""Co-streaming with real peers: PK battles between two rooms and guests on mic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host, Viewer, freezes, post_sdp, wait_slot_quiet

CONFIG = """
[costream]
max_guests = 1
pk_duration_s = 6.0
pk_invite_timeout_s = 1.5
pk_host_grace_s = 1.0
pk_tick_s = 0.5
"""
LUMA_A, LUMA_B, LUMA_GUEST = 220, 110, 60


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-costream"))
    yield proc
    proc.stop()


async def live_room(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str, luma: int,
                    identity: str) -> tuple[Host, EventsClient]:
    token = await dev_token(http, gateway.base, room, "host", identity)
    host = Host(gateway.base, room, token, luma=luma)
    await host.publish(http)
    events = await EventsClient.connect(http, gateway.base, room, token)
    return host, events


async def viewers(gateway, http, room: str, n: int, slots: int = 2) -> list[Viewer]:  # type: ignore[no-untyped-def]
    out = [Viewer(gateway.base, room, await dev_token(http, gateway.base, room, "viewer"), slots=slots)
           for _ in range(n)]
    await asyncio.gather(*(v.watch(http) for v in out))
    await asyncio.gather(*(asyncio.wait_for(v.first_video.wait(), 15) for v in out))
    return out


def bucket(luma: int) -> int:
    # Coarse, centred on the colours the tests paint (their multiples of 10 sit mid-bucket): codec noise moves
    # the peak a little either way.
    return (luma + 10) // 20


def lumas(samples: list[tuple[int, int]]) -> set[int]:
    return {bucket(luma) for _, luma in samples}


async def stop_all(http, *peers) -> None:  # type: ignore[no-untyped-def]
    await asyncio.gather(*(p.close() if isinstance(p, EventsClient) else p.stop() for p in peers),
                         return_exceptions=True)


async def invite_and_accept(a: EventsClient, b: EventsClient, room_b: str) -> float:
    await a.send(type="pk_invite", room=room_b)
    invitation = await b.next("pk_invitation")
    await b.send(type="pk_accept", id=invitation["id"])
    accepted = time.monotonic()
    await a.next("pk_started")
    await b.next("pk_started")
    return accepted


async def test_pk_battle_both_audiences_see_both_hosts_and_gifts_score(gateway, http):
    host_a, ev_a = await live_room(gateway, http, "pka", LUMA_A, "alice")
    host_b, ev_b = await live_room(gateway, http, "pkb", LUMA_B, "bob")
    va = await viewers(gateway, http, "pka", 5)
    vb = await viewers(gateway, http, "pkb", 5)
    standard = (await viewers(gateway, http, "pka", 1, slots=1))[0]
    fan_a = await EventsClient.connect(http, gateway.base, "pka", await dev_token(http, gateway.base, "pka", "viewer"))
    fan_b = await EventsClient.connect(http, gateway.base, "pkb", await dev_token(http, gateway.base, "pkb", "viewer"))
    partner_view = None
    try:
        before = time.monotonic()
        accepted = await invite_and_accept(ev_a, ev_b, "pkb")
        # every viewer of both rooms gets the other host in slot 1, without re-POSTing
        await asyncio.gather(*(v.wait_slot_frames(1, 1, 10) for v in va + vb))
        joined = max(v.slot_times[1][0] for v in va + vb) - accepted
        print(f"\nslowest viewer's first partner frame after the accept: {joined * 1000:.0f} ms")
        assert joined < 2.0, f"partner reached the last viewer {joined:.2f}s after the accept"
        await asyncio.gather(*(v.wait_slot_frames(1, 30, 10) for v in va + vb))
        await asyncio.gather(*(v.wait_slot_audio(1, 5, 10) for v in va + vb))
        for v in va:
            assert lumas(v.bars[-3:]) == {bucket(LUMA_A)} and lumas(v.slot_bars[1][-3:]) == {bucket(LUMA_B)}
        for v in vb:
            assert lumas(v.bars[-3:]) == {bucket(LUMA_B)} and lumas(v.slot_bars[1][-3:]) == {bucket(LUMA_A)}
        # the standard player kept playing its own host, smoothly, through the PK start
        assert freezes(standard.frames_between(before, time.monotonic())) == []
        assert all(v.pc.connectionState == "connected" for v in va + vb + [standard])

        # the host gets a grant to hear and see its partner directly
        partner = await ev_a.next("pk_partner")
        assert partner["room"] == "pkb" and partner["host"] == "bob"
        partner_view = Viewer(gateway.base, "pkb", partner["token"])
        await partner_view.watch(http)
        await partner_view.wait_frames(10, 10)
        assert lumas(partner_view.bars) == {bucket(LUMA_B)}

        await fan_a.send(type="gift", kind="rose", count=2)  # 2 x 5 points for A
        await fan_b.send(type="gift", kind="heart", count=3)  # 3 x 1 point for B
        await fan_a.send(type="gift", kind="heart", count=1, side="pkb")  # an A viewer backs B
        score = await fan_b.next("pk_score", scores={"pka": 10, "pkb": 4})
        assert score["remaining_s"] > 0
        await ev_b.send(type="pk_end")
        ended = await fan_a.next("pk_ended")
        assert ended["result"] == {"pka": "win", "pkb": "lose"} and ended["winner"] == "pka"
        assert "ended early by bob" in ended["reason"]
        await fan_b.next("pk_ended")
        # back to solo: slot 1 goes quiet, slot 0 keeps playing
        await wait_slot_quiet(va + vb, 1, "partner still forwarded after the end")
        assert all(v.pc.connectionState == "connected" for v in va + vb)
    finally:
        await stop_all(http, host_a, host_b, ev_a, ev_b, fan_a, fan_b, standard, *va, *vb,
                       *([partner_view] if partner_view else []))


async def test_pk_refusals_races_and_timeouts(gateway, http):
    host_a, a = await live_room(gateway, http, "ra", LUMA_A, "ra-host")
    host_b, b = await live_room(gateway, http, "rb", LUMA_B, "rb-host")
    host_c, c = await live_room(gateway, http, "rc", LUMA_GUEST, "rc-host")
    viewer = await EventsClient.connect(http, gateway.base, "ra", await dev_token(http, gateway.base, "ra", "viewer"))
    try:
        await viewer.send(type="pk_invite", room="rb", ref="v")
        assert (await viewer.next("error", ref="v"))["code"] == "not_allowed"
        await a.send(type="pk_invite", room="ra", ref="self")
        assert (await a.next("error", ref="self"))["code"] == "pk_refused"
        await a.send(type="pk_invite", room="nowhere", ref="off")
        assert (await a.next("error", ref="off"))["code"] == "pk_refused"

        # an unanswered invitation is rejected when it times out
        await a.send(type="pk_invite", room="rb")
        await b.next("pk_invitation")
        await c.send(type="pk_invite", room="rb", ref="busy")
        assert (await c.next("error", ref="busy"))["code"] == "pk_busy"
        assert "no answer" in (await a.next("pk_rejected", timeout=5))["reason"]

        # an explicit rejection
        await c.send(type="pk_invite", room="rb")
        invitation = await b.next("pk_invitation", from_room="rc")
        await b.send(type="pk_reject", id=invitation["id"])
        assert "rejected" in (await c.next("pk_rejected"))["reason"]

        # both hosts invite each other at the same moment: exactly one battle
        await asyncio.gather(a.send(type="pk_invite", room="rb"), b.send(type="pk_invite", room="ra"))
        started_a = await a.next("pk_started")
        started_b = await b.next("pk_started")
        assert started_a["id"] == started_b["id"]
        await a.send(type="ping", ref="sync")
        await a.next("pong", ref="sync")
        await b.send(type="ping", ref="sync")
        await b.next("pong", ref="sync")
        assert len(a.of("pk_started")) == 1 and len(b.of("pk_started")) == 1
        # a room in a battle cannot be invited
        await c.send(type="pk_invite", room="ra", ref="taken")
        assert (await c.next("error", ref="taken"))["code"] == "pk_busy"
        await a.send(type="pk_end")
        assert (await b.next("pk_ended"))["result"] == {"ra": "draw", "rb": "draw"}
    finally:
        await stop_all(http, host_a, host_b, host_c, a, b, c, viewer)


async def test_battle_timer_ends_with_a_result(gateway, http):
    host_a, a = await live_room(gateway, http, "ta", LUMA_A, "ta-host")
    host_b, b = await live_room(gateway, http, "tb", LUMA_B, "tb-host")
    fan = await EventsClient.connect(http, gateway.base, "tb", await dev_token(http, gateway.base, "tb", "viewer"))
    try:
        await invite_and_accept(a, b, "tb")
        await fan.send(type="gift", kind="rocket", count=1)
        ended = await a.next("pk_ended", timeout=15)
        assert ended["reason"] == "time is up" and ended["result"] == {"ta": "lose", "tb": "win"}
        assert ended["scores"] == {"ta": 0, "tb": 100}
        ticks = [f for f in a.of("pk_score")]
        assert len(ticks) >= 5 and ticks[-1]["remaining_s"] <= ticks[0]["remaining_s"]
    finally:
        await stop_all(http, host_a, host_b, a, b, fan)


async def test_host_dropping_mid_battle_loses_after_the_grace_period(gateway, http):
    host_a, a = await live_room(gateway, http, "da", LUMA_A, "da-host")
    host_b, b = await live_room(gateway, http, "db", LUMA_B, "db-host")
    vb = await viewers(gateway, http, "db", 1)
    try:
        await invite_and_accept(a, b, "db")
        await drop_host(b, host_a)
        ended = await b.next("pk_ended", timeout=10)
        assert ended["winner"] == "db" and "left" in ended["reason"], ended
        await vb[0].wait_frames(30, 10)  # B's audience keeps its own host
    finally:
        await stop_all(http, host_b, a, b, *vb)


async def whip_status(http, base: str, room: str, token: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """POST a WHIP offer (audio only) and close the offering peer: the status and body."""
    peer = Host(base, room, token)
    peer.pc.addTransceiver("audio", direction="sendonly")
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    status, body, headers = await post_sdp(http, f"{base}/whip/{room}", token, peer.pc.localDescription.sdp)
    await peer.pc.close()
    if status == 201:
        async with http.delete(base + headers["Location"], headers={"Authorization": f"Bearer {token}"}):
            pass
    return status, body


async def drop_host(events: EventsClient, host: Host) -> None:
    """The partner host drops off the network: its peer connection just goes away."""
    await host.pc.close()
    await events.next("layout")  # the partner slot emptied


async def guest_muted(ev: EventsClient, kinds: list[str]) -> None:
    """Until a layout frame says the guest in slot 1 is muted for ``kinds`` (earlier layouts may be queued)."""
    seen = []
    for _ in range(10):
        slots = (await ev.next("layout", timeout=10))["slots"]
        seen.append(slots[1].get("muted") if len(slots) > 1 else None)
        if seen[-1] == kinds:
            return
    raise AssertionError(f"no layout with the guest muted for {kinds}: {seen}")


async def test_guest_on_mic_is_seen_by_every_viewer_and_can_be_ended(gateway, http):
    host, ev = await live_room(gateway, http, "mic", LUMA_A, "mic-host")
    vs = await viewers(gateway, http, "mic", 3)
    guest_token_plain = await dev_token(http, gateway.base, "mic", "viewer", "singer")
    singer = await EventsClient.connect(http, gateway.base, "mic", guest_token_plain)
    guest = None
    monitors: list[Viewer] = []
    try:
        await ev.send(type="guest_invite", identity="nobody", ref="n")
        assert (await ev.next("error", ref="n"))["code"] == "unknown_target"
        await ev.send(type="guest_invite", identity="singer")
        invitation = await singer.next("guest_invitation")
        await singer.send(type="guest_accept", id=invitation["id"])
        token = (await singer.next("guest_token"))["token"]
        await ev.next("guest_accepted")
        guest = Host(gateway.base, "mic", token, luma=LUMA_GUEST)
        await guest.publish(http)
        layout = await ev.next("layout", timeout=10)
        while not any(s["role"] == "guest" and s["live"] for s in layout["slots"]):
            layout = await ev.next("layout", timeout=10)
        assert layout["slots"][1]["identity"] == "singer"
        await asyncio.gather(*(v.wait_slot_frames(1, 20, 10) for v in vs))
        for v in vs:
            assert lumas(v.slot_bars[1][-2:]) == {bucket(LUMA_GUEST)}
        # The host's monitor (the studio plays it): the co-stream slots only, so the guest and never the host's
        # own picture or voice; not one of the audience, which only the room's own viewer sessions are.
        for query, who, code in (("?monitor=costream", "viewer", 403), ("?monitor=all", "host", 400)):
            asker = await dev_token(http, gateway.base, "mic", who, f"monitor-{who}")
            status, body, _ = await post_sdp(http, f"{gateway.base}/whep/mic{query}", asker, vs[0].answer)
            assert status == code, body
        monitor = Viewer(gateway.base, "mic", host.token, query="?monitor=costream")
        monitors.append(monitor)
        await monitor.watch(http)
        await monitor.wait_frames(20, 10)
        assert lumas(monitor.bars[-2:]) == {bucket(LUMA_GUEST)}
        await monitor.wait_slot_audio(0, 5, 10)  # the guest's voice
        async with http.get(f"{gateway.base}/rooms/mic") as response:
            assert (await response.json())["viewers"] == len(vs)
        # While on mic, the guest grant carries guest rights on the room socket too (moderation).
        singer_guest = await EventsClient.connect(http, gateway.base, "mic", token)
        second = await EventsClient.connect(http, gateway.base, "mic",
                                            await dev_token(http, gateway.base, "mic", "viewer", "second"))
        sockets = [singer_guest, second]
        await singer_guest.send(type="mute", identity="second", duration_s=5, ref="m1")
        assert (await ev.next("moderation"))["action"] == "mute"
        # max_guests = 1: inviting a second guest is refused, and a guest token alone puts nobody on mic.
        await ev.send(type="guest_invite", identity="second", ref="full")
        assert (await ev.next("error", ref="full"))["code"] == "guest_slots_full"
        extra = await dev_token(http, gateway.base, "mic", "guest", "second")
        status, body = await whip_status(http, gateway.base, "mic", extra)
        assert status == 403 and "not_on_mic" in body, body
        # The host mutes the guest's voice, then its picture, for everyone: the relay stops carrying each (the
        # guest's encoder goes on sending), the layout says so, and unmuting brings the picture back.
        await ev.send(type="guest_mute", identity="singer", kind="audio")
        await guest_muted(ev, ["audio"])
        await wait_slot_quiet(vs, 1, "guest's muted voice still forwarded", kind="audio")
        await ev.send(type="guest_mute", identity="singer", kind="video")
        await guest_muted(ev, ["audio", "video"])
        await wait_slot_quiet(vs, 1, "guest's muted picture still forwarded")
        await ev.send(type="guest_mute", identity="singer", kind="video", muted=False)
        await ev.send(type="guest_mute", identity="singer", kind="audio", muted=False)
        await guest_muted(ev, [])
        await asyncio.gather(*(v.wait_slot_frames(1, 10, 10) for v in vs))
        heard = [v.slot_audio.get(1, 0) for v in vs]
        await asyncio.gather(*(v.wait_slot_audio(1, n + 5, 10) for v, n in zip(vs, heard, strict=True)))
        await ev.send(type="guest_end", identity="singer")
        await ev.next("layout", timeout=10)
        # The guest's pages are told why its broadcast stopped: a notice on each of its sockets.
        for client in (singer, singer_guest):
            notice = await client.next("session_closed", endpoint="whip")
            assert notice["reason"] == "off mic (mic-host)" and notice["session"], notice
        await wait_slot_quiet(vs, 1, "guest still forwarded off mic")
        # The grant ended with the role: the same guest token neither publishes nor moderates any more.
        status, body = await whip_status(http, gateway.base, "mic", token)
        assert status == 403 and "not_on_mic" in body, body
        await singer_guest.send(type="unmute", identity="second", ref="m2")
        assert (await singer_guest.next("error", ref="m2"))["code"] == "not_allowed"
        for client in sockets:
            await client.close()
    finally:
        await stop_all(http, host, ev, singer, *vs, *monitors, *([guest] if guest else []))


async def test_pk_start_and_end_go_out_as_webhooks(tmp_path, http):
    import json

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from tests.integration.conftest import free_port

    received: list[dict] = []  # type: ignore[type-arg]
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", hook)
    port = free_port()
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    proc = GatewayProcess([], f'[webhooks]\nurls = ["http://127.0.0.1:{port}/hooks"]\n'
                              f'secret = "pk-webhook-secret-value"\nevents = ["pk_started", "pk_ended"]\n', tmp_path)

    async def wait_for(event: str) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + 10
        while not any(e["event"] == event for e in received):
            arrived.clear()
            assert time.monotonic() < deadline, f"no {event} webhook; got {[e['event'] for e in received]}"
            try:
                await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass
        return next(e for e in received if e["event"] == event)

    peers = []
    try:
        host_a, a = await live_room(proc, http, "wha", LUMA_A, "wa")
        host_b, b = await live_room(proc, http, "whb", LUMA_B, "wb")
        peers = [host_a, host_b, a, b]
        await invite_and_accept(a, b, "whb")
        started = await wait_for("pk_started")
        assert [r["name"] for r in started["rooms"]] == ["wha", "whb"]
        await a.send(type="pk_end")
        ended = await wait_for("pk_ended")
        assert ended["pk_id"] == started["pk_id"] and ended["result"] == {"wha": "draw", "whb": "draw"}
    finally:
        await stop_all(http, *peers)
        proc.stop()
        await server.close()
