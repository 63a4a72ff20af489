"""Room events across workers, the bookkeeping alone (cluster/event_log.py) over a fake Redis.

``FakeRedis`` keeps the contract the bus's Lua append and inbox streams keep (an append skips what the
stream has and refuses to leave a hole it was not told to accept; a restart loses everything), and can
fail or restart between any two steps. Nothing here sleeps: the clock is a number the test moves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from cluster.event_log import Channel, Cursor, Inlet, Outbox

EPOCH = 1_800_000_000_000


class RedisDown(Exception):
    pass


@dataclass
class FakeRedis:
    """One room stream and one inbox, as far as the bookkeeping needs them."""

    up: bool = True
    stream: list[tuple[tuple[int, int], str]] = field(default_factory=list)
    inbox: list[tuple[int, int, str]] = field(default_factory=list)  # (cseq, base, item)
    acks: list[int] = field(default_factory=list)

    def _check(self) -> None:
        if not self.up:
            raise RedisDown

    def restart(self) -> None:
        """No persistence: the stream, the inbox and the acknowledgements in flight are gone."""
        self.stream.clear()
        self.inbox.clear()
        self.acks.clear()

    def append(self, epoch: int, first: int, payloads: list[str], gap_allowed: bool) -> tuple[int, int]:
        """The Lua append: (0, last) or (-2, top) when the stream ends before ``first - 1``."""
        self._check()
        top = max((n for (e, n), _ in self.stream if e == epoch), default=0)
        if top < first - 1 and not gap_allowed:
            return -2, top
        for i, payload in enumerate(payloads):
            if first + i > top:
                self.stream.append(((epoch, first + i), payload))
        return 0, first + len(payloads) - 1

    def read(self, after: tuple[int, int]) -> list[tuple[tuple[int, int], str]]:
        self._check()
        return [entry for entry in self.stream if entry[0] > after]


def pump(outbox: Outbox, redis: FakeRedis, batch: int = 7) -> None:
    """What the bus's pump does with one room's outbox, until it holds nothing unappended."""
    for _ in range(1000):
        first, payloads = outbox.pending(batch)
        if not payloads:
            return
        code, value = redis.append(outbox.epoch, first, payloads, first <= outbox.oldest)
        if code == 0:
            outbox.confirm(value)
        else:
            outbox.restart_from(value)
    raise AssertionError("the outbox never emptied")


def follow(cursor: Cursor, redis: FakeRedis, got: list[str]) -> None:
    for (epoch, n), payload in redis.read((cursor.epoch, cursor.last)):
        if cursor.accept(epoch, n):
            got.append(payload)


# -- the owner's outbox ------------------------------------------------------------------------------


def test_sequence_numbers_continue_from_where_the_rooms_stream_ended():
    outbox = Outbox(EPOCH, last_seq=41)
    assert [outbox.add("a"), outbox.add("b")] == [42, 43]
    assert outbox.pending(10) == (42, ["a", "b"])


def test_the_owner_keeps_what_redis_has_not_confirmed_and_offers_it_in_order():
    outbox = Outbox(EPOCH)
    for i in range(5):
        outbox.add(f"e{i}")
    assert outbox.backlog == 5
    outbox.confirm(3)
    assert outbox.backlog == 2 and outbox.pending(10) == (4, ["e3", "e4"])
    outbox.confirm(5)
    assert outbox.backlog == 0 and outbox.pending(10) == (6, [])


def test_a_backlog_past_its_bound_drops_the_oldest_events_and_counts_them():
    outbox = Outbox(EPOCH, backlog_limit=3)
    for i in range(5):  # Redis away: nothing is confirmed
        outbox.add(f"e{i}")
    assert outbox.dropped == 2 and outbox.backlog == 3
    assert outbox.pending(10) == (3, ["e2", "e3", "e4"])  # the newest are kept


def test_the_retained_log_is_bounded_once_redis_confirmed_it():
    outbox = Outbox(EPOCH, retain=3)
    for i in range(10):
        outbox.add(f"e{i}")
    outbox.confirm(10)
    assert outbox.oldest == 8  # three events kept, to fill a stream Redis loses
    outbox.rewind()
    assert outbox.pending(10) == (8, ["e7", "e8", "e9"])


def test_a_stream_lost_in_a_redis_restart_is_filled_again_and_followers_get_each_event_once():
    redis, outbox, cursor, got = FakeRedis(), Outbox(EPOCH, retain=100), Cursor(), []
    for i in range(10):
        outbox.add(f"e{i}")
    pump(outbox, redis)
    follow(cursor, redis, got)
    for i in range(10, 15):
        outbox.add(f"e{i}")
    pump(outbox, redis)
    redis.restart()  # before the follower read e10..e14
    for i in range(15, 18):
        outbox.add(f"e{i}")
    pump(outbox, redis)  # the append finds the stream ending at 0, before 15: it appends again from the log
    follow(cursor, redis, got)
    assert got == [f"e{i}" for i in range(18)]
    assert cursor.gaps == 0


def test_events_decided_while_redis_is_down_reach_followers_once_it_is_back():
    redis, outbox, cursor, got = FakeRedis(), Outbox(EPOCH), Cursor(), []
    outbox.add("before")
    pump(outbox, redis)
    follow(cursor, redis, got)
    redis.up = False
    for i in range(3):
        outbox.add(f"down {i}")
        with pytest.raises(RedisDown):
            pump(outbox, redis)
    assert outbox.backlog == 3
    redis.up = True
    redis.restart()
    outbox.rewind()
    pump(outbox, redis)
    follow(cursor, redis, got)
    assert got == ["before", "down 0", "down 1", "down 2"]


def test_what_the_backlog_could_not_hold_is_a_gap_the_follower_counts():
    redis, outbox, cursor, got = FakeRedis(), Outbox(EPOCH, retain=0, backlog_limit=2), Cursor(), []
    outbox.add("e0")
    pump(outbox, redis)
    follow(cursor, redis, got)
    redis.restart()
    for i in range(1, 6):  # Redis away long enough for the backlog bound to bite
        outbox.add(f"e{i}")
    pump(outbox, redis)
    follow(cursor, redis, got)
    assert got == ["e0", "e4", "e5"]
    assert outbox.dropped == 3 and cursor.gaps == 3


# -- the follower's cursor ---------------------------------------------------------------------------


def test_a_follower_delivers_each_position_once_and_counts_gaps():
    cursor = Cursor(EPOCH, 5)
    assert not cursor.accept(EPOCH, 4) and not cursor.accept(EPOCH, 5)  # duplicates
    assert cursor.accept(EPOCH, 6) and cursor.accept(EPOCH, 9)
    assert cursor.gaps == 2 and cursor.position == f"{EPOCH}-9"


def test_a_numbering_that_started_again_sorts_after_the_old_one():
    cursor = Cursor(EPOCH, 500)
    assert cursor.accept(EPOCH + 1, 1)  # a new owner with nothing to continue from: a later epoch
    assert not cursor.accept(EPOCH, 501)  # the old numbering is over
    assert cursor.restarts == 1 and cursor.gaps == 0


# -- the reliable channel between workers ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_items_are_kept_until_acknowledged_and_resent_from_the_first_missing():
    clock = Clock()
    channel, inlet = Channel(resend_after=2.0, clock=clock), Inlet()
    for i in range(4):
        channel.add({"i": i})
    written = channel.unsent()
    assert [c for c, _, _ in written] == [1, 2, 3, 4] and channel.unsent() == []
    taken = [inlet.offer(c, b) for c, b, _ in written if c != 2]  # item 2 was lost on the way
    assert taken == ["take", "gap", "gap"]
    channel.ack(inlet.done)
    assert len(channel) == 3 and not channel.due()
    clock.t = 2.5
    assert channel.due()
    channel.rewind()
    assert [inlet.offer(c, b) for c, b, _ in channel.unsent()] == ["take", "take", "take"]
    channel.ack(inlet.done)
    assert len(channel) == 0


def test_a_receiver_meeting_a_sender_first_starts_at_the_oldest_item_it_still_holds():
    channel, inlet = Channel(), Inlet()
    for i in range(3):
        channel.add({"i": i})
    first_three = channel.unsent()
    channel.ack(1)  # a receiver that has since restarted took item 1
    channel.add({"i": 3})
    assert inlet.offer(*first_three[2][:2]) == "gap"  # item 3 arrives first; base says 2 is still held
    channel.rewind()
    assert [inlet.offer(c, b) for c, b, _ in channel.unsent()] == ["take", "take", "take"]


def test_a_channel_past_its_bound_drops_the_oldest_items_and_counts_them():
    channel = Channel(limit=3)
    for i in range(5):
        channel.add({"i": i})
    assert channel.dropped == 2 and [item["i"] for item in channel.items()] == [2, 3, 4]


@dataclass
class Worker:
    """A follower's sending side, and what the owner took, over FakeRedis's inbox."""

    channel: Channel
    inlet: Inlet = field(default_factory=Inlet)
    taken: list[int] = field(default_factory=list)

    def write(self, redis: FakeRedis) -> None:
        batch = self.channel.unsent()
        try:
            redis._check()
        except RedisDown:
            self.channel.unwritten([c for c, _, _ in batch])
            raise
        redis.inbox.extend((c, b, str(item["i"])) for c, b, item in batch)

    def receive(self, redis: FakeRedis) -> None:
        redis._check()
        for cseq, base, item in redis.inbox:
            if self.inlet.offer(cseq, base) == "take":
                self.taken.append(int(item))
        redis.inbox.clear()
        redis.acks.append(self.inlet.done)

    def read_acks(self, redis: FakeRedis) -> None:
        redis._check()
        for upto in redis.acks:
            self.channel.ack(upto)
        redis.acks.clear()


@pytest.mark.parametrize("seed", range(20))
def test_a_storm_of_items_through_redis_failures_and_restarts_arrives_once_and_in_order(seed):
    rng = random.Random(seed)
    clock, redis = Clock(), FakeRedis()
    worker = Worker(Channel(resend_after=1.0, clock=clock))
    sent = 0
    for _ in range(400):
        clock.t += 0.1
        roll = rng.random()
        if roll < 0.03:
            redis.restart()
        elif roll < 0.08:
            redis.up = not redis.up
            if redis.up:
                worker.channel.rewind()  # the bus sends everything again once Redis is back
        if rng.random() < 0.6:
            worker.channel.add({"i": sent})
            sent += 1
        if worker.channel.due():
            worker.channel.rewind()
        for step in (worker.write, worker.receive, worker.read_acks):
            try:
                step(redis)
            except RedisDown:
                pass
    redis.up = True
    for _ in range(50):  # no more failures: it settles within a few resends
        clock.t += 1.0
        if worker.channel.due():
            worker.channel.rewind()
        worker.write(redis)
        worker.receive(redis)
        worker.read_acks(redis)
    assert worker.taken == list(range(sent))
    assert len(worker.channel) == 0


@pytest.mark.parametrize("seed", range(10))
def test_a_storm_of_events_through_redis_restarts_reaches_the_follower_once_and_in_order(seed):
    rng = random.Random(seed)
    redis, outbox, cursor, got = FakeRedis(), Outbox(EPOCH, retain=50), Cursor(), []
    decided = 0
    for _ in range(300):
        roll = rng.random()
        if roll < 0.03:
            redis.restart()
            outbox.rewind()  # the bus notices the restart (Redis's run id) and offers its log again
        elif roll < 0.08:
            redis.up = not redis.up
            if redis.up:
                outbox.rewind()
        for _ in range(rng.randrange(4)):
            outbox.add(f"e{decided}")
            decided += 1
        for step in (lambda: pump(outbox, redis), lambda: follow(cursor, redis, got)):
            try:
                step()
            except RedisDown:
                pass
    redis.up = True
    outbox.rewind()
    pump(outbox, redis)
    follow(cursor, redis, got)
    assert got == [f"e{i}" for i in range(decided)]
    assert cursor.gaps == 0 and outbox.dropped == 0
