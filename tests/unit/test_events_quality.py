"""Real-user quality reports: rate-limited per socket, credited no faster than the wall clock."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.config import EventsConfig
from signaling.events.protocol import ClientFrame, ProtocolError
from signaling.events.quality import SLACK_S, Quality
from signaling.events.stats import new_stats
from tests.unit.test_events_fakes import FakeScheduler, FakeSender


class Reports:
    def __init__(self, per_second: float = 0.5, burst: int = 3) -> None:
        self.clock = FakeScheduler()
        self.stats = new_stats()
        self.quality = Quality(EventsConfig(quality_per_second=per_second, quality_burst=burst), self.stats,
                               self.clock.now)

    def socket(self, identity: str, room: str = "r") -> FakeSender:
        sender = FakeSender(identity, room)
        self.quality.joined(sender)
        return sender

    def report(self, sender: FakeSender, watch_s: Any, freeze_s: Any, **extra: Any) -> None:
        self.quality.report(sender, ClientFrame("quality", None, {"type": "quality", "watch_s": watch_s,
                                                                  "freeze_s": freeze_s, **extra}))

    def room(self, room: str = "r") -> dict[str, float]:
        summary = self.quality.summary(room)
        assert summary is not None
        return summary


def test_honest_reports_are_credited_as_they_come() -> None:
    r = Reports()
    page = r.socket("v")
    for i in range(1, 6):
        r.clock.advance(5)
        r.report(page, 5.0 * i, 0.1 * i, latency_ms=200 + i, fps=30)
    room = r.room()
    assert room["reports"] == 5 and room["watch_seconds"] == pytest.approx(25.0)
    assert room["freeze_seconds"] == pytest.approx(0.5) and room["stutter_ratio"] == pytest.approx(0.02)
    assert room["fps_mean"] == 30 and room["latency_ms_p50"] == 203
    assert r.stats["quality_clamped"] == 0


def test_a_week_long_report_does_not_dilute_the_rooms_stutter_ratio() -> None:
    r = Reports()
    stuttering = r.socket("honest")
    for i in range(1, 13):  # a minute of 10 % stutter
        r.clock.advance(5)
        r.report(stuttering, 5.0 * i, 0.5 * i)
    assert r.room()["stutter_ratio"] == pytest.approx(0.10)
    liar = r.socket("liar")
    r.clock.advance(5)
    r.report(liar, 604800, 0)
    room = r.room()
    # credited the 5 s that passed (plus slack), as an honest smooth viewer would be, not a week (which
    # would make the room's ratio 6 / 604860 = 0.001 %)
    assert room["watch_seconds"] == pytest.approx(60 + 5 + SLACK_S)
    assert room["stutter_ratio"] == pytest.approx(6 / (65 + SLACK_S)) and room["stutter_ratio"] > 0.08, room
    assert r.stats["quality_clamped"] == 1


def test_freeze_never_exceeds_the_watch_time_it_comes_with() -> None:
    r = Reports()
    page = r.socket("v")
    r.clock.advance(10)
    r.report(page, 4.0, 9.0)  # claims more freeze than watch
    assert r.room()["freeze_seconds"] == pytest.approx(4.0) and r.room()["stutter_ratio"] == pytest.approx(1.0)


def test_a_page_reconnecting_mid_stream_is_credited_from_its_new_socket_with_its_freeze_share() -> None:
    r = Reports()
    page = r.socket("v")  # the page has played for an hour before this socket connected
    r.clock.advance(5)
    r.report(page, 3600.0, 36.0)  # 1 % stutter over its whole playback
    room = r.room()
    assert room["watch_seconds"] == pytest.approx(5 + SLACK_S)
    assert room["stutter_ratio"] == pytest.approx(0.01)
    r.clock.advance(5)
    r.report(page, 3605.0, 36.05)  # from then on, its own increments
    assert r.room()["watch_seconds"] == pytest.approx(5 + SLACK_S + 5)


def test_a_page_that_starts_playing_again_counts_from_zero() -> None:
    r = Reports()
    page = r.socket("v")
    r.clock.advance(30)
    r.report(page, 30.0, 1.0)
    r.clock.advance(4)
    r.report(page, 4.0, 0.0)  # a new playback: its figures restarted below the last report
    assert r.room()["watch_seconds"] == pytest.approx(34.0) and r.room()["freeze_seconds"] == pytest.approx(1.0)


def test_reports_are_rate_limited_per_socket() -> None:
    r = Reports(per_second=0.5, burst=3)
    first, second = r.socket("a"), r.socket("b")
    for i in range(3):
        r.report(first, float(i), 0.0)
    with pytest.raises(ProtocolError) as limited:
        r.report(first, 3.0, 0.0)
    assert limited.value.code == "rate_limited"
    r.report(second, 1.0, 0.0)  # another socket has its own budget
    r.clock.advance(2)  # one token back at 0.5/s
    r.report(first, 4.0, 0.0)
    assert r.room()["reports"] == 5


@pytest.mark.parametrize(("watch", "freeze", "extra", "field"), [
    (-1, 0, {}, "watch_s"), ([], 0, {}, "watch_s"), (True, 0, {}, "watch_s"), (float("nan"), 0, {}, "watch_s"),
    (1, "0", {}, "freeze_s"), (1, 0, {"fps": 1000}, "fps"), (1, 0, {"latency_ms": {"p50": 1}}, "latency_ms"),
    (10**9, 0, {}, "watch_s"),
])
def test_malformed_reports_name_their_field_and_change_nothing(watch: Any, freeze: Any, extra: dict[str, Any],
                                                               field: str) -> None:
    r = Reports()
    page = r.socket("v")
    with pytest.raises(ProtocolError) as refused:
        r.report(page, watch, freeze, **extra)
    assert refused.value.code == "bad_message" and f"'{field}'" in refused.value.message
    assert r.quality.summary("r") is None


def test_a_rooms_figures_go_with_the_room_and_a_sockets_state_with_the_socket() -> None:
    r = Reports()
    page = r.socket("v")
    r.clock.advance(5)
    r.report(page, 5.0, 0.0)
    assert set(r.quality.rooms()) == {"r"}
    r.quality.left(page)
    r.quality.room_closed("r")
    assert r.quality.rooms() == {} and r.quality.summary("r") is None
