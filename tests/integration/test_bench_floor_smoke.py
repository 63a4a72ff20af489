"""The bench's floor forwarder (bench/floor.py) really forwards: a host's stream reaches two WHEP viewers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench.run import Fleet, server_argv, wait_healthy
from loadtests.webrtc.process import free_port
from loadtests.webrtc.synthetic_host import HostMedia, HostOptions, SyntheticHost
from loadtests.webrtc.viewer import ViewerOptions, ViewerPool

ROOM = "floor-smoke"


@pytest.fixture
async def floor(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    group = Fleet(tmp_path)
    try:
        server = await group.spawn("floor", server_argv("floor", port) + ["--ice-host", "127.0.0.1"])
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(base, server, timeout=30)
        yield base
    finally:
        await group.stop_all()


async def test_the_floor_forwards_the_hosts_stream_to_every_viewer(floor: str) -> None:
    host = SyntheticHost(HostOptions(floor, ROOM), HostMedia.encode(seconds=1.0, bitrate=300_000))
    pool = ViewerPool(ViewerOptions(floor, ROOM, first_frame_timeout=15.0))
    try:
        await host.start()
        joined = await pool.join(2)
        assert joined["ok"] == 2, f"viewers did not get a first keyframe through the floor: {joined}"
        pool.mark()
        # Frames keep arriving after the first keyframe: wait (bounded) until each viewer has shown some.
        async with asyncio.timeout(10):
            while min(v.freezes.window(time.monotonic()).frames for v in pool.viewers) < 10:
                await asyncio.sleep(0.2)
        report = pool.report()
        assert report["audio_packets"] > 0, "no audio forwarded"
        async with aiohttp.ClientSession() as http, http.get(f"{floor}/api/stats") as response:
            stats = await response.json()
        room = next(r for r in stats["rooms"] if r["room"] == ROOM)
        assert room["live"] and room["viewers"] == 2
        assert host.video.keyframe_requests == 0, "the floor sends no RTCP upstream"
    finally:
        await pool.close()
        await host.stop()
