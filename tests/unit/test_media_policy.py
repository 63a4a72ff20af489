"""Media policy that holds at scale: clean input at the publication, per-viewer throttles and budgets,
and a congestion signal from each viewer's own RTCP feedback."""

from __future__ import annotations

from types import SimpleNamespace

from relay.config import MediaConfig
from relay.pipe import pipe_policy
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.subscription import Subscription
from tests.unit.fakes import VP8_DELTA, VP8_KEY, FakeClock, FakeSink, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)
H264 = CodecInfo("video/H264", 90000)
OPUS = CodecInfo("audio/opus", 48000, 2)
SSRC = 0x1234


def setup(codec: CodecInfo = VP8, viewers: int = 1, **media: object):
    clock = FakeClock()
    upstream = FakeUpstream()
    pub = Publication(codec.kind, codec, upstream, cache_size=256, keyframe_interval=0.3, clock=clock)
    config = MediaConfig(**media)  # type: ignore[arg-type]
    subs, sinks = [], []
    for _ in range(viewers):
        sink = FakeSink()
        sub = Subscription(codec.kind, codec.clock_rate, sink, media=config, cname="c", clock=clock)
        sub.switch_source(pub)
        sub.start()
        subs.append(sub)
        sinks.append(sink)
    return pub, subs, sinks, upstream, clock


def rtp(pub: Publication, seq: int, ts: int, payload: bytes, *, ssrc: int = SSRC, at: float = 0.0,
        marker: bool = True) -> None:
    pub.on_rtp(ssrc, seq & 0xFFFF, ts & 0xFFFFFFFF, marker, payload, at)


def out_seqs(sink: FakeSink) -> list[int]:
    return [h[2] for h in sink.headers()]


def contiguous(seqs: list[int]) -> bool:
    return all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))


def report(loss: float = 0.0, jitter: int = 0) -> SimpleNamespace:
    return SimpleNamespace(fraction_lost=round(loss * 256), jitter=jitter, lsr=0, dlsr=0, packets_lost=0,
                           highest_sequence=0)


# -- the publication cleans its input once, for every viewer ---------------------------------------------

def test_a_duplicate_is_dropped_once_at_the_publication_not_fanned_out():
    pub, _, sinks, _, _ = setup(viewers=3)
    rtp(pub, 10, 0, VP8_KEY)
    rtp(pub, 11, 3000, VP8_DELTA)
    rtp(pub, 11, 3000, VP8_DELTA)  # an RTX that raced its original
    rtp(pub, 10, 0, VP8_KEY)
    assert pub.stats.duplicates == 2 and pub.stats.packets_in == 2
    assert all(len(s.sent) == 2 for s in sinks)


def test_an_ssrc_change_starts_a_new_epoch_viewers_reanchor_at_its_keyframe_and_a_keyframe_is_asked_for():
    pub, (sub,), (sink,), upstream, clock = setup()
    for i in range(5):
        rtp(pub, 100 + i, 3000 * i, VP8_KEY if i == 0 else VP8_DELTA, at=clock.now)
    requests = upstream.requests
    clock.now += 1.0
    rtp(pub, 7000, 500_000, VP8_DELTA, ssrc=0x9999, at=clock.now)  # the encoder restarted: no keyframe yet
    assert pub.epoch == 1 and upstream.requests == requests + 1
    assert len(sink.sent) == 5 and sub.waiting_for_keyframe
    rtp(pub, 7001, 503_000, VP8_KEY, ssrc=0x9999, at=clock.now)
    rtp(pub, 7002, 506_000, VP8_DELTA, ssrc=0x9999, at=clock.now)
    seqs = out_seqs(sink)
    assert len(seqs) == 7 and contiguous(seqs), seqs
    # The viewer's timestamps go on from where they were, advanced by the wall-clock gap (1 s).
    ts = [h[3] for h in sink.headers()]
    assert (ts[5] - ts[4]) & 0xFFFFFFFF == 90000


