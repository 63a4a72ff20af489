"""Property-based fuzzing of the frame parser and of dispatching parsed frames to the concerns (in-process).

The property: whatever a client sends, nothing but a ProtocolError (an error frame) comes out; no
handler and no timer it sets off raises anything else. Every crash found is kept below as an
``@example``, so it is checked on every run whatever the random draw.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from signaling.config import EventsConfig
from signaling.events.protocol import CLIENT_TYPES, ProtocolError, parse_frame
from tests.unit.test_events_fakes import World

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = EventsConfig()

# Characters a JSON text or a decoded string may hold, lone surrogates and JSON's own punctuation included.
CHARS = st.one_of(st.characters(), st.sampled_from(['"', "\\", "[", "]", "{", "}", ":", ",", "\x00", "\ud800",
                                                    "\udfff", "\ud83d", "\u2028"]))
TEXT = st.text(CHARS, max_size=40)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
NUMBERS = st.integers(-2, 10**9) | st.floats(allow_nan=True, allow_infinity=True)
# Each field a handler reads: plausible values (to get past the first check) or anything at all.
FIELDS = {
    "text": st.sampled_from(["hi", "  ", "scam", "x" * 250]) | JSON,
    "kind": st.sampled_from(["rose", "heart", "rocket", "diamond"]) | JSON,
    "count": NUMBERS | JSON,
    "side": st.sampled_from(["a", "b", "c"]) | JSON,
    "identity": st.sampled_from(["host-a", "host-b", "fan", "singer", "guest", "admin", "nobody"]) | JSON,
    "duration_s": NUMBERS | JSON,
    "room": st.sampled_from(["a", "b", "c", "nowhere"]) | JSON,
    "id": st.sampled_from(["pk1", "pk2", "pk3", "g1", "g2"]) | JSON,
    "watch_s": NUMBERS | JSON,
    "freeze_s": NUMBERS | JSON,
    "fps": NUMBERS | JSON,
    "latency_ms": NUMBERS | JSON,
    "ref": st.none() | TEXT | JSON,
}
FRAMES = st.fixed_dictionaries({"type": st.sampled_from(CLIENT_TYPES) | TEXT}, optional=FIELDS)
SENDERS = ("host-a", "host-b", "fan", "guest", "admin", "singer")


def encoded(frame: dict[str, Any], ascii_only: bool) -> str:
    return json.dumps(frame, ensure_ascii=ascii_only)


@FUZZ
@given(st.one_of(st.text(CHARS, max_size=300), st.text(st.sampled_from('[]{}"\\ ,:1a'), max_size=4096),
                 st.builds(encoded, FRAMES, st.booleans())))
@example("[" * 3000)  # RecursionError from the JSON decoder, within the default 4096 bytes
@example('{"type": "chat", "text": "\\ud800"}')  # parsed fine, then killed every writer of the room
@example('{"type": "like", "count": ' + "9" * 4050 + "}")  # near Python's 4300-digit conversion limit
def test_parsing_raises_nothing_but_protocol_errors(text: str) -> None:
    try:
        frame = parse_frame(text, LIMITS.max_frame_bytes, LIMITS.max_frame_depth)
    except ProtocolError:
        return
    assert frame.type in CLIENT_TYPES
    json.dumps(frame.data, ensure_ascii=False).encode("utf-8")  # everything accepted can be sent on


def world() -> tuple[World, dict[str, Any]]:
    w = World()
    w.live_room("a")
    w.live_room("b")
    senders = {"host-a": w.fanout.sockets[0], "host-b": w.fanout.sockets[1],
               "fan": w.socket("a", "fan"), "guest": w.socket("a", "guest", "guest"),
               "admin": w.socket("a", "admin", "admin"), "singer": w.socket("a", "singer")}
    return w, senders


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SENDERS), FRAMES, st.booleans(), st.floats(0, 40)), max_size=8))
@example([("fan", {"type": "gift", "kind": ["rose"]}, False, 0.0)])  # unhashable kind: TypeError, close 1002
@example([("fan", {"type": "gift", "kind": {}}, True, 0.0)])
@example([("host-a", {"type": "chat", "text": {"\x80\ud800": None}}, False, 0.0)])  # naming a key: non-ASCII
@example([("host-a", {"type": "pk_invite", "room": "b"}, False, 0.0),
          ("host-b", {"type": "pk_accept", "id": "pk1"}, False, 0.0),
          ("fan", {"type": "gift", "kind": "rose", "side": ["b"]}, False, 400.0)])
def test_dispatching_any_frame_raises_nothing_but_protocol_errors(script: list[tuple[str, dict[str, Any], bool,
                                                                                      float]]) -> None:
    w, senders = world()
    for who, frame, ascii_only, wait in script:
        try:
            parsed = parse_frame(encoded(frame, ascii_only), LIMITS.max_frame_bytes, LIMITS.max_frame_depth)
            w.dispatcher.dispatch(senders[who], parsed)
        except ProtocolError as refused:
            assert refused.code and refused.message
        w.scheduler.advance(wait)  # timers the frames set (invitations, battles, grace) fire here
    for _, message in w.fanout.inbox:  # whatever went out can be encoded for a socket
        json.dumps(message, ensure_ascii=False).encode("utf-8")
