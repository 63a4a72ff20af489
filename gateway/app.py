"""aiohttp application factory: wires config, relay and signaling together."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

import aiortc_bridge
from aiortc_bridge.guard import DATAGRAMS, PACKETS
from aiortc_bridge.ice import pin_ice_hosts
from cluster.covers import RedisCovers
from cluster.events_bus import BusSettings, ClusterBus
from cluster.runtime import CLUSTER, ClusterRuntime
from cluster.worker import WorkerSlot
from gateway.config import GatewayConfig, operations_token
from gateway.operations import WEBHOOKS, install_operations, metrics_response
from gateway.pages import add_page_routes, origin_listings
from gateway.security import operations_gate, page_policy, request_id_middleware, security_headers
from gateway.snapshots import SNAPSHOTS, Snapshots
from gateway.startup import offers_loopback
from gateway.webhooks import RoomWebhooks
from relay.core import Relay, RelayConfig
from relay.session import RelayHooks
from relay.stats import DelaySampler
from signaling.admin import add_admin_routes
from signaling.auth import (
    MAX_IDENTITY_LENGTH,
    ROLES,
    ROOM_NAME,
    ROOM_NAME_RULE,
    check_name,
    check_ttl,
    token_service,
)
from signaling.broker import LocalBroker
from signaling.clients import AddressSet
from signaling.context import CONTEXT, IceServer, SignalingContext, authorize, context
from signaling.errors import RETRY_AFTER, HttpError, error_middleware
from signaling.events.bus import RoomBus
from signaling.events.hub import EventHub
from signaling.events.moderation import WordMask
from signaling.events.protocol import CLOSE_SHUTDOWN
from signaling.events.ws import room_socket
from signaling.negotiation import delete_handler, patch_handler
from signaling.ratelimit import RateLimiter
from signaling.whep import post_whep
from signaling.whip import post_whip

log = logging.getLogger("cherry.gateway")
CONFIG = web.AppKey("config", GatewayConfig)
STARTED_AT = web.AppKey("started_at", float)
SLOT = web.AppKey("slot", WorkerSlot)  # which worker of this host this process is


def rtc_configuration(config: GatewayConfig) -> RTCConfiguration:
    # max-bundle: every m-line on one transport. WHIP/WHEP clients bundle, and aiortc's default
    # ("balanced") leaves a second m-line of the same kind on a transport that never starts.
    return RTCConfiguration(iceServers=[
        RTCIceServer(urls=list(s.urls), username=s.username or None, credential=s.credential or None)
        for s in config.ice.servers
    ], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def build_context(config: GatewayConfig, bus: RoomBus | None = None) -> SignalingContext:
    limits = config.limits
    if config.cluster.redis_url:
        # A room's viewers past this on one worker go to edges (cluster.placement): this worker's share of it.
        limits = dataclasses.replace(limits, max_viewers_per_room=config.cluster.worker_viewer_capacity
                                     or limits.viewers_per_room())
    relay = Relay(RelayConfig(config.media, limits, config.rooms, config.costream), rtc_configuration(config),
                  RelayHooks(forwarding_delay=DelaySampler()), edge_linger=config.cluster.edge_linger_s)
    ctx = SignalingContext(
        tokens=token_service(config.auth, config.dev),
        relay=relay,
        broker=LocalBroker(relay),
        offer_limiter=RateLimiter(config.limits.offers_per_second, config.limits.offer_burst),
        ice_servers=tuple(IceServer(tuple(s.urls), s.username, s.credential) for s in config.ice.servers),
        max_body_bytes=config.limits.max_body_bytes,
        categories=config.rooms.categories,
        retry_after=config.limits.retry_after,
        public_url=config.server.public_url,
        dev=config.dev,
        trusted_proxies=AddressSet(config.server.trusted_proxies),
        offer_limit_exempt=AddressSet(config.limits.offer_limit_exempt),
        # The public URL's origin is the gateway's own too (behind a proxy that rewrites Host).
        socket_origins=tuple(o.lower().rstrip("/") for o in (*config.events.allowed_origins,
                                                              _origin_of(config.server.public_url)) if o),
    )
    ctx.hub = EventHub(config.events, config.costream, relay, ctx.moderation, WordMask(config.events.word_filter),
                       ctx.tokens, bus=bus)
    return ctx


def _origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, or empty."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def cors_middleware(origins: Sequence[str]):  # type: ignore[no-untyped-def]
    allow_any = "*" in origins

    @web.middleware
    async def cors(request: web.Request, handler):  # type: ignore[no-untyped-def]
        origin = request.headers.get("Origin")
        allowed = origin is not None and (allow_any or origin in origins)
        if request.method == "OPTIONS" and request.path.startswith(("/whip/", "/whep/")):
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Accept-Post"] = "application/sdp"
            response.headers["Allow"] = "OPTIONS, POST, PATCH, DELETE"
            if allowed:
                response.headers["Access-Control-Allow-Methods"] = "OPTIONS, POST, PATCH, DELETE"
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match"
                response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin  # type: ignore[assignment]
            response.headers["Access-Control-Expose-Headers"] = "Location, Link, ETag, Retry-After, X-Cherry-Worker"
        return response

    return cors


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if context(request).draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ready"})


async def dev_token(request: web.Request) -> web.Response:
    """Dev mode only: mint a token so the pages work without a token service."""
    room = request.query.get("room", "")
    role = request.query.get("role", "viewer")
    if not room:
        raise HttpError(400, "missing_room", "query parameter 'room' is required")
    if not ROOM_NAME.match(room) and not (room == "*" and role == "admin"):
        raise HttpError(400, "bad_room_name", f"room: {ROOM_NAME_RULE} (or * with role=admin)")
    if role not in ROLES:
        raise HttpError(400, "bad_role", f"role must be one of {', '.join(ROLES)}")
    identity = request.query.get("identity") or None
    if identity is not None and len(identity) > MAX_IDENTITY_LENGTH:
        raise HttpError(400, "bad_identity", f"identity must be 1-{MAX_IDENTITY_LENGTH} characters")
    try:
        ttl = int(request.query["ttl"]) if "ttl" in request.query else None
    except ValueError as exc:
        raise HttpError(400, "bad_ttl", "ttl must be a whole number of seconds") from exc
    if ttl is not None:
        try:
            check_ttl(ttl, context(request).tokens.max_ttl)
        except ValueError as exc:
            raise HttpError(400, "bad_ttl", str(exc)) from exc
    name = request.query.get("name", "")
    try:
        check_name(name)
    except ValueError as exc:
        raise HttpError(400, "bad_name", str(exc)) from exc
    ctx = context(request)
    token = ctx.tokens.mint(room, role, identity, ttl, name=name)
    grant = ctx.tokens.verify(token)
    return web.json_response({"token": token, "room": room, "role": role,
                              "identity": grant.identity, "expires_at": grant.expires_at})


async def api_stats(request: web.Request) -> web.Response:
    """Relay figures for operators and the benchmark (admin grant)."""
    authorize(request, "*", "admin")
    ctx = context(request)
    try:
        window = float(request.query["window"]) if "window" in request.query else None
    except ValueError as exc:
        raise HttpError(400, "bad_window", "window must be a number of seconds") from exc
    delay = ctx.relay.hooks.forwarding_delay
    p50, p99 = delay.percentiles(0.5, 0.99, window=window) if delay else (0.0, 0.0)
    dump = ctx.relay.dump()
    rooms = []
    for room in dump.rooms:
        t = room.traffic
        rooms.append({
            "room": room.name,
            "live": room.live,
            "host": room.host,
            "viewers": room.viewers,
            "publications": {p.kind: {"codec": p.codec, "packets_in": p.packets_in, "keyframes_in": p.keyframes_in,
                                      "keyframe_requests": p.keyframe_requests, "duplicates": p.duplicates,
                                      "epochs": p.epochs, "cache_starts": p.cache_starts,
                                      "cache_stale_starts": p.cache_stale_starts, "cache_fallbacks": p.cache_fallbacks,
                                      "cache_empty": p.cache_empty, "cache_bytes": p.cache_bytes,
                                      "cache_age_ms": p.cache_age_ms, "sender_reports": p.sender_reports}
                             for p in room.publications if p.owner == room.host},
            "sink_failures": t.sink_failures,
            "packets_out": sum(t.egress_packets.values()),
            "dropped_congestion": t.dropped.get("congestion", 0),
            "retransmitted": t.retransmitted,
        })
    return web.json_response({
        "uptime_s": time.time() - request.app[STARTED_AT],
        "sessions": sum(dump.sessions.values()),
        "viewers": dump.viewers,
        "forwarding_delay_ms": {"p50": p50 * 1000, "p99": p99 * 1000,
                                "samples": delay.samples(window) if delay else 0},
        "admission": {"refused": dict(ctx.relay.admission.refused),
                      "loop_lag_ms": round(ctx.relay.admission.lag.worst() * 1000, 1)},
        "events": dict(ctx.hub.stats) if ctx.hub else {},
        "media_input_dropped": {"datagrams": dict(DATAGRAMS.counts), "packets": dict(PACKETS.counts)},
        "rooms": rooms,
    })


def worker_header(worker_id: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """``X-Cherry-Worker`` on every response (errors, WebSocket upgrades): which worker answered."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Cherry-Worker"] = worker_id

    return on_prepare