def test_a_sequence_jump_no_loss_explains_is_a_new_epoch_not_a_stall():
    pub, _, (sink,), upstream, _ = setup()
    rtp(pub, 10, 0, VP8_KEY)
    rtp(pub, 11, 3000, VP8_DELTA)
    rtp(pub, 11 + 40000, 6000, VP8_KEY)  # same SSRC, the sequence leaps more than half the space
    rtp(pub, 11 + 40001, 9000, VP8_DELTA)
    assert pub.epoch == 1
    seqs = out_seqs(sink)
    assert len(seqs) == 4 and contiguous(seqs), seqs


def test_an_ordinary_loss_burst_is_not_an_epoch():
    pub, _, (sink,), _, _ = setup()
    rtp(pub, 10, 0, VP8_KEY)
    rtp(pub, 60, 3000, VP8_DELTA)
    assert pub.epoch == 0 and len(sink.sent) == 2


def test_padding_only_packets_leave_no_sequence_hole():
    pub, _, (sink,), _, _ = setup()
    rtp(pub, 1, 0, VP8_KEY)
    rtp(pub, 2, 0, b"")  # padding: bandwidth probe on the media SSRC
    rtp(pub, 3, 0, b"")
    rtp(pub, 4, 3000, VP8_DELTA)
    rtp(pub, 6, 6000, VP8_DELTA)  # 5 is late
    rtp(pub, 5, 3000, VP8_DELTA + b"late")
    seqs = out_seqs(sink)
    assert pub.stats.padding == 2
    # Out: 1, 4->2, 6->4, then the late 5 lands in the slot between them (3), not on a padding hole.
    first = seqs[0]
    assert [(s - first) & 0xFFFF for s in seqs] == [0, 1, 3, 2]


def test_padding_arriving_before_a_reordered_packet_keeps_the_late_packet_in_its_place():
    pub, _, (sink,), _, _ = setup()
    rtp(pub, 1, 0, VP8_KEY)
    rtp(pub, 3, 0, b"")  # padding overtook packet 2
    rtp(pub, 2, 3000, VP8_DELTA)
    rtp(pub, 4, 6000, VP8_DELTA)
    first = out_seqs(sink)[0]
    assert [(s - first) & 0xFFFF for s in out_seqs(sink)] == [0, 1, 2]


def _fu_a(nal_type: int, start: bool, end: bool) -> bytes:
    return bytes([0x7C, (0x80 if start else 0) | (0x40 if end else 0) | nal_type, 0x88])


def _stap_a_sps_pps() -> bytes:
    sps, pps = bytes([0x67, 0x42, 0x00]), bytes([0x68, 0xCE])
    return bytes([0x78]) + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps


def keyframe_access_unit(pub: Publication, seq: int, ts: int, at: float = 0.0) -> int:
    """SPS+PPS, then an IDR picture in two slices of two fragments each."""
    rtp(pub, seq, ts, _stap_a_sps_pps(), marker=False, at=at)
    for i, (start, end) in enumerate(((True, False), (False, True), (True, False), (False, True))):
        rtp(pub, seq + 1 + i, ts, _fu_a(5, start, end), marker=(i == 3), at=at)
    return seq + 5


def test_h264_keyframes_are_flagged_once_per_access_unit_at_its_first_packet():
    pub, (sub,), (sink,), _, _ = setup(H264)
    keyframe_access_unit(pub, 100, 0)
    assert pub.stats.keyframes_in == 1, "two IDR slices are one keyframe"
    assert len(sink.sent) == 5 and sink.sent[0][12] == 0x78, "the viewer starts at the SPS/PPS packet"


def test_a_viewer_joining_mid_keyframe_waits_for_the_next_access_unit_not_the_second_slice():
    pub, _, _, _, clock = setup(H264)
    late = Subscription("video", 90000, FakeSink(), media=MediaConfig(), cname="c", clock=clock)
    seq = 100
    rtp(pub, seq, 0, _stap_a_sps_pps(), marker=False)
    rtp(pub, seq + 1, 0, _fu_a(5, True, False), marker=False)
    late.switch_source(pub)  # joins between the first and the second slice
    late.start()
    for i, (start, end) in enumerate(((False, True), (True, False), (False, True))):
        rtp(pub, seq + 2 + i, 0, _fu_a(5, start, end), marker=(i == 2))
    assert late.stats.packets_sent == 0, "anchoring on the second IDR slice would show half a picture"
    keyframe_access_unit(pub, seq + 5, 3000)
    assert late.stats.packets_sent == 5


