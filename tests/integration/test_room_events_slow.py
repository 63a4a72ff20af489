"""A socket that stops reading is cut off (4008) while everyone else keeps receiving."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Iterator

import pytest

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient
from tests.integration.test_forwarding import stats

CONFIG = """
[events]
chat_per_second = 100000.0
chat_burst = 100000
max_chat_length = 1000
send_queue_limit = 64
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-slow"))
    yield proc
    proc.stop()


def stalled_socket(port: int, room: str, token: str) -> socket.socket:
    """Completes the WebSocket handshake, then never reads: a client on a dead-slow link."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/{room}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_slow_reader_is_cut_off_while_others_keep_receiving(gateway, http):
    room = "slow"
    stalled = stalled_socket(gateway.port, room, await dev_token(http, gateway.base, room, "viewer"))
    sender = await EventsClient.connect(http, gateway.base, room, await dev_token(http, gateway.base, room, "host"))
    reader = await EventsClient.connect(http, gateway.base, room, await dev_token(http, gateway.base, room, "viewer"))
    try:
        text = "x" * 900
        total = 6000  # ~5.4 MB: more than the kernel buffers between the gateway and the stalled socket
        for i in range(total):
            await sender.send(type="chat", text=f"{i} {text}")
        last = await reader.next("chat", timeout=60, text=f"{total - 1} {text}")
        assert last is not None
        assert len(reader.of("chat")) == total, "the reading client missed messages"
        events = (await stats(gateway, http))["events"]
        assert events["dropped_slow"] >= 1, events
        assert reader.ws.close_code is None and sender.ws.close_code is None
    finally:
        stalled.close()
        await sender.close()
        await reader.close()


_ = asyncio
