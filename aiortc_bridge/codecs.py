"""Codec capabilities and negotiated codecs, in the relay's terms (``CodecInfo``-like tuples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters


@dataclass(frozen=True, slots=True)
class NegotiatedCodec:
    mime_type: str
    clock_rate: int
    channels: int | None
    fmtp: tuple[tuple[str, str], ...]


def describe(codec: RTCRtpCodecParameters) -> NegotiatedCodec:
    fmtp = tuple(sorted((str(k), str(v)) for k, v in codec.parameters.items()))
    return NegotiatedCodec(codec.mimeType, codec.clockRate, codec.channels, fmtp)


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The media codec (not RTX) the transceiver settled on, first by preference."""
    for codec in transceiver._codecs:
        if not is_rtx(codec):
            return codec
    return None


def capabilities_for(kind: str, mime_types: Sequence[str], rtx: bool = True) -> list[RTCRtpCodecCapability]:
    """aiortc capabilities matching ``mime_types`` (or bare names) in that order, plus RTX for video."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    names = [m.split("/")[-1].lower() for m in mime_types]
    chosen = [c for name in names for c in caps if c.mimeType.split("/")[-1].lower() == name]
    if chosen and kind == "video" and rtx:
        chosen += [c for c in caps if is_rtx(c)]
    return chosen


def capabilities_matching(mime_type: str, fmtp: Sequence[tuple[str, str]]) -> list[RTCRtpCodecCapability]:
    """The capability (plus RTX) equal to a publication's codec, for a viewer's answer."""
    kind = mime_type.split("/", 1)[0].lower()
    caps = RTCRtpSender.getCapabilities(kind).codecs
    wanted = dict(fmtp)
    chosen = []
    for cap in caps:
        if cap.mimeType.lower() != mime_type.lower():
            continue
        params = {str(k): str(v) for k, v in cap.parameters.items()}
        if "profile-level-id" in wanted and params.get("profile-level-id") != wanted["profile-level-id"]:
            continue
        if "packetization-mode" in wanted and params.get("packetization-mode") != wanted["packetization-mode"]:
            continue
        chosen.append(cap)
    if chosen and kind == "video":
        chosen += [c for c in caps if is_rtx(c)]
    return chosen
