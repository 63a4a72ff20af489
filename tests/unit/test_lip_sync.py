"""Sender reports follow the host's own clocks (relay/clock.py): pure logic, no network."""

import struct

from relay.clock import NTP_UNIT, HostClock
from relay.config import MediaConfig
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.subscription import Subscription
from tests.unit.fakes import VP8_KEY, FakeClock, FakeSink, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)
OPUS = CodecInfo("audio/opus", 48000, 2)
T = 3_900_000_000.0  # the host's NTP clock, in seconds: any value; it is not the gateway's


def publication(codec: CodecInfo, clock: FakeClock, host: HostClock) -> Publication:
    return Publication(codec.kind, codec, FakeUpstream(), cache_size=64, keyframe_interval=0.3, clock=clock,
                       host_clock=host)


def subscription(codec: CodecInfo, pub: Publication, clock: FakeClock) -> tuple[Subscription, FakeSink]:
    sink = FakeSink()
    sub = Subscription(codec.kind, codec.clock_rate, sink, media=MediaConfig(), cname="c", clock=clock)
    sub.switch_source(pub)
    sub.start()
    return sub, sink


def report(sub: Subscription, now: float) -> tuple[float, int]:
    data = sub.sender_report(now=now)
    assert data is not None
    hi, lo, rtp = struct.unpack("!IIL", data[8:20])
    return ((hi << 32) | lo) / NTP_UNIT, rtp


def capture_time(sr: tuple[float, int], rtp: int, rate: int) -> float:
    """What a player computes for a packet's capture instant from a sender report."""
    ntp, sr_rtp = sr
    delta = (rtp - sr_rtp) & 0xFFFFFFFF
    if delta >= 1 << 31:
        delta -= 1 << 32
    return ntp + delta / rate


def test_audio_and_video_captured_together_play_together_whatever_their_forwarding_delay() -> None:
    clock = FakeClock()
    host = HostClock()
    audio, video = publication(OPUS, clock, host), publication(VP8, clock, host)
    # The host's clocks: audio timestamp 1000 and video timestamp 777000 were both captured at T.
    audio.on_sender_report(int(T * NTP_UNIT), 1000, arrival=5.0)
    video.on_sender_report(int(T * NTP_UNIT), 777000, arrival=5.0)
    a_sub, a_sink = subscription(OPUS, audio, clock)
    v_sub, v_sink = subscription(VP8, video, clock)
    # Captured 2 s after T; the video packet reaches the gateway 0.3 s after the audio (a slow encoder, a queue).
    audio.on_rtp(1, 10, 1000 + 2 * 48000, True, b"\xfc" * 40, 7.0)
    video.on_rtp(2, 20, 777000 + 2 * 90000, True, VP8_KEY, 7.3)
    a_ts, v_ts = a_sink.headers()[0][3], v_sink.headers()[0][3]
    assert a_ts != 1000 + 2 * 48000, "the viewer's timestamps are rewritten (a random start)"
    a_sr, v_sr = report(a_sub, now=8.0), report(v_sub, now=8.0)
    a_at, v_at = capture_time(a_sr, a_ts, 48000), capture_time(v_sr, v_ts, 90000)
    assert abs(a_at - v_at) < 1e-4, f"lips out of sync by {1000 * (v_at - a_at):.1f} ms"


def test_reports_keep_the_hosts_mapping_as_time_passes_and_the_host_reports_again() -> None:
    clock = FakeClock()
    video = publication(VP8, clock, HostClock())
    video.on_sender_report(int(T * NTP_UNIT), 5000, arrival=1.0)
    sub, sink = subscription(VP8, video, clock)
    video.on_rtp(2, 1, 5000 + 9000, True, VP8_KEY, 1.2)  # captured 0.1 s after T
    out = sink.headers()[0][3]
    first = capture_time(report(sub, now=2.0), out, 90000)
    later = capture_time(report(sub, now=30.0), out, 90000)
    assert abs(first - later) < 1e-4, "extrapolating must not move a packet's capture time"
    # The host's next report, 10 s of its clock later and consistent with the first.
    video.on_sender_report(int((T + 10) * NTP_UNIT), 5000 + 900000, arrival=11.0)
    assert abs(capture_time(report(sub, now=12.0), out, 90000) - first) < 1e-4
    assert video.stats.sender_reports == 2


def test_a_slot_switching_hosts_follows_the_new_hosts_clock_from_its_first_packet() -> None:
    clock = FakeClock()
    first_host, second_host = publication(VP8, clock, HostClock()), publication(VP8, clock, HostClock())
    first_host.on_sender_report(int(T * NTP_UNIT), 0, arrival=1.0)
    second_host.on_sender_report(int((T - 5000) * NTP_UNIT), 123456, arrival=1.0)  # another clock altogether
    sub, sink = subscription(VP8, first_host, clock)
    first_host.on_rtp(1, 1, 90000, True, VP8_KEY, 2.0)
    sub.switch_source(second_host)
    assert sub.sender_report(now=2.5) is not None, "between sources the wall clock stands in"
    second_host.on_rtp(2, 7, 123456 + 180000, True, VP8_KEY, 3.0)  # captured 2 s after its host's report
    out = sink.headers()[-1][3]
    at = capture_time(report(sub, now=3.5), out, 90000)
    expected = second_host.clock_map.ntp + 2.0  # type: ignore[union-attr]
    assert abs(at - expected) < 1e-4
    # Each host's clock is moved onto the gateway's: the slot's NTP timeline stays near the wall clock.
    assert abs(at - capture_time(report(sub, now=3.6), out, 90000)) < 1e-4
