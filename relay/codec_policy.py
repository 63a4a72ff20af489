"""Which codecs a session may use: pure functions of the offer, the room and the configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from relay.errors import NoCommonCodec
from relay.offer import OfferedMedia, require_codec
from relay.ports import CodecInfo


def _name(mime: str) -> str:
    return mime.split("/")[-1].lower()


def ingest_preferences(configured: Mapping[str, Sequence[str]], room_codecs: Mapping[str, CodecInfo],
                       *, as_guest: bool, room_has_viewers: bool) -> dict[str, list[str]]:
    """Codec preference per kind for an ingest session, best first.

    A returning host is held to the codecs its waiting viewers already negotiated; a guest is
    steered to them first (viewers' co-stream slots negotiated every codec their offer allowed,
    so another one still plays).
    """
    preferences = {kind: list(codecs) for kind, codecs in configured.items()}
    if room_has_viewers or as_guest:
        for kind, codec in room_codecs.items():
            others = [c for c in preferences.get(kind, []) if _name(c) != _name(codec.mime_type)]
            preferences[kind] = [codec.mime_type] + (others if as_guest else [])
    return preferences


def check_ingest(offered: Sequence[OfferedMedia], preferences: Mapping[str, Sequence[str]]) -> None:
    """NoCommonCodec unless every offered track has a codec the preferences accept."""
    for media in offered:
        require_codec(media, preferences.get(media.kind, ()))


def playback_plan(offered: Sequence[OfferedMedia], room_codecs: Mapping[str, CodecInfo],
                  max_slots: int, first_slot: int = 0) -> list[tuple[str, int]]:
    """(kind, slot) per usable offered m-line, in offer order.

    The first m-line of each kind shows the room's own host and must share its codec; further ones
    are co-stream slots (PK partner, guests) filled as they come, up to ``max_slots`` per kind.
    ``first_slot`` 1: a co-streamer's monitor, whose m-lines begin at the first co-stream slot (its own
    host's picture and voice are not sent back to the host).
    """
    plan: list[tuple[str, int]] = []
    for media in offered:
        codec = room_codecs.get(media.kind)
        if codec is None:
            continue
        slot = first_slot + sum(1 for kind, _ in plan if kind == media.kind)
        if slot >= max_slots:
            continue
        if slot == 0:
            require_codec(media, [codec.mime_type])
        plan.append((media.kind, slot))
    if not plan:
        raise NoCommonCodec("offer has no m-line for the room's tracks (" + ", ".join(sorted(room_codecs)) + ")")
    return plan


def playback_preferences(codec: CodecInfo, accepted: Sequence[str]) -> list[str]:
    """For one playback m-line: the room host's codec first, then the others a co-streamer may use."""
    return [codec.mime_type] + [c for c in accepted if _name(c) != _name(codec.mime_type)]
