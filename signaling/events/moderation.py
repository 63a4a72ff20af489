"""Mutes and the chat word filter (a hook a smarter classifier can replace)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Protocol


class ChatFilter(Protocol):
    def __call__(self, text: str) -> str | None:
        """The text to publish (possibly masked), or None to drop the message."""


class WordMask:
    """Masks listed words (case-insensitive, whole words) with asterisks."""

    def __init__(self, words: Sequence[str]) -> None:
        words = [w for w in words if w]
        self._pattern = (re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
                         if words else None)

    def __call__(self, text: str) -> str | None:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: "*" * len(m.group(0)), text)


class Moderation:
    """Per-room chat mutes with expiry; outlives sockets and sessions (bans are the relay's: they refuse media too)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._mutes: dict[tuple[str, str], float] = {}

    def _until(self, table: dict[tuple[str, str], float], room: str, identity: str) -> float | None:
        until = table.get((room, identity))
        if until is None:
            return None
        if until <= self._clock():
            del table[(room, identity)]
            return None
        return until

    def mute(self, room: str, identity: str, seconds: float) -> float:
        until = self._clock() + seconds
        self._mutes[(room, identity)] = until
        return until

    def unmute(self, room: str, identity: str) -> None:
        self._mutes.pop((room, identity), None)

    def muted_until(self, room: str, identity: str) -> float | None:
        return self._until(self._mutes, room, identity)

    def in_room(self, room: str) -> dict[str, float]:
        """Mutes in force in ``room``: identity -> until."""
        now = self._clock()
        return {identity: until for (name, identity), until in self._mutes.items() if name == room and until > now}

    def restore(self, room: str, mutes: dict[str, float]) -> None:
        """The room's mutes are ``mutes`` (taken over from the worker that decided the room before)."""
        for key in [k for k in self._mutes if k[0] == room]:
            del self._mutes[key]
        now = self._clock()
        self._mutes.update({(room, identity): until for identity, until in mutes.items() if until > now})

    def purge(self) -> None:
        now = self._clock()
        for key in [k for k, until in self._mutes.items() if until <= now]:
            del self._mutes[key]
