"""One worker's part in the cluster: its registry heartbeat, its internal API, its session broker.

Started with the app when ``cluster.redis_url`` is set; without it the gateway is one process in memory
and none of this runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from cluster.admin import ClusterAdmin
from cluster.broker import ClusterBroker
from cluster.config import ClusterConfig
from cluster.events_bus import ClusterBus
from cluster.internal import LABEL, InternalClient, InternalServer
from cluster.listings import ClusterListings, Listings
from cluster.pk_media import PkMedia
from cluster.placement import Placement
from cluster.registry import RedisRegistry, RegistryUnavailable, WorkerLoad, wait_for_redis
from cluster.view import cluster_view
from cluster.worker import WorkerSlot
from relay.room import Room
from signaling.admin import LocalAdmin
from signaling.broker import LocalBroker
from signaling.context import SignalingContext

log = logging.getLogger("cherry.cluster")


class ClusterRuntime:
    def __init__(self, config: ClusterConfig, slot: WorkerSlot, ctx: SignalingContext, capacity: int) -> None:
        self.config = config
        self.slot = slot
        self.ctx = ctx
        self.capacity = capacity
        self.worker_capacity = config.worker_viewer_capacity or capacity
        keys = ctx.tokens.derive_keys(LABEL)
        self.registry = RedisRegistry(config.redis_url, config, slot.worker_id, slot.node_id,
                                      slot.internal_url(config), node_url=config.node_url)
        self.placement = Placement(self.registry, self.worker_capacity, config.stale_after_s)
        self.client = InternalClient(keys[0])
        self.local = LocalBroker(ctx.relay)
        self.broker = ClusterBroker(self.local, self.placement, self.client, slot.worker_id, ctx.retry_after)
        self.pk = PkMedia(ctx.relay, self.placement, self.client, slot.worker_id)
        local_admin = LocalAdmin(ctx)
        self.internal = InternalServer(self.local, keys, ctx.retry_after, self.client, slot.worker_id,
                                       pk=self.pk.apply, admin=local_admin.apply)
        ctx.admin = ClusterAdmin(local_admin, self.registry, self.client)  # the admin API from any worker
        self.registry_ok = True
        # The public room list across the cluster: this worker's live origin rooms as GET /rooms shows them
        # (gateway/pages.py sets the source: the summaries are the pages' shape), published with each heartbeat.
        self.listings = ClusterListings(self.registry.client, slot.worker_id, config.stale_after_s)
        self.listings_source: Callable[[], Listings] = dict
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # Room events across workers (cluster/events_bus.py); gateway/app.py builds it with the hub.
        self.events: ClusterBus | None = None
        ctx.relay.rooms.observers.add(self)

    def rekey(self) -> None:
        """The token secret was reloaded (SIGHUP): sign and verify internal requests with keys derived from it."""
        keys = self.ctx.tokens.derive_keys(LABEL)
        self.client.rekey(keys[0])
        self.internal.rekey(keys)

    async def view(self, urls: bool) -> dict[str, Any]:
        """The cluster's nodes, workers and rooms as their heartbeats say (``cluster.view``)."""
        try:
            workers = await self.registry.workers()
        except RegistryUnavailable as exc:
            return {"clustered": True, "error": f"the registry cannot be read: {exc}", "nodes": [], "rooms": []}
        return cluster_view(workers, time.time(), self.config.stale_after_s, urls=urls)

    # -- relay.ports.RoomObserver ---------------------------------------------------------------------

    def room_closed(self, room: object, reason: str) -> None:
        if isinstance(room, Room):
            asyncio.ensure_future(self.registry.release_origin(room.name))

    # -- heartbeat -------------------------------------------------------------------------------------

    def load(self) -> WorkerLoad:
        relay = self.ctx.relay
        room_viewers = {room.name: room.viewer_count for room in relay.rooms if room.viewers or room.on_mic}
        origins = tuple(room.name for room in relay.rooms if room.held_here)
        return WorkerLoad("draining" if self.ctx.draining else "serving", relay.sessions.forwarding,
                          len(relay.sessions), len(relay.rooms), self.capacity, room_viewers, origins)

    async def follow_origins(self) -> None:
        """An edge whose room moved to another origin (a dead worker, a host reconnecting elsewhere) pipes from
        the new one, keeping its viewers."""
        edges = self.ctx.relay.edges
        served = edges.served()
        if not served:
            return
        workers = {w.worker_id: w for w in await self.registry.available()}
        for name, origin in served.items():
            room = self.ctx.relay.room(name)
            current = await self.registry.origin(name)
            if room is None or current is None or current not in workers or current == self.slot.worker_id:
                continue
            if current == origin and edges.get(name) is not None:
                continue
            log.info("room=%s edge follows the room to its origin %s (was %s)", name, current, origin)
            exchange = self.client.pipe_exchange(workers[current].url, name, self.slot.worker_id)
            try:
                await edges.repoint(room, current, exchange)
            except Exception as exc:  # the next heartbeat tries again
                log.warning("room=%s could not pipe from %s: %s", name, current, exc)

    async def _beat(self) -> None:
        while True:
            try:
                await self.registry.heartbeat(self.load())
                await self.listings.publish(self.listings_source())
                await self.follow_origins()
                if not self.registry_ok:
                    log.warning("cluster registry reachable again")
                self.registry_ok = True
            except RegistryUnavailable as exc:
                if self.registry_ok:
                    log.warning("cluster registry unreachable: %s (sessions here go on)", exc)
                self.registry_ok = False
            except Exception:
                log.exception("cluster heartbeat failed")
            await asyncio.sleep(self.config.heartbeat_interval_s)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        await wait_for_redis(self.registry, 10.0)
        self._runner = web.AppRunner(self.internal.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.internal_host, self.slot.internal_port(self.config),
                           reuse_address=True)
        await site.start()
        await self.registry.heartbeat(self.load())  # known to the cluster before the first request
        self._heartbeat = asyncio.ensure_future(self._beat())
        if self.events is not None:  # room events across workers
            self.events.pk_media = self.pk  # a battle across workers links its media through pipes
            await self.events.start(self.registry)
        log.info("worker %s of node %s in the cluster: internal API %s, viewer capacity %d (%d per room)",
                 self.slot.worker_id, self.slot.node_id, self.slot.internal_url(self.config), self.capacity,
                 self.worker_capacity)

    async def stop(self) -> None:
        if self.events is not None:  # room events across workers: closed rooms hand their events over first
            await self.events.stop()
        await self.pk.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await self.registry.withdraw()
        await self.listings.withdraw()
        await self.client.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.registry.close()

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.stop()


CLUSTER = web.AppKey("cluster", ClusterRuntime)
