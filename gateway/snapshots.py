"""Room covers for the room list: a recent snapshot of each live room's stream, as a small JPEG.

Forwarding never decodes (adding a viewer adds no codec work); this is the one decoding the gateway does, and
it is bounded apart from it. Every ``snapshots.interval_s`` one round walks the rooms this worker is the origin
of (an edge's copy is the origin's business) and takes each host video's cached keyframe
(``Publication.last_keyframe``) if it changed since the room's last snapshot. A cover about to be older than
the interval with no new keyframe to take asks the host for one, through its keyframe throttle, and the
round waits a moment for it: browsers send keyframes only when asked, and a long GOP outgrows the cache, so
without asking a cover would stay the stream's first picture. That is one keyframe per room per interval at
most, what a 10 s GOP costs. The decodes run one after another in a single worker thread, so a round costs at
most one core and never blocks the event loop, and each room costs at most one decode per interval however many
watch it.
Covers live in memory, dropped with their room; in a cluster the origin also writes them to a
:class:`CoverStore` (Redis) so that any worker can answer ``GET /rooms/{room}/cover.jpg``.

A later moderation pass can read the same snapshots (:meth:`Snapshots.cover`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aiortc_bridge.snapshot import SNAPSHOT_THREAD, SnapshotError, decode_keyframe
from gateway.config import SnapshotsConfig
from relay.room import Room, Rooms

log = logging.getLogger("cherry.gateway.snapshots")

DECODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
FAILURE_REASONS = ("codec", "too_large", "depayload", "decode", "encode")
STORE_TTL_INTERVALS = 3  # a stored cover outlives its origin by a few rounds at most
REMOTE_MEMORY = 1024  # rooms whose stored cover (or its absence) this worker remembers
MAX_REMOTE_AGE_S = 2.0  # how long a cover read from the store is served before it is read again
KEYFRAME_WAIT_S = 0.5  # how long a round waits for the keyframes it asked for


@dataclass(frozen=True, slots=True)
class Cover:
    room: str
    # Milliseconds since the epoch when it was taken: it only grows, across workers and restarts, so it can name
    # the picture in URLs and ETags.
    version: int
    jpeg: bytes


class CoverStore(Protocol):
    """Where an origin leaves its covers for the other workers (cluster.covers.RedisCovers)."""

    async def put(self, room: str, version: int, jpeg: bytes, ttl_s: float) -> None: ...

    async def touch(self, rooms: list[str], ttl_s: float) -> None:
        """The covers of ``rooms`` are still current (their keyframe did not change): keep them ``ttl_s`` more."""

    async def get(self, room: str) -> tuple[int, bytes] | None: ...

    async def versions(self, rooms: list[str]) -> dict[str, int]:
        """The stored covers' versions of those of ``rooms`` that have one (without the pictures)."""


class SnapshotMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rounds = Counter("cherry_snapshot_rounds", "Snapshot rounds done over this worker's live rooms",
                              registry=registry)
        self.decodes = Counter("cherry_snapshot_decodes", "Keyframes decoded for room covers (at most one per room "
                               "per round, none per viewer)", registry=registry)
        self.failures = Counter("cherry_snapshot_failures", "Cover decodes that gave no picture, by reason",
                                ["reason"], registry=registry)
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)
        self.store_errors = Counter("cherry_snapshot_store_errors", "Covers not written to or read from the "
                                    "cluster store (Redis)", registry=registry)
        self.decode_seconds = Histogram("cherry_snapshot_decode_seconds", "Time one cover decode took in the "
                                        "snapshot thread (depayload, decode, scale, JPEG)", buckets=DECODE_BUCKETS,
                                        registry=registry)
        self.covers = Gauge("cherry_snapshot_covers", "Room covers held by this worker", registry=registry)
        self.keyframe_requests = Counter("cherry_snapshot_keyframe_requests", "Keyframes asked of hosts for a "
                                         "cover due for renewal (at most one per room per round)", registry=registry)


def _timed_decode(mime_type: str, payloads: list[bytes], width: int) -> tuple[bytes, float]:
    started = time.perf_counter()
    jpeg = decode_keyframe(mime_type, payloads, width)
    return jpeg, time.perf_counter() - started


