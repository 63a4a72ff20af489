"""PK battles and guests on mic as state machines: frames, gifts, relay changes and a hand-driven clock.

No event loop and no sockets: each case is a table row of steps, run against the concerns wired to the
fakes in test_events_fakes.py, and checked for what each host and audience was told, the relay link,
and that no timer outlives the state it belonged to.
"""

from __future__ import annotations

from typing import Any

import pytest

from signaling.events.protocol import ClientFrame, ProtocolError
from tests.unit.test_events_fakes import COSTREAM, TOKENS, World

Step = tuple[Any, ...]


class Stage:
    """Two live rooms "a" and "b" (plus "c"), their hosts' sockets, and a fan in each room."""

    def __init__(self) -> None:
        self.world = w = World()
        self.room_a, self.host_a = w.live_room("a")
        self.room_b, self.host_b = w.live_room("b")
        self.room_c, self.host_c = w.live_room("c")
        self.fan_a = w.socket("a", "fan-a")
        self.fan_b = w.socket("b", "fan-b")
        self.hosts = {"a": self.host_a, "b": self.host_b, "c": self.host_c}

    def frame(self, sender: Any, frame_type: str, **data: Any) -> None:
        self.world.dispatcher.dispatch(sender, ClientFrame(frame_type, None, {"type": frame_type, **data}))

    def last_invitation(self, room: str) -> str:
        return str(self.world.fanout.got(self.hosts[room], "pk_invitation")[-1]["id"])

    def run(self, step: Step) -> None:
        action, *args = step
        w = self.world
        if action == "invite":  # ("invite", from, to)
            self.frame(self.hosts[args[0]], "pk_invite", room=args[1])
        elif action in ("accept", "reject"):  # ("accept", room invited)
            self.frame(self.hosts[args[0]], f"pk_{action}", id=self.last_invitation(args[0]))
        elif action == "end":
            self.frame(self.hosts[args[0]], "pk_end")
        elif action == "gift":  # ("gift", fan's room, kind, count, side)
            fan = self.fan_a if args[0] == "a" else self.fan_b
            self.frame(fan, "gift", kind=args[1], count=args[2], side=args[3])
        elif action == "wait":
            w.scheduler.advance(args[0])
        elif action == "host_left":
            w.rooms.rooms[args[0]].live = False
            w.pk.host_changed(args[0], False)
        elif action == "host_back":
            w.rooms.rooms[args[0]].live = True
            w.pk.host_changed(args[0], True)
        elif action == "room_closed":
            w.pk.room_closed(args[0])
        else:
            raise AssertionError(f"unknown step {action}")


D, T, G = COSTREAM.pk_duration_s, COSTREAM.pk_invite_timeout_s, COSTREAM.pk_host_grace_s

# (case, steps, result {room: win/lose/draw} or None for no battle, reason fragment, winner)
BATTLES = [
    ("timer ends a scoreless battle in a draw", [("invite", "a", "b"), ("accept", "b"), ("wait", D)],
     {"a": "draw", "b": "draw"}, "time is up", None),
    ("gifts score for the sender's room or the side it names",
     [("invite", "a", "b"), ("accept", "b"), ("gift", "a", "rose", 2, None), ("gift", "b", "heart", 3, None),
      ("gift", "a", "heart", 1, "b"), ("wait", D)], {"a": "win", "b": "lose"}, "time is up", "a"),
    ("a side naming no battle room scores for the sender's room",
     [("invite", "a", "b"), ("accept", "b"), ("gift", "b", "rose", 1, "c"), ("end", "a")],
     {"a": "lose", "b": "win"}, "ended early by host-a", "b"),
    ("either host ends it early, scored as it stands", [("invite", "a", "b"), ("accept", "b"), ("end", "b")],
     {"a": "draw", "b": "draw"}, "ended early by host-b", None),
    ("a host away past the grace period loses", [("invite", "a", "b"), ("accept", "b"), ("host_left", "a"),
                                                 ("wait", G)], {"a": "lose", "b": "win"}, "the host of a left", "b"),
    ("a host back within the grace period keeps the battle going",
     [("invite", "a", "b"), ("accept", "b"), ("host_left", "a"), ("wait", G - 1), ("host_back", "a"),
      ("wait", D - G + 1)], {"a": "draw", "b": "draw"}, "time is up", None),
    ("a room that closes loses", [("invite", "a", "b"), ("accept", "b"), ("room_closed", "b")],
     {"a": "win", "b": "lose"}, "room b ended", "a"),
    ("hosts inviting each other get one battle", [("invite", "a", "b"), ("invite", "b", "a"), ("end", "a")],
     {"a": "draw", "b": "draw"}, "ended early", None),
    ("a rejected invitation starts nothing", [("invite", "a", "b"), ("reject", "b")], None,
     "rejected by host-b", None),
    ("an unanswered invitation is rejected when it times out", [("invite", "a", "b"), ("wait", T)], None,
     "no answer in time", None),
    ("an invitation to a room that goes offline is rejected", [("invite", "a", "b"), ("host_left", "b")], None,
     "went offline", None),
    ("an invitation to a room that closes is rejected", [("invite", "a", "b"), ("room_closed", "b")], None,
     "ended", None),
]


