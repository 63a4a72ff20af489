"""Sequence numbers and RTP timestamps across their 16- and 32-bit wraps, through the forwarding rewrite.

A 90 kHz video clock wraps its 32-bit RTP timestamp after 2^32 / 90000 s = 13.25 h of a show; a
sequence number wraps every 65536 packets (about 10 minutes of 1 Mbps video). Input and output wrap
at different moments (each viewer's stream starts at its own random origin), so each test pins the
viewer's origin next to the wrap and feeds input that wraps too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

import relay.subscription
from relay.config import MediaConfig
from relay.packet import MediaPacket, PacketCache
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.rtp import seq_diff, seq_newer
from relay.subscription import Subscription
from tests.unit.fakes import VP8_DELTA, VP8_KEY, FakeClock, FakeSink, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)
TS_MOD = 1 << 32
FRAME_TICKS = 3000  # 30 fps on the 90 kHz clock
THIRTEEN_HOURS_TICKS = 13 * 3600 * 90000  # a show 13 h in: its clock is about to wrap (at 13.25 h)


class _Origins:
    """Stands in for ``random`` in relay.subscription: the viewer's stream starts at chosen origins."""

    def __init__(self, seq: int, ts: int) -> None:
        self.seq, self.ts = seq, ts

    def randrange(self, low: int, high: int) -> int:
        return self.seq

    def getrandbits(self, bits: int) -> int:
        return self.ts


def make(monkeypatch: pytest.MonkeyPatch, *, out_seq: int, out_ts: int, cache_size: int = 1024,
         sink: FakeSink | None = None) -> tuple[Publication, Subscription, FakeSink, FakeClock]:
    """A publication and one started viewer subscription whose last sent (seq, ts) would be (out_seq, out_ts)."""
    clock = FakeClock()
    pub = Publication("video", VP8, FakeUpstream(), cache_size=cache_size, keyframe_interval=0.3, clock=clock)
    sink = sink or FakeSink()
    monkeypatch.setattr(relay.subscription, "random", _Origins(out_seq, out_ts))
    sub = Subscription("video", 90000, sink, media=MediaConfig(), cname="c", clock=clock)
    monkeypatch.undo()
    sub.switch_source(pub)
    sub.start()
    return pub, sub, sink, clock


def frames(first_seq: int, first_ts: int, count: int, start: float = 0.0) -> Iterator[tuple[int, int, bytes, float]]:
    """(seq, ts, payload, arrival) of ``count`` one-packet frames, a keyframe first; payloads tell packets apart."""
    for i in range(count):
        payload = (VP8_KEY if i == 0 else VP8_DELTA) + struct.pack("!I", i)
        yield (first_seq + i) & 0xFFFF, (first_ts + i * FRAME_TICKS) % TS_MOD, payload, start + i / 30


def feed(pub: Publication, seq: int, ts: int, payload: bytes, arrival: float = 0.0, ssrc: int = 0x1234) -> None:
    pub.on_rtp(ssrc, seq, ts, True, payload, arrival)


def test_seq_arithmetic_at_the_16_bit_wrap() -> None:
    assert seq_diff(0, 0xFFFF) == 1 and seq_diff(0xFFFF, 0) == -1
    assert seq_diff(5, 0xFFFB) == 10
    assert seq_newer(0, 0xFFFF) and not seq_newer(0xFFFF, 0)
    assert seq_diff(0x8000, 0) == -0x8000, "half the space away is 'older' (RFC 3550)"
    assert seq_newer(0x7FFF, 0) and not seq_newer(0x8000, 0)


