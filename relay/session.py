"""Sessions: one RTCPeerConnection of one participant, one direction only.

An ingest session taps its host's (or guest's) tracks into publications before any decoder; a
playback session carries one subscription per negotiated m-line to a viewer. Each owns its peer
connection, taps, ports, subscriptions and connect timeout, and ends with one idempotent
``close(reason)`` that cascades: out of the room, its subscriptions and publications closed (their
counters retired), its participant told why (unless the client asked), the peer connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiortc_bridge.codecs import capabilities_for, capabilities_matching, describe, negotiated_codec
from aiortc_bridge.dtls import prefer_dtls_server
from aiortc_bridge.heap import drop_bitrate_estimator, release_later
from aiortc_bridge.receiver import ReceiverTap
from aiortc_bridge.sender import SenderPort
from relay.clock import HostClock
from relay.codec_policy import playback_preferences
from relay.config import LimitsConfig, MediaConfig, RoomsConfig
from relay.dump import SessionDump
from relay.errors import BadOffer, IceRestartUnsupported, RelayError, TooManyCandidates
from relay.offer import CheckedOffer, TrickleFragment
from relay.participant import Grant, Notice, Participant
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.room import Room
from relay.stats import DelaySampler
from relay.subscription import Subscription

log = logging.getLogger("cherry.relay.session")


@dataclass(slots=True)
class RelayHooks:
    """Where sessions report figures the composition root observes (histograms, samplers)."""

    forwarding_delay: DelaySampler | None = None
    keyframe_wait: Callable[[float], None] | None = None  # seconds from connected (or live) to first keyframe


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What every session needs from the relay, built once."""

    rtc: RTCConfiguration
    media: MediaConfig
    limits: LimitsConfig
    rooms: RoomsConfig
    registry: SessionRegistry
    hooks: RelayHooks = field(default_factory=RelayHooks)


class _NoUpstream:
    def request_keyframe(self) -> None:
        pass


