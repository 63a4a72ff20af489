"""Room events over real WebSockets against the real gateway: fan-out, limits, moderation, admin."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host, Viewer, post_sdp

CONFIG = """
[events]
chat_per_second = 2.0
chat_burst = 3
word_filter = ["scam"]
max_errors = 8
max_frame_bytes = 1024
aggregate_interval_s = 0.5
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-events"))
    yield proc
    proc.stop()


async def join(http, gateway, room, role="viewer", identity=None) -> EventsClient:  # type: ignore[no-untyped-def]
    return await EventsClient.connect(http, gateway.base, room,
                                      await dev_token(http, gateway.base, room, role, identity))


async def admin(http, gateway, method: str, path: str, body=None):  # type: ignore[no-untyped-def]
    token = await dev_token(http, gateway.base, "ops", "admin", "root")
    async with http.request(method, gateway.base + path, headers={"Authorization": f"Bearer {token}"},
                            data=json.dumps(body) if body is not None else None) as r:
        return r.status, await r.json()


async def test_chat_and_gifts_reach_everyone_in_the_room_and_nobody_outside(gateway, http):
    a = await join(http, gateway, "fan", identity="ann")
    b = await join(http, gateway, "fan", identity="bob")
    outsider = await join(http, gateway, "elsewhere")
    try:
        await a.send(type="chat", text="hello 👋 everyone")
        await a.send(type="gift", kind="rose", count=3)
        for client in (a, b):
            chat = await client.next("chat")
            assert chat["text"] == "hello 👋 everyone"
            assert chat["from"] == {"identity": "ann", "role": "viewer", "name": "ann"}
            gift = await client.next("gift")
            assert (gift["kind"], gift["count"], gift["from"]["identity"]) == ("rose", 3, "ann")
        await a.send(type="ping", ref="p1")
        await a.next("pong", ref="p1")  # a round trip after the chat: outsider would have it by now
        assert outsider.of("chat") == [] and outsider.of("gift") == []
        late = await join(http, gateway, "fan")
        snapshot = late.of("welcome")[0]["snapshot"]
        assert snapshot["chat"][-1]["text"] == "hello 👋 everyone" and snapshot["gifts"] == {"rose": 3}
        await late.close()
    finally:
        for c in (a, b, outsider):
            await c.close()


async def test_chat_shows_the_display_name_of_the_token(gateway, http):
    async with http.get(f"{gateway.base}/dev/token", params={"room": "names", "role": "viewer",
                                                            "identity": "u-4821", "name": "Ann 🌸"}) as r:
        token = (await r.json())["token"]
    ann = await EventsClient.connect(http, gateway.base, "names", token)
    other = await join(http, gateway, "names", identity="bob")
    try:
        assert ann.of("welcome")[0]["you"]["name"] == "Ann 🌸"
        await ann.send(type="chat", text="hi")
        chat = await other.next("chat")
        assert chat["from"] == {"identity": "u-4821", "role": "viewer", "name": "Ann 🌸"}
    finally:
        await ann.close()
        await other.close()


async def test_chat_flood_is_limited_and_does_not_delay_others(gateway, http):
    storm = await join(http, gateway, "storm", identity="spammer")
    calm = await join(http, gateway, "storm", identity="calm")
    reader = await join(http, gateway, "storm")
    try:
        for i in range(50):
            await storm.send(type="chat", text=f"spam {i}", ref=f"s{i}")
        await calm.send(type="chat", text="a calm question")
        assert (await reader.next("chat", text="a calm question"))["from"]["identity"] == "calm"
        limited = await storm.next("error", code="rate_limited")
        assert limited["ref"].startswith("s")
        await storm.send(type="ping", ref="still-here")
        await storm.next("pong", ref="still-here")  # the flooder keeps its connection
        spam = [f for f in reader.of("chat") if f["text"].startswith("spam")]
        assert 3 <= len(spam) <= 5, f"burst of 3 (+ refill) expected, {len(spam)} got through"
    finally:
        for c in (storm, calm, reader):
            await c.close()


