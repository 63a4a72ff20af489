"""Operations against a real gateway process: /metrics and /dashboard move with a live stream, SIGTERM
drains, webhooks reach a local receiver signed, logs are JSON with request ids. All on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.webhooks import SIGNATURE_HEADER, verify_signature
from tests.integration.conftest import GatewayProcess, dev_token, free_port
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host, Viewer, post_sdp

T = TypeVar("T")
SECRET = "integration-webhook-secret"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], "[metrics]\nsample_interval_s = 0.5\n", tmp_path_factory.mktemp("gw-ops"))
    yield proc
    proc.stop()


async def metrics(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll an HTTP figure (it has no push channel) until ``probe`` returns something, or fail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last})")


async def wait_exit(proc: GatewayProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"gateway still running {timeout}s after the drain should have ended:\n{proc.log()}")
        await asyncio.sleep(0.1)
    return int(proc.proc.returncode)


async def start_stream(http: aiohttp.ClientSession, base: str, room: str) -> tuple[Host, Viewer]:
    host = Host(base, room, await dev_token(http, base, room, "host", "amy"))
    await host.publish(http)
    viewer = Viewer(base, room, await dev_token(http, base, room, "viewer", "bob"))
    await viewer.watch(http)
    await viewer.wait_frames(20, timeout=20)
    return host, viewer


async def test_metrics_and_dashboard_follow_a_live_stream(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    base = gateway.base
    host, viewer = await start_stream(http, base, "ops1")
    try:
        first = await metrics(http, base)
        assert value(first, "cherry_rooms", state="live") == 1
        assert value(first, "cherry_participants", role="viewer") == 1
        assert value(first, "cherry_sessions", kind="ingest", state="connected") == 1
        assert value(first, "cherry_sessions", kind="playback", state="connected") == 1
        assert value(first, "cherry_join_requests_total", endpoint="whip", code="201") == 1
        assert value(first, "cherry_join_requests_total", endpoint="whep", code="201") == 1
        assert value(first, "cherry_egress_bytes_total", kind="video") > 0
        assert value(first, "cherry_keyframe_wait_seconds_count") == 1
        assert value(first, "cherry_forwarding_delay_seconds_count") > 0
        assert value(first, "cherry_room_viewers", room="ops1") == 1
        assert value(first, "process_resident_memory_bytes") > 0

        await viewer.wait_frames(15, timeout=10)
        second = await metrics(http, base)
        for name in ("cherry_egress_bytes_total", "cherry_egress_packets_total", "cherry_ingest_bytes_total"):
            assert value(second, name, kind="video") > value(first, name, kind="video"), name

        async def dashboard_moving() -> dict[str, Any] | None:
            async with http.get(f"{base}/dashboard/data") as response:
                data = await response.json()
            latest = data["latest"]
            ok = latest and latest["viewers"] == 1 and latest["egress_bps"] > 10_000 and data["rooms"]
            return data if ok else None

        data = await eventually(dashboard_moving, 10, "dashboard showing the stream's bitrate")
        room = data["rooms"][0]
        assert room["room"] == "ops1" and room["host"] == "amy" and room["viewers"] == 1 and room["egress_bps"] > 0
        assert data["latest"]["join_success"] == 1.0
    finally:
        await viewer.stop(http)
    # The viewer's counters stay in the totals after it left.
    after = await metrics(http, base)
    assert value(after, "cherry_participants", role="viewer") == 0
    assert value(after, "cherry_egress_packets_total", kind="video") >= value(second, "cherry_egress_packets_total",
                                                                              kind="video")
    await host.stop(http)


async def test_sigterm_drains_then_exits_when_the_sessions_end(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    proc = GatewayProcess([], "[drain]\ntimeout_s = 60.0\n[limits]\nretry_after = 9\n", tmp_path)
    try:
        base = proc.base
        host, viewer = await start_stream(http, base, "d1")
        events = await EventsClient.connect(http, base, "d1", await dev_token(http, base, "d1", "viewer", "carl"))
        proc.proc.send_signal(signal.SIGTERM)

        draining = await events.next("draining", timeout=10)
        assert draining["retry_after"] == 9 and draining["deadline"] > time.time() * 1000
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        status, body, headers = await post_sdp(http, f"{base}/whep/d1", await dev_token(http, base, "d1", "viewer"),
                                               "v=0\r\n")
        assert status == 503 and headers["Retry-After"] == "9" and '"draining"' in body, (status, body)
        host_token = await dev_token(http, base, "d2", "host")
        status, _, headers = await post_sdp(http, f"{base}/whip/d2", host_token, "v=0\r\n")
        assert status == 503 and headers["Retry-After"] == "9"
        assert value(await metrics(http, base), "cherry_draining") == 1
        # Live sessions keep streaming while the drain waits for them.
        await viewer.wait_frames(10, timeout=10)
        assert proc.proc.poll() is None

        # The host ends its broadcast: nobody can take over here, so the room closes, the viewer's
        # session with it, and with no session left the process exits on its own.
        await host.stop(http)
        assert await wait_exit(proc, timeout=15) == 0
        log = proc.log()
        assert "drain complete" in log and "Traceback" not in log, log
        await viewer.stop()
        await events.ws.close()
    finally:
        proc.stop()


async def test_sigterm_drain_gives_up_after_its_timeout(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    proc = GatewayProcess([], "[drain]\ntimeout_s = 2.0\n", tmp_path)
    try:
        host, viewer = await start_stream(http, proc.base, "d3")
        began = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc, timeout=15) == 0
        took = time.monotonic() - began
        assert 1.5 < took < 12, f"exited after {took:.1f}s with a 2 s drain timeout"
        assert "drain timeout" in proc.log()
        await viewer.stop()
        await host.stop()
    finally:
        proc.stop()


async def test_webhooks_reach_a_local_receiver_signed_and_logs_are_json(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", hook)
    port = free_port()
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    config = f"""
[webhooks]
urls = ["http://127.0.0.1:{port}/hooks"]
secret = "{SECRET}"
[log]
json = true
"""
    proc = GatewayProcess([], config, tmp_path)

    async def events_until(name: str, identity: str | None = None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while True:
            events = sorted((json.loads(body) for _, body in received), key=lambda e: e["seq"])
            if any(e["event"] == name and (identity is None or e.get("participant", {}).get("identity") == identity)
                   for e in events):
                return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name} webhook within 10s; got {[e['event'] for e in events]}")
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), remaining)
            except TimeoutError:
                pass

    try:
        host, viewer = await start_stream(http, proc.base, "hooks1")
        await events_until("participant_joined", "bob")
        await viewer.stop(http)
        await events_until("participant_left", "bob")
        await host.stop(http)
        events = await events_until("participant_left", "amy")
    finally:
        proc.stop()
        await server.close()

    names = [(e["event"], e.get("participant", {}).get("identity")) for e in events]
    assert names[:4] == [("room_started", None), ("participant_joined", "amy"), ("stream_started", None),
                         ("participant_joined", "bob")], names
    assert ("participant_left", "bob") in names and ("stream_ended", None) in names
    assert names.index(("participant_left", "bob")) < names.index(("participant_left", "amy"))
    for headers, body in received:
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body), headers
        assert headers["X-Cherry-Event"] == json.loads(body)["event"]
    joined = next(e for e in events if e["event"] == "participant_joined")
    assert joined["room"]["name"] == "hooks1" and joined["participant"]["role"] == "host"

    lines = [line for line in proc.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    whip = [e for e in entries if "POST /whip/hooks1 -> 201" in e["msg"]]
    assert whip and whip[0]["request"], whip
    tagged = [e for e in entries if e.get("room") == "hooks1" and e.get("session")]
    assert tagged, "session log lines carry room and session tags"
    assert any(e.get("request") == whip[0]["request"] and e is not whip[0] for e in entries), \
        "lines written while handling the WHIP request carry its request id"


async def test_drained_joins_count_apart_and_errors_by_code(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """A planned drain refuses offers with 503 draining: they are "drained", not failed joins, and every
    error shows up by status and code; the per-room drill-down shows the room's sessions without tokens."""
    proc = GatewayProcess([], "[metrics]\nsample_interval_s = 0.5\n[drain]\ntimeout_s = 60.0\n", tmp_path)
    try:
        base = proc.base
        host, viewer = await start_stream(http, base, "drill1")

        async def drilldown_moving() -> dict[str, Any] | None:
            async with http.get(f"{base}/dashboard/room", params={"room": "drill1"}) as response:
                assert response.status == 200, await response.text()
                text = await response.text()
            view = json.loads(text)
            people = {p["identity"]: p for p in view["participants"]}
            ok = "bob" in people and people["bob"]["sessions"] and people["bob"]["sessions"][0]["send_bps"] > 0
            return view if ok else None

        view = await eventually(drilldown_moving, 10, "the drill-down showing the viewer's bitrate")
        people = {p["identity"]: p for p in view["participants"]}
        assert view["room"] == "drill1" and view["host"] == "amy" and view["viewers"] == 1, view
        assert people["amy"]["role"] == "host" and people["amy"]["sessions"][0]["kind"] == "ingest", people
        watching = people["bob"]["sessions"][0]
        assert people["bob"]["role"] == "viewer" and watching["kind"] == "playback", people
        assert watching["state"] == "connected" and watching["codecs"] and watching["streams"] >= 1, watching
        assert {p["kind"] for p in view["publications"]} == {"audio", "video"}, view["publications"]
        text = json.dumps(view)
        assert "token" not in text and "127.0.0.1" not in text and "http" not in text, text
        assert viewer.location and viewer.location.rsplit("/", 1)[-1] not in text, "the drill-down gives a session id"
        async with http.get(f"{base}/dashboard/room", params={"room": "nowhere"}) as response:
            assert response.status == 404

        status, _, _ = await post_sdp(http, f"{base}/whep/drill1", "not-a-token", "v=0\r\n")
        assert status == 401
        admin = await dev_token(http, base, "*", "admin")
        async with http.post(f"{base}/api/drain", headers={"Authorization": f"Bearer {admin}"}) as response:
            assert response.status == 202
        status, body, _ = await post_sdp(http, f"{base}/whep/drill1", await dev_token(http, base, "drill1", "viewer"),
                                         "v=0\r\n")
        assert status == 503 and '"draining"' in body, (status, body)

        samples = await metrics(http, base)
        outcome = {o: value(samples, "cherry_join_outcomes_total", endpoint="whep", outcome=o)
                   for o in ("accepted", "drained", "failed", "refused")}
        assert outcome == {"accepted": 1, "drained": 1, "failed": 0, "refused": 1}, outcome
        assert value(samples, "cherry_http_errors_total", endpoint="whep", status="503", code="draining") == 1
        assert value(samples, "cherry_http_errors_total", endpoint="whep", status="401", code="unauthorized") == 1

        async def dashboard_counts_the_drain() -> dict[str, Any] | None:
            async with http.get(f"{base}/dashboard/data") as response:
                data = await response.json()
            latest = data["latest"]
            return data if latest and latest["joins_drained"] == 1 else None

        data = await eventually(dashboard_counts_the_drain, 10, "the dashboard counting the drained join")
        assert data["latest"]["join_success"] == 1.0, data["latest"]
        errors = {(e["endpoint"], e["status"], e["code"]): e for e in data["errors"]}
        assert errors[("whep", 503, "draining")]["window"] == 1, errors
        assert errors[("whep", 401, "unauthorized")]["total"] == 1, errors
        await viewer.stop(http)
        await host.stop(http)
    finally:
        proc.stop()
