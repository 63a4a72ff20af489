"""The keyframe cache: joiners start from the packets since the publication's last keyframe, paced,
without asking the host; a stale cache asks once; a GOP too big for it falls back to waiting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from relay.config import LimitsConfig, MediaConfig, RoomsConfig
from relay.packet import MediaPacket
from relay.pipe import pipe_policy
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.room import Rooms
from relay.subscription import Subscription
from tests.unit.fakes import VP8_CONT, VP8_DELTA, VP8_KEY, FakeClock, FakeMember, FakeSink, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)
OPUS = CodecInfo("audio/opus", 48000, 2)
FRAME = 3000  # 30 fps at 90 kHz


class FakeTimer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """Collects the catch-up's timers; a test runs them (one event-loop turn each) when it chooses."""

    def __init__(self) -> None:
        self.timers: list[FakeTimer] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        assert delay > 0, "bursts must be spaced out"
        timer = FakeTimer(callback)
        self.timers.append(timer)
        return timer

    def run(self) -> int:
        """Run every pending timer until none is left; how many ran."""
        ran = 0
        while self.timers:
            timer = self.timers.pop(0)
            if not timer.cancelled:
                timer.callback()
                ran += 1
        return ran


def publication(clock: FakeClock, limit: int = 1 << 20, max_age: float = 3.0, interval: float = 0.3,
                codec: CodecInfo = VP8, upstream: FakeUpstream | None = None) -> Publication:
    return Publication(codec.kind, codec, upstream or FakeUpstream(), cache_size=1024, keyframe_interval=interval,
                       clock=clock, keyframe_cache_bytes=limit, keyframe_cache_max_age=max_age)


def subscription(clock: FakeClock, scheduler: FakeScheduler, sink: FakeSink | None = None, burst: int = 1 << 20,
                 media: MediaConfig | None = None, kind: str = "video", slot: int = 0) -> Subscription:
    media = media or MediaConfig(keyframe_cache_burst_bytes=burst)
    return Subscription(kind, 90000 if kind == "video" else 48000, sink or FakeSink(), media=media, cname="c",
                        clock=clock, schedule=scheduler, slot=slot)


def gop(pub: Publication, clock: FakeClock, first_seq: int, first_ts: int, frames: int, size: int = 0) -> list[bytes]:
    """Feed a keyframe and ``frames - 1`` delta frames (one packet each, ``size`` bytes of padding), 30 fps."""
    payloads = []
    for i in range(frames):
        payload = (VP8_KEY if i == 0 else VP8_DELTA) + bytes(size)
        pub.on_rtp(0x1234, (first_seq + i) & 0xFFFF, (first_ts + i * FRAME) & 0xFFFFFFFF, True, payload, clock.now)
        payloads.append(payload)
        clock.now += 1 / 30
    return payloads


def payloads(sink: FakeSink) -> list[bytes]:
    return [data[12:] for data in sink.sent]


def assert_continuous(sink: FakeSink, frame_ticks: int = FRAME) -> None:
    headers = sink.headers()
    for (_, _, seq1, ts1, _), (_, _, seq2, ts2, _) in zip(headers, headers[1:], strict=False):
        assert (seq2 - seq1) & 0xFFFF == 1, f"sequence jumps {seq1} -> {seq2}"
        assert (ts2 - ts1) & 0xFFFFFFFF == frame_ticks, f"timestamp jumps {ts1} -> {ts2}"


def test_a_late_joiner_starts_from_the_cached_keyframe_without_asking_the_host():
    clock, scheduler = FakeClock(), FakeScheduler()
    upstream = FakeUpstream()
    pub = publication(clock, upstream=upstream)
    sent = gop(pub, clock, 500, 90000, 10)
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink)
    sub.switch_source(pub)
    sub.start()
    assert payloads(sink) == sent, "the joiner gets the cached GOP, keyframe first, same payload bytes"
    assert sink.sent[0][12:] == VP8_KEY
    assert_continuous(sink)
    assert upstream.requests == 0 and pub.stats.keyframe_requests == 0, "no PLI while the cache is fresh"
    assert pub.stats.cache_starts == 1 and sub.stats.from_cache == 10
    assert pub.sinks == (sub,), "caught up: it is a sink of the live stream now"
    live = VP8_DELTA + b"live"
    pub.on_rtp(0x1234, 510, 90000 + 10 * FRAME, True, live, clock.now)
    assert sink.sent[-1][12:] == live
    assert_continuous(sink)
    assert sub.stats.dropped_waiting_keyframe == 0