# -- per viewer: throttles and budgets -----------------------------------------------------------------

def test_one_lossy_viewer_cannot_make_the_host_send_a_keyframe_every_300_ms():
    pub, (lossy, calm), _, upstream, clock = setup(viewers=2)
    rtp(pub, 1, 0, VP8_KEY, at=clock.now)
    before = upstream.requests
    for _ in range(20):  # a PLI every 100 ms for two seconds
        clock.now += 0.1
        lossy.on_keyframe_request()
        rtp(pub, 2, 3000, VP8_DELTA, at=clock.now)  # packets arriving let held requests go out
    sent = upstream.requests - before
    assert 1 <= sent <= 3, f"{sent} keyframe requests reached the host"
    assert lossy.stats.keyframe_requests_throttled >= 15 and calm.stats.keyframe_requests_in == 0


def test_nack_answers_stay_within_the_viewers_budget():
    pub, (sub,), (sink,), _, clock = setup(nack_budget_per_second=10)
    for i in range(60):
        rtp(pub, 1 + i, 3000 * i, VP8_KEY if i == 0 else VP8_DELTA)
    out = out_seqs(sink)
    sub.on_nack(out[:50])
    assert sub.stats.retransmitted == 20 and sub.stats.nack_budget_refused == 30  # burst: twice the rate
    clock.now += 1.0
    sub.on_nack(out[50:60])
    assert sub.stats.retransmitted == 30


def test_a_packet_is_not_resent_twice_within_the_resend_interval():
    pub, (sub,), (sink,), _, clock = setup(nack_resend_interval_ms=50)
    for i in range(3):
        rtp(pub, 1 + i, 3000 * i, VP8_KEY if i == 0 else VP8_DELTA)
    lost = out_seqs(sink)[1]
    sub.on_nack([lost])
    clock.now += 0.01
    sub.on_nack([lost])  # the viewer asked again before our resend could arrive
    assert sub.stats.retransmitted == 1 and sub.stats.resends_suppressed == 1
    clock.now += 0.1
    sub.on_nack([lost])
    assert sub.stats.retransmitted == 2


def test_a_huge_nack_is_looked_at_only_up_to_its_bound():
    pub, (sub,), (sink,), _, _ = setup(nack_budget_per_second=1000)
    for i in range(100):
        rtp(pub, 1 + i, 3000 * i, VP8_KEY if i == 0 else VP8_DELTA)
    sub.on_nack(out_seqs(sink) * 100)  # 10000 entries
    assert sub.stats.retransmitted == 64


# -- congestion from the viewer's own feedback --------------------------------------------------------------

def test_a_viewer_reporting_loss_is_paused_to_audio_and_resumed_at_a_keyframe_after_the_pause():
    pub, (sub,), (sink,), _, clock = setup(congestion_pause_ms=2000)
    audio_pub = Publication("audio", OPUS, FakeUpstream(), cache_size=64, keyframe_interval=0.3, clock=clock)
    audio_sink = FakeSink()
    audio = Subscription("audio", 48000, audio_sink, media=MediaConfig(), cname="c", clock=clock)
    audio.switch_source(audio_pub)
    audio.start()
    rtp(pub, 1, 0, VP8_KEY, at=clock.now)
    sub.on_receiver_report(report(loss=0.3))
    assert sub.congestion().state == "congested"
    rtp(pub, 2, 3000, VP8_DELTA, at=clock.now + 0.5)
    rtp(pub, 3, 6000, VP8_KEY, at=clock.now + 1.0)  # a keyframe inside the pause: still paused
    audio_pub.on_rtp(0x77, 1, 960, True, b"\x78", clock.now + 1.0)
    assert len(sink.sent) == 1 and len(audio_sink.sent) == 1, "video pauses, audio goes on"
    rtp(pub, 4, 9000, VP8_DELTA, at=clock.now + 2.5)  # pause over, but not a keyframe
    rtp(pub, 5, 12000, VP8_KEY, at=clock.now + 2.6)
    rtp(pub, 6, 15000, VP8_DELTA, at=clock.now + 2.7)
    assert len(sink.sent) == 3 and contiguous(out_seqs(sink))
    assert sub.congestion().state == "probing" and sub.congestion().pauses == 1


