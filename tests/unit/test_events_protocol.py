"""Client frames are bounded and typed before any handler sees them; server frames encode once, safely."""

from __future__ import annotations

import json

import pytest

from signaling.events.protocol import ProtocolError, encode, parse_frame

MAX_BYTES, MAX_DEPTH = 4096, 4


def refused(text: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> ProtocolError:
    with pytest.raises(ProtocolError) as error:
        parse_frame(text, max_bytes, max_depth)
    return error.value


def test_a_good_frame_parses_with_its_ref() -> None:
    frame = parse_frame('{"type": "chat", "text": "hi 👋", "ref": "r1"}', MAX_BYTES, MAX_DEPTH)
    assert (frame.type, frame.ref, frame.data["text"]) == ("chat", "r1", "hi 👋")


def test_size_counts_utf8_bytes_not_characters() -> None:
    emoji = "👋" * 300  # 300 characters, 1200 bytes
    text = json.dumps({"type": "chat", "text": emoji}, ensure_ascii=False)
    assert parse_frame(text, 1300, MAX_DEPTH).data["text"] == emoji
    assert refused(text, max_bytes=1000).code == "too_large"
    assert refused("x" * 5000).code == "too_large"


@pytest.mark.parametrize("text", ["[" * 3000, "{" * 2000, '{"type": "ping", "a": [[[[1]]]]}',
                                  '{"type": "ping", "a": [{"b": [{"c": 1}]}]}'])
def test_nesting_deeper_than_the_bound_is_refused_before_parsing(text: str) -> None:
    # 3000 brackets would reach the recursive JSON decoder's recursion limit
    assert refused(text, max_bytes=10_000).code == "too_deep"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"type": "chat", "text": "[[[[[{{{{{ \\\" ]]]"})
    assert parse_frame(text, MAX_BYTES, MAX_DEPTH).data["text"].startswith("[[[[[")
    assert parse_frame('{"type": "ping", "a": [{"b": [1]}]}', MAX_BYTES, MAX_DEPTH).type == "ping"  # depth 4


@pytest.mark.parametrize(("text", "code"), [
    ("{not json", "bad_json"), ("[1, 2]", "bad_json"), ('"chat"', "bad_json"), ("", "bad_json"),
    ('{"text": "no type"}', "bad_message"), ('{"type": 7}', "bad_message"), ('{"type": ["chat"]}', "bad_message"),
    ('{"type": "teleport"}', "unknown_type"), ('{"type": "ping", "ref": 5}', "bad_message"),
    ('{"type": "ping", "ref": "' + "r" * 65 + '"}', "bad_message"),
])
def test_malformed_frames_get_precise_codes(text: str, code: str) -> None:
    assert refused(text).code == code


@pytest.mark.parametrize(("text", "field"), [
    ('{"type": "chat", "text": "a \\ud800 b"}', "text"),
    ('{"type": "chat", "text": "ok", "extra": {"deep": ["\\udfff"]}}', "extra.deep[0]"),
    ('{"type": "chat", "text": "ok", "\\ud83d": 1}', "\\ud83d"),
    ('{"type": "chat\\ud800"}', "type"),
])
def test_a_lone_surrogate_anywhere_is_refused_naming_where(text: str, field: str) -> None:
    error = refused(text)
    assert error.code == "bad_message" and f"'{field}'" in error.message, error.message
    error.message.encode("utf-8")  # the error frame itself must be sendable


def test_a_lone_surrogate_in_ref_is_refused_without_echoing_it() -> None:
    error = refused('{"type": "ping", "ref": "\\ud800"}')
    assert error.code == "bad_message" and error.ref is None


def test_a_surrogate_pair_is_fine() -> None:
    assert parse_frame('{"type": "chat", "text": "\\ud83d\\udc4b"}', MAX_BYTES, MAX_DEPTH).data["text"] == "👋"


def test_numbers_too_long_to_convert_are_bad_json() -> None:
    # Python refuses to convert integers of more than 4300 digits (a ValueError, not a JSONDecodeError).
    assert refused('{"type": "like", "count": ' + "9" * 5000 + "}", max_bytes=10_000).code == "bad_json"


def test_server_frames_are_utf8_and_survive_text_we_did_not_parse() -> None:
    assert encode({"type": "chat", "text": "hi 👋"}) == '{"type":"chat","text":"hi 👋"}'.encode()
    # An identity from a token may hold a lone surrogate: the frame goes out with ASCII escapes instead.
    data = encode({"type": "chat", "from": {"identity": "x\ud800"}})
    assert json.loads(data) == {"type": "chat", "from": {"identity": "x\ud800"}}
    data.decode("ascii")
