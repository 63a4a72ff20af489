"""PK media between rooms whose origins are different workers (of one node or of two).

A PK link puts each room's partner host in slot 1 of the other room's layout. In one process that is
``Room.link_pk``. Across workers, each origin pulls its partner room over a pipe, the way an edge does
(a mirror room on that worker, see ``relay.pipe``), and links its own room with the mirror. The edges of
either room then get the partner through their own pipe, as one more pulled slot: nothing is
renegotiated anywhere.

The battle's coordinator (the worker that decides the battle) calls :meth:`PkMedia.link` and
:meth:`PkMedia.unlink` for both rooms; the part for a room held elsewhere goes to that room's origin over
the internal API (``/internal/pk``), where :meth:`PkMedia.apply` does it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from cluster.internal import InternalClient
from cluster.placement import Placement
from relay.core import Relay
from relay.errors import RoomNotLive

log = logging.getLogger("cherry.cluster.pk")


@dataclass(frozen=True, slots=True)
class PkSide:
    """One room of a battle as the coordinator knows it."""

    room: str
    host: str | None  # its host's identity (the partner's PK grant names it)


class PkMedia:
    def __init__(self, relay: Relay, placement: Placement, client: InternalClient, worker_id: str) -> None:
        self._relay = relay
        self._placement = placement
        self._client = client
        self._worker_id = worker_id
        self._tasks: set[asyncio.Task[None]] = set()
        # Links and unlinks run one at a time, in the order the battles asked: a battle ended and a new one
        # started at once must not have its link overtaken by the old unlink.
        self._order = asyncio.Lock()

    def start_link(self, a: PkSide, b: PkSide) -> None:
        """:meth:`link` in the background (the battle's frames do not wait for pipes); a failure is logged."""
        self._background(self.link(a, b), f"PK media link of {a.room}/{b.room}")

    def start_unlink(self, a: str, b: str) -> None:
        self._background(self.unlink(a, b), f"PK media unlink of {a}/{b}")

    def _background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        async def in_order() -> None:
            async with self._order:
                await work
        task = asyncio.ensure_future(in_order())
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.warning("%s failed: both rooms stay solo on screen (%s)", what, exc)
        task.add_done_callback(done)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _origin(self, room: str) -> tuple[str, str]:
        worker = await self._placement.registry.origin(room)
        url = await self._placement.url_of(worker) if worker is not None else None
        if worker is None or url is None:
            raise RoomNotLive(f"room {room!r} has no origin in the cluster")
        return worker, url

    async def link(self, a: PkSide, b: PkSide) -> None:
        """Link both rooms' media, each at its origin; on failure neither stays linked."""
        (origin_a, url_a), (origin_b, url_b) = await asyncio.gather(self._origin(a.room), self._origin(b.room))
        sides = ((a, origin_a, url_a, b, origin_b, url_b), (b, origin_b, url_b, a, origin_a, url_a))
        calls = [(origin, url, {"action": "link", "room": side.room, "partner": partner.room,
                                "partner_host": partner.host, "partner_origin": partner_origin,
                                "partner_url": partner_url})
                 for side, origin, url, partner, partner_origin, partner_url in sides]
        if origin_a == origin_b:
            del calls[1:]  # one origin holding both rooms links them in one step
        try:
            await asyncio.gather(*(self._at(*call) for call in calls))
        except Exception:
            await self.unlink(a.room, b.room)
            raise

    async def unlink(self, a: str, b: str) -> None:
        """End both rooms' links; a room whose origin is gone has nothing left to unlink."""
        calls = []
        for room in (a, b):
            try:
                origin, url = await self._origin(room)
            except RoomNotLive:
                continue
            calls.append(self._at(origin, url, {"action": "unlink", "room": room}))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("PK unlink of %s/%s incomplete: %s", a, b, result)

    async def _at(self, worker: str, url: str, payload: dict[str, str | None]) -> None:
        if worker == self._worker_id:
            await self.apply(payload)
        else:
            await self._client.pk(url, payload)

    async def apply(self, payload: dict[str, str | None]) -> None:
        """Do one side's part on this worker, the room's origin (``payload`` validated by the caller)."""
        room = str(payload["room"])
        if payload["action"] == "unlink":
            self._relay.unlink_pk(room)
            return
        partner, origin = str(payload["partner"]), str(payload["partner_origin"])
        if origin == self._worker_id:
            self._link_local(room, partner)
            return
        exchange = self._client.pipe_exchange(str(payload["partner_url"]), partner, self._worker_id)
        await self._relay.link_pk_remote(room, partner, origin, payload.get("partner_host"), exchange)
        log.info("room=%s PK media linked with room %s pulled from %s", room, partner, origin)

    def _link_local(self, room: str, partner: str) -> None:
        here, there = self._relay.rooms.get(room), self._relay.rooms.get(partner)
        if here is None or there is None or not here.live or not there.live:
            raise RoomNotLive(f"rooms {room!r} and {partner!r} are not both live here")
        if here.pk_partner is not there:
            here.link_pk(there)