def test_many_joiners_on_a_fresh_cache_cost_the_host_nothing():
    clock, scheduler = FakeClock(), FakeScheduler()
    upstream = FakeUpstream()
    pub = publication(clock, upstream=upstream)
    gop(pub, clock, 1, 0, 30)
    sinks = [FakeSink() for _ in range(20)]
    for sink in sinks:
        sub = subscription(clock, scheduler, sink)
        sub.switch_source(pub)
        sub.start()
        gop(pub, clock, 1 + pub.stats.packets_in, pub.stats.packets_in * FRAME, 0)  # time passes
    assert upstream.requests == 0
    assert pub.stats.cache_starts == 20
    assert all(sink.sent and sink.sent[0][12:] == VP8_KEY for sink in sinks)


def test_a_stale_cache_is_served_and_several_joiners_ask_for_one_refresh():
    clock, scheduler = FakeClock(), FakeScheduler()
    upstream = FakeUpstream()
    pub = publication(clock, max_age=2.0, upstream=upstream)
    gop(pub, clock, 1, 0, 90)  # a 3 s GOP: the cache is past its age
    sinks = []
    for _ in range(4):
        sink = FakeSink()
        sub = subscription(clock, scheduler, sink)
        sub.switch_source(pub)
        sub.start()
        sinks.append(sink)
        clock.now += 0.4  # joiners spread past the host's throttle interval: still one refresh pending
    assert upstream.requests == 1, "one refreshing keyframe request for every joiner of a stale cache"
    assert pub.stats.cache_stale_starts == 4
    assert all(sink.sent[0][12:] == VP8_KEY and len(sink.sent) == 90 for sink in sinks), \
        "the stale cache still decodes: every joiner gets all of it"
    # The refreshed keyframe arrives: the cache is short and fresh again, no more requests.
    gop(pub, clock, 91, 90 * FRAME, 3)
    late = FakeSink()
    sub = subscription(clock, scheduler, late)
    sub.switch_source(pub)
    sub.start()
    assert len(late.sent) == 3 and upstream.requests == 1
    # A refresh that got no keyframe is retried by the throttle, not by each joiner.
    clock.now += 10
    sub2 = subscription(clock, scheduler)
    sub2.switch_source(pub)
    sub2.start()
    assert upstream.requests == 2


def test_a_gop_that_outgrows_the_cache_falls_back_to_asking_and_is_counted():
    clock, scheduler = FakeClock(), FakeScheduler()
    upstream = FakeUpstream()
    pub = publication(clock, limit=5000, upstream=upstream)
    gop(pub, clock, 1, 0, 10, size=1000)  # 10 kB of GOP for a 5 kB cache
    assert pub.gop is None and pub.stats.gops_overflowed == 1
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink)
    sub.switch_source(pub)
    sub.start()
    assert sink.sent == [] and sub.waiting_for_keyframe
    assert pub.stats.cache_fallbacks == 1 and upstream.requests == 1, "today's path: PLI, wait"
    assert pub.dump().cache_fallbacks == 1
    gop(pub, clock, 11, 10 * FRAME, 2, size=1000)
    assert payloads(sink)[0].startswith(VP8_KEY), "video still comes, from the next keyframe"
    assert pub.gop is not None and len(pub.gop) == 2, "the next GOP fits and is cached again"


def test_the_cache_goes_out_in_paced_bursts_and_live_packets_wait_their_turn():
    clock, scheduler = FakeClock(), FakeScheduler()
    pub = publication(clock)
    sent = gop(pub, clock, 100, 0, 20, size=1000)
    sink = FakeSink()
    media = MediaConfig(keyframe_cache_burst_bytes=4000, viewer_queue_limit_bytes=8000)
    sub = subscription(clock, scheduler, sink, media=media)
    sub.switch_source(pub)
    sub.start()
    assert len(sink.sent) == 4, "one burst of at most 4000 bytes per event-loop turn"
    assert sub.catching_up and sub not in pub.sinks
    # Live packets arrive while it catches up: they join the cache and go out after it, in order.
    live = gop(pub, clock, 120, 20 * FRAME, 0)
    for i in range(3):
        payload = VP8_DELTA + bytes(1000) + bytes([i])
        pub.on_rtp(0x1234, 120 + i, (20 + i) * FRAME, True, payload, clock.now)
        live.append(payload)
    sink.queued = 100  # the viewer's path has not drained the last burst yet: nothing more this turn
    timer = scheduler.timers.pop(0)
    timer.callback()
    assert len(sink.sent) == 4
    sink.queued = 0
    turns = scheduler.run()
    assert turns >= 5, f"{turns} bursts for 23 kB of cache at 4 kB each"
    assert payloads(sink) == sent + live, "every packet once, in order"
    assert_continuous(sink)
    assert not sub.catching_up and pub.sinks == (sub,)
    assert sub.stats.dropped_congestion == 0, "pacing never trips the viewer's queue limit"