def test_rewritten_sequence_numbers_wrap_and_stay_contiguous(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=0xFFF0, out_ts=1000)
    for seq, ts, payload, at in frames(0xFFFA, 5000, 40):  # input wraps after 6 packets, output after 15
        feed(pub, seq, ts, payload, at)
    seqs = [h[2] for h in sink.headers()]
    assert len(seqs) == 40, "no packet may be lost at either wrap"
    assert seqs == [(0xFFF1 + i) & 0xFFFF for i in range(40)]
    assert all(seq_diff(b, a) == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "monotonic modulo 2^16"
    assert not sub.waiting_for_keyframe


def test_rewritten_timestamps_wrap_after_13_hours_and_stay_monotonic(monkeypatch: pytest.MonkeyPatch) -> None:
    # The host's clock 13 h in; the viewer's output clock starts 10 frames before its own wrap.
    pub, sub, sink, _ = make(monkeypatch, out_seq=100, out_ts=TS_MOD - 10 * FRAME_TICKS)
    host_ts = (THIRTEEN_HOURS_TICKS + 1234) % TS_MOD
    frames_to_wrap = (TS_MOD - host_ts) // FRAME_TICKS
    count = frames_to_wrap + 60  # the host's clock wraps two seconds before the end
    for seq, ts, payload, at in frames(200, host_ts, count):
        feed(pub, seq, ts, payload, at)
    stamps = [h[3] for h in sink.headers()]
    assert len(stamps) == count
    assert stamps[0] == TS_MOD - 10 * FRAME_TICKS, "the first packet continues the viewer's own clock"
    assert all((b - a) % TS_MOD == FRAME_TICKS for a, b in zip(stamps, stamps[1:], strict=False))
    wraps = sum(1 for a, b in zip(stamps, stamps[1:], strict=False) if b < a)
    assert wraps == 1, "the output clock wrapped exactly once, and only where it should"
    assert max(stamps) < TS_MOD


def test_nack_across_both_wraps_resends_the_right_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=0xFFF8, out_ts=TS_MOD - 5 * FRAME_TICKS)
    for seq, ts, payload, at in frames(0xFFFC, TS_MOD - 3 * FRAME_TICKS, 20):
        feed(pub, seq, ts, payload, at)
    sent = {h[2]: (h[3], data) for h, data in zip(sink.headers(), sink.sent, strict=True)}
    # Lost before the output wrap, at it, after it; the input wrapped between them too.
    lost = [0xFFFB, 0xFFFF, 0x0000, 0x0003, 0x000A]
    sub.on_nack(lost)
    assert sub.stats.retransmitted == len(lost)
    resent = sink.headers()[-len(lost):]
    for (_, _, seq, ts, _), data, want in zip(resent, sink.sent[-len(lost):], lost, strict=True):
        assert seq == want and (ts, data) == sent[want], f"out seq {want:#06x}: another packet was resent"


def test_rtx_across_the_wrap_names_the_original_sequence_number(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=0xFFFD, out_ts=0, sink=FakeSink(rtx_payload_type=97))
    for seq, ts, payload, at in frames(0xFFFE, 0, 8):
        feed(pub, seq, ts, payload, at)
    originals = {h[2]: data for h, data in zip(sink.headers(), sink.sent, strict=True)}
    sub.on_nack([0xFFFF, 0x0001])
    for data, want in zip(sink.sent[-2:], [0xFFFF, 0x0001], strict=True):
        assert struct.unpack("!H", data[12:14])[0] == want
        assert data[14:] == originals[want][12:], "the RTX carries the payload of the packet asked for"


def test_nack_before_an_anchor_just_past_the_wrap_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=0xFFFE, out_ts=0)
    feed(pub, 0xFFFD, 0, VP8_DELTA)  # before the viewer's first keyframe: not sent to it
    feed(pub, 0xFFFE, 3000, VP8_DELTA)
    feed(pub, 0x0001, 6000, VP8_KEY)  # the anchor, input wrapped; output 0xFFFF
    feed(pub, 0x0002, 9000, VP8_DELTA)
    assert [h[2] for h in sink.headers()] == [0xFFFF, 0x0000]
    sub.on_nack([0xFFFE, 0xFFFD, 0xFFFC])  # what would map to the packets never sent
    assert sub.stats.retransmitted == 0
    sub.on_nack([0xFFFF])
    assert sub.stats.retransmitted == 1


def test_late_packet_from_before_an_anchor_at_the_wrap_is_not_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=10, out_ts=0)
    feed(pub, 0x0000, 6000, VP8_KEY)
    feed(pub, 0xFFFF, 3000, VP8_DELTA)  # late: it belongs to the frame before the keyframe
    feed(pub, 0x0001, 9000, VP8_DELTA)
    assert [h[2] for h in sink.headers()] == [11, 12]


