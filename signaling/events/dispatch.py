"""Routes each parsed client frame to the concern that handles it (the one place that knows them all).

``Dispatcher.dispatch`` raises :class:`~.protocol.ProtocolError` for a refused frame and nothing else
unless a handler has a bug; the property-based tests in tests/unit/test_events_fuzz.py hold it to that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from signaling.events.chat import Chat
from signaling.events.guests import GuestsOnMic
from signaling.events.moderator import Moderator
from signaling.events.pk import PkBattles
from signaling.events.ports import Fanout, Sender
from signaling.events.protocol import CLIENT_TYPES, GUESTS, MODERATION, PK, ClientFrame
from signaling.events.quality import Quality

Handler = Callable[[Sender, ClientFrame], None]


@dataclass(frozen=True, slots=True)
class Concerns:
    fanout: Fanout
    chat: Chat
    quality: Quality
    moderator: Moderator
    pk: PkBattles
    guests: GuestsOnMic


class Dispatcher:
    def __init__(self, concerns: Concerns) -> None:
        self._concerns = concerns
        routes: dict[str, Handler] = {"ping": self._ping, "chat": concerns.chat.chat, "gift": self._gift,
                                      "like": concerns.chat.like, "quality": concerns.quality.report}
        routes.update(dict.fromkeys(MODERATION, concerns.moderator.handle))
        routes.update(dict.fromkeys(PK, concerns.pk.handle))
        routes.update(dict.fromkeys(GUESTS, concerns.guests.handle))
        assert set(routes) == set(CLIENT_TYPES), "every client frame type has exactly one handler"
        self._routes = routes

    def dispatch(self, sender: Sender, frame: ClientFrame) -> None:
        self._routes[frame.type](sender, frame)

    def _ping(self, sender: Sender, frame: ClientFrame) -> None:
        self._concerns.fanout.send(sender, {"type": "pong", "ref": frame.ref})

    def _gift(self, sender: Sender, frame: ClientFrame) -> None:
        # A gift is chat's (totals, fan-out) and, during a battle, points for a side: two concerns, routed here.
        gift = self._concerns.chat.gift(sender, frame)
        self._concerns.pk.on_gift(gift.room, gift.points, gift.side)
