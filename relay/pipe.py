"""Origin -> edge pipes: a room's audience spread over workers without growing the origin.

An edge worker pulls every slot of a room's layout (the host, the PK partner, guests on mic) from the
room's origin **once**, over one WebRTC session (so SRTP, NACK and PLI work across the hop), and serves
its own viewers from local publications fed by that pipe:

* origin side, :class:`PipeSession`: a playback session whose subscriptions follow the room's layout
  like a viewer's, but with the pipe policy: never paused for congestion, never dropped to a keyframe
  for a full send buffer, no per-viewer NACK budget or keyframe throttle (a pipe that drops freezes a
  whole edge); the publication's own keyframe throttle still holds, so the host sees at most one
  request per interval whatever the number of edges;
* edge side, :class:`EdgePipe`: the client end, the edge room's "host" member; each pulled m-line is
  tapped into a local publication (slot 0 as the room's host tracks, further slots as its mirror);
  viewers' NACKs are answered from the edge's own cache and their keyframe requests go upstream
  through the pipe. An edge lets a room go ``edge_linger`` seconds after its last viewer left.

The relay never speaks HTTP: the edge is handed an ``exchange`` that carries its offer to the origin
(the cluster's internal API) and returns the origin's answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

from aiortc import RTCPeerConnection, RTCSessionDescription

from aiortc_bridge.codecs import NegotiatedCodec, capabilities_for, describe, negotiated_codec
from aiortc_bridge.heap import release_later
from aiortc_bridge.receiver import ReceiverTap
from relay.clock import HostClock
from relay.config import MediaConfig
from relay.dump import SessionDump
from relay.errors import BadOffer, RelayError
from relay.participant import Grant
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.room import Room
from relay.session import PlaybackSession, SessionContext

log = logging.getLogger("cherry.relay.pipe")

Exchange = Callable[[str], Awaitable[str]]  # an offer to the origin -> its answer
PIPE_ROLE = "edge"
PIPE_IDENTITY = "edge:"  # a pipe's participant at either end: edge:<the other worker>


def pipe_policy(media: MediaConfig) -> MediaConfig:
    """What a pipe's subscriptions do differently from a viewer's (everything else stays the same)."""
    return dataclasses.replace(media, viewer_queue_limit_bytes=1 << 40, congestion_loss_ratio=1.0,
                               congestion_bandwidth_ratio=0.0, nack_budget_per_second=1_000_000,
                               viewer_keyframe_request_interval_ms=0)


class PipeSession(PlaybackSession):
    """The origin end of a pipe to an edge worker."""

    kind = "pipe"
    endpoint = "pipe"

    def __init__(self, ctx: SessionContext, room: Room, grant: Grant, plan: list[tuple[str, int]]) -> None:
        super().__init__(dataclasses.replace(ctx, media=pipe_policy(ctx.media)), room, grant, plan)


def _codec(d: NegotiatedCodec) -> CodecInfo:
    return CodecInfo(d.mime_type, d.clock_rate, d.channels, d.fmtp)


class EdgePipe:
    """The edge end of a pipe: the member that stands in for the origin's host in the edge's room."""

    kind: ClassVar[str] = "edge-pipe"
    endpoint: ClassVar[str] = "pipe"

    def __init__(self, ctx: SessionContext, room: Room, origin: str, slots: int, linger: float) -> None:
        self.ctx = ctx
        self.room = room
        self.origin = origin  # the origin worker's id, for logs and dumps
        self.slots = slots
        self.linger = linger
        self.session_id = f"pipe-{origin}"
        self.closed = False
        self.close_reason = ""
        self.created_at = time.time()
        self.connected_at: float | None = None
        self.pc = RTCPeerConnection(ctx.rtc)
        self.publications: dict[tuple[str, int], Publication] = {}
        self.taps: list[ReceiverTap] = []
        self.connected = asyncio.Event()
        self._linger: asyncio.TimerHandle | None = None
        self.pc.on("connectionstatechange", self._on_state)
        room.pulled_from = origin  # before it claims the host: observers know the claim for a copy
        room.attach_session(self)

    # relay.ports.Member
    @property
    def identity(self) -> str:
        return f"{PIPE_IDENTITY}{self.origin}"

    @property
    def role(self) -> str:
        return "host"

    # -- negotiation ---------------------------------------------------------------------------------------

    async def open(self, exchange: Exchange) -> None:
        """Offer every slot (video and audio), have the origin answer, publish what it sends."""
        media = self.ctx.media
        transceivers = []
        for kind in ("video", "audio"):
            codecs = media.video_codecs if kind == "video" else media.audio_codecs
            for slot in range(self.slots):
                transceiver = self.pc.addTransceiver(kind, direction="recvonly")
                transceiver.setCodecPreferences(capabilities_for(kind, codecs))
                transceivers.append((kind, slot, transceiver))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await exchange(self.pc.localDescription.sdp)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except Exception as exc:
            raise BadOffer(f"the origin's pipe answer cannot be used: {exc}") from exc
        clocks: dict[int, HostClock] = {}  # a slot's audio and video come from one source: one clock offset
        for kind, slot, transceiver in transceivers:
            negotiated = negotiated_codec(transceiver)
            if negotiated is None:
                continue
            publication = Publication(kind, _codec(describe(negotiated)), _NoUpstream(),
                                      cache_size=media.packet_cache_size,
                                      keyframe_interval=media.keyframe_request_interval_ms / 1000,
                                      owner=self.identity, retire_into=self.room.retire_into,
                                      delay_sampler=self.ctx.hooks.forwarding_delay,
                                      keyframe_cache_bytes=media.keyframe_cache_bytes,
                                      keyframe_cache_max_age=media.keyframe_cache_max_age_ms / 1000,
                                      fed_by_pipe=True, host_clock=clocks.setdefault(slot, HostClock()))
            tap = ReceiverTap(transceiver.receiver, publication.on_rtp)
            tap.on_sender_report = publication.on_sender_report
            tap.on_codec = lambda codec, p=publication: p.set_codec(_codec(codec))
            publication.upstream = tap
            self.publications[(kind, slot)] = publication
            self.taps.append(tap)
        if ("video", 0) not in self.publications and ("audio", 0) not in self.publications:
            raise BadOffer("the origin's pipe answer carries no track of the room's host")
        self.room.claim_host(self)
        for kind in ("video", "audio"):
            if (kind, 0) in self.publications:
                self.room.publish(self, self.publications[(kind, 0)])
        self.room.set_mirror([{kind: self.publications[(kind, slot)] for kind in ("video", "audio")
                               if (kind, slot) in self.publications} for slot in range(1, self.slots)])
        self.watch_viewers()

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("room=%s pipe from %s %s", self.room.name, self.origin, state)
        if state == "connected":
            self.connected_at = time.time()
            self.connected.set()
        elif state in ("failed", "closed"):
            # The origin went away: the viewers here wait, as for a host who left, until the room's next origin
            # is piped in (the cluster follows the registry) or the host-absent timeout ends them.
            self.close(f"pipe connection {state}", keep_viewers=True)

    # -- lifetime -------------------------------------------------------------------------------------------

    def watch_viewers(self) -> None:
        """With no viewer left, let the room go after the linger time (a viewer coming back cancels it)."""
        if self.closed:
            return
        if self.room.viewers or self.room.pk_partner is not None:  # a PK partner's mirror stays while linked
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            return
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.linger, self._lingered)

    def _lingered(self) -> None:
        self._linger = None
        if not self.room.viewers and self.room.pk_partner is None:
            self.close("no viewer left on this edge")

    def close(self, reason: str, keep_viewers: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._linger is not None:
            self._linger.cancel()
        log.info("room=%s pipe from %s closing: %s", self.room.name, self.origin, reason)
        self.room.release_host(self)
        self.room.mirror = None
        for publication in self.publications.values():
            publication.close()
        self.room.detach_session(self)
        self.ctx.registry.track(asyncio.ensure_future(self._close_pc()))
        if not keep_viewers:
            if self.room.pulled_from == self.origin:
                self.room.pulled_from = None
            for viewer in list(self.room.viewers.values()):
                viewer.session.close(f"the edge lost its pipe from the origin ({reason})")

    async def _close_pc(self) -> None:
        try:
            await self.pc.close()
        except Exception:
            log.exception("room=%s error while closing the pipe", self.room.name)
        finally:
            release_later(self.pc)

    def dump(self) -> SessionDump:
        return SessionDump(self.session_id, self.kind, self.identity, self.role, self.pc.connectionState,
                           self.created_at, self.connected_at,
                           publications=tuple(p.dump() for p in self.publications.values()))


class _NoUpstream:
    def request_keyframe(self) -> None:
        pass


class EdgePipes:
    """This worker's pipes, one per room it serves as an edge (opened once, even for a burst of viewers)."""

    def __init__(self, ctx: SessionContext, slots: int, linger: float) -> None:
        self._ctx = ctx
        self._slots = slots
        self._linger = linger
        self._pipes: dict[str, EdgePipe] = {}
        self._opening: dict[str, asyncio.Future[EdgePipe]] = {}

    def __len__(self) -> int:
        return len(self._pipes)

    def get(self, room: str) -> EdgePipe | None:
        pipe = self._pipes.get(room)
        return pipe if pipe is not None and not pipe.closed else None

    async def ensure(self, room: Room, origin: str, exchange: Exchange) -> EdgePipe:
        current = self.get(room.name)
        if current is not None:
            return current
        pending = self._opening.get(room.name)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[EdgePipe] = asyncio.get_running_loop().create_future()
        self._opening[room.name] = future
        pipe = EdgePipe(self._ctx, room, origin, self._slots, self._linger)
        try:
            await pipe.open(exchange)
        except BaseException as exc:
            pipe.close("could not open")
            future.set_exception(exc if isinstance(exc, RelayError | Exception) else RuntimeError(str(exc)))
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._opening[room.name]
        self._pipes[room.name] = pipe
        future.set_result(pipe)
        log.info("room=%s this worker is an edge: pipe from %s", room.name, origin)
        return pipe

    def served(self) -> dict[str, str]:
        """Rooms this worker is an edge of, with the origin each pipe pulls (or pulled) from."""
        return {name: pipe.origin for name, pipe in self._pipes.items()
                if not pipe.closed or pipe.room.viewers or pipe.room.pk_partner is not None}

    async def repoint(self, room: Room, origin: str, exchange: Exchange) -> EdgePipe:
        """The room moved to another origin (its worker died, the host reconnected elsewhere): pipe from there,
        keeping this edge's viewers; they resume at the new origin's next keyframe."""
        old = self._pipes.pop(room.name, None)
        if old is not None:
            old.close(f"the room moved to {origin}", keep_viewers=True)
        return await self.ensure(room, origin, exchange)

    def viewers_changed(self, room: str) -> None:
        pipe = self.get(room)
        if pipe is not None:
            pipe.watch_viewers()

    def close_all(self, reason: str) -> None:
        for pipe in list(self._pipes.values()):
            pipe.close(reason)
