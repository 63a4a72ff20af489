"""Which worker holds a new session: the room's origin for its host and guests, origin or edge for viewers.

* A room's origin is the worker that holds its host (and guests): the one already recorded, while it is
  available; otherwise the least-loaded available worker, claimed under the registry's lock (an origin
  whose worker stopped heartbeating is taken over only from that worker).
* A viewer goes to the origin while the room has fewer than ``worker_viewer_capacity`` viewers there;
  after that to the least-loaded edge already carrying the room that still has room (sticky), and only
  when those are full to a new edge: the least-loaded available worker not yet carrying the room.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster.registry import RedisRegistry, WorkerInfo
from relay.errors import CapacityExceeded, RoomNotLive


@dataclass(frozen=True, slots=True)
class Target:
    worker_id: str
    url: str
    edge: bool = False  # the worker serves the room's viewers from a pipe to the origin
    origin: str = ""  # the origin worker's id (for an edge: where it pulls from)
    origin_url: str = ""
    node_id: str = ""
    node_url: str = ""  # its node's public base URL ("" if not configured)


class Placement:
    def __init__(self, registry: RedisRegistry, worker_capacity: int, stale_after: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.worker_capacity = worker_capacity
        self._stale_after = stale_after
        self._clock = clock
        self._suspects: dict[str, float] = {}  # worker id -> until when this worker skips it

    def suspect(self, worker_id: str) -> None:
        """A worker this one could not connect to: skipped here until its heartbeat would have gone stale anyway,
        so a session placed in the seconds after a worker died goes to a live one."""
        self._suspects[worker_id] = self._clock() + self._stale_after

    def _is_suspect(self, worker_id: str, now: float) -> bool:
        until = self._suspects.get(worker_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._suspects[worker_id]
        return False

    def _available(self, workers: list[WorkerInfo]) -> list[WorkerInfo]:
        now = self._clock()
        return [w for w in workers if w.available(now, self._stale_after) and not self._is_suspect(w.worker_id, now)]

    def _least_loaded(self, candidates: list[WorkerInfo]) -> WorkerInfo:
        me = self.registry.worker_id
        # Ties go to this worker: one hop fewer for the request, and its own load is the freshest.
        return min(candidates, key=lambda w: (w.load, w.worker_id != me, w.worker_id))

    async def url_of(self, worker_id: str) -> str | None:
        for worker in await self.registry.workers():
            if worker.worker_id == worker_id:
                return worker.url
        return None

    async def for_ingest(self, room: str) -> Target:
        workers = await self.registry.workers()
        by_id = {w.worker_id: w for w in workers}
        available = self._available(workers)
        owner = await self.registry.origin(room)
        if owner is not None and owner in {w.worker_id for w in available}:
            return Target(owner, by_id[owner].url, node_id=by_id[owner].node_id, node_url=by_id[owner].node_url)
        if not available:
            raise CapacityExceeded("no worker of the cluster is available")
        candidate = self._least_loaded(available)
        winner = await self.registry.claim_origin(room, candidate.worker_id, stale_owner=owner)
        worker = by_id.get(winner) or candidate
        return Target(worker.worker_id, worker.url, node_id=worker.node_id, node_url=worker.node_url)

    async def for_playback(self, room: str, edges: bool, force_edge: bool = False) -> Target:
        workers = await self.registry.workers()
        by_id = {w.worker_id: w for w in workers}
        available = {w.worker_id: w for w in self._available(workers)}
        owner = await self.registry.origin(room)
        now = self._clock()
        if owner is None or owner not in by_id or not by_id[owner].fresh(now, self._stale_after * 2) \
                or self._is_suspect(owner, now):
            raise RoomNotLive(f"room {room!r} has no live host")
        origin = by_id[owner]
        viewers = await self.registry.room_viewers(room)
        if origin.state != "serving" and edges:
            # A draining origin takes no new viewer, but its room plays on until its host moves: new viewers
            # go to edges, which pull from it (a pipe is not a new session of the room).
            force_edge = True
        elif origin.state != "serving":
            raise RoomNotLive(f"room {room!r} is ending here: its worker is draining")
        if not edges or (not force_edge and viewers.get(owner, 0) < self.worker_capacity):
            return Target(owner, origin.url, origin=owner, origin_url=origin.url)
        carrying = [available[w] for w, n in viewers.items()
                    if w != owner and w in available and n < self.worker_capacity]
        if carrying:
            edge = self._least_loaded(carrying)
        else:
            fresh = [w for w in available.values() if w.worker_id != owner and w.worker_id not in viewers]
            if not fresh:
                raise CapacityExceeded(f"room {room!r} is full: every worker of the cluster carries it")
            edge = self._least_loaded(fresh)
        return Target(edge.worker_id, edge.url, edge=True, origin=owner, origin_url=origin.url)
