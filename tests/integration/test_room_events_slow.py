"""A socket that stops reading is cut off (4008) at the TCP level, while everyone else keeps receiving."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator

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
TCP_STATES = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT",
              9: "LAST_ACK", 11: "CLOSING"}


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


def server_side(server_port: int, client_port: int) -> tuple[str, int] | None:
    """(TCP state, bytes in its send queue) of the gateway's end of one loopback connection; None once gone.

    /proc/net/tcp lists every socket of this network namespace, the gateway's included, even after the
    gateway closed its descriptor (an orphan still holding unsent data)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                return TCP_STATES.get(int(state, 16), state), int(queues.split(":")[0], 16)
    return None


def client_state(sock: socket.socket) -> str:
    """The state of our end, read without reading any data (tcp_info's first byte)."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return TCP_STATES.get(state, str(state))


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    """Poll ``check`` (kernel state has no event to await) until it holds; fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


def complete_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole unmasked server frame; a frame the connection cut short is left out."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, length, start = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        extended = {126: 2, 127: 8}.get(length, 0)
        if start + extended > len(data):
            break
        if extended:
            length, start = int.from_bytes(data[start:start + extended], "big"), start + extended
        if start + length > len(data):
            break
        frames.append((opcode, data[start:start + length]))
        i = start + length
    return frames


def read_all(sock: socket.socket) -> tuple[bytes, str]:
    """What the kernel still holds for ``sock``, and how the stream ended ("EOF" or "RST")."""
    sock.setblocking(False)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return bytes(data), "RST"
        except BlockingIOError:
            raise AssertionError(f"the connection was still open after {len(data)} bytes") from None
        if not chunk:
            return bytes(data), "EOF"
        data += chunk


async def test_slow_reader_is_cut_off_at_once_while_others_keep_receiving(gateway, http):
    room = "slow"
    stalled = stalled_socket(gateway.port, room, await dev_token(http, gateway.base, room, "viewer"))
    stalled_port = stalled.getsockname()[1]
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

        # The stalled client still reads nothing, yet the gateway has let go of the connection: its end is
        # gone from the kernel's table (no descriptor, no queued megabytes) and ours has seen the reset.
        await eventually(lambda: server_side(gateway.port, stalled_port) is None, 5,
                         f"the gateway's end of the cut connection is gone "
                         f"(still {server_side(gateway.port, stalled_port)})")
        await eventually(lambda: client_state(stalled) in ("CLOSE", "CLOSE_WAIT"), 5,
                         "the stalled client's end sees the connection closed")

        # Reading at last, it finds what its own kernel had buffered: a prefix of the room's chat, then the end.
        data, ending = read_all(stalled)
        texts = [json.loads(payload) for opcode, payload in complete_frames(data) if opcode == 0x1]
        chat = [f["text"] for f in texts if f["type"] == "chat"]
        assert 0 < len(chat) < total and chat == expected[:len(chat)], f"{len(chat)} chat frames, not a prefix"
        assert ending in ("RST", "EOF"), ending
    finally:
        stalled.close()
        await sender.close()
        await reader.close()
