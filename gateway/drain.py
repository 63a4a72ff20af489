"""Graceful drain: on SIGTERM stop taking work, tell clients, exit when sessions have ended.

1. ``ctx.draining`` goes true: ``/readyz`` answers 503 (the load balancer stops sending traffic),
   new WHIP/WHEP offers and room-event sockets get ``503`` + ``Retry-After``.
2. Every room-event socket gets ``{"type": "draining", "retry_after": s, "deadline": ms}`` so
   pages can move to another instance.
3. Rooms with nobody on mic are closed (no one can start publishing here: WHIP is refused), and so is each
   room whose host leaves while draining; live rooms keep streaming.
4. The process exits once every session has ended, or after ``drain.timeout_s``, whichever is
   first. A second SIGTERM (or SIGINT) exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.config import DrainConfig
from relay.room import Room
from signaling.context import CONTEXT, SignalingContext, authorize

log = logging.getLogger("cherry.gateway.drain")


class Drainer:
    """Drives one drain; :meth:`begin` is idempotent."""

    def __init__(self, ctx: SignalingContext, config: DrainConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.started_at: float | None = None
        self.reason = ""
        self.finished = asyncio.Event()
        self.timed_out = False
        self.on_finished: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        ctx.rooms.observers.add(self)

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    @property
    def deadline(self) -> float | None:
        return None if self.started_at is None else self.started_at + self.config.timeout_s

    def status(self) -> dict[str, Any]:
        return {"draining": self.draining, "reason": self.reason, "started_at": self.started_at,
                "deadline": self.deadline, "sessions": len(self.ctx.relay.sessions),
                "finished": self.finished.is_set(), "timed_out": self.timed_out}

    def begin(self, reason: str) -> asyncio.Task[None]:
        if self._task is None:
            self.started_at = time.time()
            self.reason = reason
            self.ctx.draining = True
            log.warning("draining (%s): refusing new sessions; exit when %d sessions end or in %.0fs",
                        reason, len(self.ctx.relay.sessions), self.config.timeout_s)
            self._task = asyncio.ensure_future(self._run())
        return self._task

    async def _run(self) -> None:
        try:
            await self._announce()
            for room in self.ctx.rooms:
                self._close_if_hostless(room)
            await self._wait_for_sessions()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("drain failed; finishing now")
        self.finished.set()
        if self.on_finished is not None:
            self.on_finished()

    async def _announce(self) -> None:
        hub = self.ctx.hub
        if hub is None:
            return
        deadline = self.deadline or time.time()
        message = {"type": "draining", "retry_after": self.ctx.retry_after, "deadline": int(deadline * 1000)}
        try:
            hub.broadcast_all(message)
        except Exception:
            log.exception("could not tell room-event clients about the drain")

    async def _wait_for_sessions(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        while True:
            sessions = list(self.ctx.relay.sessions)
            if not sessions:
                log.info("drain complete: every session has ended")
                return
            left = deadline - loop.time()
            if left <= 0:
                self.timed_out = True
                log.warning("drain timeout (%.0fs) passed with %d sessions left; exiting anyway",
                            self.config.timeout_s, len(sessions))
                return
            # Each session sets `done` once its peer connection is closed; new ones cannot start.
            waits = [asyncio.ensure_future(s.done.wait()) for s in sessions]
            try:
                await asyncio.wait(waits, timeout=min(left, 5.0), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    # -- relay.ports.RoomObserver: a room whose host leaves while draining closes --------

    def _close_if_hostless(self, room: Room) -> None:
        """Nobody can start publishing here any more: a room with nobody on mic is over."""
        if not room.on_mic and not room.closed:
            room.close("gateway draining")

    def participant_left(self, room: object, participant: object) -> None:
        if self.draining and isinstance(room, Room) and not room.on_mic:
            asyncio.get_running_loop().call_soon(self._close_if_hostless, room)

    def room_opened(self, room: object) -> None:
        pass

    def room_closed(self, room: object, reason: str) -> None:
        pass

    def host_changed(self, room: object, live: bool) -> None:
        pass

    def participant_joined(self, room: object, participant: object) -> None:
        pass


DRAINER = web.AppKey("drainer", Drainer)


def install_drain(app: web.Application, config: DrainConfig) -> Drainer:
    """``GET /api/drain`` (status) and ``POST /api/drain`` (start draining), both admin grant."""
    drainer = Drainer(app[CONTEXT], config)
    app[DRAINER] = drainer

    async def status(request: web.Request) -> web.Response:
        authorize(request, "*", "admin")
        return web.json_response(drainer.status())

    async def start(request: web.Request) -> web.Response:
        authorize(request, "*", "admin")
        drainer.begin("admin request")
        return web.json_response(drainer.status(), status=202)

    app.router.add_get("/api/drain", status)
    app.router.add_post("/api/drain", start)
    return drainer


def _exit_now() -> None:
    raise web.GracefulExit()


def handle_signals(app: web.Application) -> None:
    """For ``cherry-gateway serve``: SIGTERM drains then exits; a second SIGTERM or SIGINT exits now.

    Installed at app startup, after aiohttp's own handlers, which it replaces for SIGTERM.
    """

    async def install(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        drainer = app[DRAINER]

        def finished() -> None:
            loop.call_soon(_exit_now)

        drainer.on_finished = finished

        def on_sigterm() -> None:
            if drainer.draining:
                log.warning("second SIGTERM: exiting now")
                _exit_now()
            drainer.begin("SIGTERM")

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        except NotImplementedError:  # pragma: no cover - no signal handlers on Windows
            pass

    app.on_startup.append(install)