@pytest.mark.parametrize(("case", "steps", "result", "reason", "winner"), BATTLES, ids=[b[0] for b in BATTLES])
def test_pk_battle_outcomes(case: str, steps: list[Step], result: dict[str, str] | None, reason: str,
                            winner: str | None) -> None:
    stage = Stage()
    for step in steps:
        stage.run(step)
    fanout, pk = stage.world.fanout, stage.world.pk
    if result is None:
        assert fanout.got(stage.fan_a, "pk_started") == [] and stage.room_a.pk_partner is None
        for host in (stage.host_a, stage.host_b):
            (rejected,) = fanout.got(host, "pk_rejected")
            assert reason in rejected["reason"], rejected
    else:
        for fan in (stage.fan_a, stage.fan_b):  # both audiences saw exactly one start and one end
            (started,) = fanout.got(fan, "pk_started")
            (ended,) = fanout.got(fan, "pk_ended")
            assert started["id"] == ended["id"] and set(started["rooms"]) == {"a", "b"}
            assert ended["result"] == result and ended["winner"] == winner and reason in ended["reason"], ended
        assert stage.room_a.pk_partner is None and stage.room_b.pk_partner is None, "the relay link outlived it"
        assert pk.results[-1]["result"] == result
    assert pk.battles == {} and pk.invitations == {}
    assert stage.world.scheduler.pending() == 0, "a timer outlived its battle or invitation"


def test_a_battle_links_the_rooms_hands_each_host_a_partner_grant_and_ticks_scores() -> None:
    stage = Stage()
    stage.run(("invite", "a", "b"))
    stage.run(("accept", "b"))
    assert stage.room_a.pk_partner is stage.room_b
    fanout = stage.world.fanout
    for host, partner in ((stage.host_a, "b"), (stage.host_b, "a")):
        (grant,) = fanout.got(host, "pk_partner")
        verified = TOKENS.verify(grant["token"])  # the real TokenService: a PK-scoped viewer grant
        assert (grant["room"], verified.room, verified.role, verified.identity, verified.scope) == (
            partner, partner, "viewer", host.identity, "pk")
    assert stage.world.pk.snapshot("a")["remaining_s"] == D
    stage.run(("wait", 3 * COSTREAM.pk_tick_s))
    ticks = fanout.got(stage.fan_b, "pk_score")
    assert [t["remaining_s"] for t in ticks] == [D - COSTREAM.pk_tick_s * i for i in (1, 2, 3)]
    stage.run(("gift", "a", "rocket", 1, None))  # a gift sends the score at once, not at the next tick
    assert fanout.got(stage.fan_b, "pk_score")[-1]["scores"] == {"a": 100, "b": 0}


# (case, sender, frame type, fields, error code); sender: a host ("a"/"b"/"c") or "fan" (a viewer in a)
REFUSALS = [
    ("a viewer may not invite", "fan", "pk_invite", {"room": "b"}, "not_allowed"),
    ("a room cannot battle itself", "a", "pk_invite", {"room": "a"}, "pk_refused"),
    ("the invited room must be live", "a", "pk_invite", {"room": "nowhere"}, "pk_refused"),
    ("an invitation needs a room name", "a", "pk_invite", {"room": ["b"]}, "bad_message"),
    ("an answer needs an id", "b", "pk_accept", {}, "bad_message"),
    ("no such invitation", "b", "pk_accept", {"id": "pk999"}, "unknown_invitation"),
    ("no battle to end", "a", "pk_end", {}, "pk_not_active"),
]