async def test_bad_frames_get_precise_errors_and_keep_the_connection(gateway, http):
    c = await join(http, gateway, "bad")
    try:
        await c.ws.send_str("{not json")
        assert (await c.next("error"))["code"] == "bad_json"
        await c.ws.send_str("[1, 2]")
        assert (await c.next("error"))["code"] == "bad_json"
        await c.send(type="teleport", ref="t")
        assert (await c.next("error", ref="t"))["code"] == "unknown_type"
        await c.send(type="chat", text="x" * 2000, ref="big")
        await c.next("error", code="too_large")  # too large to be parsed, so no ref
        await c.send(type="gift", kind="diamond", count=1, ref="g")
        assert "kind" in (await c.next("error", ref="g"))["message"]
        await c.send(type="chat", text="   ", ref="empty")
        assert (await c.next("error", ref="empty"))["code"] == "bad_message"
        await c.ws.send_bytes(b"\x00\x01")
        assert (await c.next("error"))["code"] == "bad_message"
        await c.send(type="ping", ref="alive")
        await c.next("pong", ref="alive")
    finally:
        await c.close()


async def test_a_lone_surrogate_in_chat_is_refused_and_the_room_keeps_working(gateway, http):
    # json.loads accepts "\ud800", which no UTF-8 socket can carry: it must stop at the sender.
    sender = await join(http, gateway, "surrogate", identity="odd")
    others = [await join(http, gateway, "surrogate", identity=f"fan{i}") for i in range(3)]
    try:
        await sender.ws.send_str('{"type": "chat", "text": "broken \\ud800 text", "ref": "bad"}')
        refused = await sender.next("error", ref="bad")
        assert refused["code"] == "bad_message" and "text" in refused["message"], refused
        await others[0].send(type="chat", text="still talking")
        for client in (sender, *others):
            assert (await client.next("chat"))["text"] == "still talking"
        late = await join(http, gateway, "surrogate", identity="late")  # its welcome carries the history
        assert [m["text"] for m in late.of("welcome")[0]["snapshot"]["chat"]] == ["still talking"]
        await sender.send(type="chat", text="and after")
        for client in (sender, *others, late):
            assert (await client.next("chat"))["text"] == "and after"
        await late.close()
    finally:
        for c in (sender, *others):
            await c.close()
    assert "Traceback" not in gateway.log()


async def test_fields_of_the_wrong_type_are_refused_naming_the_field(gateway, http):
    c = await join(http, gateway, "types", "host", "typed-host")
    try:
        cases = [({"type": "gift", "kind": ["rose"]}, "kind"),
                 ({"type": "gift", "kind": "rose", "count": "2"}, "count"),
                 ({"type": "gift", "kind": "rose", "side": {"room": "x"}}, "side"),
                 ({"type": "chat", "text": {"a": 1}}, "text"), ({"type": "like", "count": [5]}, "count"),
                 ({"type": "mute", "identity": ["x"]}, "identity"), ({"type": "kick", "identity": 7}, "identity"),
                 ({"type": "mute", "identity": "x", "duration_s": "60"}, "duration_s"),
                 ({"type": "pk_invite", "room": ["other"]}, "room"), ({"type": "pk_accept", "id": {}}, "id"),
                 ({"type": "guest_invite", "identity": None}, "identity"),
                 ({"type": "quality", "watch_s": [], "freeze_s": 0}, "watch_s"),
                 ({"type": "quality", "watch_s": 1, "freeze_s": 0, "fps": "30"}, "fps")]
        for i, (frame, field) in enumerate(cases):
            await c.send(**frame, ref=f"t{i}")
            error = await c.next("error", ref=f"t{i}")
            assert error["code"] == "bad_message" and f"'{field}'" in error["message"], (frame, error)
            await c.send(type="ping", ref=f"alive{i}")  # a good frame between: max_errors counts in a row
            await c.next("pong", ref=f"alive{i}")
    finally:
        await c.close()
    assert "Traceback" not in gateway.log()


