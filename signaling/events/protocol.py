"""Frames of the room events protocol (docs/protocol.md): client frames bounded and typed before any work.

A client frame is refused, cheapest check first, before any handler sees it: its size, its JSON nesting
depth (counted on the raw text, so a deeply nested frame never reaches the recursive JSON decoder), JSON
itself, its shape, and every string in it being encodable (``json.loads`` accepts a lone surrogate such
as ``"\\ud800"`` that no UTF-8 socket can carry). Handlers then read fields through the typed accessors
below, so a list where a string belongs is a ``bad_message`` naming the field, never a traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

VERSION = 1
MODERATION = ("mute", "unmute", "kick", "ban", "unban")
PK = ("pk_invite", "pk_accept", "pk_reject", "pk_end")
GUESTS = ("guest_invite", "guest_accept", "guest_reject", "guest_end", "guest_mute")
CLIENT_TYPES = ("chat", "gift", "like", "ping", "quality", *MODERATION, *PK, *GUESTS)

# Close codes (docs/protocol.md, "Close codes").
CLOSE_NORMAL = 1000
CLOSE_SHUTDOWN = 1001
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_EXPIRED = 4001
CLOSE_KICKED = 4003  # kicked or banned
CLOSE_ROOM_ENDED = 4004
CLOSE_TOO_SLOW = 4008
CLOSE_TOO_MANY_ERRORS = 4009

Message = dict[str, Any]

# JSON strings (escapes included) and the brackets outside them: enough to measure nesting without parsing.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class ProtocolError(Exception):
    """A refused client frame: answered with an ``error`` frame, the socket stays open."""

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


def _depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` outside JSON strings (an unterminated string counts as text)."""
    deepest = depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _unencodable(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) in ``value`` that UTF-8 cannot encode, else None."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "frame"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _unencodable(key, where) is not None:
                return where.encode("utf-8", "backslashreplace").decode("utf-8")
            found = _unencodable(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _unencodable(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def parse_frame(text: str, max_bytes: int, max_depth: int) -> ClientFrame:
    """Check and parse one client text frame; raises :class:`ProtocolError` and nothing else."""
    # Each character is 1-4 UTF-8 bytes: only a frame near the limit needs counting exactly.
    if len(text) > max_bytes or (4 * len(text) > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes):
        raise ProtocolError("too_large", f"frame exceeds {max_bytes} bytes")
    if _depth(text) > max_depth:
        raise ProtocolError("too_deep", f"frame nests deeper than {max_depth} levels")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or a number too long to convert
        raise ProtocolError("bad_json", f"not JSON: {getattr(exc, 'msg', 'invalid number')}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "a frame must be a JSON object")
    ref = data.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > 64 or _unencodable(ref, "ref")):
        raise ProtocolError("bad_message", "'ref' must be a string of at most 64 characters")
    bad = _unencodable(data, "")
    if bad is not None:
        raise ProtocolError("bad_message", f"'{bad}' is not valid Unicode (a lone surrogate)", ref)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "'type' must be a string", ref)
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown type {kind[:40]!r}", ref)
    return ClientFrame(kind, ref, data)


# -- typed field accessors (each raises bad_message naming the field) -----------------------------


def text_field(frame: ClientFrame, name: str, max_length: int) -> str:
    value = frame.data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError("bad_message", f"'{name}' must be a non-empty string", frame.ref)
    value = value.strip()
    if len(value) > max_length:
        raise ProtocolError("bad_message", f"'{name}' is longer than {max_length} characters", frame.ref)
    return value


def choice_field(frame: ClientFrame, name: str, choices: tuple[str, ...]) -> str:
    value = frame.data.get(name)
    if value not in choices:
        raise ProtocolError("bad_message", f"'{name}' must be one of {', '.join(choices)}", frame.ref)
    return str(value)


def bool_field(frame: ClientFrame, name: str, default: bool) -> bool:
    value = frame.data.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError("bad_message", f"'{name}' must be true or false", frame.ref)
    return value


def optional_text(frame: ClientFrame, name: str, max_length: int) -> str | None:
    """A string field that may be absent or null."""
    if frame.data.get(name) is None:
        return None
    return text_field(frame, name, max_length)


def int_field(frame: ClientFrame, name: str, low: int, high: int, default: int | None = None) -> int:
    value = frame.data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError("bad_message", f"'{name}' must be an integer from {low} to {high}", frame.ref)
    return value


def number_field(frame: ClientFrame, name: str, low: float, high: float) -> float:
    value = frame.data.get(name)
    # NaN fails the range test; so do the infinities json.loads makes of "1e999".
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ProtocolError("bad_message", f"'{name}' must be a number from {low} to {high}", frame.ref)
    return float(value)


def optional_number(frame: ClientFrame, name: str, low: float, high: float) -> float | None:
    if frame.data.get(name) is None:
        return None
    return number_field(frame, name, low, high)


# -- server frames ------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """One server frame as UTF-8 JSON, encoded once for every recipient.

    Text we did not parse ourselves (an identity in a token, a title) may still hold a lone surrogate:
    such a frame goes out with ASCII escapes, which every JSON reader turns back into the same string.
    Anything else that cannot be encoded (a bug) raises ``TypeError`` or ``ValueError`` here, once,
    never in a socket's writer.
    """
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":")).encode("ascii")


def error_frame(code: str, message: str, ref: str | None) -> Message:
    return {"type": "error", "code": code, "message": message, "ref": ref}