@pytest.mark.parametrize(("case", "who", "kind", "fields", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_pk_refusals(case: str, who: str, kind: str, fields: dict[str, Any], code: str) -> None:
    stage = Stage()
    sender = stage.fan_a if who == "fan" else stage.hosts[who]
    with pytest.raises(ProtocolError) as refused:
        stage.frame(sender, kind, **fields)
    assert refused.value.code == code
    assert stage.world.pk.invitations == {} and stage.world.scheduler.pending() == 0


def test_busy_rooms_refuse_invitations_and_a_failed_link_is_reported_to_both_hosts() -> None:
    stage = Stage()
    stage.run(("invite", "a", "b"))
    with pytest.raises(ProtocolError) as pending:
        stage.frame(stage.host_c, "pk_invite", room="b")
    assert pending.value.code == "pk_busy"
    stage.run(("accept", "b"))
    with pytest.raises(ProtocolError) as battling:
        stage.frame(stage.host_c, "pk_invite", room="a")
    assert battling.value.code == "pk_busy"
    stage.run(("end", "a"))
    # The relay refuses the link (say c got linked elsewhere meanwhile): both hosts hear why, no battle.
    stage.run(("invite", "a", "c"))
    stage.room_c.pk_partner = stage.room_b
    stage.run(("accept", "c"))
    assert "already in a PK" in stage.world.fanout.got(stage.host_a, "pk_rejected")[-1]["reason"]
    assert stage.world.pk.battles == {} and stage.world.scheduler.pending() == 0


# -- guests on mic --------------------------------------------------------------------------------


class Mic:
    def __init__(self, max_guests: int = 1) -> None:
        self.world = w = World(max_guests=max_guests)
        self.room, self.host = w.live_room("mic")
        self.singer = w.socket("mic", "singer")
        self.other = w.socket("mic", "other")

    def frame(self, sender: Any, frame_type: str, **data: Any) -> None:
        self.world.dispatcher.dispatch(sender, ClientFrame(frame_type, None, {"type": frame_type, **data}))

    def invite(self, identity: str = "singer") -> str:
        self.frame(self.host, "guest_invite", identity=identity)
        target = self.singer if identity == "singer" else self.other
        return str(self.world.fanout.got(target, "guest_invitation")[-1]["id"])


# (case, steps, on mic afterwards, what the host heard last)
GUEST_FLOWS = [
    ("accepting puts the invitee on mic", ["invite", "accept"], {"singer"}, "guest_accepted"),
    ("declining does not", ["invite", "reject"], set(), "guest_rejected"),
    ("no answer in time does not", ["invite", "timeout"], set(), "guest_rejected"),
    ("the host takes a guest off mic", ["invite", "accept", "host_ends"], set(), "guest_accepted"),
    ("a guest leaves the mic itself", ["invite", "accept", "guest_ends"], set(), "guest_accepted"),
]


@pytest.mark.parametrize(("case", "steps", "on_mic", "last"), GUEST_FLOWS, ids=[g[0] for g in GUEST_FLOWS])
def test_guest_flows(case: str, steps: list[str], on_mic: set[str], last: str) -> None:
    mic = Mic()
    invitation = ""
    for step in steps:
        if step == "invite":
            invitation = mic.invite()
        elif step in ("accept", "reject"):
            mic.frame(mic.singer, f"guest_{step}", id=invitation)
        elif step == "timeout":
            mic.world.scheduler.advance(COSTREAM.guest_invite_timeout_s)
        elif step == "host_ends":
            mic.frame(mic.host, "guest_end", identity="singer")
        elif step == "guest_ends":
            mic.frame(mic.singer, "guest_end", identity="someone-else")  # a guest can only end itself
    assert mic.room.guest_grants == on_mic
    assert mic.world.fanout.types(mic.host)[-1] == last
    if "accept" in steps:
        (token,) = mic.world.fanout.got(mic.singer, "guest_token")
        verified = TOKENS.verify(token["token"])
        assert (verified.room, verified.role, verified.identity) == ("mic", "guest", "singer")
    assert mic.world.guests.invitations == {} and mic.world.scheduler.pending() == 0


def test_guest_refusals() -> None:
    mic = Mic()
    cases = [(mic.other, "guest_invite", {"identity": "singer"}, "not_allowed"),
             (mic.host, "guest_invite", {"identity": "nobody"}, "unknown_target"),
             (mic.other, "guest_accept", {"id": "g999"}, "unknown_invitation"),
             (mic.other, "guest_end", {}, "unknown_target")]
    for sender, kind, fields, code in cases:
        with pytest.raises(ProtocolError) as refused:
            mic.frame(sender, kind, **fields)
        assert refused.value.code == code, (kind, fields)
    assert mic.world.scheduler.pending() == 0, "a refused invitation left its timer"
    invitation = mic.invite()
    with pytest.raises(ProtocolError) as not_yours:
        mic.frame(mic.other, "guest_accept", id=invitation)  # only the invitee answers
    assert not_yours.value.code == "unknown_invitation"
    mic.room.guests["session-1"] = object()  # max_guests = 1: the one slot is taken
    with pytest.raises(ProtocolError) as full:
        mic.invite("other")
    assert full.value.code == "guest_slots_full"


def test_the_host_mutes_a_guests_media_and_nobody_else_can() -> None:
    mic = Mic()
    mic.frame(mic.singer, "guest_accept", id=mic.invite())
    mic.frame(mic.host, "guest_mute", identity="singer", kind="audio")
    mic.frame(mic.host, "guest_mute", identity="singer", kind="video", muted=False)
    assert mic.room.media_mutes == [("singer", "audio", True), ("singer", "video", False)]
    cases = [(mic.singer, {"identity": "singer", "kind": "audio"}, "not_allowed"),  # a guest is no host
             (mic.host, {"identity": "other", "kind": "audio"}, "unknown_target"),  # not on mic
             (mic.host, {"identity": "singer", "kind": "screen"}, "bad_message"),
             (mic.host, {"identity": "singer", "kind": "audio", "muted": "yes"}, "bad_message"),
             (mic.host, {"kind": "audio"}, "bad_message")]
    for sender, fields, code in cases:
        with pytest.raises(ProtocolError) as refused:
            mic.frame(sender, "guest_mute", **fields)
        assert refused.value.code == code, fields
    assert len(mic.room.media_mutes) == 2, "a refused frame muted something"


def test_a_closed_room_drops_its_guest_invitations_and_their_timers() -> None:
    mic = Mic()
    mic.invite()
    mic.world.guests.room_closed("mic")
    assert mic.world.guests.invitations == {} and mic.world.scheduler.pending() == 0
