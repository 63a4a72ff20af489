"""Room lifecycle: host claims, viewers following publications, idle expiry."""

import asyncio

import pytest

from relay.errors import CapacityExceeded, GuestSlotsFull, HostAlreadyLive, PkBusy, RoomNotLive
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.room import RoomLimits, Rooms
from relay.subscription import Subscription
from tests.unit.fakes import FakeSink, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)


class Person:
    def __init__(self, identity: str, pid: str) -> None:
        self.identity = identity
        self.participant_id = pid
        self.role = "host"
        self.closed: list[str] = []

    def close(self, reason: str) -> None:
        self.closed.append(reason)


def rooms(**kw) -> Rooms:
    limits = dict(max_rooms=2, max_viewers_per_room=2, empty_room_grace=0.01, host_absent_timeout=0.05)
    limits.update(kw)
    return Rooms(RoomLimits(**limits))


def publication() -> Publication:
    return Publication("video", VP8, FakeUpstream(), cache_size=64, keyframe_interval=0.1)


async def test_second_host_identity_is_refused_but_same_identity_replaces_stale_session():
    room = rooms().get_or_create("r")
    first = Person("alice", "s1")
    room.claim_host(first)
    with pytest.raises(HostAlreadyLive):
        room.claim_host(Person("mallory", "s2"))
    again = Person("alice", "s3")
    room.claim_host(again)
    assert room.host is again and first.closed


async def test_viewers_follow_a_new_publication_and_wait_while_host_is_away():
    registry = rooms()
    room = registry.get_or_create("r")
    host = Person("alice", "h1")
    room.claim_host(host)
    pub = publication()
    room.publish(host, pub)
    sub = Subscription("video", 90000, FakeSink(), queue_limit=1000, cname="c")
    room.add_viewer(Person("v", "v1"), [sub])
    assert sub.source is pub
    room.release_host(host)
    assert sub.source is None and room.viewer_count == 1 and not room.live
    host2 = Person("alice", "h2")
    room.claim_host(host2)
    pub2 = publication()
    room.publish(host2, pub2)
    assert sub.source is pub2


async def test_limits_raise_capacity_errors():
    registry = rooms(max_rooms=1, max_viewers_per_room=1)
    room = registry.get_or_create("a")
    with pytest.raises(CapacityExceeded):
        registry.get_or_create("b")
    with pytest.raises(RoomNotLive):
        room.check_can_view()
    host = Person("h", "h")
    room.claim_host(host)
    room.publish(host, publication())
    room.add_viewer(Person("v", "v1"), [])
    with pytest.raises(CapacityExceeded):
        room.add_viewer(Person("v", "v2"), [])


async def test_unclaimed_room_expires_after_grace():
    registry = rooms()
    registry.get_or_create("a")
    await asyncio.sleep(0.05)  # the grace timer is the behaviour under test
    assert registry.get("a") is None


async def test_room_whose_host_never_returns_closes_and_ends_viewer_sessions():
    registry = rooms()
    room = registry.get_or_create("a")
    host = Person("h", "h")
    room.claim_host(host)
    room.publish(host, publication())
    viewer = Person("v", "v1")
    room.add_viewer(viewer, [])
    room.release_host(host)
    await asyncio.sleep(0.15)  # host_absent_timeout is 0.05 s
    assert registry.get("a") is None and viewer.closed and room.closed
    room.close("again")  # idempotent
    assert len(viewer.closed) == 1


def viewer_subs(room, slots: int = 2) -> list[Subscription]:  # type: ignore[no-untyped-def]
    subs = [Subscription("video", 90000, FakeSink(), queue_limit=1000, cname="c", slot=i) for i in range(slots)]
    room.add_viewer(Person("v", f"v{id(subs)}"), subs)
    return subs


def live(registry: Rooms, name: str) -> tuple:  # type: ignore[type-arg]
    room = registry.get_or_create(name)
    host = Person(f"host-{name}", f"h-{name}")
    room.claim_host(host)
    pub = publication()
    room.publish(host, pub)
    return room, host, pub


async def test_pk_link_puts_each_partner_in_slot_one_and_unlink_empties_it():
    registry = rooms()
    a, _, pub_a = live(registry, "a")
    b, _, pub_b = live(registry, "b")
    subs_a, subs_b = viewer_subs(a), viewer_subs(b)
    a.link_pk(b)
    assert [s.source for s in subs_a] == [pub_a, pub_b]
    assert [s.source for s in subs_b] == [pub_b, pub_a]
    assert [(s.role, s.room) for s in a.layout()] == [("host", "a"), ("partner", "b")]
    with pytest.raises(PkBusy):
        b.link_pk(a)
    a.unlink_pk()
    assert [s.source for s in subs_a] == [pub_a, None] and b.pk_partner is None


async def test_partner_host_reconnect_is_followed_by_the_other_rooms_viewers():
    registry = rooms()
    a, _, _ = live(registry, "a")
    b, host_b, _ = live(registry, "b")
    subs_a = viewer_subs(a)
    a.link_pk(b)
    b.release_host(host_b)
    assert subs_a[1].source is None
    again = Person("host-b", "h-b2")
    b.claim_host(again)
    new_pub = publication()
    b.publish(again, new_pub)
    assert subs_a[1].source is new_pub


async def test_guests_take_slots_after_the_partner_and_are_limited():
    registry = rooms()
    registry.limits = RoomLimits(max_rooms=5, max_viewers_per_room=5, empty_room_grace=1, host_absent_timeout=1,
                                 max_guests=1)
    a, _, pub_a = live(registry, "a")
    subs = viewer_subs(a, slots=3)
    guest = Person("singer", "g1")
    a.claim_guest(guest)
    guest_pub = publication()
    a.publish(guest, guest_pub)
    assert [s.source for s in subs] == [pub_a, guest_pub, None]
    with pytest.raises(GuestSlotsFull):
        a.claim_guest(Person("other", "g2"))
    b, _, pub_b = live(registry, "b")
    a.link_pk(b)
    assert [s.source for s in subs] == [pub_a, pub_b, guest_pub], "partner first, then guests"
    a.release_guest(guest)
    assert [s.source for s in subs] == [pub_a, pub_b, None]


async def test_closing_a_room_in_pk_unlinks_its_partner():
    registry = rooms()
    a, _, _ = live(registry, "a")
    b, _, pub_b = live(registry, "b")
    subs_b = viewer_subs(b)
    a.link_pk(b)
    a.close("test")
    assert b.pk_partner is None and [s.source for s in subs_b] == [pub_b, None]