def test_a_new_keyframe_during_the_catch_up_is_skipped_to():
    clock, scheduler = FakeClock(), FakeScheduler()
    pub = publication(clock)
    gop(pub, clock, 1, 0, 20, size=1000)
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink, burst=3000)
    sub.switch_source(pub)
    sub.start()
    first = len(sink.sent)
    new_gop = gop(pub, clock, 21, 20 * FRAME, 2)
    scheduler.run()
    assert payloads(sink)[first:] == new_gop, "straight to the newer keyframe"
    seqs = [h[2] for h in sink.headers()]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "no sequence gap"
    assert pub.sinks == (sub,)


def test_a_cache_lost_during_the_catch_up_leaves_the_joiner_waiting_for_a_keyframe():
    clock, scheduler = FakeClock(), FakeScheduler()
    upstream = FakeUpstream()
    pub = publication(clock, limit=12000, upstream=upstream)
    gop(pub, clock, 1, 0, 8, size=1000)
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink, burst=2000)
    sub.switch_source(pub)
    sub.start()
    gop(pub, clock, 9, 8 * FRAME, 0)
    for i in range(6):  # the GOP outgrows the cache
        pub.on_rtp(0x1234, 9 + i, (8 + i) * FRAME, True, VP8_DELTA + bytes(1000), clock.now)
    assert pub.gop is None
    scheduler.run()
    assert sub.waiting_for_keyframe and pub.sinks == (sub,) and upstream.requests == 1
    count = len(sink.sent)
    pub.on_rtp(0x1234, 15, 14 * FRAME, True, VP8_DELTA, clock.now)
    assert len(sink.sent) == count
    pub.on_rtp(0x1234, 16, 15 * FRAME, True, VP8_KEY, clock.now)
    assert sink.sent[-1][12:] == VP8_KEY
    seqs = [h[2] for h in sink.headers()]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "no sequence gap"


def test_a_source_switch_starts_from_the_new_sources_cache():
    clock, scheduler = FakeClock(), FakeScheduler()
    up_a, up_b = FakeUpstream(), FakeUpstream()
    a = publication(clock, upstream=up_a)
    b = publication(clock, upstream=up_b)
    gop(a, clock, 1, 0, 5)
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink)
    sub.switch_source(a)
    sub.start()
    b_gop = gop(b, clock, 40000, 123456, 6)
    last_seq, last_ts = sink.headers()[-1][2:4]
    sub.switch_source(b)
    assert payloads(sink)[5:] == b_gop, "the new source's cached GOP, keyframe first"
    seq, ts = sink.headers()[5][2:4]
    assert seq == (last_seq + 1) & 0xFFFF, "the viewer's sequence goes on"
    assert 0 < (ts - last_ts) & 0xFFFFFFFF < 0x80000000, "its timestamp goes forward"
    assert_continuous(FakeSink(sent=sink.sent[5:]))
    assert up_b.requests == 0 and b.stats.cache_starts == 1
    assert sub not in a.sinks and b.sinks == (sub,)


def test_a_host_reconnect_has_no_cache_until_its_first_keyframe():
    clock, scheduler = FakeClock(), FakeScheduler()
    old = publication(clock)
    gop(old, clock, 1, 0, 5)
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink)
    sub.switch_source(old)
    sub.start()
    upstream = FakeUpstream()
    new = publication(clock, upstream=upstream)
    sub.switch_source(new)
    assert upstream.requests == 1 and new.stats.cache_empty == 1 and sub.waiting_for_keyframe
    gop(new, clock, 9000, 5555, 2)
    assert payloads(sink)[5].startswith(VP8_KEY) and len(sink.sent) == 7


