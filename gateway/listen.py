"""``web.run_app`` for more than one listener: the public port and the operations port of a worker.

aiohttp's ``run_app`` binds one port with one TLS context; the operations listener is plain HTTP on an
internal address. Signals and shutdown behave as ``run_app``'s: SIGINT (and SIGTERM until the drain
handler replaces it at start-up) raises ``GracefulExit``, then the runner shuts the app down.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    reuse_port: bool = False


def run(app: web.Application, listeners: list[Listener], loop: asyncio.AbstractEventLoop,
        shutdown_timeout: float = 5, on_listening: Callable[[], None] | None = None) -> None:
    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout, handle_signals=True)
        await runner.setup()
        try:
            for listener in listeners:
                await web.TCPSite(runner, listener.host, listener.port, ssl_context=listener.ssl_context,
                                  reuse_port=listener.reuse_port).start()
            if on_listening is not None:
                on_listening()
            await loop.create_future()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(task)
        finally:
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in rest:
                t.cancel()
            if rest:
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
