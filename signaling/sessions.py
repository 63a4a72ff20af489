"""Sessions: one RTCPeerConnection of one participant, one direction only.

An ingest session taps its host's tracks into publications; a playback
session carries one subscription per track to a viewer. Both are the relay's
``Participant``: the room closes them through :meth:`Session.close`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCPeerConnection

from aiortc_bridge.receiver import ReceiverTap
from aiortc_bridge.sender import SenderPort
from relay.publication import Publication
from relay.room import Room
from relay.subscription import Subscription

log = logging.getLogger("cherry.signaling.session")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    rtc_configuration: RTCConfiguration
    connect_timeout: float
    cache_size: int
    keyframe_interval: float
    queue_limit: int
    report_interval: float


class Session:
    kind = "session"
    endpoint = ""  # URL prefix: "whip" or "whep"

    def __init__(self, room: Room, identity: str, role: str, settings: SessionSettings,
                 registry: SessionRegistry) -> None:
        self.session_id = uuid.uuid4().hex
        self.room = room
        self._identity = identity
        self._role = role
        self.settings = settings
        self.etag = f'"{secrets.token_hex(8)}"'
        self.created_at = time.time()
        self.connected_at: float | None = None
        self.pc = RTCPeerConnection(settings.rtc_configuration)
        self.closed = False
        self.close_reason = ""
        self.done = asyncio.Event()
        self._registry = registry
        self._timeout = asyncio.get_running_loop().call_later(
            settings.connect_timeout, self._connect_timed_out)
        self.pc.on("connectionstatechange", self._on_state)
        registry.add(self)

    # relay.ports.Participant
    @property
    def participant_id(self) -> str:
        return self.session_id

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def role(self) -> str:
        return self._role

    @property
    def tag(self) -> str:
        return f"room={self.room.name} participant={self._identity} session={self.session_id[:8]}"

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("%s %s %s", self.tag, self.kind, state)
        if state == "connected":
            self.connected_at = time.time()
            self._timeout.cancel()
            self.on_connected()
        elif state in ("failed", "closed"):
            self.close(f"connection {state}")

    def _connect_timed_out(self) -> None:
        if self.connected_at is None:
            self.close("did not connect in time")

    def on_connected(self) -> None:
        """Hook for subclasses."""

    def detach(self) -> None:
        """Leave the room; hook for subclasses."""

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._timeout.cancel()
        log.info("%s %s closing: %s", self.tag, self.kind, reason)
        self.detach()
        self._registry.remove(self)
        task = asyncio.ensure_future(self._close_pc())
        self._registry.track(task)

    async def _close_pc(self) -> None:
        try:
            await self.pc.close()
        except Exception:
            log.exception("%s error while closing peer connection", self.tag)
        finally:
            self.done.set()


class IngestSession(Session):
    kind = "ingest"
    endpoint = "whip"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.publications: list[Publication] = []
        self.taps: list[ReceiverTap] = []

    def detach(self) -> None:
        self.room.release_host(self)
        self.room.release_guest(self)


class PlaybackSession(Session):
    kind = "playback"
    endpoint = "whep"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.subscriptions: list[Subscription] = []
        self.ports: list[SenderPort] = []

    def on_connected(self) -> None:
        for subscription in self.subscriptions:
            subscription.start()

    def detach(self) -> None:
        self.room.remove_viewer(self)


class SessionRegistry:
    """Sessions by id (for PATCH/DELETE) and the tasks closing them (for shutdown)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def add(self, session: Session) -> None:
        self._sessions[session.session_id] = session

    def remove(self, session: Session) -> None:
        self._sessions.pop(session.session_id, None)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def track(self, task: asyncio.Future[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_all(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            session.close(reason)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