async def test_guest_and_pk_slots_start_from_their_publications_caches():
    clock, scheduler = FakeClock(), FakeScheduler()
    registry = Rooms(LimitsConfig(max_viewers_per_room=5), RoomsConfig(), 2)
    room = registry.get_or_create("a")
    host = FakeMember("host-a", "h-a", "host").attach(room)
    room.claim_host(host)
    host_pub = publication(clock)
    room.publish(host, host_pub)
    partner = registry.get_or_create("b")
    host_b = FakeMember("host-b", "h-b", "host").attach(partner)
    partner.claim_host(host_b)
    pk_up = FakeUpstream()
    pk_pub = publication(clock, upstream=pk_up)
    partner.publish(host_b, pk_pub)
    guest = FakeMember("singer", "g1", "guest").attach(room)
    room.grant_guest("singer")
    room.claim_guest(guest)
    guest_up = FakeUpstream()
    guest_pub = publication(clock, upstream=guest_up)
    room.publish(guest, guest_pub)
    room.link_pk(partner)
    gop(host_pub, clock, 1, 0, 3)
    pk_gop = gop(pk_pub, clock, 100, 0, 4)
    guest_gop = gop(guest_pub, clock, 200, 0, 5)
    member = FakeMember("v", "s-v").attach(room)
    sinks = [FakeSink() for _ in range(3)]
    subs = [subscription(clock, scheduler, sink, slot=i) for i, sink in enumerate(sinks)]
    room.add_viewer(member, subs)
    assert [s.source for s in subs] == [host_pub, pk_pub, guest_pub]
    for sub in subs:  # the session connected
        sub.start()
    assert payloads(sinks[1]) == pk_gop and payloads(sinks[2]) == guest_gop
    assert pk_up.requests == 0 and guest_up.requests == 0
    # The guest leaves and another takes the slot: a source switch, from the newcomer's cache.
    guest.close("left")
    other = FakeMember("other", "g2", "guest").attach(room)
    room.grant_guest("other")
    room.claim_guest(other)
    other_pub = publication(clock)
    other_gop = gop(other_pub, clock, 300, 0, 3)
    room.publish(other, other_pub)
    assert subs[2].source is other_pub
    assert payloads(sinks[2])[5:] == other_gop and other_pub.stats.cache_starts == 1


def test_audio_starts_live_and_is_never_cached():
    clock, scheduler = FakeClock(), FakeScheduler()
    pub = publication(clock, codec=OPUS)
    for i in range(5):
        pub.on_rtp(0x99, i, i * 960, True, b"opus", clock.now)
    assert pub.gop is None
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink, kind="audio")
    sub.switch_source(pub)
    sub.start()
    assert sink.sent == [] and pub.sinks == (sub,)
    pub.on_rtp(0x99, 5, 5 * 960, True, b"live", clock.now)
    assert payloads(sink) == [b"live"]


def test_an_edge_fills_its_own_cache_from_the_pipe_and_its_viewers_start_from_it():
    """The pipe's subscription on the origin starts from the origin's cache; the edge's publication,
    fed by what the pipe carries, caches it, and an edge viewer starts from that."""
    clock, scheduler = FakeClock(), FakeScheduler()
    origin_up = FakeUpstream()
    origin = publication(clock, upstream=origin_up)
    cached = gop(origin, clock, 7000, 5000, 12, size=500)
    edge_up = FakeUpstream()
    edge = Publication("video", VP8, edge_up, cache_size=1024, keyframe_interval=0.3, clock=clock,
                       keyframe_cache_bytes=1 << 20, fed_by_pipe=True)
    # A viewer of the edge that connects before the pipe does waits for what the pipe brings, asking nothing.
    early_sink = FakeSink()
    early = subscription(clock, scheduler, early_sink)
    early.switch_source(edge)
    early.start()
    assert edge_up.requests == 0 and edge.stats.cache_empty == 1 and edge.sinks == (early,)

    class PipeSink(FakeSink):
        def send_rtp(self, second: int, seq: int, ts: int, payload: bytes, sent: float) -> bool:
            edge.on_rtp(self.ssrc, seq, ts, bool(second & 0x80), payload, clock.now)  # across the pipe
            return super().send_rtp(second, seq, ts, payload, sent)

    pipe = subscription(clock, scheduler, PipeSink(), media=pipe_policy(MediaConfig(keyframe_cache_burst_bytes=2000)))
    pipe.switch_source(origin)
    pipe.start()
    scheduler.run()
    assert origin_up.requests == 0 and origin.stats.cache_starts == 1
    assert edge.gop is not None and [p.payload for p in edge.gop] == cached
    assert payloads(early_sink) == cached, "the early edge viewer got the pipe's catch-up live"
    more = VP8_DELTA + b"after"
    origin.on_rtp(0x1234, 7012, 5000 + 12 * FRAME, True, more, clock.now)
    sink = FakeSink()
    viewer = subscription(clock, scheduler, sink)
    viewer.switch_source(edge)
    viewer.start()
    assert payloads(sink) == [*cached, more], "the edge viewer starts from the edge's own cache"
    assert edge_up.requests == 0 and origin_up.requests == 0
    assert_continuous(sink)


