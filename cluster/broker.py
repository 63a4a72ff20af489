"""The cluster's session broker: place each session, open it here or relay it to the worker that holds it.

A session's public reference is ``{session id}~{worker id}``, so PATCH and DELETE on its ``Location``
reach its worker from any worker. While Redis cannot be reached, sessions of rooms this worker already
holds are still opened here; anything that needs the registry gets a 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging

from cluster.internal import InternalClient, WorkerUnreachable, open_on_edge
from cluster.placement import Placement, Target
from cluster.registry import RegistryUnavailable
from relay.errors import CapacityExceeded, UnknownSession
from relay.participant import Grant
from relay.room import Listing
from signaling.broker import LocalBroker, Opened
from signaling.errors import HttpError

log = logging.getLogger("cherry.cluster.broker")

SEPARATOR = "~"


def split_ref(ref: str) -> tuple[str, str | None]:
    session_id, _, worker = ref.partition(SEPARATOR)
    return session_id, worker or None


class ClusterBroker:
    def __init__(self, local: LocalBroker, placement: Placement, client: InternalClient, worker_id: str,
                 retry_after: int) -> None:
        self.local = local
        self.placement = placement
        self.client = client
        self.worker_id = worker_id
        self._retry_after = retry_after
        self.relayed = {"open": 0, "trickle": 0, "end": 0}

    def _unavailable(self, exc: Exception) -> HttpError:
        log.warning("cluster registry unavailable: %s", exc)
        return HttpError(503, "cluster_unavailable", "the cluster's shared state cannot be reached; retry shortly",
                         {"Retry-After": str(self._retry_after)})

    async def _place(self, endpoint: str, grant: Grant, force_edge: bool = False) -> Target:
        room = grant.room
        try:
            if endpoint == "whip":
                return await self.placement.for_ingest(room)
            # A PK partner host's view is checked against the link, which only the room's origin holds.
            edges = grant.scope != "pk"
            return await self.placement.for_playback(room, edges=edges, force_edge=force_edge and edges)
        except RegistryUnavailable as exc:
            local = self.local.relay.room(room)
            if local is not None and (endpoint == "whip" or local.live):
                return Target(self.worker_id, "")  # a room this worker holds keeps taking sessions
            raise self._unavailable(exc) from exc

    async def redirect(self, endpoint: str, grant: Grant) -> str | None:
        """For an encoder that asked for a redirect: the public URL of the node holding (or now given) the
        room's origin, when that is another node that publishes one. The redirected offer is placed again
        there and finds the origin this placement claimed."""
        if endpoint != "whip":
            return None
        target = await self._place(endpoint, grant)
        if target.node_url and target.node_id and target.node_id != self.placement.registry.node_id:
            return target.node_url
        return None

    async def open(self, endpoint: str, grant: Grant, sdp: str, listing: Listing | None = None) -> Opened:
        target = await self._place(endpoint, grant)
        try:
            opened = await self._open_at(target, endpoint, grant, sdp, listing)
        except WorkerUnreachable as exc:
            # The worker died since its last heartbeat: nothing reached it, so place again without it (a room it
            # was the origin of is taken over).
            log.warning("room=%s worker %s unreachable, placing again: %s", grant.room, target.worker_id, exc)
            self.placement.suspect(target.worker_id)
            target = await self._place(endpoint, grant)
            opened = await self._open_at(target, endpoint, grant, sdp, listing)
        except (HttpError, CapacityExceeded) as exc:
            full = isinstance(exc, CapacityExceeded) or (exc.status == 503 and exc.code == "capacity")
            if endpoint != "whep" or target.edge or not full:
                raise
            # The origin's share of the room is full sooner than the registry's last count said: an edge.
            target = await self._place(endpoint, grant, force_edge=True)
            opened = await self._open_at(target, endpoint, grant, sdp, listing)
        return Opened(f"{opened.ref}{SEPARATOR}{target.worker_id}", endpoint, grant.room, opened.answer,
                      opened.etag)

    async def _open_at(self, target: Target, endpoint: str, grant: Grant, sdp: str,
                       listing: Listing | None) -> Opened:
        if target.worker_id == self.worker_id:
            if target.edge:
                return await open_on_edge(self.local, self.client, self.worker_id, grant, sdp, target.origin,
                                          target.origin_url)
            return await self.local.open(endpoint, grant, sdp, listing)
        self.relayed["open"] += 1
        if target.edge:
            return await self.client.open_edge(target.url, grant, sdp, target.origin, target.origin_url)
        return await self.client.open(target.url, endpoint, grant, sdp, listing)

    async def _url(self, worker: str) -> str:
        try:
            url = await self.placement.url_of(worker)
        except RegistryUnavailable as exc:
            raise self._unavailable(exc) from exc
        if url is None:
            raise UnknownSession("no such session (its worker is gone)")
        return url

    async def trickle(self, endpoint: str, room: str, ref: str, grant: Grant, fragment: str,
                      if_match: str | None) -> None:
        session_id, worker = split_ref(ref)
        if worker is None or worker == self.worker_id:
            await self.local.trickle(endpoint, room, session_id, grant, fragment, if_match)
            return
        self.relayed["trickle"] += 1
        await self.client.trickle(await self._url(worker), endpoint, room, session_id, grant, fragment, if_match)

    async def end(self, endpoint: str, room: str, ref: str, grant: Grant) -> None:
        session_id, worker = split_ref(ref)
        if worker is None or worker == self.worker_id:
            await self.local.end(endpoint, room, session_id, grant)
            return
        self.relayed["end"] += 1
        await self.client.end(await self._url(worker), endpoint, room, session_id, grant)