def create_app(config: GatewayConfig, *, slot: WorkerSlot | None = None) -> web.Application:
    aiortc_bridge.install()
    pin_ice_hosts(config.ice.hosts, with_loopback=offers_loopback(config))
    slot = slot or WorkerSlot.of(config.cluster)
    ops_token = operations_token(config.operations)
    app = web.Application(
        middlewares=[request_id_middleware, cors_middleware(config.server.cors_origins), error_middleware,
                     operations_gate(port=config.operations.port and config.operations.port + slot.index,
                                     public_allowed=config.dev or bool(ops_token), token=ops_token)],
        client_max_size=config.limits.max_body_bytes,
    )
    app[CONFIG] = config
    app[SLOT] = slot
    events_bus = None
    if config.cluster.redis_url:
        # Room events across workers (cluster/events_bus.py): the hub decides and delivers through it.
        events_bus = ClusterBus(slot.worker_id, BusSettings.of(config.cluster))
    app[CONTEXT] = build_context(config, events_bus)
    app[RETRY_AFTER] = config.limits.retry_after
    app[STARTED_AT] = time.time()
    app.on_response_prepare.append(worker_header(app[SLOT].worker_id))
    app.on_response_prepare.append(security_headers(page_policy(config.pages.token_url)))
    ops = install_operations(app, config)  # before _lifecycle: webhooks outlive the room shutdown
    snapshots = None
    if config.snapshots.enabled:
        snapshots = app[SNAPSHOTS] = Snapshots(config.snapshots, app[CONTEXT].rooms, ops.registry)
    _pk_webhooks(app)
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    for kind, post in (("whip", post_whip), ("whep", post_whep)):
        r.add_post(f"/{kind}/{{room}}", post)
        r.add_delete(f"/{kind}/{{room}}/{{session}}", delete_handler(kind))
        r.add_patch(f"/{kind}/{{room}}/{{session}}", patch_handler(kind))
        r.add_route("OPTIONS", f"/{kind}/{{room}}", _options)
        r.add_route("OPTIONS", f"/{kind}/{{room}}/{{session}}", _options)
    r.add_get("/api/stats", api_stats)
    r.add_get("/api/cluster", api_cluster)
    if config.metrics.dashboard:
        r.add_get("/dashboard/cluster", dashboard_cluster)
    r.add_get("/ws/{room}", room_socket)
    add_admin_routes(app)
    if config.dev:
        r.add_get("/dev/token", dev_token)
    add_page_routes(app, config.pages, config.dev, config.rooms.categories)
    app.on_shutdown.append(_close_room_sockets)
    if config.cluster.redis_url:
        # Before _lifecycle: at shutdown the rooms close first, then the worker leaves the registry.
        runtime = ClusterRuntime(config.cluster, app[SLOT], app[CONTEXT],
                                 config.limits.process_viewer_capacity)
        runtime.events = events_bus  # room events across workers
        if config.metrics.enabled:
            # Each worker's own series, told apart, on its own address (the shared public port hits any worker).
            ops.label_all({"node": app[SLOT].node_id, "worker": app[SLOT].worker_id})
            runtime.internal.metrics = lambda: metrics_response(ops)
        app[CONTEXT].broker = runtime.broker
        if snapshots is not None:  # the origin's covers, served by any worker
            snapshots.store = RedisCovers(runtime.registry.client)
        runtime.listings_source = lambda: origin_listings(app[CONTEXT].relay, snapshots)
        app[CLUSTER] = runtime
        app.cleanup_ctx.append(runtime.lifetime)
    app.cleanup_ctx.append(_lifecycle)
    if snapshots is not None:  # last in, first out: its rounds end before the rooms close and Redis goes
        app.cleanup_ctx.append(snapshots.lifetime)
    return app