async def test_deeply_nested_frames_are_refused_before_parsing(gateway, http):
    c = await join(http, gateway, "deep")
    try:
        await c.ws.send_str("[" * 500 + "]" * 500)  # within max_frame_bytes; the JSON decoder would recurse
        assert (await c.next("error"))["code"] == "too_deep"
        await c.send(type="chat", text="hi", extra={"a": [[[["x"]]]]}, ref="nested")  # depth 6 > 4
        await c.next("error", code="too_deep", ref=None)  # refused unparsed: no ref to echo
        await c.send(type="ping", ref="alive")
        await c.next("pong", ref="alive")
    finally:
        await c.close()
    assert "Traceback" not in gateway.log()


async def test_too_many_errors_in_a_row_close_the_socket(gateway, http):
    c = await join(http, gateway, "bad2")
    for _ in range(8):
        await c.ws.send_str("nope")
    assert await c.wait_closed() == 4009


async def test_socket_refusals_before_upgrade(gateway, http):
    ws_base = gateway.base.replace("http", "ws", 1)
    for url, status in ((f"{ws_base}/ws/r1", 401), (f"{ws_base}/ws/r1?token=garbage", 401),
                        (f"{ws_base}/ws/r1?token={await dev_token(http, gateway.base, 'r2', 'viewer')}", 403)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(url)
        assert err.value.status == status


async def test_word_filter_masks_chat(gateway, http):
    c = await join(http, gateway, "clean")
    try:
        await c.send(type="chat", text="this is a SCAM, click")
        assert (await c.next("chat"))["text"] == "this is a ****, click"
    finally:
        await c.close()


async def test_viewer_counts_and_likes_are_aggregated(gateway, http):
    watcher = await join(http, gateway, "agg")
    others = [await join(http, gateway, "agg") for _ in range(8)]
    try:
        for other in others:
            await other.send(type="like", count=5)
        likes = await watcher.next("likes", total=40)
        assert likes["delta"] <= 40
        await watcher.next("viewers", online=9)
        # 8 joins and 8 like messages within one or two aggregation intervals, not 16 events
        assert len(watcher.of("viewers")) <= 3 and len(watcher.of("likes")) <= 2
    finally:
        for c in (watcher, *others):
            await c.close()


async def test_host_live_and_offline_events(gateway, http):
    c = await join(http, gateway, "onair")
    host = Host(gateway.base, "onair", await dev_token(http, gateway.base, "onair", "host", "star"))
    try:
        await host.publish(http)
        assert (await c.next("host", live=True))["host"] == "star"
        await host.stop(http)
        await c.next("host", live=False)
    finally:
        await c.close()


async def test_token_expiry_closes_the_socket(gateway, http):
    # exp is whole seconds: a 1 s token may have only a few milliseconds left when minted, less than a loaded
    # machine takes to open the socket and send the welcome. Three leave at least two.
    token = await dev_token(http, gateway.base, "exp", "viewer", ttl=3)
    c = await EventsClient.connect(http, gateway.base, "exp", token)
    assert await c.wait_closed(timeout=15) == 4001


async def test_moderation_mute_kick_ban(gateway, http):
    room = "mod"
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", "boss"))
    await host.publish(http)
    boss = await join(http, gateway, room, "host", "boss")
    troll_token = await dev_token(http, gateway.base, room, "viewer", "troll")
    troll = await EventsClient.connect(http, gateway.base, room, troll_token)
    troll_viewer = Viewer(gateway.base, room, troll_token)
    await troll_viewer.watch(http)
    fan = await join(http, gateway, room, "viewer", "fan")
    try:
        await fan.send(type="mute", identity="troll", ref="m")
        assert (await fan.next("error", ref="m"))["code"] == "not_allowed"
        await fan.send(type="kick", identity="boss", ref="k")
        assert (await fan.next("error", ref="k"))["code"] == "not_allowed"

        await boss.send(type="mute", identity="troll", duration_s=60)
        assert (await fan.next("moderation", action="mute"))["target"] == "troll"
        await troll.send(type="chat", text="you cannot stop me", ref="c")
        assert (await troll.next("error", ref="c"))["code"] == "muted"

        await boss.send(type="kick", identity="nobody-here", ref="k2")
        assert (await boss.next("error", ref="k2"))["code"] == "unknown_target"

        await boss.send(type="ban", identity="troll", duration_s=600)
        assert await troll.wait_closed() == 4003
        status, detail = await admin(http, gateway, "GET", f"/api/rooms/{room}")
        assert status == 200
        assert "troll" not in [p["identity"] for p in detail["participants"]], detail["participants"]
        # banned: no new socket, no new playback session
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(f"{gateway.base.replace('http', 'ws', 1)}/ws/{room}?token={troll_token}")
        assert err.value.status == 403
        again = Viewer(gateway.base, room, troll_token)
        again.pc.addTransceiver("video", direction="recvonly")
        await again.pc.setLocalDescription(await again.pc.createOffer())
        status_code, body, _ = await post_sdp(http, f"{gateway.base}/whep/{room}", troll_token,
                                              again.pc.localDescription.sdp)
        await again.pc.close()
        assert status_code == 403 and "banned" in body
        # The host's welcome lists the bans in force (its studio's unban list); an unban lifts it for good.
        boss_again = await join(http, gateway, room, "host", "boss")
        bans = boss_again.of("welcome")[0]["snapshot"]["bans"]
        assert [b["identity"] for b in bans] == ["troll"] and bans[0]["until"] > time.time() * 1000, bans
        await boss_again.close()
        await fan.send(type="unban", identity="troll", ref="u0")
        assert (await fan.next("error", ref="u0"))["code"] == "not_allowed"
        await boss.send(type="unban", identity="troll")
        assert (await fan.next("moderation", action="unban"))["target"] == "troll"
        await boss.send(type="unban", identity="troll", ref="u1")
        assert (await boss.next("error", ref="u1"))["code"] == "unknown_target"
        back = await EventsClient.connect(http, gateway.base, room, troll_token)
        assert "bans" not in back.of("welcome")[0]["snapshot"], "a viewer's welcome lists no bans"
        await back.close()
    finally:
        for c in (boss, fan):
            await c.close()
        await asyncio.gather(host.stop(http), troll_viewer.stop(), return_exceptions=True)


async def test_admin_api_lists_details_kicks_and_ends_rooms(gateway, http):
    room = "adm"
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", "hana"))
    await host.publish(http)
    viewer = Viewer(gateway.base, room, await dev_token(http, gateway.base, room, "viewer", "vic"))
    await viewer.watch(http)
    socket = await join(http, gateway, room, "viewer", "vic")
    bystander = await join(http, gateway, room, "viewer", "bea")
    try:
        await asyncio.wait_for(viewer.first_video.wait(), 10)
        status, listing = await admin(http, gateway, "GET", "/api/rooms")
        entry = next(r for r in listing["rooms"] if r["room"] == room)
        assert status == 200 and entry["host"] == "hana" and entry["viewers"] == 1 and entry["online"] == 2
        status, detail = await admin(http, gateway, "GET", f"/api/rooms/{room}")
        vic = next(p for p in detail["participants"] if p["identity"] == "vic")
        assert vic["sockets"] == 1 and vic["sessions"][0]["kind"] == "playback"
        assert (await admin(http, gateway, "POST", f"/api/rooms/{room}/kick", {"identity": "ghost"}))[0] == 404
        assert (await admin(http, gateway, "POST", f"/api/rooms/{room}/kick", {"nope": 1}))[0] == 400
        status, kicked = await admin(http, gateway, "POST", f"/api/rooms/{room}/kick", {"identity": "vic"})
        assert status == 200 and kicked == {"kicked": "vic", "sessions": 1, "sockets": 1}
        assert await socket.wait_closed() == 4003
        status, ended = await admin(http, gateway, "DELETE", f"/api/rooms/{room}")
        assert status == 200 and ended == {"ended": room, "sockets_closed": 1}
        assert await bystander.wait_closed() == 4004 and bystander.close_reason == "ended by an admin"
        assert (await admin(http, gateway, "GET", f"/api/rooms/{room}"))[0] == 404
        token = await dev_token(http, gateway.base, room, "host", "hana")
        async with http.get(gateway.base + "/api/rooms", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 403
    finally:
        await bystander.close()
        await asyncio.gather(host.stop(), viewer.stop(), return_exceptions=True)
