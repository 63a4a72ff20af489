"""One room socket: a relay participant's socket, its bounded send queue, its writer, and how it is cut off.

The relay sees a :class:`Client` as a :class:`relay.participant.RoomSocket`: it asks its role, tells it
about sessions and streams the gateway ended (``notify``), and ends it when it kicks, bans or closes
the room (``end``). Every way a socket ends goes through :meth:`Client.cut`, which closes the TCP
connection at once: a client that stopped reading must not keep a file descriptor and megabytes of
queued frames for as long as it does not read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web

from relay.participant import Notice
from relay.room import Room
from signaling.events.ports import Timer
from signaling.events.protocol import (
    CLOSE_KICKED,
    CLOSE_NORMAL,
    CLOSE_ROOM_ENDED,
    CLOSE_TOO_SLOW,
    Message,
    encode,
)
from signaling.events.stats import EventStats

log = logging.getLogger("cherry.signaling.events")

# Why the relay ends a socket (RoomSocket.end) -> the close code the client sees.
END_CODES = {"kicked": CLOSE_KICKED, "banned": CLOSE_KICKED, "room_closed": CLOSE_ROOM_ENDED}
CONNECTION_LOST = 1006  # recorded only: no close frame can reach a connection that is gone
# A full send queue is a slow client only once its writer has taken nothing for this long: a burst (a
# backlog delivered at once after a Redis outage) fills it faster than any writer can run, yet drains.
SLOW_AFTER_S = 1.0
# Past this many times the queue limit, a socket is cut off even while its writer keeps up (memory).
BURST_FACTOR = 4


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked RFC 6455 close frame; the reason is cut to 123 bytes on a character boundary."""
    text = reason.encode("utf-8", "replace")[:123].decode("utf-8", "ignore").encode("utf-8")
    payload = struct.pack("!H", code) + text
    return bytes((0x88, len(payload))) + payload


class Client:
    """A room socket: ``offer`` queues an encoded frame, its writer task sends them in order."""

    __slots__ = ("ws", "identity", "name", "granted_role", "relay_room", "closed", "close_code", "close_reason",
                 "expiry", "errors", "ref", "_transport", "_queue", "_limit", "_taken_at", "_clock", "_writer",
                 "_stats", "_on_gone", "_writer_failed")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, identity: str,
                 granted_role: str, relay_room: Room, queue_limit: int, stats: EventStats,
                 on_gone: Callable[[Client], None], name: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ws = ws
        self.identity = identity
        self.name = name
        self.granted_role = granted_role
        self.relay_room = relay_room
        self.closed = False
        self.close_code = CLOSE_NORMAL
        self.close_reason = ""
        self.expiry: Timer | None = None
        self.errors = 0  # protocol errors in a row
        self.ref = ""  # this socket among the worker's (the hub numbers them; the cluster bus qualifies it)
        self._transport = transport
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()  # bounded by offer(): limit, time and burst
        self._limit = queue_limit
        self._clock = clock
        self._taken_at = clock()  # the writer's last take, or when frames began waiting for it
        self._writer: asyncio.Task[None] | None = None
        self._stats = stats
        self._on_gone = on_gone
        self._writer_failed = False

    def start(self) -> None:
        self._writer = asyncio.ensure_future(self._write())

    def tag(self) -> str:
        return f"room={self.room} participant={self.identity}"

    # -- relay.participant.RoomSocket ---------------------------------------------------------------

    @property
    def room(self) -> str:
        return self.relay_room.name

    @property
    def role(self) -> str:
        """The role this socket acts with now: a guest token counts as guest only while on mic."""
        return self.relay_room.acting_role(self.identity, self.granted_role)

    def notify(self, notice: Notice) -> None:
        self.send({"type": notice.kind, "session": notice.session_id, "endpoint": notice.endpoint,
                   "reason": notice.reason})

    def end(self, why: str, reason: str) -> None:
        self.cut(END_CODES.get(why, CLOSE_NORMAL), reason)

    # -- sending ------------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        self.offer(encode(message))

    def offer(self, data: bytes) -> bool:
        """Queue one encoded frame. A full queue (``queue_limit`` frames) whose writer has taken nothing for
        ``SLOW_AFTER_S`` means the client stopped reading, and it is cut off; so is a queue past
        ``BURST_FACTOR`` times the limit."""
        if self.closed:
            return False
        queued = self._queue.qsize()
        if queued == 0:
            self._taken_at = self._clock()  # the writer had nothing to take until now
        elif queued >= self._limit and (queued >= BURST_FACTOR * self._limit
                                        or self._clock() - self._taken_at > SLOW_AFTER_S):
            self._stats["dropped_slow"] += 1
            log.info("%s socket too slow (%d frames queued): cutting it off", self.tag(), queued)
            self.cut(CLOSE_TOO_SLOW, "too slow")
            return False
        self._queue.put_nowait(data)
        self._stats["messages_out"] += 1
        return True

    async def _write(self) -> None:
        """Send queued frames in order. One frame that fails is logged and dropped; the loop keeps serving."""
        while True:
            data = await self._queue.get()
            self._taken_at = self._clock()
            try:
                await self.ws.send_frame(data, WSMsgType.TEXT)
            except ConnectionError:
                self.cut(CONNECTION_LOST, "connection lost")
                return
            except Exception:
                self._stats["writer_errors"] += 1
                if not self._writer_failed:  # once per socket: the next bad frame would log the same
                    self._writer_failed = True
                    log.exception("%s could not send a %d-byte frame; dropped it", self.tag(), len(data))

    # -- ending -------------------------------------------------------------------------------------

    def cut(self, code: int, reason: str) -> None:
        """End this socket now (idempotent): close frame if the client keeps up, TCP closed either way."""
        if self.closed:
            return
        self.stop()
        self.close_code, self.close_reason = code, reason
        log.info("%s socket cut off: %d %s", self.tag(), code, reason)
        try:
            self._hang_up(code, reason)
        except Exception:  # whatever the transport does, the socket is gone for the room
            log.exception("%s closing the connection failed", self.tag())
        self._on_gone(self)

    def stop(self) -> None:
        """No more frames: the writer, the queue and the expiry timer go (the socket left, or is cut)."""
        self.closed = True
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._writer = None
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        while not self._queue.empty():  # the frames go now, not when the task is collected
            self._queue.get_nowait()

    def _hang_up(self, code: int, reason: str) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # A client that keeps up has nothing waiting in user space: its close frame goes straight to the
        # kernel, ahead of nothing, and the connection ends with a FIN after it. ws.close() would also wait
        # for the client's answer; a cut socket is not waited for.
        behind = code == CLOSE_TOO_SLOW or transport.get_write_buffer_size() > 0
        if not behind:
            transport.write(close_frame(code, reason))
            behind = transport.get_write_buffer_size() > 0
        if not behind:
            transport.close()
            return
        # It is not reading: anything queued for it (here or in the kernel) would wait forever. Reset the
        # connection, which frees the descriptor and both buffers now.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # already gone
        transport.abort()