class Snapshots:
    """The covers of this worker's rooms (and those it read from the cluster store), and the rounds that take them."""

    def __init__(self, config: SnapshotsConfig, rooms: Rooms, registry: CollectorRegistry | None = None,
                 store: CoverStore | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self._rooms = rooms
        self._clock = clock
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.metrics = SnapshotMetrics(self.registry)
        self._covers: dict[str, Cover] = {}
        self._taken: dict[str, int] = {}  # room -> number of the keyframe last decoded (or tried) there
        # Covers read from the store (None: it had none), with when they were read; bounded, oldest out first.
        self._remote: OrderedDict[str, tuple[float, Cover | None]] = OrderedDict()
        # In a cluster: the versions of the origins' covers of the rooms this worker is an edge of, read each round.
        self._edge_versions: dict[str, int] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._store_ok = True
        rooms.observers.add(self)

    # -- reading -------------------------------------------------------------------------------------

    def cover(self, room: str) -> Cover | None:
        """The cover this worker knows now (its own, or one recently read from the store)."""
        cover = self._covers.get(room)
        if cover is None:
            remembered = self._remote.get(room)
            if remembered is not None and self._clock() - remembered[0] <= self._remote_age():
                cover = remembered[1]
        return cover

    def version(self, room: str) -> int | None:
        """The version of the room's cover as far as this worker knows (the room list names it), or None."""
        cover = self.cover(room)
        return cover.version if cover is not None else self._edge_versions.get(room)

    async def lookup(self, room: str) -> Cover | None:
        """The room's cover from wherever it is: this worker's, or (in a cluster) its origin's through the store."""
        cover = self._covers.get(room)
        if cover is not None or self.store is None:
            return cover
        remembered = self._remote.get(room)
        now = self._clock()
        if remembered is not None and now - remembered[0] <= self._remote_age():
            return remembered[1]
        try:
            found = await self.store.get(room)
        except Exception as exc:
            self._store_failed(exc)
            return None
        cover = None if found is None else Cover(room, found[0], found[1])
        self._remote[room] = (now, cover)
        self._remote.move_to_end(room)
        while len(self._remote) > REMOTE_MEMORY:
            self._remote.popitem(last=False)
        return cover

    def _remote_age(self) -> float:
        return min(MAX_REMOTE_AGE_S, self.config.interval_s / 2)

    # -- taking ----------------------------------------------------------------------------------------

    async def take_round(self) -> int:
        """One snapshot of each room held here whose keyframe changed, one after another; how many decoded."""
        try:
            return await self._take_round()
        finally:
            self.metrics.rounds.inc()  # counted once done: a round counted has its decodes counted too

    def _ask_for_keyframes(self) -> bool:
        """Ask each host whose cover is due and has no new keyframe to take for one; True if any was asked."""
        due = self._clock() * 1000 - self.config.interval_s * 1000 * 0.9
        asked = False
        for room in self._rooms:
            publication = room.host_video() if room.pulled_from is None else None
            if publication is None:
                continue
            keyframe = publication.last_keyframe()
            if keyframe is not None and self._taken.get(room.name) != keyframe[0]:
                continue  # a new one is there to take
            cover = self._covers.get(room.name)
            if cover is not None and cover.version > due:
                continue
            publication.request_keyframe()
            self.metrics.keyframe_requests.inc()
            asked = True
        return asked

    async def _take_round(self) -> int:
        loop = asyncio.get_running_loop()
        if self._ask_for_keyframes():
            await asyncio.sleep(KEYFRAME_WAIT_S)  # the hosts' answers are a round trip and a frame away
        decoded = 0
        unchanged: list[str] = []
        edges: list[str] = []
        for room in self._rooms:
            if room.pulled_from is not None:
                edges.append(room.name)  # its origin takes the cover: the store tells its version
                continue
            publication = room.host_video()
            keyframe = publication.last_keyframe() if publication is not None else None
            if publication is None or keyframe is None:
                continue
            serial, payloads = keyframe
            if self._taken.get(room.name) == serial:
                if room.name in self._covers:
                    unchanged.append(room.name)
                continue
            self._taken[room.name] = serial  # a keyframe that fails is not tried again
            self.metrics.decodes.inc()
            decoded += 1
            try:
                jpeg, seconds = await loop.run_in_executor(self._pool(), _timed_decode,
                                                           publication.codec.mime_type, payloads, self.config.width)
            except SnapshotError as exc:
                self.metrics.failures.labels(exc.reason).inc()
                log.debug("room=%s no cover from keyframe %d: %s", room.name, serial, exc)
                continue
            self.metrics.decode_seconds.observe(seconds)
            if room.closed:
                continue  # it ended while its keyframe was decoded
            cover = Cover(room.name, max(int(self._clock() * 1000), self._next_version(room.name)), jpeg)
            self._covers[room.name] = cover
            await self._publish(cover)
        self.metrics.covers.set(len(self._covers))
        if self.store is not None:
            await self._refresh_store(unchanged, edges)
        return decoded

    async def _refresh_store(self, unchanged: list[str], edges: list[str]) -> None:
        assert self.store is not None
        try:
            if unchanged:
                await self.store.touch(unchanged, self._ttl())
            self._edge_versions = await self.store.versions(edges) if edges else {}
        except Exception as exc:
            self._store_failed(exc)

    def _next_version(self, room: str) -> int:
        previous = self._covers.get(room)
        return previous.version + 1 if previous is not None else 0

    async def _publish(self, cover: Cover) -> None:
        if self.store is None:
            return
        try:
            await self.store.put(cover.room, cover.version, cover.jpeg, self._ttl())
        except Exception as exc:
            self._store_failed(exc)
            return
        if not self._store_ok:
            log.info("cover store reachable again")
        self._store_ok = True

    def _ttl(self) -> float:
        return STORE_TTL_INTERVALS * self.config.interval_s

    def _store_failed(self, exc: Exception) -> None:
        self.metrics.store_errors.inc()
        if self._store_ok:  # once per outage: the rounds go on, covers stay served from memory here
            log.warning("cover store unavailable: %s", exc)
        self._store_ok = False

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            # One thread: at most one decode at a time, whatever the number of rooms.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=SNAPSHOT_THREAD)
        return self._executor

    # -- relay.ports.RoomObserver ----------------------------------------------------------------------

    def room_closed(self, room: object, reason: str) -> None:
        if isinstance(room, Room):
            self._covers.pop(room.name, None)
            self._taken.pop(room.name, None)
            self._edge_versions.pop(room.name, None)
            self.metrics.covers.set(len(self._covers))

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Rounds until cancelled, each starting at least one interval after the one before."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.take_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end the covers for good
                log.exception("snapshot round failed")
            await asyncio.sleep(max(0.0, self.config.interval_s - (loop.time() - started)))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(self.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.close()


SNAPSHOTS = web.AppKey("snapshots", Snapshots)
