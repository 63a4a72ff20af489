"""Client SDP checked and bounded before any negotiation work: offers and trickle fragments.

Every bound is checked on the raw text first (lines, line length, m-lines, candidates), so the
cost of a hostile body is one linear scan; only then does aiortc's parser see it. What aiortc would
choke on later (duplicate mids, missing ICE or DTLS attributes, wrong directions) is refused here
with a reason, as a :class:`~relay.errors.BadOffer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiortc import RTCIceCandidate
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import is_rtx

from aiortc_bridge.ice import is_mdns, parse_candidate
from relay.config import LimitsConfig
from relay.errors import BadCandidate, BadOffer, NoCommonCodec, TooManyCandidates

MAX_CODECS_PER_MLINE = 64
MAX_MID_LENGTH = 32  # RFC 8843 leaves it open; every stack we know uses a few characters
UFRAG_LENGTH = (4, 256)  # RFC 8839 section 5.4
PWD_LENGTH = (22, 256)


@dataclass(frozen=True, slots=True)
class OfferedMedia:
    kind: str
    mid: str
    direction: str
    codecs: tuple[str, ...]  # mime types, RTX excluded


@dataclass(frozen=True, slots=True)
class CheckedOffer:
    sdp: str
    media: tuple[OfferedMedia, ...]
    candidates: int  # remote candidates the offer already carries


@dataclass(frozen=True, slots=True)
class TrickleFragment:
    ufrag: str | None
    pwd: str | None
    candidates: tuple[RTCIceCandidate, ...]
    end: bool


def _check_lines(text: str, limits: LimitsConfig) -> list[str]:
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if len(line) > limits.max_sdp_line_bytes:
            raise BadOffer(f"line {number} is longer than {limits.max_sdp_line_bytes} characters")
    return lines


def _usable_candidates(lines: list[str]) -> tuple[str, int]:
    """The offer without mDNS candidates (see :func:`aiortc_bridge.ice.is_mdns`); BadOffer for a bad one."""
    kept = []
    count = 0
    for line in lines:
        if line.startswith("a=candidate:"):
            try:
                candidate = parse_candidate(line[len("a="):])
            except ValueError as exc:
                raise BadOffer(str(exc)) from exc
            if is_mdns(candidate):
                continue
            count += 1
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", count


def _check_bundle(description: aiortc_sdp.SessionDescription) -> None:
    """max-bundle: one BUNDLE group naming exactly the offer's active mids (aiortc would otherwise take a
    transport from an m-line that does not exist)."""
    groups = [g for g in description.group if g.semantic == "BUNDLE"]
    if len(groups) > 1:
        raise BadOffer("offer has more than one BUNDLE group")
    for m in description.media:
        if m.port != 0 and not m.rtp.muxId:
            raise BadOffer(f"{m.kind[:16]} m-line lacks a=mid")
    active = [str(m.rtp.muxId) for m in description.media if m.port != 0]
    if not groups:
        if len(active) > 1:
            raise BadOffer("an offer of several m-lines must BUNDLE them (a=group:BUNDLE)")
        return
    items = [str(item) for item in groups[0].items]
    if len(set(items)) != len(items) or set(items) != set(active):
        listed, mids = " ".join(items)[:64], " ".join(active)[:64]
        raise BadOffer(f"a=group:BUNDLE must list each active m-line's mid exactly once (it lists {listed}; "
                       f"the active mids are {mids})")


def check_offer(text: str, *, sending: bool, limits: LimitsConfig) -> CheckedOffer:
    """Validate an offer; ``sending`` is True for WHIP (the client sends media), False for WHEP."""
    if not text.strip():
        raise BadOffer("empty SDP offer")
    if not text.lstrip().startswith("v=0"):
        raise BadOffer("SDP must start with 'v=0'")
    lines = _check_lines(text, limits)
    mlines = sum(1 for line in lines if line.startswith("m="))
    if mlines > limits.max_offer_mlines:
        raise BadOffer(f"offer has {mlines} m-lines; at most {limits.max_offer_mlines} are accepted")
    candidates = sum(1 for line in lines if line.startswith("a=candidate:"))
    if candidates > limits.max_remote_candidates:
        raise BadOffer(f"offer carries {candidates} candidates; at most {limits.max_remote_candidates}")
    if candidates:
        text, candidates = _usable_candidates(lines)
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises several types on garbage
        raise BadOffer(f"malformed SDP: {exc!r}"[:200]) from exc
    media = [m for m in description.media if m.kind in ("audio", "video")]
    if not media:
        raise BadOffer("offer has no audio or video m-line")
    _check_bundle(description)
    wanted = ("sendonly", "sendrecv") if sending else ("recvonly", "sendrecv")
    result: list[OfferedMedia] = []
    kinds: set[str] = set()
    mids: set[str] = set()
    for m in description.media:
        if m.kind not in ("audio", "video", "application") and m.port != 0:
            # aiortc keeps such a line in the BUNDLE but gives it no transport: named first in the group, it
            # left every transceiver without one (the session's connect task and close() then raised).
            raise BadOffer(f"m={m.kind[:16]} lines are not supported; offer audio and video")
        mid = m.rtp.muxId
        if not mid:
            raise BadOffer(f"{m.kind} m-line lacks a=mid")
        if len(mid) > MAX_MID_LENGTH:
            raise BadOffer(f"a=mid is longer than {MAX_MID_LENGTH} characters")
        if mid in mids:
            raise BadOffer(f"a=mid:{mid} appears on more than one m-line")
        mids.add(mid)
    for m in media:
        if m.port == 0:
            continue  # rejected/disabled m-line
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise BadOffer(f"{m.kind} m-line lacks a=ice-ufrag / a=ice-pwd")
        if not UFRAG_LENGTH[0] <= len(m.ice.usernameFragment) <= UFRAG_LENGTH[1]:
            raise BadOffer(f"a=ice-ufrag must be {UFRAG_LENGTH[0]}-{UFRAG_LENGTH[1]} characters")
        if not PWD_LENGTH[0] <= len(m.ice.password) <= PWD_LENGTH[1]:
            raise BadOffer(f"a=ice-pwd must be {PWD_LENGTH[0]}-{PWD_LENGTH[1]} characters")
        if not m.dtls or not m.dtls.fingerprints:
            raise BadOffer(f"{m.kind} m-line lacks a=fingerprint")
        if m.dtls.role not in ("auto", "client", "server"):
            raise BadOffer(f"{m.kind} m-line has an unusable a=setup")
        direction = m.direction or "sendrecv"
        if direction not in wanted:
            verb = "send" if sending else "receive"
            raise BadOffer(f"{m.kind} m-line is {direction}; this endpoint needs the client to {verb} media")
        if sending and m.kind in kinds:
            raise BadOffer(f"more than one {m.kind} track offered; publish one audio and one video track")
        kinds.add(m.kind)
        if len(m.rtp.codecs) > MAX_CODECS_PER_MLINE:
            raise BadOffer(f"{m.kind} m-line lists more than {MAX_CODECS_PER_MLINE} payload types")
        codecs = tuple(c.mimeType for c in m.rtp.codecs if not is_rtx(c))
        result.append(OfferedMedia(m.kind, m.rtp.muxId, direction, codecs))
    if not result:
        raise BadOffer("every m-line of the offer is disabled")
    return CheckedOffer(text, tuple(result), candidates)


def require_codec(media: OfferedMedia, accepted: Sequence[str]) -> None:
    """NoCommonCodec unless the offer lists one of ``accepted`` (mime types or codec names)."""
    names = {c.split("/")[-1].lower() for c in media.codecs}
    if not any(a.split("/")[-1].lower() in names for a in accepted):
        offered = ", ".join(sorted({c.split("/")[-1] for c in media.codecs})) or "none"
        wants = ", ".join(a.split("/")[-1] for a in accepted)
        raise NoCommonCodec(f"{media.kind}: offer has {offered}; this room needs {wants}")


def parse_trickle(text: str, limits: LimitsConfig) -> TrickleFragment:
    """An RFC 8840 trickle-ice-sdpfrag: ufrag, pwd, candidates (parsed, bounded) and end-of-candidates."""
    ufrag = pwd = None
    lines: list[str] = []
    end = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if len(line) > limits.max_sdp_line_bytes:
            raise BadCandidate(f"line {number} is longer than {limits.max_sdp_line_bytes} characters")
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            pwd = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            lines.append(line[len("a="):])
            if len(lines) > limits.max_candidates_per_patch:
                raise TooManyCandidates(f"a PATCH may carry at most {limits.max_candidates_per_patch} candidates")
        elif line == "a=end-of-candidates":
            end = True
        elif line and not line.startswith(("a=", "m=", "c=")):
            raise BadCandidate(f"unexpected line in trickle-ice-sdpfrag: {line[:60]!r}")
    candidates = []
    for line in lines:
        try:
            candidate = parse_candidate(line)
        except ValueError as exc:
            raise BadCandidate(str(exc)) from exc
        if not is_mdns(candidate):
            candidates.append(candidate)
    return TrickleFragment(ufrag, pwd, tuple(candidates), end)
