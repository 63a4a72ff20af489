"""Chat, gifts, likes and moderation frames against the fakes: what the room is told, what is kept, what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.config import EventsConfig
from signaling.events.protocol import ClientFrame, ProtocolError
from tests.unit.test_events_fakes import FakeSender, World


def send(world: World, sender: FakeSender, frame_type: str, **data: Any) -> None:
    world.dispatcher.dispatch(sender, ClientFrame(frame_type, None, {"type": frame_type, **data}))


def code_of(world: World, sender: FakeSender, frame_type: str, **data: Any) -> str:
    with pytest.raises(ProtocolError) as refused:
        send(world, sender, frame_type, **data)
    return refused.value.code


def test_chat_reaches_the_room_is_filtered_and_kept_in_a_bounded_history() -> None:
    w = World(EventsConfig(chat_history=3, chat_burst=100))
    w.live_room("r")
    ann, bob = w.socket("r", "ann"), w.socket("r", "bob")
    outsider = w.socket("elsewhere", "eve")
    for i in range(5):
        send(w, ann, "chat", text=f"  hello {i} scam  ")
    assert [m["text"] for m in w.fanout.got(bob, "chat")] == [f"hello {i} ****" for i in range(5)]
    assert w.fanout.got(outsider, "chat") == []
    snapshot = w.chat.snapshot("r", "bob")
    assert [m["text"] for m in snapshot["chat"]] == ["hello 2 ****", "hello 3 ****", "hello 4 ****"]
    w.chat.room_closed("r")  # the history lives as long as the relay room
    assert w.chat.snapshot("r", "bob")["chat"] == []


def test_chat_refusals() -> None:
    w = World(EventsConfig(chat_burst=2, max_chat_length=10))
    w.live_room("r")
    ann = w.socket("r", "ann")
    assert code_of(w, ann, "chat", text="x" * 11) == "bad_message"
    assert code_of(w, ann, "chat", text="   ") == "bad_message"
    send(w, ann, "chat", text="one")
    send(w, ann, "chat", text="two")
    assert code_of(w, ann, "chat", text="three") == "rate_limited"
    w.mutes.mute("r", "ann", 60)
    assert code_of(w, ann, "chat", text="four") == "muted"
    assert w.chat.snapshot("r", "ann")["muted_until"] == int((w.clock() + 60) * 1000)


def test_gifts_are_totalled_and_likes_go_out_aggregated_once_per_tick() -> None:
    w = World()
    w.live_room("r")
    fan, watcher = w.socket("r", "fan"), w.socket("r", "watcher")
    send(w, fan, "gift", kind="rose", count=3)
    send(w, fan, "gift", kind="rose")
    assert w.chat.snapshot("r", "watcher")["gifts"] == {"rose": 4}
    assert code_of(w, fan, "gift", kind="diamond") == "bad_message"
    assert code_of(w, fan, "gift", kind="rose", count=0) == "bad_message"
    for _ in range(10):
        send(w, fan, "like", count=5)
    assert w.fanout.got(watcher, "likes") == []  # never one frame per like
    w.chat.tick()
    w.chat.tick()  # nothing new: nothing sent
    assert w.fanout.got(watcher, "likes") == [{"type": "likes", "total": 50, "delta": 50}]


# (case, actor role, action, fields, error code or None, what the relay room saw)
MODERATION = [
    ("a host mutes", "host", "mute", {"identity": "troll", "duration_s": 60}, None, "muted"),
    ("a guest on mic mutes", "guest", "mute", {"identity": "troll"}, None, "muted"),
    ("a viewer may not mute", "viewer", "mute", {"identity": "troll"}, "not_allowed", None),
    ("a host kicks through the relay room", "host", "kick", {"identity": "troll"}, None, "kicked"),
    ("kicking someone absent", "host", "kick", {"identity": "ghost"}, "unknown_target", None),
    ("a guest may not ban", "guest", "ban", {"identity": "troll"}, "not_allowed", None),
    ("a host bans through the relay room", "host", "ban", {"identity": "troll", "duration_s": 600}, None, "banned"),
    ("nobody but an admin touches the host", "guest", "kick", {"identity": "host-r"}, "not_allowed", None),
    ("an admin may", "admin", "kick", {"identity": "host-r"}, None, "kicked"),
    ("a target must be a string", "host", "kick", {"identity": ["troll"]}, "bad_message", None),
    ("a duration must be an integer", "host", "mute", {"identity": "troll", "duration_s": 1.5}, "bad_message", None),
]


@pytest.mark.parametrize(("case", "role", "action", "fields", "code", "effect"), MODERATION,
                         ids=[m[0] for m in MODERATION])
def test_moderation(case: str, role: str, action: str, fields: dict[str, Any], code: str | None,
                    effect: str | None) -> None:
    w = World()
    room, _ = w.live_room("r")
    room.present["troll"] = ("viewer", 1, 2)
    actor = w.socket("r", "mod", role)
    bystander = w.socket("r", "fan")
    target = fields["identity"]
    if code is not None:
        assert code_of(w, actor, action, **fields) == code
        assert room.kicked == [] and w.fanout.got(bystander, "moderation") == []
        return
    send(w, actor, action, **fields)
    (told,) = w.fanout.got(bystander, "moderation")
    assert (told["action"], told["target"], told["by"]) == (action, target, "mod")
    if effect == "muted":
        assert w.mutes.muted_until("r", target) == told["until"] / 1000
    elif effect == "kicked":
        assert room.kicked == [(target, "kicked by mod", "kicked")] and told["until"] is None
    elif effect == "banned":
        assert room.banned == [(target, w.clock() + 600)] and room.kicked == [(target, "banned by mod", "banned")]
