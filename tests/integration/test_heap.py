"""Viewers add no aiortc bandwidth estimator: neither the gateway's send-only session nor a lean load viewer,
whose receivers never see a packet through aiortc, keeps the 1000-object rate counter aiortc gives each
video receiver (objects the cycle collector would walk on every full pass; aiortc_bridge/heap.py)."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
from aiohttp.test_utils import TestServer
from aiortc.rate import RateBucket

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