class Session:
    kind: ClassVar[str] = "session"
    endpoint: ClassVar[str] = ""  # URL prefix: "whip" or "whep"

    def __init__(self, ctx: SessionContext, room: Room, grant: Grant) -> None:
        self.session_id = uuid.uuid4().hex
        self.room = room
        self.ctx = ctx
        self._grant = grant
        self.closed = False
        # First, so a closed room refuses before anything is allocated.
        self.participant: Participant = room.attach_session(self, grant.display_name)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.created_at = time.time()
        self.connected_at: float | None = None
        self.connected_mono: float | None = None
        self.pc = RTCPeerConnection(ctx.rtc)
        self.close_reason = ""
        self.done = asyncio.Event()
        self.answer = ""
        self.remote_candidates = 0
        self._timeout = asyncio.get_running_loop().call_later(ctx.rooms.connect_timeout_s, self._connect_timed_out)
        self.pc.on("connectionstatechange", self._on_state)
        ctx.registry.add(self)

    @property
    def identity(self) -> str:
        return self._grant.identity

    @property
    def role(self) -> str:
        return self._grant.role

    @property
    def tag(self) -> str:
        return f"room={self.room.name} participant={self.identity} session={self.session_id[:8]}"

    # -- negotiation -----------------------------------------------------------------------------------

    async def negotiate(self, offer: CheckedOffer) -> str:
        """Apply a checked offer and answer it; anything aiortc refuses is a BadOffer with its reason."""
        self.remote_candidates = offer.candidates
        try:
            self._prepare()
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            prefer_dtls_server(self.pc)
            self._negotiated()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (RelayError, asyncio.CancelledError):
            raise
        except Exception as exc:  # aiortc reports unusable offers with many exception types
            if self.closed:
                raise
            raise BadOffer(f"offer cannot be used: {exc}"[:300]) from exc
        self.answer = self.pc.localDescription.sdp
        return self.answer

    def _prepare(self) -> None:
        """Add transceivers before the offer is applied."""

    def _negotiated(self) -> None:
        """The offer is applied: codecs are known."""

    async def trickle(self, fragment: TrickleFragment) -> None:
        """Add trickled candidates (RFC 8840), within the session's bound; no ICE restart."""
        remote = self.pc.remoteDescription
        if fragment.ufrag is not None and remote is not None:
            current = next((line.split(":", 1)[1].strip() for line in remote.sdp.splitlines()
                            if line.startswith("a=ice-ufrag:")), None)
            if current is not None and fragment.ufrag != current:
                raise IceRestartUnsupported("ICE restart is not supported; DELETE this session and POST a new offer")
        limit = self.ctx.limits.max_remote_candidates
        if self.remote_candidates + len(fragment.candidates) > limit:
            raise TooManyCandidates(f"a session may hold at most {limit} remote candidates")
        self.remote_candidates += len(fragment.candidates)
        transceivers = self.pc.getTransceivers()
        mid = transceivers[0].mid if transceivers else "0"
        for candidate in fragment.candidates:
            candidate.sdpMid = mid  # BUNDLE: every candidate belongs to the first transport
            candidate.sdpMLineIndex = 0
            await self.pc.addIceCandidate(candidate)
        if fragment.end:
            await self.pc.addIceCandidate(None)  # type: ignore[arg-type]

    # -- lifecycle --------------------------------------------------------------------------------------

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("%s %s %s", self.tag, self.kind, state)
        if state == "connected":
            self.connected_at = time.time()
            self.connected_mono = time.monotonic()
            self._timeout.cancel()
            self._connected()
        elif state in ("failed", "closed"):
            self.close(f"connection {state}")

    def _connect_timed_out(self) -> None:
        if self.connected_at is None:
            self.close("did not connect in time")

    def _connected(self) -> None:
        """Hook: the peer connection is up."""

    def _detach(self) -> None:
        """Hook: leave the room."""

    def close(self, reason: str, *, by_client: bool = False) -> None:
        """Idempotent; ``by_client``: the client asked (DELETE), so nobody needs telling why."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._timeout.cancel()
        log.info("%s %s closing: %s", self.tag, self.kind, reason)
        if not by_client:
            self.participant.notify(Notice("session_closed", reason, self.session_id, self.endpoint))
        try:
            self._detach()
        finally:
            self.room.detach_session(self)
            self.ctx.registry.remove(self)
            self.ctx.registry.track(asyncio.ensure_future(self._close_pc()))

    async def _close_pc(self) -> None:
        try:
            await self.pc.close()
        except Exception:
            log.exception("%s error while closing peer connection", self.tag)
        finally:
            release_later(self.pc)  # its cycles, freed a session at a time rather than in one long GC pass
            self.done.set()

    def dump(self) -> SessionDump:
        return SessionDump(self.session_id, self.kind, self.identity, self.role, self.pc.connectionState,
                           self.created_at, self.connected_at)


class IngestSession(Session):
    kind = "ingest"
    endpoint = "whip"

    def __init__(self, ctx: SessionContext, room: Room, grant: Grant, preferences: dict[str, list[str]],
                 kinds: tuple[str, ...]) -> None:
        super().__init__(ctx, room, grant)
        self._preferences = preferences
        self._kinds = kinds
        self.publications: list[Publication] = []
        self.taps: list[ReceiverTap] = []

    def _prepare(self) -> None:
        for kind in self._kinds:
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(capabilities_for(kind, self._preferences[kind]))

    def _negotiated(self) -> None:
        media = self.ctx.media
        host_clock = HostClock()  # one host: its audio and video share the offset onto the gateway's clock
        for transceiver in self.pc.getTransceivers():
            negotiated = negotiated_codec(transceiver)
            if negotiated is None or transceiver.mid is None:
                continue
            d = describe(negotiated)
            publication = Publication(
                transceiver.kind, CodecInfo(d.mime_type, d.clock_rate, d.channels, d.fmtp), _NoUpstream(),
                cache_size=media.packet_cache_size, keyframe_interval=media.keyframe_request_interval_ms / 1000,
                owner=self.identity, retire_into=self.room.retire_into,
                delay_sampler=self.ctx.hooks.forwarding_delay,
                keyframe_cache_bytes=media.keyframe_cache_bytes,
                keyframe_cache_max_age=media.keyframe_cache_max_age_ms / 1000, host_clock=host_clock)
            tap = ReceiverTap(transceiver.receiver, publication.on_rtp)
            tap.on_sender_report = publication.on_sender_report
            publication.upstream = tap
            self.publications.append(publication)
            self.taps.append(tap)

    def _detach(self) -> None:
        self.room.release_host(self)
        self.room.release_guest(self)
        for publication in self.publications:
            publication.close()  # idempotent; the room closed those it held

    def dump(self) -> SessionDump:
        base = super().dump()
        return SessionDump(base.session_id, base.kind, base.identity, base.role, base.state, base.created_at,
                           base.connected_at, publications=tuple(p.dump() for p in self.publications))


class PlaybackSession(Session):
    kind = "playback"
    endpoint = "whep"

    def __init__(self, ctx: SessionContext, room: Room, grant: Grant, plan: list[tuple[str, int]],
                 pk_view: bool = False) -> None:
        super().__init__(ctx, room, grant)
        self.plan = plan
        self.pk_view = pk_view
        self.subscriptions: list[Subscription] = []
        self.ports: list[SenderPort] = []
        self.failures = 0

    def _prepare(self) -> None:
        media = self.ctx.media
        for kind, slot in self.plan:
            codec = self.room.codecs[kind]
            transceiver = self.pc.addTransceiver(kind, direction="sendonly")
            drop_bitrate_estimator(transceiver.receiver)  # a send-only receiver never gets a packet
            accepted = media.video_codecs if kind == "video" else media.audio_codecs
            # The host's codec first (with its exact parameters); the others let a co-streamer with another
            # codec through.
            others = playback_preferences(codec, accepted)[1:]
            transceiver.setCodecPreferences(capabilities_matching(codec.mime_type, codec.fmtp)
                                            + capabilities_for(kind, others, rtx=False))
            port = SenderPort(transceiver.sender, media.sender_report_interval_ms / 1000)
            subscription = Subscription(kind, codec.clock_rate, port, media=media, cname=f"cherry-{self.room.name}",
                                        slot=slot, retire_into=self.room.retire_into)
            port.listener = subscription
            subscription.on_failed = self._subscription_failed
            if kind == "video" and slot == 0:
                subscription.on_started = self._first_keyframe
            self.ports.append(port)
            self.subscriptions.append(subscription)

    def _connected(self) -> None:
        for subscription in self.subscriptions:
            subscription.start()

    def _subscription_failed(self, subscription: Subscription, reason: str) -> None:
        self.failures += 1
        if self.failures == 1:  # once per session: a failing path may fail on every packet
            log.warning("%s %s#%d stream closed: %s", self.tag, subscription.kind, subscription.slot, reason)
        self.participant.notify(Notice("subscription_closed", f"{subscription.kind} stream: {reason}",
                                       self.session_id, self.endpoint))

    def _first_keyframe(self, subscription: Subscription) -> None:
        hook = self.ctx.hooks.keyframe_wait
        first = subscription.stats.first_packet_at
        if hook is None or first is None or self.connected_mono is None:
            return
        start = self.connected_mono
        if self.room.live_since is not None:  # a viewer waiting for the host counts from the host going live
            start = max(start, time.monotonic() - (time.time() - self.room.live_since))
        hook(max(0.0, first - start))

    def _detach(self) -> None:
        self.room.remove_viewer(self)
        for subscription in self.subscriptions:
            subscription.close()

    def dump(self) -> SessionDump:
        base = super().dump()
        return SessionDump(base.session_id, base.kind, base.identity, base.role, base.state, base.created_at,
                           base.connected_at, subscriptions=tuple(s.dump() for s in self.subscriptions))


class SessionRegistry:
    """Sessions by id (for PATCH/DELETE), the viewer count admission reads, and the tasks closing them."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self.playback = 0
        self.pipes = 0  # to edge workers: each forwards the room's slots once, as a viewer would

    @property
    def forwarding(self) -> int:
        """Viewers and pipes: what a worker's forwarding capacity (admission, cluster load) is spent on."""
        return self.playback + self.pipes

    def add(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        if session.kind == "playback":
            self.playback += 1
        elif session.kind == "pipe":
            self.pipes += 1

    def remove(self, session: Session) -> None:
        if self._sessions.pop(session.session_id, None) is None:
            return
        if session.kind == "playback":
            self.playback -= 1
        elif session.kind == "pipe":
            self.pipes -= 1

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def states(self) -> dict[tuple[str, str], int]:
        return dict(Counter((s.kind, s.pc.connectionState) for s in self._sessions.values()))

    def track(self, task: asyncio.Future[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_all(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            session.close(reason)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
