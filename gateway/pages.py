"""Web pages (static HTML + ES modules) and the public room list they read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from cluster.registry import RegistryUnavailable
from cluster.runtime import CLUSTER
from gateway.config import PagesConfig
from gateway.snapshots import SNAPSHOTS, Snapshots
from relay.core import Relay
from relay.room import Room
from signaling.context import context, room_name
from signaling.errors import HttpError

WEB = Path(__file__).parent / "web"
PAGES = {"/": "index.html", "/broadcast": "broadcast.html", "/watch": "watch.html"}


def _page(name: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB / name, headers={"Cache-Control": "no-cache"})

    return handler


def _room_summary(room: Room, cover: str | None = None) -> dict[str, object]:
    """What the room list shows of a room: read from the room itself, not from a dump, whose traffic counters
    (every subscription's) the list never shows; it is asked for on every visitor's refresh and heartbeat."""
    return {
        "room": room.name,
        "title": room.title or room.name,
        "host": room.host_identity,
        "viewers": room.viewer_count,
        "live": room.live,
        "live_since": room.live_since,
        "pk": room.pk_partner is not None,
        "guests": len(room.guests),
        "category": room.category,
        "tags": list(room.tags),
        "cover": cover,
    }


def _cover_url(snapshots: Snapshots | None, room: str) -> str | None:
    """The room's cover with its version in the query (a new snapshot is a new URL), or None while it has none."""
    version = snapshots.version(room) if snapshots is not None else None
    return None if version is None else f"/rooms/{room}/cover.jpg?v={version}"


def origin_listings(relay: Relay, snapshots: Snapshots | None) -> dict[str, dict[str, object]]:
    """The live rooms this worker is the origin of, as the room list shows them (a cluster's share of it)."""
    return {room.name: _room_summary(room, _cover_url(snapshots, room.name))
            for room in list(relay.rooms) if room.held_here and room.live}


MAX_SEARCH = 64


def _matches(room: dict[str, Any], words: list[str], category: str) -> bool:
    if category and room.get("category") != category:
        return False
    text = " ".join(str(part) for part in (room.get("room"), room.get("title"), room.get("host") or "",
                                           room.get("category"), *room.get("tags", []))).casefold()
    return all(word in text for word in words)


async def _live(request: web.Request) -> list[dict[str, Any]]:
    """Every live room, busiest first: the cluster's (from its listings) or, alone or with Redis away, this
    worker's own."""
    runtime = request.app.get(CLUSTER)
    if runtime is not None:
        try:
            return await runtime.listings.read(runtime.registry.workers)
        except RegistryUnavailable:
            pass  # the rooms this worker holds are better than none
    snapshots = request.app.get(SNAPSHOTS)
    live = sorted((r for r in context(request).rooms if r.live), key=lambda r: -r.viewer_count)
    return [_room_summary(r, _cover_url(snapshots, r.name)) for r in live]


async def live_rooms(request: web.Request) -> web.Response:
    """Rooms live now, busiest first (public: what a visitor of / sees); ``?q=`` words that must all appear in
    the room's name, title, host, category or tags, ``?category=`` one category."""
    q, category = request.query.get("q", ""), request.query.get("category", "")
    if len(q) > MAX_SEARCH or len(category) > MAX_SEARCH:
        raise HttpError(400, "bad_query", f"'q' and 'category' are at most {MAX_SEARCH} characters")
    words = q.casefold().split()
    return web.json_response({"rooms": [r for r in await _live(request) if _matches(r, words, category)]})


async def room_status(request: web.Request) -> web.Response:
    """One room as the room list shows it (public: the player's title and "waiting for host"). In a cluster the
    room may live in another worker or node: its origin's listing says how it is, not this worker's edge copy
    (or nothing) of it."""
    name = room_name(request)
    room = context(request).rooms.get(name)
    runtime = request.app.get(CLUSTER)
    if runtime is not None and (room is None or not room.held_here):
        try:
            listings = await runtime.listings.read(runtime.registry.workers)
            listed = next((entry for entry in listings if entry.get("room") == name), None)
            if listed is not None:
                return web.json_response(listed)
            room = None  # not live anywhere: this worker's copy (an edge's) has nothing more to say
        except RegistryUnavailable:
            pass  # Redis away: this worker's copy, if any, is better than nothing
    if room is None:
        return web.json_response({"room": name, "live": False}, status=404)
    return web.json_response(_room_summary(room, _cover_url(request.app.get(SNAPSHOTS), room.name)))


async def room_cover(request: web.Request) -> web.Response:
    """The room's latest snapshot (public, like the room list); 404 until one was taken."""
    name = room_name(request)
    snapshots = request.app.get(SNAPSHOTS)
    cover = await snapshots.lookup(name) if snapshots is not None else None
    if snapshots is None or cover is None:
        raise HttpError(404, "no_cover", "this room has no cover (yet)")
    etag = f'"{cover.version}"'
    headers = {"Cache-Control": f"max-age={int(snapshots.config.interval_s)}", "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=cover.jpeg, content_type="image/jpeg", headers=headers)


def pages_config(pages: PagesConfig, dev: bool, categories: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """What the pages need to know of this gateway: where they get tokens (docs/tokens.md, ``pages.token_url``),
    and the categories a room may be listed under."""
    body = {"token_url": pages.token_url or None, "dev": dev, "categories": list(categories)}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, headers={"Cache-Control": "no-cache"})

    return handler


async def favicon(request: web.Request) -> web.Response:
    """Browsers ask for it on every page: an empty answer, cached, instead of a 404 in the error counts."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


def add_page_routes(app: web.Application, pages: PagesConfig, dev: bool, categories: tuple[str, ...]) -> None:
    for path, name in PAGES.items():
        app.router.add_get(path, _page(name))
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/rooms", live_rooms)
    app.router.add_get("/rooms/{room}", room_status)
    app.router.add_get("/rooms/{room}/cover.jpg", room_cover)
    app.router.add_get("/pages/config", pages_config(pages, dev, categories))
    app.router.add_static("/static/", WEB, append_version=False)
