"""A room socket's own policy: its writer survives a bad frame, and how it is cut off.

The WebSocket and its transport are stand-ins that record what the socket did to them; the real
thing is covered by tests/integration/test_room_events*.py against a gateway process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest

from relay.participant import Notice
from relay.room import Room
from signaling.events.client import BURST_FACTOR, SLOW_AFTER_S, Client, close_frame
from signaling.events.stats import new_stats


class FakeWebSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.stall = asyncio.Event()  # set: sending blocks (a client that stopped reading)
        self.sending = asyncio.Event()

    async def send_frame(self, data: bytes, opcode: Any) -> None:
        self.sending.set()
        if self.stall.is_set():
            await asyncio.Event().wait()
        if data.startswith(b"bad"):
            raise ValueError("cannot send this one")
        self.sent.append(data)


class FakeSocketOption:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, bytes]] = []

    def setsockopt(self, level: int, name: int, value: bytes) -> None:
        self.options.append((level, name, value))


@dataclass
class FakeTransport:
    buffered: int = 0
    written: list[bytes] = field(default_factory=list)
    closed: bool = False
    aborted: bool = False
    sock: FakeSocketOption = field(default_factory=FakeSocketOption)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


@dataclass
class FakeRoom:
    name: str = "r"
    guest_grants: set[str] = field(default_factory=set)
    acting_role = Room.acting_role  # the relay's own rule, not a copy of it


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def client(limit: int = 4, role: str = "viewer",
           clock: Clock | None = None) -> tuple[Client, FakeWebSocket, FakeTransport, list[Client]]:
    ws, transport, gone = FakeWebSocket(), FakeTransport(), []
    c = Client(ws, transport, "ann", role, FakeRoom(), limit, new_stats(), gone.append,  # type: ignore[arg-type]
               clock=clock or Clock())
    return c, ws, transport, gone


async def drained(c: Client, ws: FakeWebSocket, count: int) -> None:
    async def wait() -> None:
        while len(ws.sent) < count:
            await asyncio.sleep(0)  # the writer is a task of this loop: let it run

    try:
        await asyncio.wait_for(wait(), 2)
    except TimeoutError:
        raise AssertionError(f"{count} frames expected within 2 s, the writer sent {ws.sent}") from None


async def test_the_writer_drops_a_frame_it_cannot_send_logs_once_and_keeps_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    c, ws, _, gone = client(limit=8)
    c.start()
    with caplog.at_level(logging.ERROR, "cherry.signaling.events"):
        for data in (b"one", b"bad 1", b"two", b"bad 2", b"three"):
            assert c.offer(data)
        await drained(c, ws, 3)
    assert ws.sent == [b"one", b"two", b"three"]
    assert c._stats["writer_errors"] == 2 and not c.closed and gone == []
    assert len([r for r in caplog.records if "could not send" in r.getMessage()]) == 1
    c.stop()


async def test_a_full_queue_cuts_the_socket_off_with_a_reset() -> None:
    clock = Clock()
    c, ws, transport, gone = client(limit=2, clock=clock)
    ws.stall.set()
    c.start()
    assert c.offer(b"one")
    await asyncio.wait_for(ws.sending.wait(), 2)  # the writer is stuck sending it
    transport.buffered = 300_000
    assert c.offer(b"two") and c.offer(b"three")
    assert c.offer(b"four") and not c.closed  # full, but the writer took a frame just now: a burst, maybe
    clock.now += SLOW_AFTER_S + 0.1
    assert not c.offer(b"five")  # full, and nothing taken for that long: the client stopped reading
    assert c.closed and c.close_code == 4008 and gone == [c] and c._stats["dropped_slow"] == 1
    assert transport.aborted and not transport.written, "nothing more is queued behind what it does not read"
    assert transport.sock.options == [(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))]
    assert not c.offer(b"six")


async def test_a_burst_that_fills_the_queue_is_kept_until_it_grows_past_the_burst_cap() -> None:
    """A backlog delivered in one go (nothing else runs meanwhile) fills the queue at once; the writer drains it
    once it runs. Only a burst past BURST_FACTOR times the limit cuts a socket whose writer keeps up."""
    c, ws, _, gone = client(limit=4)
    c.start()
    burst = [f"frame {i}".encode() for i in range(BURST_FACTOR * 4)]
    assert all(c.offer(data) for data in burst) and not c.closed
    await drained(c, ws, len(burst))
    assert ws.sent == burst and gone == []
    assert all(c.offer(b"x") for _ in range(BURST_FACTOR * 4)) and not c.offer(b"one too many")
    assert c.closed and c.close_code == 4008 and c._stats["dropped_slow"] == 1


async def test_a_socket_that_keeps_up_gets_its_close_frame_then_the_connection_closes() -> None:
    c, _, transport, gone = client()
    c.end("kicked", "kicked by boss")
    assert transport.written == [close_frame(4003, "kicked by boss")] and transport.closed and not transport.aborted
    assert transport.sock.options == [] and gone == [c]
    c.cut(1001, "again")  # idempotent
    assert len(transport.written) == 1 and gone == [c]


async def test_a_socket_with_data_still_queued_is_reset_even_when_kicked() -> None:
    c, _, transport, _ = client()
    transport.buffered = 10
    c.end("room_closed", "ended by an admin")
    assert c.close_code == 4004 and transport.aborted and transport.written == []


def test_close_frames_keep_the_reason_within_123_bytes_on_a_character_boundary() -> None:
    frame = close_frame(4003, "kicked by " + "ß" * 100)
    assert frame[0] == 0x88 and frame[1] == len(frame) - 2 <= 125
    assert struct.unpack("!H", frame[2:4])[0] == 4003
    frame[4:].decode("utf-8")  # not cut inside a character


async def test_a_guest_token_acts_as_guest_only_while_on_mic() -> None:
    c, _, _, _ = client(role="guest")
    assert c.role == "viewer" and c.granted_role == "guest"
    c.relay_room.guest_grants.add("ann")
    assert c.role == "guest"


async def test_notices_become_frames() -> None:
    c, ws, _, _ = client()
    c.start()
    c.notify(Notice("session_closed", "off mic (host)", "s1", "whip"))
    await drained(c, ws, 1)
    assert ws.sent == [b'{"type":"session_closed","session":"s1","endpoint":"whip","reason":"off mic (host)"}']
    c.stop()
