"""A socket that stops reading is cut off (4008) while everyone else keeps receiving."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
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


async def read_to_end(sock: socket.socket, timeout: float) -> bytes:
    """Read ``sock`` until the server closes the TCP connection (EOF); fail if that takes over ``timeout`` s."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    data = bytearray()
    deadline = loop.time() + timeout
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), max(deadline - loop.time(), 0.001))
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open {timeout}s after the client read again "
                                 f"({len(data)} bytes read)") from None
        if not chunk:
            return bytes(data)
        data += chunk


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked, uncompressed server frame; the data must end on a frame boundary."""
    frames, i = [], 0
    while i < len(data):
        opcode, length, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length == 126:
            length, i = struct.unpack_from("!H", data, i)[0], i + 2
        elif length == 127:
            length, i = struct.unpack_from("!Q", data, i)[0], i + 8
        assert i + length <= len(data), f"the stream ends inside a frame ({len(data) - i} of {length} bytes)"
        frames.append((opcode, data[i:i + length]))
        i += length
    return frames


async def test_slow_reader_is_cut_off_while_others_keep_receiving(gateway, http):
    room = "slow"
    stalled = stalled_socket(gateway.port, room, await dev_token(http, gateway.base, room, "viewer"))
    sender = await EventsClient.connect(http, gateway.base, room, await dev_token(http, gateway.base, room, "host"))
    reader = await EventsClient.connect(http, gateway.base, room, await dev_token(http, gateway.base, room, "viewer"))
    try:
        before = (await stats(gateway, http))["events"]
        text = "x" * 900
        total = 6000  # ~5.4 MB: more than the kernel buffers between the gateway and the stalled socket
        expected = [f"{i} {text}" for i in range(total)]
        for line in expected:
            await sender.send(type="chat", text=line)
        await reader.next("chat", timeout=60, text=expected[-1])  # fails with a message if it never comes
        await sender.next("chat", timeout=10, text=expected[-1])  # the host's socket gets the room's chat too
        for name, client in (("reader", reader), ("sender", sender)):
            assert [f["text"] for f in client.of("chat")] == expected, f"the {name} missed or reordered messages"
            assert not client.closed.is_set() and client.ws.close_code is None, f"the {name} was disconnected"
        after = (await stats(gateway, http))["events"]
        # exactly one socket was cut, and it left the room: the two others are still there
        assert after["dropped_slow"] == before["dropped_slow"] + 1, (before, after)
        assert after["sockets"] == before["sockets"] - 1, (before, after)

        # When it reads again, the stalled client finds the chat up to the cut, the 4008 close, then EOF.
        frames = server_frames(await read_to_end(stalled, timeout=10))
        texts = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
        chat = [f["text"] for f in texts if f["type"] == "chat"]
        assert 0 < len(chat) < total and chat == expected[:len(chat)], f"{len(chat)} chat frames, not a prefix"
        opcode, payload = frames[-1]
        assert opcode == 0x8, f"the last frame is not a close frame: opcode {opcode}"
        assert struct.unpack("!H", payload[:2])[0] == 4008 and payload[2:] == b"too slow", payload
    finally:
        stalled.close()
        await sender.close()
        await reader.close()
