"""Viewers are light on the cycle collector (aiortc_bridge/heap.py).

Viewers add no aiortc bandwidth estimator: neither the gateway's send-only session nor a lean load viewer,
whose receivers never see a packet through aiortc, keeps the 1000-object rate counter aiortc gives each
video receiver (objects the cycle collector would walk on every full pass; aiortc_bridge/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from aiortc.rate import RateBucket

from aiortc_bridge import heap
from gateway.app import create_app
from gateway.config import load_config
from loadtests.webrtc.signaling_client import fetch_dev_token
from loadtests.webrtc.viewer import Viewer as LeanViewer
from loadtests.webrtc.viewer import ViewerOptions
from tests.integration.peers import Host


def rate_buckets() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is RateBucket)


async def test_viewers_keep_no_bandwidth_estimator() -> None:
    app = create_app(load_config(None, {"dev": True, "ice.hosts": ["127.0.0.1"]}))
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        host = Host(base, "heap", await fetch_dev_token(http, base, "heap", "host", "heap-host", 600))
        viewers: list[LeanViewer] = []
        try:
            await host.publish(http)
            gc.collect()
            before = rate_buckets()
            assert before >= 1000, "the host's video receiver keeps its estimator (REMB to the host)"
            for _ in range(3):
                viewer = LeanViewer(ViewerOptions(base, "heap"), http)
                viewers.append(viewer)
                await viewer.start()
            await asyncio.gather(*(asyncio.wait_for(v.first_keyframe.wait(), 15) for v in viewers))
            gc.collect()
            added = rate_buckets() - before
            assert added == 0, f"3 viewers (both ends) added {added} rate buckets"
        finally:
            for viewer in viewers:
                await viewer.stop()
            await host.stop(http)


async def test_closed_sessions_leave_little_for_the_collector(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A closed peer is hollowed out (aiortc_bridge/heap.py): reference counting frees it, a session at a time,
    instead of the cycle collector in one long pass. Without that, 3 viewers leave ~2900 objects in cycles."""
    monkeypatch.setattr(heap, "RELEASE_DELAY_S", 0.05)
    app = create_app(load_config(None, {"dev": True, "ice.hosts": ["127.0.0.1"]}))
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        host = Host(base, "heap2", await fetch_dev_token(http, base, "heap2", "host", "heap-host2", 600))
        try:
            await host.publish(http)
            await watch_and_leave(base, http)  # once before: what the first session creates for good
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(3):
                    await watch_and_leave(base, http)
                await wait_all_released()
                gc.collect()
                left = len(gc.garbage)
            finally:
                gc.garbage.clear()
                gc.set_debug(0)
                gc.enable()
            assert left < 3 * 400, f"3 viewers (both ends) left {left} objects to the cycle collector"
        finally:
            await host.stop(http)


async def watch_and_leave(base: str, http: aiohttp.ClientSession) -> None:
    viewer = LeanViewer(ViewerOptions(base, "heap2"), http)
    await viewer.start()
    await asyncio.wait_for(viewer.first_keyframe.wait(), 15)
    await viewer.stop()


async def wait_all_released(timeout: float = 10) -> None:
    """Until every closed peer in this process (the viewers' and the gateway's sessions) is hollowed out."""
    deadline = time.monotonic() + timeout
    while True:
        closed = [o for o in gc.get_objects() if type(o) is RTCPeerConnection and o.connectionState == "closed"]
        pending = [pc for pc in closed if not heap.released(pc)]
        del closed
        if not pending:
            return
        assert time.monotonic() < deadline, f"{len(pending)} closed peers not released in {timeout} s"
        await asyncio.sleep(0.05)