def test_reordering_across_the_wrap_keeps_each_packets_own_number(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=0xFFF0, out_ts=0)
    feed(pub, 0xFFFD, 0, VP8_KEY)
    for seq in (0xFFFE, 0x0000, 0xFFFF, 0x0002, 0x0001):  # two pairs swapped, across the wrap
        feed(pub, seq, 3000, VP8_DELTA + bytes([seq & 0xFF]))
    got = [h[2] for h in sink.headers()]
    assert got == [0xFFF1, 0xFFF2, 0xFFF4, 0xFFF3, 0xFFF6, 0xFFF5]


def test_the_wrap_is_neither_a_restart_nor_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=500, out_ts=0)
    for seq, ts, payload, at in frames(0xFF00, TS_MOD - 100 * FRAME_TICKS, 512):  # both input fields wrap
        feed(pub, seq, ts, payload, at)
    assert pub.epoch == 0 and pub.stats.epochs == 0 and pub.stats.stale == 0
    assert pub.stats.duplicates == 0 and pub.stats.keyframes_in == 1
    assert len(sink.sent) == 512 and sub.stats.dropped_waiting_keyframe == 0


def test_loss_across_the_wrap_is_loss_not_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=500, out_ts=0)
    feed(pub, 0xFF00, 0, VP8_KEY)
    feed(pub, 0x0400, 3000, VP8_DELTA)  # 1280 packets lost over the wrap: under RFC 3550's MAX_DROPOUT
    assert pub.epoch == 0 and not sub.waiting_for_keyframe
    assert [h[2] for h in sink.headers()] == [501, (501 + 0x500) & 0xFFFF], "the gap shows as loss to the viewer"


def test_a_restart_at_the_wrap_starts_a_new_epoch_and_reanchors(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=0xFFFD, out_ts=TS_MOD - 2 * FRAME_TICKS)
    feed(pub, 0xFFFE, 0, VP8_KEY, 0.0)
    feed(pub, 0xFFFF, 3000, VP8_DELTA, 1 / 30)
    # The host's encoder restarts (new SSRC) with its sequence right at 0 and a fresh clock.
    feed(pub, 0x0000, 77, VP8_DELTA, 0.1, ssrc=0x9999)
    assert pub.epoch == 1 and sub.waiting_for_keyframe
    feed(pub, 0x0001, 3077, VP8_KEY, 0.2, ssrc=0x9999)
    feed(pub, 0x0002, 6077, VP8_DELTA, 0.2 + 1 / 30, ssrc=0x9999)
    headers = sink.headers()
    assert [h[2] for h in headers] == [0xFFFE, 0xFFFF, 0x0000, 0x0001]
    # The viewer's clock goes on by the wall time between the streams (1/30 s to 0.2 s), across its wrap.
    assert headers[1][3] == TS_MOD - FRAME_TICKS and headers[2][3] < headers[1][3]
    assert (headers[2][3] - headers[1][3]) % TS_MOD == round((0.2 - 1 / 30) * 90000)
    assert (headers[3][3] - headers[2][3]) % TS_MOD == FRAME_TICKS
    sub.on_nack([0xFFFF])  # sent in the old epoch: the cache no longer holds it
    assert sub.stats.retransmitted == 0
    sub.on_nack([0x0000])
    assert sub.stats.retransmitted == 1


