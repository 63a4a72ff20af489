"""The instrumented test gateway plus GET /test/keyframe-cache/{room}: the room's video publications'
keyframe cache counters (their dumps), which /api/stats does not carry."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from tests.integration import instrumented_gateway


async def keyframe_cache(request: web.Request) -> web.Response:
    from signaling.context import context

    room = context(request).rooms.get(request.match_info["room"])
    if room is None:
        raise web.HTTPNotFound(text="no such room")
    host = room.publications.get("video")
    return web.json_response({
        "host": dataclasses.asdict(host.dump()) if host is not None else None,
        "viewers": [{"from_cache": s.stats.from_cache, "sent": s.stats.packets_sent}
                    for viewer in room.viewers.values() for s in viewer.subscriptions if s.kind == "video"],
    })


def main() -> int:
    import gateway.app

    original_create_app = gateway.app.create_app

    def create_app(config: Any, **kwargs: Any) -> web.Application:
        app = original_create_app(config, **kwargs)
        app.router.add_get("/test/keyframe-cache/{room}", keyframe_cache)
        return app

    gateway.app.create_app = create_app
    return instrumented_gateway.main()


if __name__ == "__main__":
    raise SystemExit(main())
