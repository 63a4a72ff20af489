"""PK battles between rooms decided by two different workers (signaling/events/pk_routes.py).

Two workers' PK concerns, each on its own fakes, joined synchronously the way the cluster bus joins
them: an event for a room the other worker decides passes that worker's ``admit`` and lands in its
fan-out; PK messages and frames for a battle go straight to the other worker's concern.
"""

from __future__ import annotations

from typing import Any

from signaling.events.pk_routes import MARGIN_S, ClusterPk, ClusterStageRooms
from signaling.events.ports import Sender
from signaling.events.protocol import ClientFrame, Message
from tests.unit.test_events_fakes import COSTREAM, TOKENS, FakeRooms, FakeScheduler, FakeSender, RecordingFanout


class Worker:
    """One worker: the rooms it decides, its sockets (a recording fan-out) and its PK concern."""

    def __init__(self, net: dict[str, Worker], name: str, rooms: tuple[str, ...], scheduler: FakeScheduler) -> None:
        self.net, self.worker_id, self.decided = net, name, set(rooms)
        self.local = RecordingFanout()
        self.rooms = FakeRooms()
        self.hosts = {}
        for room in rooms:
            self.rooms.add(room)
            self.hosts[room] = self.local.join(FakeSender(f"host-{room}", room, "host"))
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.media: list[tuple[str | None, ...]] = []  # media links asked of the transport
        self.pk = ClusterPk(_Fanout(self), ClusterStageRooms(self.rooms, self), TOKENS,  # type: ignore[arg-type]
                            COSTREAM, scheduler, self)
        net[name] = self

    def owner_of(self, room: str) -> Worker:
        return next(w for w in self.net.values() if room in w.decided)

    # PkTransport
    def decides(self, room: str) -> bool:
        return room in self.decided

    def send(self, worker: str, item: dict[str, Any]) -> None:
        self.sent.append((worker, item))
        self.net[worker].pk.on_item(item)

    def forward_frame(self, worker: str, sender: Sender, frame: ClientFrame) -> None:
        self.sent.append((worker, {"op": "frame", "type": frame.type}))
        self.net[worker].pk.handle(sender, frame)

    def link_media(self, a: str, host_a: str | None, b: str, host_b: str | None) -> None:
        self.media.append(("link", a, host_a, b, host_b))

    def unlink_media(self, a: str, b: str) -> None:
        self.media.append(("unlink", a, b))

    def frame(self, sender: FakeSender, frame_type: str, **data: Any) -> None:
        self.pk.handle(sender, ClientFrame(frame_type, None, {"type": frame_type, **data}))


