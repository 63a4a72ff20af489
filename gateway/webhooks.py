"""Webhooks: room and participant lifecycle events POSTed to configured URLs, signed and retried.

:meth:`WebhookEmitter.emit` is synchronous and never waits: it puts the event on each receiver's
bounded queue (dropping, and counting, when that queue is full), so the relay can call it from room
callbacks on the media path. Background workers (started in the app's ``cleanup_ctx``) encode and
POST; each receiver has its own queue and workers, so a dead receiver never delays a healthy one.

Every request carries::

    Content-Type: application/json
    X-Cherry-Event: room_started
    X-Cherry-Delivery: evt_...        (the same on every retry of one event: deduplicate on it)
    X-Cherry-Attempt: 1
    X-Cherry-Signature: t=1700000000,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

Receivers check the signature with :func:`verify_signature` (or the same three lines in any
language) and should reject a ``t`` far from their clock. Events carry ``seq`` (per process,
increasing) and ``created_at`` so a receiver can order deliveries that retries reordered.

A PK link reports itself with one call each way, e.g.
``emitter.emit("pk_started", {"rooms": [room_info(a), room_info(b)], "pk_id": link.id})``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import WEBHOOK_EVENTS, WebhooksConfig
from relay.ports import Member
from relay.room import Room, Rooms

log = logging.getLogger("cherry.gateway.webhooks")

SIGNATURE_HEADER = "X-Cherry-Signature"
USER_AGENT = "cherry-gateway-webhooks/1"
# Statuses worth retrying: timeouts, rate limits and server-side failures. Other 4xx are final.
RETRY_STATUSES = frozenset({408, 425, 429})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Cherry-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = 300.0,
                     now: float | None = None) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and its timestamp is within tolerance."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    seq: int
    event: str
    created_at: float
    data: dict[str, Any]

    def body(self) -> bytes:
        return json.dumps({"id": self.id, "seq": self.seq, "event": self.event,
                           "created_at": self.created_at, **self.data}, separators=(",", ":")).encode()


class WebhookEmitter:
    """Queues events per receiver and delivers them from background tasks."""

    def __init__(self, config: WebhooksConfig, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.config = config
        self.enabled_events = frozenset(config.events) if config.urls else frozenset()
        self.stats = {"emitted": 0, "delivered": 0, "failed": 0, "dropped": 0, "retries": 0}
        self._clock = clock
        self._sleep = sleep
        self._seq = itertools.count(1)
        self._queues: dict[str, asyncio.Queue[WebhookEvent]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._drop_warned = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.enabled_events)

    def wants(self, event: str) -> bool:
        return event in self.enabled_events

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for every receiver; never blocks, never raises for a full queue."""
        if event not in WEBHOOK_EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        if event not in self.enabled_events:
            return
        item = WebhookEvent(f"evt_{secrets.token_hex(12)}", next(self._seq), event, self._clock(), data)
        self.stats["emitted"] += 1
        for url in self.config.urls:
            queue = self._queues.get(url)
            if queue is None:  # not started (yet): keep it until the workers run
                queue = self._queues[url] = asyncio.Queue(self.config.queue_size)
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.stats["dropped"] += 1
                now = time.monotonic()
                if now - self._drop_warned > 10:
                    self._drop_warned = now
                    log.warning("webhook queue for %s is full (%d events): dropping %s events",
                                url, self.config.queue_size, event)

    # -- delivery ----------------------------------------------------------------

    async def start(self) -> None:
        if not self.config.urls or self._workers:
            return
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            headers={"User-Agent": USER_AGENT})
        for url in self.config.urls:
            queue = self._queues.setdefault(url, asyncio.Queue(self.config.queue_size))
            for _ in range(self.config.concurrency):
                self._workers.append(asyncio.ensure_future(self._work(url, queue)))
        log.info("webhooks on: %d receiver(s), events %s", len(self.config.urls),
                 ", ".join(sorted(self.enabled_events)))

    async def stop(self, flush_timeout: float = 0.0) -> None:
        """Give queued events up to ``flush_timeout`` seconds, then stop the workers."""
        if flush_timeout > 0 and self._workers:
            waiting = [asyncio.ensure_future(q.join()) for q in self._queues.values()]
            _, pending = await asyncio.wait(waiting, timeout=flush_timeout)
            for task in pending:
                task.cancel()
            left = sum(q.qsize() for q in self._queues.values())
            if left:
                log.warning("webhooks: %d queued events not delivered before shutdown", left)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _work(self, url: str, queue: asyncio.Queue[WebhookEvent]) -> None:
        while True:
            item = await queue.get()
            try:
                await self._deliver(url, item)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats["failed"] += 1
                log.exception("webhook %s to %s failed unexpectedly", item.event, url)
            finally:
                queue.task_done()

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): doubling, capped, with jitter."""
        base = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)

    async def _deliver(self, url: str, item: WebhookEvent) -> None:
        assert self._http is not None
        body = item.body()
        last = ""
        for attempt in range(1, self.config.max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                "X-Cherry-Event": item.event,
                "X-Cherry-Delivery": item.id,
                "X-Cherry-Attempt": str(attempt),
                SIGNATURE_HEADER: sign(self.config.secret, int(self._clock()), body),
            }
            retry_after = 0.0
            try:
                async with self._http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self.stats["delivered"] += 1
                        log.debug("webhook %s %s delivered to %s (attempt %d)", item.event, item.id, url, attempt)
                        return
                    last = f"HTTP {response.status}"
                    if response.status < 500 and response.status not in RETRY_STATUSES:
                        break  # the receiver refused this event; retrying will not change that
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < self.config.max_attempts:
                self.stats["retries"] += 1
                delay = min(self.config.backoff_max_s, max(self.backoff(attempt), retry_after))
                log.info("webhook %s %s to %s failed (%s); retry %d in %.2fs", item.event, item.id, url,
                         last, attempt, delay)
                await self._sleep(delay)
        self.stats["failed"] += 1
        log.warning("webhook %s %s to %s given up: %s", item.event, item.id, url, last)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


# -- room events -> webhooks -------------------------------------------------------


def room_info(room: Room) -> dict[str, Any]:
    return {"name": room.name, "title": room.title or room.name}


def participant_info(member: Member) -> dict[str, Any]:
    # "participant_id" names the session (one per WHIP/WHEP connection), as it always has.
    return {"identity": member.identity, "role": member.role, "participant_id": member.session_id}


class RoomWebhooks:
    """A ``relay.ports.RoomObserver`` that turns room lifecycle into webhook events.

    A room that closes with participants still in it (the relay closes them without a
    ``participant_left`` each) still reports a ``participant_left`` per participant, so every
    ``participant_joined`` a receiver saw is matched.
    """

    def __init__(self, emitter: WebhookEmitter) -> None:
        self.emitter = emitter
        self._roles = frozenset(emitter.config.roles)
        self._present: dict[str, dict[str, Member]] = {}  # room name -> session id -> member

    def _participant_event(self, event: str, room: Room, participant: Member, **extra: Any) -> None:
        if participant.role in self._roles:
            self.emitter.emit(event, {"room": room_info(room), "participant": participant_info(participant),
                                      **extra})

    def room_opened(self, room: Room) -> None:
        self.emitter.emit("room_started", {"room": room_info(room)})

    def room_closed(self, room: Room, reason: str) -> None:
        for participant in self._present.pop(room.name, {}).values():
            self._participant_event("participant_left", room, participant, reason=f"room closed: {reason}")
        self.emitter.emit("room_ended", {"room": room_info(room), "reason": reason})

    def host_changed(self, room: Room, live: bool) -> None:
        host = room.host.identity if live and room.host is not None else None
        self.emitter.emit("stream_started" if live else "stream_ended", {"room": {**room_info(room), "host": host}})

    def participant_joined(self, room: Room, participant: Member) -> None:
        if not self.emitter.wants("participant_left") and not self.emitter.wants("participant_joined"):
            return
        self._present.setdefault(room.name, {})[participant.session_id] = participant
        self._participant_event("participant_joined", room, participant)

    def participant_left(self, room: Room, participant: Member) -> None:
        present = self._present.get(room.name)
        if present is not None:
            present.pop(participant.session_id, None)
        self._participant_event("participant_left", room, participant)

    # PK battles: whatever runs them reports each with one call (e.g. through the room observers).

    def pk_started(self, pk_id: str, rooms: Sequence[str], **details: Any) -> None:
        self.emitter.emit("pk_started", {"pk_id": pk_id, "rooms": [{"name": r} for r in rooms], **details})

    def pk_ended(self, pk_id: str, rooms: Sequence[str], **details: Any) -> None:
        """``details`` e.g. ``winner``, ``scores``, ``reason``."""
        self.emitter.emit("pk_ended", {"pk_id": pk_id, "rooms": [{"name": r} for r in rooms], **details})


def install_webhooks(app: web.Application, config: WebhooksConfig, rooms: Rooms) -> WebhookEmitter:
    """Observe ``rooms`` and run the delivery workers for the app's lifetime."""
    emitter = WebhookEmitter(config)
    if emitter.enabled:
        rooms.observers.add(RoomWebhooks(emitter))

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await emitter.start()
        yield
        # Rooms closed at shutdown report room_ended: give those a moment to go out.
        await emitter.stop(flush_timeout=min(config.timeout_s, 5.0))

    app.cleanup_ctx.append(lifetime)
    return emitter
