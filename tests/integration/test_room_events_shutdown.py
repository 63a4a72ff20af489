"""Stopping a gateway closes its room sockets with 1001 at once, not after aiohttp's shutdown timeout."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host

SHUTDOWN_TIMEOUT_S = 5.0  # gateway/cli.py: aiohttp waits this long for open handlers before cleanup


async def test_stopping_the_gateway_closes_every_room_socket_with_1001_promptly(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    proc = GatewayProcess([], None, tmp_path)
    host = None
    try:
        host_token = await dev_token(http, proc.base, "live", "host", "star")
        host = Host(proc.base, "live", host_token)
        await host.publish(http)  # one room with a media session, one with sockets only
        clients = [await EventsClient.connect(http, proc.base, room, await dev_token(http, proc.base, room, role))
                   for room, role in (("live", "viewer"), ("live", "host"), ("quiet", "viewer"), ("quiet", "admin"))]
        stopped = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)  # stops at once (SIGTERM would drain first)
        codes = await asyncio.wait_for(asyncio.gather(*(c.wait_closed(timeout=SHUTDOWN_TIMEOUT_S + 5)
                                                        for c in clients)), SHUTDOWN_TIMEOUT_S + 6)
        elapsed = time.monotonic() - stopped
        assert codes == [1001] * len(clients), codes
        assert all(c.close_reason == "gateway shutting down" for c in clients), [c.close_reason for c in clients]
        assert elapsed < SHUTDOWN_TIMEOUT_S / 2, f"sockets closed {elapsed:.1f}s after the stop signal"
        assert proc.proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.log(), proc.log()
    finally:
        if host is not None:
            await host.pc.close()
        proc.stop()
