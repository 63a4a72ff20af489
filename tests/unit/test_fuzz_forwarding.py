"""Property-based fuzzing of the forwarding core: any input stream a publisher (or the network) can
produce leaves every viewer with a well-formed stream and raises nothing.

Bounded example counts keep `make test` fast; crashes found are kept below as explicit examples.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relay.config import MediaConfig
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.subscription import Subscription
from tests.unit.fakes import VP8_CONT, VP8_DELTA, VP8_KEY, FakeClock, FakeSink, FakeUpstream

VP8 = CodecInfo("video/VP8", 90000)
H264 = CodecInfo("video/H264", 90000)
PAYLOADS = [VP8_KEY, VP8_DELTA, VP8_CONT, b"", b"\x7c\x85\x88", b"\x78\x00\x03\x67\x42\x00\x00\x02\x68\xce",
            b"\x65\x88", b"\x41\x9a", b"\x18", b"\x1c"]

# One incoming packet: (ssrc index, sequence step, timestamp step, marker, payload index, dt)
PACKET = st.tuples(st.integers(0, 2), st.one_of(st.integers(-5, 5), st.integers(-40000, 40000)),
                   st.integers(-3000, 9000), st.booleans(), st.integers(0, len(PAYLOADS) - 1),
                   st.floats(0, 0.2))
FEEDBACK = st.one_of(st.none(), st.tuples(st.sampled_from(["nack", "pli", "rr", "remb", "backlog"]),
                                          st.integers(0, 0xFFFF)))


@given(codec=st.sampled_from([VP8, H264]), packets=st.lists(st.tuples(PACKET, FEEDBACK), max_size=120))
@example(codec=VP8, packets=[((0, 1, 0, True, 0, 0.0), None), ((1, 30000, 0, True, 0, 0.0), None),
                             ((0, 2, 0, True, 0, 0.0), None), ((1, 1, 0, True, 0, 0.0), None)])
# Found by this test: a sender reusing a sequence number with another timestamp got the viewer one
# output number for two packets (the duplicate check compared timestamps too).
@example(codec=H264, packets=[((0, 0, 0, False, 0, 0.0), None)] * 8
         + [((1, 0, 0, False, 4, 0.0), None), ((1, 0, 1, False, 0, 0.0), None)])
def test_any_input_stream_gives_every_viewer_a_well_formed_stream(codec, packets):
    clock = FakeClock()
    pub = Publication("video", codec, FakeUpstream(), cache_size=64, keyframe_interval=0.3, clock=clock)
    sinks = [FakeSink(rtx_payload_type=97), FakeSink()]
    subs = []
    for sink in sinks:
        sub = Subscription("video", 90000, sink, media=MediaConfig(nack_budget_per_second=20), cname="c",
                           clock=clock)
        sub.switch_source(pub)
        sub.start()
        subs.append(sub)
    seqs = [100, 5000, 60000]
    ts = [0, 0, 0]
    for (ssrc_i, seq_step, ts_step, marker, payload_i, dt), feedback in packets:
        clock.now += dt
        seqs[ssrc_i] = (seqs[ssrc_i] + seq_step) & 0xFFFF
        ts[ssrc_i] = (ts[ssrc_i] + ts_step) & 0xFFFFFFFF
        pub.on_rtp(0x1000 + ssrc_i, seqs[ssrc_i], ts[ssrc_i], marker, PAYLOADS[payload_i], clock.now)
        if feedback is not None:
            kind, value = feedback
            sub = subs[value % 2]
            if kind == "nack":
                sub.on_nack([value, (value + 1) & 0xFFFF])
            elif kind == "pli":
                sub.on_keyframe_request()
            elif kind == "rr":
                from types import SimpleNamespace
                sub.on_receiver_report(SimpleNamespace(fraction_lost=value & 0xFF, jitter=value, lsr=value,
                                                       dlsr=value >> 1))
            elif kind == "remb":
                sub.on_bandwidth(value * 100)
            else:
                sinks[value % 2].queued = value * 8
    for sink, sub in zip(sinks, subs, strict=True):
        headers = sink.headers()
        media = [h for h in headers if h[4] == sink.ssrc]
        # One SSRC per stream, and no output sequence number used for two different packets.
        assert {h[4] for h in headers} <= {sink.ssrc, sink.rtx_ssrc}
        first_use: dict[int, bytes] = {}
        for header, data in zip(headers, sink.sent, strict=True):
            if header[4] != sink.ssrc:
                continue
            previous = first_use.setdefault(header[2], data[12:])
            assert previous == data[12:], f"output seq {header[2]} carried two different payloads"
        # The first packet a viewer gets is a keyframe start.
        if media:
            first_payload = sink.sent[headers.index(media[0])][12:]
            assert first_payload in (VP8_KEY, b"\x78\x00\x03\x67\x42\x00\x00\x02\x68\xce", b"\x65\x88",
                                     b"\x7c\x85\x88"), first_payload
        sub.dump()
    pub.close()
    for sub in subs:
        sub.close()
