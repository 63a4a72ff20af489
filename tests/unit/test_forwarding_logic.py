"""Publication and Subscription decisions: rewriting, keyframes, drops, NACK answers."""

import struct

from relay.config import MediaConfig
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.stats import DelaySampler
from relay.subscription import Subscription
from tests.unit.fakes import VP8_CONT, VP8_DELTA, VP8_KEY, FakeClock, FakeSink, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)
OPUS = CodecInfo("audio/opus", 48000, 2)


def make(codec=VP8, interval=0.3, limit=1 << 20, sink=None, clock=None):
    upstream = FakeUpstream()
    clock = clock or FakeClock()
    pub = Publication(codec.kind, codec, upstream, cache_size=64, keyframe_interval=interval, clock=clock)
    sink = sink or FakeSink()
    sub = Subscription(codec.kind, codec.clock_rate, sink, media=MediaConfig(viewer_queue_limit_bytes=limit), cname="c",
                       clock=clock)
    sub.switch_source(pub)
    return pub, sub, sink, upstream, clock


def feed(pub, seq, ts, payload, arrival=0.0, marker=True):
    pub.on_rtp(0x1234, seq & 0xFFFF, ts & 0xFFFFFFFF, marker, payload, arrival)


def test_subscription_waits_for_session_then_starts_at_a_keyframe():
    pub, sub, sink, upstream, _ = make()
    feed(pub, 1, 0, VP8_KEY)
    assert sink.sent == [], "nothing may be sent before the session is connected"
    sub.start()
    assert upstream.requests == 1, "starting asks the host for a keyframe"
    feed(pub, 2, 3000, VP8_DELTA)
    feed(pub, 3, 6000, VP8_CONT)
    assert sink.sent == [] and sub.stats.dropped_waiting_keyframe == 3
    feed(pub, 4, 9000, VP8_KEY)
    feed(pub, 5, 12000, VP8_DELTA)
    headers = sink.headers()
    assert len(headers) == 2
    (pt1, _, seq1, ts1, ssrc1), (_, _, seq2, ts2, _) = headers
    assert pt1 == 96 and ssrc1 == sink.ssrc
    assert (seq2 - seq1) & 0xFFFF == 1 and (ts2 - ts1) & 0xFFFFFFFF == 3000
    assert sink.sent[0].endswith(VP8_KEY)


def test_rewriting_keeps_the_hosts_marker_and_payload():
    pub, sub, sink, _, _ = make()
    sub.start()
    feed(pub, 10, 0, VP8_KEY, marker=False)
    feed(pub, 11, 0, VP8_CONT, marker=True)
    assert [h[1] for h in sink.headers()] == [0, 1]
    assert sink.sent[1][12:] == VP8_CONT


def test_host_reconnect_continues_sequence_and_timestamp_without_gap():
    pub, sub, sink, upstream, clock = make()
    sub.start()
    for i in range(5):
        feed(pub, 100 + i, 1000 + 3000 * i, VP8_KEY if i == 0 else VP8_DELTA, arrival=1.0 + i / 30)
    last_seq, last_ts = sink.headers()[-1][2:4]
    new = Publication("video", VP8, upstream, cache_size=64, keyframe_interval=0.3, clock=clock)
    sub.switch_source(new)
    assert sub.waiting_for_keyframe
    # the new host session has unrelated sequence and timestamp origins
    feed(new, 40000, 777, VP8_DELTA, arrival=3.0)
    feed(new, 40001, 3777, VP8_KEY, arrival=3.0 + 1 / 30)
    pt, _, seq, ts, ssrc = sink.headers()[-1]
    assert ssrc == sink.ssrc and seq == (last_seq + 1) & 0xFFFF
    elapsed = (3.0 + 1 / 30) - (1.0 + 4 / 30)
    assert abs(((ts - last_ts) & 0xFFFFFFFF) - elapsed * 90000) < 2, "timestamp follows wall-clock time"
    feed(new, 40002, 6777, VP8_DELTA, arrival=3.1)
    assert sink.headers()[-1][2] == (last_seq + 2) & 0xFFFF