class _Fanout(RecordingFanout):
    """A worker's fan-out: its own rooms' sockets, or the owner's, through the owner's ``admit``."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def _target(self, room: str, message: Message) -> RecordingFanout | None:
        if self.worker.decides(room):
            return self.worker.local
        owner = self.worker.owner_of(room)
        return owner.local if owner.pk.admit(room, message, self.worker.worker_id) else None

    def broadcast(self, room: str, message: Message) -> None:
        target = self._target(room, message)
        if target is not None:
            target.broadcast(room, message)

    def to_roles(self, room: str, roles: Any, message: Message) -> int:
        target = self._target(room, message)
        return target.to_roles(room, roles, message) if target is not None else 0

    def to_identity(self, room: str, identity: str, message: Message) -> int:
        target = self._target(room, message)
        return target.to_identity(room, identity, message) if target is not None else 0


def two_workers() -> tuple[Worker, Worker, FakeScheduler]:
    scheduler = FakeScheduler()
    net: dict[str, Worker] = {}
    return Worker(net, "x", ("a",), scheduler), Worker(net, "y", ("b", "c"), scheduler), scheduler


def test_a_battle_across_workers_is_decided_once_by_the_inviting_rooms_worker():
    x, y, _ = two_workers()
    fan_b = y.local.join(FakeSender("fan-b", "b"))
    x.frame(x.hosts["a"], "pk_invite", room="b")
    invitation = y.local.got(y.hosts["b"], "pk_invitation")[-1]
    assert "b" in y.pk.routes and y.pk.routes["b"].worker == "x"
    y.frame(y.hosts["b"], "pk_accept", id=invitation["id"])  # decided on x: it is x's invitation
    assert ("x", {"op": "frame", "type": "pk_accept"}) in y.sent
    assert set(x.pk.battles) == {"a", "b"} and not y.pk.battles
    assert y.local.got(fan_b, "pk_started")[0]["hosts"] == {"a": "host-a", "b": "host-b"}
    assert x.media == [("link", "a", "host-a", "b", "host-b")] and not y.media  # once, by the coordinator
    y.pk.on_gift("b", 100, None)  # a gift decided on y scores in x's battle
    x.pk.on_gift("a", 5, None)
    assert x.pk.battles["a"].scores == {"a": 5, "b": 100}
    assert y.local.got(fan_b, "pk_score")[-1]["scores"] == {"a": 5, "b": 100}
    assert y.pk.snapshot("b")["scores"] == {"a": 5, "b": 100}  # a welcome on y shows x's battle
    results: list[Any] = []
    x.pk.listeners.append(lambda *args: results.append(args))
    y.frame(y.hosts["b"], "pk_end")
    assert [r[1] for r in results] == ["ended"]  # one result, on x
    ended = y.local.got(fan_b, "pk_ended")
    assert len(ended) == 1 and ended[0]["winner"] == "b"
    assert "b" not in y.pk.routes and not x.pk.battles
    assert x.media[1:] == [("unlink", "a", "b")] and not y.media
    sent = len(y.sent)
    y.pk.on_gift("b", 100, None)  # after the battle, a gift stays on y
    assert len(y.sent) == sent


def test_an_invitation_to_a_busy_room_on_another_worker_is_refused_and_its_host_never_sees_it():
    x, y, _ = two_workers()
    y.frame(y.hosts["b"], "pk_invite", room="c")  # b has its own invitation pending, decided on y
    x.frame(x.hosts["a"], "pk_invite", room="b")
    assert not y.local.got(y.hosts["b"], "pk_invitation")
    rejected = x.local.got(x.hosts["a"], "pk_rejected")
    assert len(rejected) == 1 and "pending" in rejected[0]["reason"]
    assert not x.pk.invitations and "b" not in y.pk.routes


def test_an_invitation_to_a_room_that_is_not_live_is_refused_by_its_worker():
    x, y, _ = two_workers()
    y.rooms.rooms["b"].live = False
    x.frame(x.hosts["a"], "pk_invite", room="b")
    assert "not live" in x.local.got(x.hosts["a"], "pk_rejected")[0]["reason"]


def test_the_invited_hosts_going_away_reaches_the_battles_worker():
    x, y, scheduler = two_workers()
    x.frame(x.hosts["a"], "pk_invite", room="b")
    y.frame(y.hosts["b"], "pk_accept", id=y.local.got(y.hosts["b"], "pk_invitation")[-1]["id"])
    y.rooms.rooms["b"].live = False
    y.pk.host_changed("b", False)  # seen on y, the battle's grace timer runs on x
    scheduler.advance(COSTREAM.pk_host_grace_s)
    ended = x.local.got(x.hosts["a"], "pk_ended")
    assert ended and ended[0]["winner"] == "a" and "the host of b left" in ended[0]["reason"]
    assert "b" not in y.pk.routes


def test_a_route_whose_battle_never_ends_goes_by_itself():
    x, y, scheduler = two_workers()
    x.frame(x.hosts["a"], "pk_invite", room="b")
    x.pk.invitations.clear()  # as if x went away: nothing will end the invitation
    scheduler.advance(COSTREAM.pk_invite_timeout_s + MARGIN_S + 1)
    y.pk.expire()
    assert "b" not in y.pk.routes
    y.frame(y.hosts["b"], "pk_invite", room="c")  # b is free again
    assert y.local.got(y.hosts["c"], "pk_invitation")
