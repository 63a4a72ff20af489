"""Checks on client SDP before aiortc sees it, so a bad offer gets a precise 400."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp
from aiortc.codecs import is_rtx

from signaling.errors import HttpError


@dataclass(frozen=True, slots=True)
class OfferedMedia:
    kind: str
    mid: str
    direction: str
    codecs: tuple[str, ...]  # mime types, RTX excluded


def _bad(message: str) -> HttpError:
    return HttpError(400, "bad_sdp", message)


def parse_offer(text: str, *, sending: bool) -> list[OfferedMedia]:
    """Validate an offer; ``sending`` is True for WHIP (client sends media), False for WHEP."""
    if not text.strip():
        raise _bad("empty SDP offer")
    if not text.lstrip().startswith("v=0"):
        raise _bad("SDP must start with 'v=0'")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises several types on garbage
        raise _bad(f"malformed SDP: {exc!r}") from exc
    media = [m for m in description.media if m.kind in ("audio", "video")]
    if not media:
        raise _bad("offer has no audio or video m-line")
    wanted = ("sendonly", "sendrecv") if sending else ("recvonly", "sendrecv")
    result = []
    seen: set[str] = set()
    for m in media:
        if m.port == 0:
            continue  # rejected/disabled m-line
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise _bad(f"{m.kind} m-line lacks a=ice-ufrag / a=ice-pwd")
        if not m.dtls or not m.dtls.fingerprints:
            raise _bad(f"{m.kind} m-line lacks a=fingerprint")
        direction = m.direction or "sendrecv"
        if direction not in wanted:
            verb = "send" if sending else "receive"
            raise _bad(f"{m.kind} m-line is {direction}; this endpoint needs the client to {verb} media")
        if sending and m.kind in seen:
            raise _bad(f"more than one {m.kind} track offered; publish one audio and one video track")
        seen.add(m.kind)
        codecs = tuple(c.mimeType for c in m.rtp.codecs if not is_rtx(c))
        result.append(OfferedMedia(m.kind, m.rtp.muxId, direction, codecs))
    if not result:
        raise _bad("every m-line of the offer is disabled")
    return result


def require_codec(media: OfferedMedia, accepted: Sequence[str]) -> None:
    """400 unless the offer lists one of ``accepted`` (mime types or codec names)."""
    names = {c.split("/")[-1].lower() for c in media.codecs}
    if not any(a.split("/")[-1].lower() in names for a in accepted):
        offered = ", ".join(sorted({c.split("/")[-1] for c in media.codecs})) or "none"
        wants = ", ".join(a.split("/")[-1] for a in accepted)
        raise HttpError(
            400,
            "no_common_codec",
            f"{media.kind}: offer has {offered}; this room needs {wants}",
        )


def parse_trickle_fragment(text: str) -> tuple[str | None, str | None, list[str], bool]:
    """(ice-ufrag, ice-pwd, candidate lines, end-of-candidates) of an RFC 8840 SDP fragment."""
    ufrag = pwd = None
    candidates: list[str] = []
    end = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            pwd = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            candidates.append(line[len("a="):])
        elif line == "a=end-of-candidates":
            end = True
        elif line and not line.startswith(("a=", "m=", "c=")):
            raise _bad(f"unexpected line in trickle-ice-sdpfrag: {line[:60]!r}")
    return ufrag, pwd, candidates, end
