"""The relay as the control plane sees it: open sessions from SDP offers and grants, find them, dump.

WHIP, WHEP and (later) the origin-to-edge pipe all come through here: each check is made once,
cheapest first, before any negotiation work, and every refusal is a :class:`~relay.errors.RelayError`
that signaling maps to one HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from aiortc import RTCConfiguration

from aiortc_bridge.ice import host_addresses_per_session, port_pool
from relay.admission import Admission
from relay.codec_policy import check_ingest, ingest_preferences, playback_plan
from relay.config import CostreamConfig, LimitsConfig, MediaConfig, RoomsConfig
from relay.dump import RelayDump, Traffic
from relay.errors import (
    Banned,
    CapacityExceeded,
    PkLinkEnded,
    RoomClosed,
    RoomNotLive,
    SessionReplaced,
    UnknownSession,
)
from relay.offer import CheckedOffer, check_offer, parse_trickle
from relay.participant import Grant
from relay.pipe import EdgePipes, Exchange, PipeSession
from relay.room import Listing, Room, Rooms
from relay.session import IngestSession, PlaybackSession, RelayHooks, Session, SessionContext, SessionRegistry

log = logging.getLogger("cherry.relay")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """The configuration sections the relay reads (frozen, from the one tree)."""

    media: MediaConfig
    limits: LimitsConfig
    rooms: RoomsConfig
    costream: CostreamConfig


class Relay:
    def __init__(self, config: RelayConfig, rtc: RTCConfiguration, hooks: RelayHooks | None = None,
                 edge_linger: float = 60.0) -> None:
        self.config = config
        self.rooms = Rooms(config.limits, config.rooms, config.costream.max_guests)
        self.sessions = SessionRegistry()
        self.hooks = hooks or RelayHooks()
        # A pipe to an edge costs the origin what a viewer costs: a worker full of pipes takes no more viewers.
        self.admission = Admission(config.limits, lambda: self.sessions.forwarding, media_ports=port_pool,
                                   ports_per_session=host_addresses_per_session)
        self._ctx = SessionContext(rtc, config.media, config.limits, config.rooms, self.sessions, self.hooks)
        self.edges = EdgePipes(self._ctx, config.costream.max_slots, edge_linger)
        self.rooms.observers.add(self)
        self._lag_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching the event loop's lag (admission refuses newcomers while it is high)."""
        if self._lag_task is None:
            self._lag_task = asyncio.ensure_future(self.admission.lag.run())

    async def close(self, reason: str) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            self._lag_task = None
        self.edges.close_all(reason)
        self.rooms.close_all(reason)
        await self.sessions.close_all(reason)

    # -- relay.ports.RoomObserver: an edge lets a room go a while after its last viewer ----------------------

    def participant_joined(self, room: object, member: object) -> None:
        if isinstance(room, Room):
            self.edges.viewers_changed(room.name)

    def participant_left(self, room: object, member: object) -> None:
        if isinstance(room, Room):
            self.edges.viewers_changed(room.name)

    # -- opening sessions ---------------------------------------------------------------------------------

    def _check_ban(self, grant: Grant) -> None:
        if grant.role != "admin" and self.rooms.bans.banned_until(grant.room, grant.identity):
            raise Banned("you are banned from this room")

    async def open_ingest(self, grant: Grant, offer_sdp: str, listing: Listing | None = None) -> IngestSession:
        """A host (or a guest on mic) publishes: check, claim the room's slot, negotiate, publish."""
        offer = check_offer(offer_sdp, sending=True, limits=self.config.limits)
        self._check_ban(grant)
        self.admission.check_loop()
        with self.admission.media_ports():
            return await self._open_ingest(grant, offer, listing)

    async def _open_ingest(self, grant: Grant, offer: CheckedOffer, listing: Listing | None) -> IngestSession:
        existing = self.rooms.get(grant.room)
        as_guest = grant.role == "guest"
        media = self.config.media
        preferences = ingest_preferences(
            {"video": media.video_codecs, "audio": media.audio_codecs}, existing.codecs if existing else {},
            as_guest=as_guest, room_has_viewers=bool(existing and existing.viewers))
        check_ingest(offer.media, preferences)
        room = self.rooms.get_or_create(grant.room)
        pipe = self.edges.get(grant.room)
        if pipe is not None:
            # This worker was an edge of the room and is its origin now (the old one died): its viewers stay
            # and take the host from here.
            pipe.close("this worker is the room's origin now", keep_viewers=True)
        session = IngestSession(self._ctx, room, grant, preferences, tuple(m.kind for m in offer.media))
        try:
            if as_guest:
                room.claim_guest(session)
            else:
                room.claim_host(session)
        except BaseException:
            session.close("refused", by_client=True)
            raise
        try:
            await session.negotiate(offer)
            if listing is not None and not as_guest:  # the host's: a guest's offer never relists the room
                room.title = listing.title or room.title
                room.category, room.tags = listing.category or room.category, listing.tags or room.tags
            for publication in session.publications:
                room.publish(session, publication)
        except BaseException as exc:
            self._negotiation_failed(session, exc)
            raise
        log.info("%s publishing %s", session.tag, ", ".join(p.codec.mime_type for p in session.publications))
        return session

    async def open_playback(self, grant: Grant, offer_sdp: str) -> PlaybackSession:
        """A viewer watches: check, plan its slots, negotiate, subscribe."""
        offer = check_offer(offer_sdp, sending=False, limits=self.config.limits)
        self._check_ban(grant)
        self.admission.check_viewer()
        with self.admission.media_ports():
            return await self._open_playback(grant, offer)

    async def _open_playback(self, grant: Grant, offer: CheckedOffer) -> PlaybackSession:
        room = self.rooms.get(grant.room)
        if room is None:
            raise RoomNotLive(f"room {grant.room!r} has no live host")
        pk_view = grant.scope == "pk"
        monitor = grant.scope == "costream"
        if pk_view or monitor:
            room.check_live()
        else:
            room.check_can_view()
        if pk_view and not room.pk_view_allowed(grant.identity):
            raise PkLinkEnded(f"the PK link with room {grant.room!r} this grant was for has ended")
        plan = playback_plan(offer.media, room.codecs, self.config.costream.max_slots, first_slot=1 if monitor else 0)
        session = PlaybackSession(self._ctx, room, grant, plan, pk_view)
        try:
            await session.negotiate(offer)
            room.add_viewer(session, session.subscriptions, pk_view, monitor)
        except CapacityExceeded:
            # Filled by viewers that negotiated alongside: full, as if it had been at the start (in a cluster
            # the viewer then goes to an edge), not a room that changed.
            session.close("the room filled during negotiation", by_client=True)
            raise
        except (RoomNotLive, RoomClosed) as exc:
            session.close("the room changed during negotiation", by_client=True)
            raise RoomClosed(f"the room changed while this session negotiated: {exc}") from exc
        except BaseException as exc:
            self._negotiation_failed(session, exc)
            raise
        log.info("%s watching (%s)", session.tag, ", ".join(f"{k}#{slot}" for k, slot in plan))
        return session

    async def open_pipe(self, grant: Grant, offer_sdp: str) -> PipeSession:
        """An edge worker pulls every slot of a room it serves (origin side); not a viewer of the room."""
        offer = check_offer(offer_sdp, sending=False, limits=self.config.limits)
        self.admission.check_loop()
        room = self.rooms.get(grant.room)
        if room is None:
            raise RoomNotLive(f"room {grant.room!r} has no live host")
        room.check_live()  # a pipe is not a viewer: the room's viewer limit does not apply to it
        plan = playback_plan(offer.media, room.codecs, self.config.costream.max_slots)
        with self.admission.media_ports():  # a pipe binds this worker's media ports like any session
            session = PipeSession(self._ctx, room, grant, plan)
            try:
                await session.negotiate(offer)
                room.add_pipe(session, session.subscriptions)
            except BaseException as exc:
                self._negotiation_failed(session, exc)
                raise
        log.info("%s pipe to an edge (%s)", session.tag, ", ".join(f"{k}#{slot}" for k, slot in plan))
        return session

    async def open_edge_playback(self, grant: Grant, offer_sdp: str, origin: str,
                                 exchange: Exchange) -> PlaybackSession:
        """A viewer placed on this worker as an edge of the room: the pipe first (once), then the viewer."""
        check_offer(offer_sdp, sending=False, limits=self.config.limits)
        self._check_ban(grant)
        self.admission.check_viewer()
        room = self.rooms.get_or_create(grant.room)
        if self.edges.get(grant.room) is None:
            with self.admission.media_ports():  # the edge's end of the pipe
                await self.edges.ensure(room, origin, exchange)
        return await self.open_playback(grant, offer_sdp)

    # -- PK across workers ----------------------------------------------------------------------------------

    async def link_pk_remote(self, room_name: str, partner: str, partner_origin: str, partner_host: str | None,
                             exchange: Exchange) -> None:
        """PK between a room held here (its origin) and one held by another worker: the partner room is pulled
        over a pipe, as an edge would (a mirror room here), and linked like a local partner."""
        room = self.rooms.get(room_name)
        if room is None or not room.live:
            raise RoomNotLive(f"room {room_name!r} has no live host here")
        if room.pk_partner is not None and room.pk_partner.name == partner:
            return  # linked already (a retried request)
        mirror = self.rooms.get_or_create(partner)
        if self.edges.get(partner) is None:
            with self.admission.media_ports():
                await self.edges.ensure(mirror, partner_origin, exchange)
        mirror.remote_host = partner_host
        room.link_pk(mirror)

    def unlink_pk(self, room_name: str) -> None:
        """End the room's PK link (local or remote partner); a mirror then lingers like an edge's room."""
        room = self.rooms.get(room_name)
        partner = room.pk_partner if room is not None else None
        if room is None or partner is None:
            return
        room.unlink_pk()
        self.edges.viewers_changed(partner.name)

    def _negotiation_failed(self, session: Session, exc: BaseException) -> None:
        replaced = session.closed  # a newer session of the same identity took over mid-negotiation
        session.close("negotiation failed", by_client=True)
        if replaced and not isinstance(exc, asyncio.CancelledError):
            raise SessionReplaced(f"this session was ended while negotiating ({session.close_reason})") from exc

    # -- existing sessions ----------------------------------------------------------------------------------

    def session(self, endpoint: str, room: str, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.endpoint != endpoint or session.room.name != room:
            raise UnknownSession("no such session (ended, or never existed)")
        return session

    async def trickle(self, session: Session, fragment_text: str) -> None:
        await session.trickle(parse_trickle(fragment_text, self.config.limits))

    def room(self, name: str) -> Room | None:
        return self.rooms.get(name)

    # -- introspection ----------------------------------------------------------------------------------------

    def dump(self, detailed_rooms: bool = False) -> RelayDump:
        rooms = []
        traffic = Traffic().plus(self.rooms.retired)
        states: Counter[str] = Counter()
        for room in self.rooms:
            live = room.live_traffic()
            rooms.append(room.dump(detailed_rooms, live))
            traffic = traffic.plus(live)
            for viewer in room.viewers.values():
                states.update(s.congestion_state for s in viewer.subscriptions if s.kind == "video")
        return RelayDump(tuple(rooms), self.sessions.states(), self.sessions.playback, dict(states), traffic)