def test_a_restarted_stream_or_closed_publication_drops_its_cache():
    clock = FakeClock()
    pub = publication(clock)
    gop(pub, clock, 1, 0, 3)
    assert pub.dump().cache_packets == 3
    pub.on_rtp(0x5678, 40000, 0, True, VP8_DELTA, clock.now)  # another SSRC: a new epoch
    assert pub.gop is None
    pub.on_rtp(0x5678, 40001, 3000, True, VP8_KEY, clock.now)
    pub.on_rtp(0x5678, 40002, 6000, True, VP8_DELTA, clock.now)
    assert pub.gop is not None and len(pub.gop) == 2 and all(p.epoch == pub.epoch for p in pub.gop)
    pub.close()
    assert pub.gop is None


def test_closing_during_the_catch_up_stops_it():
    clock, scheduler = FakeClock(), FakeScheduler()
    pub = publication(clock)
    gop(pub, clock, 1, 0, 10, size=1000)
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink, burst=2000)
    sub.switch_source(pub)
    sub.start()
    count = len(sink.sent)
    sub.close()
    assert scheduler.run() == 0 and len(sink.sent) == count and pub.sinks == ()


def test_without_a_cache_joiners_ask_for_a_keyframe_as_before():
    clock, scheduler = FakeClock(), FakeScheduler()
    upstream = FakeUpstream()
    pub = publication(clock, limit=0, upstream=upstream)
    gop(pub, clock, 1, 0, 3)
    sink = FakeSink()
    sub = subscription(clock, scheduler, sink)
    sub.switch_source(pub)
    sub.start()
    assert sink.sent == [] and upstream.requests == 1
    assert pub.stats.cache_fallbacks == 0 and pub.stats.cache_empty == 0


def test_caching_keeps_references_not_copies():
    clock = FakeClock()
    pub = publication(clock)
    payload = VP8_KEY + bytes(1000)
    pub.on_rtp(0x1234, 1, 0, True, payload, clock.now)
    cached = pub.gop
    assert cached is not None
    packet: MediaPacket = cached[0]
    assert packet.payload is payload and pub.cache.get(1) is packet
    pub.on_rtp(0x1234, 2, 0, True, VP8_CONT, clock.now)
    assert pub.dump().cache_bytes == len(payload) + len(VP8_CONT)


def test_a_catch_up_waits_for_a_sink_that_is_not_set_up_yet():
    """aiortc reports a session connected before its senders know their payload types: the cached keyframe
    must not be spent on a sink that cannot send it."""
    clock, scheduler = FakeClock(), FakeScheduler()
    pub = publication(clock)
    cached = gop(pub, clock, 1, 0, 4)
    sink = FakeSink(codecs=())
    sub = subscription(clock, scheduler, sink)
    sub.switch_source(pub)
    sub.start()
    assert sink.sent == [] and sub.catching_up and len(scheduler.timers) == 1
    sink.codecs = ("video/vp8",)
    sink.connected = False  # payload types known, transport not yet: still nothing lost
    scheduler.timers.pop(0).callback()
    assert sink.sent == [] and sub.catching_up
    sink.connected = True
    scheduler.run()
    assert payloads(sink) == cached and pub.sinks == (sub,)
    assert_continuous(sink)