def test_sequence_wraps_without_breaking_continuity():
    pub, sub, sink, _, _ = make()
    sub.start()
    for i in range(70000):
        feed(pub, i, i * 3000, VP8_KEY if i == 0 else VP8_DELTA)
    seqs = [h[2] for h in sink.headers()]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    sub.on_nack([seqs[-3]])
    assert sub.stats.retransmitted == 1, "NACKs are still answered after the input sequence wrapped"


def test_reordered_packet_from_before_the_anchor_is_not_forwarded():
    pub, sub, sink, _, _ = make()
    sub.start()
    feed(pub, 200, 6000, VP8_KEY)
    feed(pub, 199, 3000, VP8_DELTA)  # arrives late, belongs to the frame before the keyframe
    feed(pub, 201, 9000, VP8_DELTA)
    assert len(sink.sent) == 2


def test_congested_viewer_drops_video_to_next_keyframe_and_recovers():
    pub, sub, sink, upstream, clock = make(limit=1000, interval=0.3)
    sub.start()  # asks for a keyframe at clock.now: the publication's throttle runs from here
    assert upstream.requests == 1
    feed(pub, 1, 0, VP8_KEY, arrival=clock.now)
    feed(pub, 2, 3000, VP8_DELTA, arrival=clock.now)
    sink.queued = 5000  # the socket stopped draining
    clock.now += 1  # past the 0.3 s keyframe-request interval: a new request may go upstream
    before = upstream.requests
    feed(pub, 3, 6000, VP8_DELTA, arrival=clock.now)
    assert sub.stats.dropped_congestion == 1 and sub.waiting_for_keyframe
    assert upstream.requests == before + 1, "congestion must ask the host for a keyframe right away"
    assert pub.stats.keyframe_requests == upstream.requests
    sink.queued = 0
    feed(pub, 4, 9000, VP8_DELTA, arrival=clock.now)
    assert len(sink.sent) == 2, "delta frames after a drop are undecodable: wait for a keyframe"
    assert upstream.requests == before + 1, "inside the interval the request is not repeated"
    feed(pub, 5, 12000, VP8_KEY, arrival=clock.now)
    seqs = [h[2] for h in sink.headers()]
    assert len(seqs) == 3 and (seqs[2] - seqs[1]) & 0xFFFF == 1, "no sequence gap for dropped packets"
    clock.now += 1
    feed(pub, 6, 15000, VP8_DELTA, arrival=clock.now)
    assert upstream.requests == before + 1, "the keyframe satisfied the request: none is pending"


def test_congestion_on_one_viewer_leaves_others_untouched():
    pub, sub, slow, _, _ = make(limit=1000)
    fast = FakeSink()
    other = Subscription("video", 90000, fast, media=MediaConfig(viewer_queue_limit_bytes=1000), cname="c")
    other.switch_source(pub)
    sub.start()
    other.start()
    slow.queued = 10_000
    for i in range(30):
        feed(pub, i, i * 3000, VP8_KEY if i == 0 else VP8_DELTA)
    assert len(fast.sent) == 30 and slow.sent == []


def test_keyframe_requests_are_throttled_per_publication():
    pub, sub, sink, upstream, clock = make(interval=0.5)
    for _ in range(20):
        pub.request_keyframe()
    assert upstream.requests == 1
    clock.now += 0.2
    feed(pub, 1, 0, VP8_DELTA, arrival=clock.now)
    assert upstream.requests == 1
    clock.now += 0.4
    feed(pub, 2, 3000, VP8_DELTA, arrival=clock.now)
    assert upstream.requests == 2, "a wanted keyframe is asked again once the interval passed"
    feed(pub, 3, 6000, VP8_KEY, arrival=clock.now)
    clock.now += 1
    feed(pub, 4, 9000, VP8_DELTA, arrival=clock.now)
    assert upstream.requests == 2, "a keyframe arriving satisfies the request"


def test_audio_never_requests_keyframes_and_starts_at_once():
    pub, sub, sink, upstream, _ = make(codec=OPUS)
    sub.start()
    feed(pub, 1, 960, b"\x78\x01")
    assert upstream.requests == 0 and len(sink.sent) == 1


