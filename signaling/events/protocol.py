"""Client frames of the room events protocol (docs/protocol.md), validated into plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSION = 1
MODERATION = ("mute", "unmute", "kick", "ban")
COSTREAM = ("pk_invite", "pk_accept", "pk_reject", "pk_end", "guest_invite", "guest_accept", "guest_reject",
            "guest_end")
CLIENT_TYPES = ("chat", "gift", "like", "ping", "quality", *MODERATION, *COSTREAM)


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(frozen=True, slots=True)
class ClientFrame:
    type: str
    ref: str | None
    data: dict[str, Any]


def parse_frame(text: str, max_bytes: int) -> ClientFrame:
    if len(text.encode("utf-8", "replace")) > max_bytes:
        raise ProtocolError("too_large", f"frame exceeds {max_bytes} bytes")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "a frame must be a JSON object")
    ref = data.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
        raise ProtocolError("bad_message", "ref must be a string of at most 64 characters")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "missing 'type'", ref)
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown type {kind[:40]!r}", ref)
    return ClientFrame(kind, ref, data)


def text_field(frame: ClientFrame, name: str, max_length: int) -> str:
    value = frame.data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError("bad_message", f"'{name}' must be a non-empty string", frame.ref)
    value = value.strip()
    if len(value) > max_length:
        raise ProtocolError("bad_message", f"'{name}' is longer than {max_length} characters", frame.ref)
    return value


def int_field(frame: ClientFrame, name: str, low: int, high: int, default: int | None = None) -> int:
    value = frame.data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError("bad_message", f"'{name}' must be an integer from {low} to {high}", frame.ref)
    return value


def number_field(frame: ClientFrame, name: str, low: float, high: float) -> float:
    value = frame.data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ProtocolError("bad_message", f"'{name}' must be a number from {low} to {high}", frame.ref)
    return float(value)


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
