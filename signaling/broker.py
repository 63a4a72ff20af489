"""Where a WHIP/WHEP request's session lives: this process (``LocalBroker``), or another worker.

The HTTP handlers only verify the request and its token, then hand the verified grant to a broker.
With one worker the broker is the local relay; in a cluster (``cluster.broker``) it places the session
on the worker that will hold it and relays the offer and every later PATCH or DELETE there, so a
client never needs to know which worker serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from relay.core import Relay
from relay.errors import UnknownSession
from relay.participant import Grant
from relay.room import Listing
from relay.session import Session


@dataclass(frozen=True, slots=True)
class Opened:
    """A session a broker opened: its public reference (the last segment of its Location), answer, ETag."""

    ref: str
    endpoint: str  # "whip" or "whep"
    room: str
    answer: str
    etag: str


class SessionBroker(Protocol):
    async def open(self, endpoint: str, grant: Grant, sdp: str, listing: Listing | None = None) -> Opened: ...

    async def redirect(self, endpoint: str, grant: Grant) -> str | None:
        """The base URL of another node to send this offer to (the opt-in WHIP 307), or None: open it here."""

    async def trickle(self, endpoint: str, room: str, ref: str, grant: Grant, fragment: str,
                      if_match: str | None) -> None: ...

    async def end(self, endpoint: str, room: str, ref: str, grant: Grant) -> None: ...


class Mismatch(Exception):
    """PATCH ``If-Match`` names another ETag (HTTP 412)."""


class NotYours(Exception):
    """PATCH/DELETE of a session that belongs to another identity (HTTP 403)."""


class LocalBroker:
    """Sessions held by this process's relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def redirect(self, endpoint: str, grant: Grant) -> str | None:
        return None  # one process: nowhere else to go

    async def open(self, endpoint: str, grant: Grant, sdp: str, listing: Listing | None = None) -> Opened:
        if endpoint == "whip":
            session: Session = await self.relay.open_ingest(grant, sdp, listing)
        else:
            session = await self.relay.open_playback(grant, sdp)
        return Opened(session.session_id, endpoint, grant.room, session.answer, session.etag)

    def _own(self, endpoint: str, room: str, ref: str, grant: Grant) -> Session:
        session = self.relay.session(endpoint, room, ref)
        if grant.role != "admin" and grant.identity != session.identity:
            raise NotYours("this session belongs to another participant")
        return session

    async def trickle(self, endpoint: str, room: str, ref: str, grant: Grant, fragment: str,
                      if_match: str | None) -> None:
        session = self._own(endpoint, room, ref, grant)
        if if_match is not None and if_match not in ("*", session.etag):
            raise Mismatch("If-Match does not match this session's ETag")
        await self.relay.trickle(session, fragment)

    async def end(self, endpoint: str, room: str, ref: str, grant: Grant) -> None:
        self._own(endpoint, room, ref, grant).close("ended by client (DELETE)", by_client=True)


__all__ = ["LocalBroker", "Mismatch", "NotYours", "Opened", "SessionBroker", "UnknownSession"]