async def api_cluster(request: web.Request) -> web.Response:
    """The cluster's nodes, workers, load and where each room is held (admin); one process: itself."""
    authorize(request, "*", "admin")
    return web.json_response(await cluster_view_of(request.app, urls=True))


async def dashboard_cluster(request: web.Request) -> web.Response:
    """The same for the dashboard, which is as open as /dashboard/data: without internal addresses."""
    return web.json_response(await cluster_view_of(request.app, urls=False), headers={"Cache-Control": "no-store"})


async def cluster_view_of(app: web.Application, urls: bool) -> dict[str, Any]:
    runtime = app.get(CLUSTER)
    if runtime is not None:
        return await runtime.view(urls)
    dump = app[CONTEXT].relay.dump()
    return {"clustered": False, "workers": 1, "available_workers": 0 if app[CONTEXT].draining else 1,
            "viewers": sum(room.viewers for room in dump.rooms), "nodes": [], "rooms": []}


def _pk_webhooks(app: web.Application) -> None:
    """PK battles starting and ending go out as webhooks like the room lifecycle does."""
    emitter, hub = app[WEBHOOKS], app[CONTEXT].hub
    if not emitter.enabled or hub is None:
        return
    hooks = RoomWebhooks(emitter)

    def on_pk(pk_id: str, event: str, rooms: list[str], result: dict[str, str] | None) -> None:
        if event == "started":
            hooks.pk_started(pk_id, rooms)
        else:
            hooks.pk_ended(pk_id, rooms, result=result)

    hub.pk_listeners.append(on_pk)


async def _options(request: web.Request) -> web.Response:
    return web.Response(status=204)  # answered by the CORS middleware


async def _close_room_sockets(app: web.Application) -> None:
    """Room sockets get their 1001 as soon as shutdown begins: aiohttp waits for open handlers (its
    shutdown timeout) before cleanup runs, and a room socket's handler only ends when its socket does."""
    ctx = app[CONTEXT]
    ctx.draining = True
    if ctx.hub is not None:
        closed = ctx.hub.close_all(CLOSE_SHUTDOWN, "gateway shutting down")
        log.info("shutdown: %d room sockets closed", closed)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    log.info("gateway ready (dev=%s, ice hosts=%s)", ctx.dev, app[CONFIG].ice.hosts or "all")
    assert ctx.hub is not None
    ticker = asyncio.ensure_future(ctx.hub.run())
    ctx.relay.start()
    yield
    ctx.draining = True
    ticker.cancel()
    await ctx.relay.close("gateway shutting down")