def test_source_switch_at_the_timestamp_wrap_continues_the_viewers_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, clock = make(monkeypatch, out_seq=0xFFFE, out_ts=TS_MOD - 2 * FRAME_TICKS)
    feed(pub, 10, 0, VP8_KEY, 1.0)
    last_seq, last_ts = sink.headers()[-1][2:4]
    assert last_ts == TS_MOD - 2 * FRAME_TICKS
    partner = Publication("video", VP8, FakeUpstream(), cache_size=1024, keyframe_interval=0.3, clock=clock)
    sub.switch_source(partner)  # a PK partner with its own clock, near its own wrap
    feed(partner, 0xFFFF, TS_MOD - 1, VP8_KEY, 1.5)
    feed(partner, 0x0000, 2999, VP8_DELTA, 1.5 + 1 / 30)
    (_, _, s1, t1, _), (_, _, s2, t2, _) = sink.headers()[-2:]
    assert (s1, s2) == ((last_seq + 1) & 0xFFFF, (last_seq + 2) & 0xFFFF)
    assert (t1 - last_ts) % TS_MOD == 45000, "half a second on the 90 kHz clock, across the wrap"
    assert (t2 - t1) % TS_MOD == FRAME_TICKS
    assert t1 < last_ts, "the output clock did wrap here"


def test_sender_report_timestamp_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, _, _ = make(monkeypatch, out_seq=0, out_ts=TS_MOD - 1000)
    feed(pub, 1, 0, VP8_KEY, 10.0)
    report = sub.sender_report(now=11.0)
    assert report is not None
    assert struct.unpack("!I", report[16:20])[0] == (TS_MOD - 1000 + 90000) % TS_MOD


def _packet(seq: int) -> MediaPacket:
    return MediaPacket(seq, seq * 10, True, struct.pack("!H", seq), False, 0.0)


def test_packet_cache_finds_packets_on_both_sides_of_the_wrap() -> None:
    cache = PacketCache(64)
    seqs = [(0xFFE0 + i) & 0xFFFF for i in range(64)]  # 32 before the wrap, 32 after
    for seq in seqs:
        cache.put(_packet(seq))
    for seq in seqs:
        found = cache.get(seq)
        assert found is not None and found.payload == struct.pack("!H", seq)
    assert cache.get(0xFFDF) is None, "pushed out by the newest packet"
    assert cache.get(0x0020) is None, "never put"


def test_a_cache_as_long_as_the_sequence_space_keeps_forwarding_after_the_wrap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # media.packet_cache_size accepts any power of two >= 64. A ring of 65536 (or more) would still hold
    # the packet numbered N from the previous cycle when the next N arrives: a "duplicate", dropped.
    pub, sub, sink, _ = make(monkeypatch, out_seq=0, out_ts=0, cache_size=1 << 16)
    count = (1 << 16) + 50
    for seq, ts, payload, at in frames(0, 0, count):
        feed(pub, seq, ts, payload, at)
    assert pub.stats.duplicates == 0
    assert len(sink.sent) == count
    sub.on_nack([(count - 100) & 0xFFFF])
    resent = sink.sent[-1]
    assert resent[12:] == sink.sent[count - 101][12:], "a NACK is answered with this cycle's packet"


def test_a_cache_configured_past_its_bound_forgets_the_previous_cycle() -> None:
    cache = PacketCache(1 << 16)
    cache.put(_packet(5))
    for seq in range(6, 6 + 8192):
        cache.put(_packet(seq))
    assert cache.get(5) is None, "overwritten long before number 5 comes round again"
    assert cache.get(6 + 8191) is not None


def test_a_jump_across_the_wrap_is_a_restart_only_once_the_next_packet_confirms_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pub, sub, sink, _ = make(monkeypatch, out_seq=0xFFF0, out_ts=0)
    feed(pub, 0xFF00, 0, VP8_KEY)
    feed(pub, 0x2000, 3000, VP8_KEY)  # 8448 ahead modulo 2^16: past MAX_DROPOUT, a lone stray so far
    assert pub.epoch == 0 and pub.stats.stale == 1 and len(sink.sent) == 1
    feed(pub, 0xFF01, 3000, VP8_DELTA)  # the stream goes on where it was: the stray stays dropped
    assert pub.epoch == 0 and [h[2] for h in sink.headers()] == [0xFFF1, 0xFFF2]
    feed(pub, 0x3000, 6000, VP8_KEY)
    feed(pub, 0x3001, 9000, VP8_DELTA)  # confirmed: the source restarted over there
    assert pub.epoch == 1
    assert [h[2] for h in sink.headers()][2:] == [0xFFF3, 0xFFF4], "re-anchored at the held keyframe, no gap"
