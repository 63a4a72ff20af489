"""A slow remote viewer is seen by its own RTCP feedback, paused to audio, and resumed; others never notice.

The viewer's downlink is impaired in its own UDP path (a loss it reports in RTCP receiver reports,
as a browser would); nothing on the gateway's side is slow, so the old signal (the local send buffer)
never trips. A source restart (the host's encoder changes SSRC) is a new epoch every viewer follows.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from aiortc_bridge.client import wrap_ice_delivery
from loadtests.webrtc.viewer import Viewer as LeanViewer
from loadtests.webrtc.viewer import ViewerOptions
from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.peers import Host, freezes
from tests.integration.test_forwarding import assert_smooth, close_all, start_viewers

CONFIG = """
[media]
congestion_pause_ms = 800
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-congestion"))
    yield proc
    proc.stop()


class Downlink:
    """Drops ``lose`` of every 10 media datagrams a peer connection receives while ``impaired``."""

    def __init__(self, pc: RTCPeerConnection, lose: int) -> None:
        self.impaired = True
        self.dropped = 0
        counter = itertools.count()

        def wrap(deliver: Callable[[bytes, int], None]) -> Callable[[bytes, int], None]:
            def receive(data: bytes, component: int) -> None:
                media = len(data) > 1 and 127 < data[0] < 192 and not 191 < data[1] < 224
                if media and self.impaired and next(counter) % 10 < lose:
                    self.dropped += 1
                    return
                deliver(data, component)

            return receive

        wrap_ice_delivery(pc, wrap)


async def video_states(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str) -> dict[str, Any]:
    """identity -> its slot-0 video stream's congestion figures, from the admin API."""
    token = await dev_token(http, gateway.base, "any", "admin")
    async with http.get(f"{gateway.base}/api/rooms/{room}", headers={"Authorization": f"Bearer {token}"}) as r:
        detail = await r.json()
    states = {}
    for participant in detail["participants"]:
        for session in participant["sessions"]:
            for sub in session.get("subscriptions", []):
                if sub["kind"] == "video" and sub["slot"] == 0:
                    states[participant["identity"]] = sub["congestion"]
    return states


async def wait_state(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str, identity: str,
                     wanted: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = (await video_states(gateway, http, room)).get(identity, {})
        if state.get("state") == wanted:
            return state
        assert time.monotonic() < deadline, f"{identity} never became {wanted}: {state}"
        await asyncio.sleep(0.1)


class BrowserLikeViewer(LeanViewer):
    """The load suite's lean viewer: like a browser, it shows a frame only when it can be decoded (after a
    loss, nothing until the next keyframe, which it asks for) and sends RTCP receiver reports."""

    def __init__(self, options: ViewerOptions, http: aiohttp.ClientSession) -> None:
        super().__init__(options, http)
        self.shown: list[float] = []
        self.progress = asyncio.Event()

    def _show(self, at: float, keyframe: bool, ts: int) -> None:
        super()._show(at, keyframe, ts)
        self.shown.append(at)
        self.progress.set()

    async def wait_shown(self, count: int, timeout: float) -> None:
        target = len(self.shown) + count
        deadline = time.monotonic() + timeout
        while len(self.shown) < target:
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                got = len(self.shown) - target + count
                raise AssertionError(f"{got}/{count} frames shown in {timeout} s") from None


async def test_slow_remote_viewer_is_paused_and_recovers_while_others_stay_at_full_rate(gateway, http):
    room = "slowpath"
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", "slow-host"))
    await host.publish(http)
    others = await start_viewers(gateway, http, room, 2)
    token = await dev_token(http, gateway.base, room, "viewer", "far-away")
    slow = BrowserLikeViewer(ViewerOptions(gateway.base, room, token=token), http)
    await slow.start()
    downlink = Downlink(slow.pc, lose=4)  # installed last: it sees each datagram before the viewer does
    try:
        start = time.monotonic()
        congested = await wait_state(gateway, http, room, "far-away", "congested", 15)
        assert congested["loss"] > 0.1 and downlink.dropped > 0, congested
        paused_at = time.monotonic()
        states = await video_states(gateway, http, room)
        assert all(s["state"] == "ok" for identity, s in states.items() if identity != "far-away"), states
        # While paused the slow viewer gets no video at all (not a trickle of undecodable frames).
        await asyncio.sleep(0.4)  # inside the 0.8 s pause: nothing to await but time passing
        assert len([t for t in slow.shown if paused_at + 0.15 < t]) <= 1
        downlink.impaired = False  # the path gets better
        recovered = await wait_state(gateway, http, room, "far-away", "ok", 20)
        assert recovered["pauses"] >= 1
        await slow.wait_shown(45, 10)
        back = time.monotonic()
        await slow.wait_shown(30, 10)
        recent = [t for t in slow.shown if t >= back]
        assert freezes(recent) == [], freezes(recent)
        end = time.monotonic()
        for viewer in others:
            assert_smooth(viewer, start, end)
    finally:
        await slow.stop()
        await close_all(http, host, *others)


async def test_a_host_restarting_its_stream_with_a_new_ssrc_is_followed_by_every_viewer(gateway, http):
    room = "restart"
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", "restart-host"))
    await host.publish(http)
    viewers = await start_viewers(gateway, http, room, 2)
    try:
        await asyncio.gather(*(v.wait_frames(20, 10) for v in viewers))
        sender = host.pc.getTransceivers()[0].sender
        sender._ssrc = (sender._ssrc + 12345) & 0xFFFFFFFF  # the encoder restarts under a new SSRC
        sender._send_keyframe()  # as an encoder starts: with a keyframe
        start = time.monotonic()
        await asyncio.gather(*(v.wait_frames(60, 10) for v in viewers))
        token = await dev_token(http, gateway.base, "any", "admin")
        async with http.get(f"{gateway.base}/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
            stats = next(s for s in (await r.json())["rooms"] if s["room"] == room)
        assert stats["publications"]["video"]["epochs"] == 1, stats
        for viewer in viewers:
            # One short gap at the restart at most, then a steady picture again.
            recent = viewer.frames_between(start + 1.0, time.monotonic())
            assert len(recent) >= 20, len(recent)
    finally:
        await close_all(http, host, *viewers)
