"""A room events client for tests: a real WebSocket with helpers to await specific frames."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp


class EventsClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.closed = asyncio.Event()
        self.close_reason: str | None = None  # the reason of the server's close frame, once it came

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base: str, room: str, token: str) -> EventsClient:
        ws = await http.ws_connect(f"{base.replace('http', 'ws', 1)}/ws/{room}?token={token}")
        client = cls(ws)
        await client.next("welcome")
        return client

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(message.data))
                self._arrived.set()
            elif message.type == aiohttp.WSMsgType.CLOSE:
                self.close_reason = message.extra
            elif message.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        self.closed.set()
        self._arrived.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    async def next(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first frame of ``kind`` (matching ``match``) not yet consumed by an earlier call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = getattr(self, "_consumed", set())
        self._consumed = seen
        while True:
            for i, frame in enumerate(self.frames):
                if i not in seen and frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                    seen.add(i)
                    return frame
            if self.closed.is_set():
                raise AssertionError(f"socket closed ({self.ws.close_code}) before a {kind} frame {match}")
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {kind} frame {match} within {timeout}s; got {self.frames[-5:]}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        """Wait (bounded) until ``predicate`` holds, woken by each frame that arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._arrived.clear()
            if predicate():
                return
            if self.closed.is_set():
                raise AssertionError(f"socket closed ({self.ws.close_code}) before {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"not {what} within {timeout}s; last frames: {self.frames[-5:]}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