def test_nack_is_answered_from_cache_with_original_sequence():
    pub, sub, sink, _, _ = make()
    sub.start()
    for i in range(5):
        feed(pub, 500 + i, i * 3000, VP8_KEY if i == 0 else VP8_DELTA + bytes([i]))
    lost_out = sink.headers()[2][2]
    sub.on_nack([lost_out])
    assert sub.stats.retransmitted == 1
    assert sink.sent[-1] == sink.sent[2], "without RTX the packet is resent as it was"


def test_nack_with_rtx_wraps_the_original_sequence_number():
    pub, sub, sink, _, _ = make(sink=FakeSink(rtx_payload_type=97))
    sub.start()
    for i in range(3):
        feed(pub, 10 + i, i * 3000, VP8_KEY if i == 0 else VP8_DELTA)
    original = sink.headers()[1]
    sub.on_nack([original[2]])
    pt, _, _, ts, ssrc = sink.headers()[-1]
    assert (pt, ssrc, ts) == (97, sink.rtx_ssrc, original[3])
    assert struct.unpack("!H", sink.sent[-1][12:14])[0] == original[2]


def test_nack_for_packets_never_sent_in_this_epoch_is_ignored():
    pub, sub, sink, _, _ = make()
    sub.start()
    feed(pub, 1, 0, VP8_KEY)
    first = sink.headers()[0][2]
    sub.on_nack([(first - 1) & 0xFFFF, (first + 5) & 0xFFFF])
    assert sub.stats.retransmitted == 0


def test_sender_report_extrapolates_the_rtp_clock():
    pub, sub, sink, _, _ = make()
    assert sub.sender_report() is None
    sub.start()
    feed(pub, 1, 0, VP8_KEY, arrival=10.0)
    report = sub.sender_report(now=10.5)
    assert report is not None
    rtp_ts = struct.unpack("!I", report[16:20])[0]
    assert (rtp_ts - sink.headers()[0][3]) & 0xFFFFFFFF == 45000
    assert struct.unpack("!II", report[20:28]) == (1, len(VP8_KEY))


def test_closed_subscription_stops_receiving():
    pub, sub, sink, _, _ = make()
    sub.start()
    sub.close()
    feed(pub, 1, 0, VP8_KEY)
    assert sink.sent == [] and pub.sinks == ()
    sub.close()  # idempotent


def test_fan_out_delay_is_sampled():
    sampler = DelaySampler(8)
    clock = FakeClock()
    pub = Publication("video", VP8, FakeUpstream(), cache_size=64, keyframe_interval=1,
                      delay_sampler=sampler, clock=clock)
    sub = Subscription("video", 90000, FakeSink(), media=MediaConfig(), cname="c")
    sub.switch_source(pub)
    sub.start()
    for i in range(32):
        pub.on_rtp(0x1234, i, i, True, VP8_KEY, clock.now - 0.002)
    assert sampler.count == 2
    assert abs(sampler.percentiles(0.5)[0] - 0.002) < 1e-9


def test_a_new_source_with_another_codec_switches_the_payload_type_at_its_keyframe():
    pub, sub, sink, upstream, clock = make()
    sub.start()
    feed(pub, 1, 0, VP8_KEY)
    h264 = Publication("video", CodecInfo("video/H264", 90000), upstream, cache_size=64, keyframe_interval=0.3,
                       clock=clock)
    sub.switch_source(h264)
    feed(h264, 500, 0, bytes([0x65, 0x88]))  # IDR
    assert [h[0] for h in sink.headers()] == [96, 100]
    assert sink.headers()[1][2] == (sink.headers()[0][2] + 1) & 0xFFFF


def test_a_source_in_a_codec_the_viewer_never_negotiated_is_not_forwarded():
    pub, sub, sink, upstream, clock = make(sink=FakeSink(codecs=("video/vp8",)))
    sub.start()
    h264 = Publication("video", CodecInfo("video/H264", 90000), upstream, cache_size=64, keyframe_interval=0.3,
                       clock=clock)
    sub.switch_source(h264)
    feed(h264, 1, 0, bytes([0x65, 0x88]))
    assert sink.sent == [] and sub.waiting_for_keyframe
