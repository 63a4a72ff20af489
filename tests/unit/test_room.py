"""Rooms: host claims, participants by identity, guests on mic, PK links, idle expiry, totals."""

from __future__ import annotations

import asyncio

import pytest

from relay.config import LimitsConfig, MediaConfig, RoomsConfig
from relay.errors import CapacityExceeded, GuestSlotsFull, HostAlreadyLive, NotOnMic, PkBusy, RoomNotLive
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.room import Room, Rooms
from relay.subscription import Subscription
from tests.unit.fakes import VP8_DELTA, VP8_KEY, FakeMember, FakeSink, FakeSocket, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)


class Closed:
    """A room observer that lets a test await a room closing."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reasons: list[str] = []

    def room_closed(self, room: object, reason: str) -> None:
        self.reasons.append(reason)
        self.event.set()


def rooms(max_rooms: int = 3, max_viewers: int = 2, grace: float = 0.01, absent: float = 0.05,
          max_guests: int = 2) -> Rooms:
    return Rooms(LimitsConfig(max_rooms=max_rooms, max_viewers_per_room=max_viewers),
                 RoomsConfig(empty_room_grace_s=grace, host_absent_timeout_s=absent), max_guests)


def publication(room: Room | None = None, owner: str = "") -> Publication:
    return Publication("video", VP8, FakeUpstream(), cache_size=64, keyframe_interval=0.1, owner=owner,
                       retire_into=room.retire_into if room else ())


def live(registry: Rooms, name: str) -> tuple[Room, FakeMember, Publication]:
    room = registry.get_or_create(name)
    host = FakeMember(f"host-{name}", f"h-{name}", "host").attach(room)
    room.claim_host(host)
    pub = publication(room, host.identity)
    room.publish(host, pub)
    return room, host, pub


def viewer(room: Room, identity: str, slots: int = 1, pk_view: bool = False) -> tuple[FakeMember, list[Subscription]]:
    member = FakeMember(identity, f"s-{identity}").attach(room)
    subs = [Subscription("video", 90000, FakeSink(), media=MediaConfig(), cname="c", slot=i,
                         retire_into=room.retire_into) for i in range(slots)]
    room.add_viewer(member, subs, pk_view)
    return member, subs


def feed(pub: Publication, seq: int, count: int) -> int:
    for i in range(count):
        pub.on_rtp(0x1234, seq + i, 3000 * (seq + i), True, (VP8_KEY if i == 0 else VP8_DELTA) + b"x" * 100, 0.0)
    return seq + count


async def test_second_host_identity_is_refused_but_same_identity_replaces_stale_session():
    room = rooms().get_or_create("r")
    first = FakeMember("alice", "s1", "host").attach(room)
    room.claim_host(first)
    with pytest.raises(HostAlreadyLive):
        room.claim_host(FakeMember("mallory", "s2", "host").attach(room))
    again = FakeMember("alice", "s3", "host").attach(room)
    room.claim_host(again)
    assert room.host is again and first.reasons == ["replaced by a new session of the same host"]


async def test_viewers_follow_a_new_publication_and_wait_while_host_is_away():
    registry = rooms()
    room, host, pub = live(registry, "r")
    _, (sub,) = viewer(room, "v")
    assert sub.source is pub
    host.close("gone")
    assert sub.source is None and room.viewer_count == 1 and not room.live
    again = FakeMember("host-r", "h2", "host").attach(room)
    room.claim_host(again)
    pub2 = publication(room)
    room.publish(again, pub2)
    assert sub.source is pub2


async def test_limits_raise_capacity_errors():
    registry = rooms(max_rooms=1, max_viewers=1)
    room = registry.get_or_create("a")
    with pytest.raises(CapacityExceeded):
        registry.get_or_create("b")
    with pytest.raises(RoomNotLive):
        room.check_can_view()
    host = FakeMember("h", "h", "host").attach(room)
    room.claim_host(host)
    room.publish(host, publication(room))
    viewer(room, "v1")
    with pytest.raises(CapacityExceeded):
        viewer(room, "v2")


async def test_unclaimed_room_expires_after_grace():
    registry = rooms()
    closed = Closed()
    registry.observers.add(closed)
    registry.get_or_create("a")
    await asyncio.wait_for(closed.event.wait(), 2)
    assert registry.get("a") is None and closed.reasons == ["empty room grace period over"]


async def test_viewers_of_a_host_who_never_returns_are_ended_and_the_empty_room_then_closes():
    registry = rooms()
    closed = Closed()
    registry.observers.add(closed)
    room, host, _ = live(registry, "a")
    member, _ = viewer(room, "v")
    host.close("gone")
    await asyncio.wait_for(closed.event.wait(), 2)
    assert member.reasons == ["the host did not return"]
    assert registry.get("a") is None and room.closed
    room.close("again")  # idempotent
    assert member.reasons == ["the host did not return"]


async def test_a_room_with_only_chat_sockets_lives_while_they_do():
    registry = rooms()
    closed = Closed()
    registry.observers.add(closed)
    room = registry.get_or_create("chat")
    socket = FakeSocket()
    room.attach_socket("fan", socket)
    await asyncio.sleep(0.05)  # several grace periods: the room must still be there
    assert registry.get("chat") is room and not closed.reasons
    room.detach_socket("fan", socket)
    await asyncio.wait_for(closed.event.wait(), 2)


async def test_participants_are_indexed_by_identity_and_kick_ends_sessions_and_sockets():
    registry = rooms()
    room, _, _ = live(registry, "k")
    member, _ = viewer(room, "troll")
    socket = FakeSocket()
    room.attach_socket("troll", socket)
    assert set(room.participants) == {"host-k", "troll"}
    assert room.role_of("troll") == "viewer" and room.role_of("host-k") == "host" and room.role_of("nobody") is None
    assert room.kick("troll", "kicked by host-k") == (1, 1)
    assert member.reasons == ["kicked by host-k"] and socket.ended == [("kicked", "kicked by host-k")]
    room.detach_socket("troll", socket)
    assert "troll" not in room.participants and room.viewer_count == 0
    assert room.kick("troll", "again") == (0, 0)


async def test_an_origins_pipe_to_an_edge_is_a_participant_of_its_own_role_in_the_rooms_dump():
    registry = rooms()
    room, _, _ = live(registry, "p")
    FakeMember("edge:b-w0", "pipe-1", role="edge").attach(room)  # what the origin's pipe session registers
    dump = room.dump(detailed=True)  # raised KeyError: 'edge' (the admin API's room detail on an origin)
    assert {p.identity: p.role for p in dump.participants} == {"host-p": "host", "edge:b-w0": "edge"}


async def test_a_ban_outlives_the_participant_and_the_room():
    registry = rooms()
    room, _, _ = live(registry, "b")
    member, _ = viewer(room, "spammer")
    until = room.ban("spammer", 60, "banned by host-b")
    assert member.reasons == ["banned by host-b"] and room.banned_until("spammer") == until
    room.close("over")
    again = registry.get_or_create("b")
    assert again.banned_until("spammer") == until


async def test_a_guest_grant_holds_only_while_the_host_keeps_the_identity_on_mic():
    registry = rooms()
    room, _, _ = live(registry, "g")
    singer = FakeMember("singer", "g1", "guest").attach(room)
    with pytest.raises(NotOnMic):
        room.claim_guest(singer)  # a guest token alone does not put anyone on mic
    assert room.role_of("singer") == "viewer"
    room.grant_guest("singer")
    room.claim_guest(singer)
    assert room.role_of("singer") == "guest"
    assert room.revoke_guest("singer", "off mic (host-g)") == 1
    assert singer.reasons == ["off mic (host-g)"] and not room.guests
    again = FakeMember("singer", "g2", "guest").attach(room)
    with pytest.raises(NotOnMic):
        room.claim_guest(again)
    assert room.role_of("singer") == "viewer"


async def test_pk_link_puts_each_partner_in_slot_one_and_unlink_ends_the_partner_views():
    registry = rooms()
    a, host_a, pub_a = live(registry, "a")
    b, _, pub_b = live(registry, "b")
    _, subs_a = viewer(a, "va", 2)
    _, subs_b = viewer(b, "vb", 2)
    assert not b.pk_view_allowed(host_a.identity)
    a.link_pk(b)
    assert b.pk_view_allowed(host_a.identity) and not b.pk_view_allowed("va")
    view, _ = viewer(b, host_a.identity, pk_view=True)  # host a watches its partner's room
    assert [s.source for s in subs_a] == [pub_a, pub_b]
    assert [s.source for s in subs_b] == [pub_b, pub_a]
    assert [(s.role, s.room) for s in a.layout()] == [("host", "a"), ("partner", "b")]
    with pytest.raises(PkBusy):
        b.link_pk(a)
    a.unlink_pk()
    assert [s.source for s in subs_a] == [pub_a, None] and b.pk_partner is None
    assert view.reasons == ["the PK battle ended"] and not b.pk_view_allowed(host_a.identity)


async def test_a_full_room_still_takes_its_pk_partners_view():
    registry = rooms(max_viewers=1)
    a, host_a, _ = live(registry, "a")
    b, _, _ = live(registry, "b")
    viewer(b, "fan")
    with pytest.raises(CapacityExceeded):
        viewer(b, "late")
    a.link_pk(b)
    viewer(b, host_a.identity, pk_view=True)
    assert len(b.viewers) == 2


async def test_a_partner_pulled_from_another_worker_is_named_by_its_origins_host():
    registry = rooms()
    a, host_a, _ = live(registry, "a")
    mirror, pipe, _ = live(registry, "b")  # here the pipe from b's origin stands in as the host
    mirror.remote_host = "bob"
    a.link_pk(mirror)
    assert [(s.role, s.identity) for s in a.layout()] == [("host", host_a.identity), ("partner", "bob")]
    assert mirror.host_identity == "bob" and a.host_identity == host_a.identity
    # The pk grant of a's host to watch b is judged at b's own origin; here, a's partner is b's mirror.
    assert a.pk_view_allowed("bob") and not a.pk_view_allowed(pipe.identity)


async def test_partner_host_reconnect_is_followed_by_the_other_rooms_viewers():
    registry = rooms()
    a, _, _ = live(registry, "a")
    b, host_b, _ = live(registry, "b")
    _, subs_a = viewer(a, "v", 2)
    a.link_pk(b)
    host_b.close("network")
    assert subs_a[1].source is None
    again = FakeMember("host-b", "h-b2", "host").attach(b)
    b.claim_host(again)
    new_pub = publication(b)
    b.publish(again, new_pub)
    assert subs_a[1].source is new_pub


async def test_guests_take_slots_after_the_partner_and_are_limited():
    registry = rooms(max_guests=1)
    a, _, pub_a = live(registry, "a")
    _, subs = viewer(a, "v", 3)
    guest = FakeMember("singer", "g1", "guest").attach(a)
    a.grant_guest("singer")
    a.claim_guest(guest)
    guest_pub = publication(a)
    a.publish(guest, guest_pub)
    assert [s.source for s in subs] == [pub_a, guest_pub, None]
    a.grant_guest("other")
    with pytest.raises(GuestSlotsFull):
        a.claim_guest(FakeMember("other", "g2", "guest").attach(a))
    b, _, pub_b = live(registry, "b")
    a.link_pk(b)
    assert [s.source for s in subs] == [pub_a, pub_b, guest_pub], "partner first, then guests"
    guest.close("left")
    assert [s.source for s in subs] == [pub_a, pub_b, None]


async def test_closing_a_room_in_pk_unlinks_its_partner():
    registry = rooms()
    a, _, _ = live(registry, "a")
    b, _, pub_b = live(registry, "b")
    _, subs_b = viewer(b, "v", 2)
    a.link_pk(b)
    a.close("test")
    assert b.pk_partner is None and [s.source for s in subs_b] == [pub_b, None]


async def test_traffic_totals_never_go_back_as_viewers_and_hosts_come_and_go():
    registry = rooms(max_viewers=5)
    room, host, pub = live(registry, "r")
    first, (sub,) = viewer(room, "v1")
    sub.start()
    seq = feed(pub, 1, 10)
    traffic = room.dump().traffic
    assert traffic.egress_packets["video"] == 10 and traffic.ingest_packets["video"] == 10
    quick, (quick_sub,) = viewer(room, "v2")
    quick_sub.start()
    seq = feed(pub, seq, 5)
    quick.close("left")
    first.close("left")
    assert room.dump().traffic.egress_packets["video"] == 10 + 5 + 5, "closed viewers' counters stay"
    host.close("gone")
    dump = room.dump()
    assert dump.traffic.ingest_packets["video"] == 15 and dump.traffic.egress_packets["video"] == 20
    assert not dump.live and dump.publications == ()
    room.close("test")
    assert registry.retired.egress_packets["video"] == 20 and registry.retired.ingest_packets["video"] == 15


async def test_dump_describes_the_room_and_its_participants():
    registry = rooms()
    room, host, _ = live(registry, "d")
    viewer(room, "v")
    room.attach_socket("v", FakeSocket())
    room.attach_socket("lurker", FakeSocket())
    dump = room.dump(detailed=True)
    assert (dump.name, dump.live, dump.host, dump.viewers) == ("d", True, "host-d", 1)
    assert [p.identity for p in dump.participants] == ["host-d", "lurker", "v"]
    by_id = {p.identity: p for p in dump.participants}
    assert by_id["v"].sockets == 1 and len(by_id["v"].sessions) == 1 and by_id["lurker"].sessions == ()
    assert by_id["host-d"].role == "host"
    assert [p.owner for p in dump.publications] == ["host-d"]


async def test_only_the_origin_takes_its_rooms_snapshot_from_the_hosts_own_video():
    registry = rooms()
    room, host, pub = live(registry, "a")
    assert room.host_video() is pub
    edge, _, _ = live(registry, "b")
    edge.pulled_from = "worker-1"  # its host is the pipe: the origin takes the room's snapshot
    assert edge.host_video() is None
    room.release_host(host)
    assert room.host_video() is None, "no host, nothing to take"
    room.close("test")
    assert room.host_video() is None