def test_congestion_again_while_probing_doubles_the_pause_and_a_quiet_probe_ends_it():
    pub, (sub,), _, _, clock = setup(congestion_pause_ms=1000)
    rtp(pub, 1, 0, VP8_KEY, at=clock.now)
    sub.on_receiver_report(report(loss=0.5))
    rtp(pub, 2, 3000, VP8_KEY, at=clock.now + 1.1)  # resumes: probing
    clock.now += 1.1
    sub.on_receiver_report(report(loss=0.5))  # still lossy: pause again, twice as long
    rtp(pub, 3, 6000, VP8_KEY, at=clock.now + 1.5)
    assert sub.congestion().state == "congested"
    rtp(pub, 4, 9000, VP8_KEY, at=clock.now + 2.1)
    assert sub.congestion().state == "probing"
    clock.now += 2.1 + 4.5
    sub.on_receiver_report(report(loss=0.0))
    assert sub.congestion().state == "ok" and sub.congestion().pauses == 2


def test_a_low_bandwidth_estimate_counts_only_once_settled_and_sustained():
    pub, (sub,), (sink,), _, clock = setup()
    big = VP8_DELTA + b"x" * 1000
    rtp(pub, 1, 0, VP8_KEY, at=clock.now)
    seq = 2
    for _ in range(120):  # up to 12 s of ~80 kbit/s
        clock.now += 0.1
        rtp(pub, seq, 3000 * seq, big, at=clock.now)
        seq += 1
        if seq % 5 == 0:
            sub.on_bandwidth(10_000)  # far below what it sends
        if sub.congestion().state != "ok":
            break
    assert sub.congestion().state == "congested"
    assert clock.now - 100.0 >= 5.0 + 3.0 - 0.5, "not before the estimate settled and stayed low"


def test_receiver_reports_give_loss_jitter_and_rtt_per_viewer():
    _, (sub,), _, _, _ = setup()
    sub.on_receiver_report(report(loss=0.05, jitter=900))
    c = sub.congestion()
    assert c.state == "ok" and c.loss == round(13 / 256, 4) and c.jitter_ms == 10.0 and c.rtt_ms is None


def test_a_pipe_to_an_edge_is_held_to_no_viewer_budget_or_drop_policy():
    """A pipe that drops freezes a whole edge: it answers every NACK and keeps its video through a queue
    that would make a viewer drop to the next keyframe (relay.pipe.pipe_policy)."""
    base = MediaConfig(nack_budget_per_second=10, viewer_queue_limit_bytes=1000)
    clock = FakeClock()
    pub = Publication("video", VP8, FakeUpstream(), cache_size=256, keyframe_interval=0.3, clock=clock)
    subs = {}
    for name, media in (("viewer", base), ("pipe", pipe_policy(base))):
        sink = FakeSink()
        subs[name] = (Subscription("video", 90000, sink, media=media, cname="c", clock=clock), sink)
        subs[name][0].switch_source(pub)
        subs[name][0].start()
    for i in range(60):
        rtp(pub, 1 + i, 3000 * i, VP8_KEY if i == 0 else VP8_DELTA)
    for sub, sink in subs.values():
        sub.on_nack(out_seqs(sink)[:50])
    viewer, pipe = subs["viewer"][0].stats, subs["pipe"][0].stats
    assert viewer.nack_budget_refused == 30 and pipe.nack_budget_refused == 0 and pipe.retransmitted == 50
    for _, sink in subs.values():
        sink.queued = 10_000  # the transport's send buffer is backed up
    sent = {name: len(sink.sent) for name, (_, sink) in subs.items()}
    for i in range(60, 70):
        rtp(pub, 1 + i, 3000 * i, VP8_DELTA)
    assert len(subs["pipe"][1].sent) - sent["pipe"] == 10  # every packet went on
    assert len(subs["viewer"][1].sent) - sent["viewer"] < 10  # the viewer dropped to wait for a keyframe