def test_a_sink_that_never_gets_ready_falls_back_to_waiting_for_a_keyframe():
    clock, scheduler = FakeClock(), FakeScheduler()
    upstream = FakeUpstream()
    pub = publication(clock, upstream=upstream)
    gop(pub, clock, 1, 0, 4)
    sub = subscription(clock, scheduler, FakeSink(codecs=()))
    sub.switch_source(pub)
    sub.start()
    for _ in range(3):
        clock.now += 1.0
        scheduler.timers.pop(0).callback()
    assert not sub.catching_up and pub.sinks == (sub,) and upstream.requests == 1


@pytest.mark.parametrize("text, key", [
    ("keyframe_cache_bytes = -1", "media.keyframe_cache_bytes"),
    ("keyframe_cache_max_age_ms = -5", "media.keyframe_cache_max_age_ms"),
    ("keyframe_cache_burst_bytes = 100", "media.keyframe_cache_burst_bytes"),
    ("keyframe_cache_burst_bytes = 300000", "media.keyframe_cache_burst_bytes"),
    ("keyframe_cache_pace_ms = 0", "media.keyframe_cache_pace_ms"),
])
def test_keyframe_cache_settings_are_validated(tmp_path: Path, text: str, key: str):
    path = tmp_path / "gateway.toml"
    path.write_text(f"[media]\n{text}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path, {"dev": True})


def test_keyframe_cache_is_on_by_default_and_can_be_turned_off(tmp_path: Path):
    path = tmp_path / "gateway.toml"
    path.write_text("[media]\nkeyframe_cache_bytes = 0\n")
    assert MediaConfig().keyframe_cache_bytes > 0
    assert load_config(path, {"dev": True}).media.keyframe_cache_bytes == 0


def test_a_snapshot_reads_the_cached_keyframe_access_unit_without_asking_or_counting():
    clock = FakeClock()
    upstream = FakeUpstream()
    pub = publication(clock, upstream=upstream)
    assert pub.last_keyframe() is None, "no keyframe yet"
    key = [VP8_KEY + b"a", VP8_CONT + b"b", VP8_CONT + b"c"]
    for i, payload in enumerate(key):  # a three-packet keyframe, then delta frames
        pub.on_rtp(0x1234, 100 + i, 9000, i == len(key) - 1, payload, clock.now)
    pub.on_rtp(0x1234, 103, 9000 + FRAME, True, VP8_DELTA, clock.now)
    pub.on_rtp(0x1234, 103, 9000 + FRAME, True, VP8_DELTA, clock.now)  # and a duplicate, dropped
    found = pub.last_keyframe()
    assert found is not None
    serial, payloads_ = found
    assert payloads_ == key, "only the keyframe's own packets, in order"
    assert pub.last_keyframe() == found, "unchanged keyframe, same number"
    assert upstream.requests == 0 and pub.stats.keyframe_requests == 0, "a snapshot asks the host for nothing"
    assert pub.stats.cache_starts == 0 and pub.stats.cache_empty == 0, "and is no joiner"
    gop(pub, clock, 104, 9000 + 2 * FRAME, 1)  # the next keyframe
    again = pub.last_keyframe()
    assert again is not None and again[0] != serial


def test_a_snapshot_waits_for_the_whole_keyframe_and_places_reordered_packets():
    clock = FakeClock()
    pub = publication(clock)
    pub.on_rtp(0x1234, 10, 9000, False, VP8_KEY, clock.now)
    assert pub.last_keyframe() is None, "the marker has not come"
    pub.on_rtp(0x1234, 12, 9000, True, VP8_CONT + b"z", clock.now)
    assert pub.last_keyframe() is None, "a gap: packet 11 is missing"
    pub.on_rtp(0x1234, 11, 9000, False, VP8_CONT + b"y", clock.now)
    found = pub.last_keyframe()
    assert found is not None and found[1] == [VP8_KEY, VP8_CONT + b"y", VP8_CONT + b"z"]


def test_no_snapshot_from_a_closed_publication_or_a_gop_past_its_bound():
    clock = FakeClock()
    pub = publication(clock, limit=100)
    gop(pub, clock, 1, 0, 1)
    assert pub.last_keyframe() is not None
    for i in range(3):  # delta frames that outgrow the bound: the cache is dropped
        pub.on_rtp(0x1234, 2 + i, (i + 1) * FRAME, True, VP8_DELTA + bytes(60), clock.now)
    assert pub.gop is None and pub.last_keyframe() is None
    pub2 = publication(clock)
    gop(pub2, clock, 1, 0, 1)
    pub2.close()
    assert pub2.last_keyframe() is None
