"""The soak's slope test on synthetic series: flat noise passes, a leak fails, the warm-up is not judged."""

from __future__ import annotations

import argparse
import random

import pytest

from soak.run import parse_duration
from soak.sampler import parse_metrics
from soak.verdict import Bound, TooShort, fit_line, judge, judge_series

HOUR = 3600.0
RSS = Bound(per_hour=20.0, floor=4.0)


def times(seconds: float, every: float) -> list[float]:
    return [i * every for i in range(int(seconds / every) + 1)]


def test_fit_recovers_slope_and_intercept_of_a_line() -> None:
    fit = fit_line([0.0, 1.0, 2.0, 3.0], [5.0, 7.0, 9.0, 11.0])
    assert fit.slope == pytest.approx(2.0) and fit.intercept == pytest.approx(5.0)
    assert fit.stderr == pytest.approx(0.0, abs=1e-12) and fit.n == 4


def test_fit_standard_error_grows_with_scatter() -> None:
    t = [i / 10 for i in range(50)]
    rng = random.Random(1)
    quiet = fit_line(t, [100 + rng.gauss(0, 0.1) for _ in t])
    noisy = fit_line(t, [100 + rng.gauss(0, 10) for _ in t])
    assert noisy.stderr > 20 * quiet.stderr


def test_fit_needs_three_points_at_two_instants() -> None:
    with pytest.raises(ValueError):
        fit_line([0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        fit_line([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def test_a_flat_noisy_series_passes() -> None:
    rng = random.Random(7)
    t = times(HOUR, 5)
    rss = [180 + rng.gauss(0, 3) for _ in t]  # +/- 3 MB of allocator noise around a constant
    verdict = judge_series("rss_mb", t, rss, warmup_s=600, bound=RSS)
    assert verdict.measured and verdict.flat, verdict.reason
    assert abs(verdict.slope_per_hour) < 5


def test_a_leaking_series_fails() -> None:
    rng = random.Random(7)
    t = times(HOUR, 5)
    rss = [180 + 60 * ti / HOUR + rng.gauss(0, 3) for ti in t]  # 60 MB/h, well past 20 MB/h
    verdict = judge_series("rss_mb", t, rss, warmup_s=600, bound=RSS)
    assert not verdict.flat, verdict.reason
    assert verdict.slope_per_hour == pytest.approx(60, rel=0.15)
    assert verdict.growth == pytest.approx(60 * 50 / 60, rel=0.15), "slope times the 50 judged minutes"


def test_a_slow_leak_of_one_fd_a_minute_fails_within_ten_minutes() -> None:
    t = times(600, 2)
    fds = [120 + int(ti // 60) for ti in t]  # a step every minute: 60 fds/h
    verdict = judge_series("fds", t, fds, warmup_s=150, bound=Bound(per_hour=20.0, floor=6.0))
    assert not verdict.flat, verdict.reason


def test_growth_within_the_noise_floor_passes_a_short_run() -> None:
    # 2 minutes, 2 MB of growth: projected 60 MB/h, but no more than a short run can tell from noise.
    t = times(120, 2)
    rss = [150 + 2 * ti / 120 for ti in t]
    assert judge_series("rss_mb", t, rss, warmup_s=30, bound=RSS).flat


def test_the_same_slope_past_the_floor_fails() -> None:
    t = times(600, 2)
    rss = [150 + 10 * ti / 600 for ti in t]  # 10 MB in 10 minutes: 60 MB/h, no noise
    assert not judge_series("rss_mb", t, rss, warmup_s=0, bound=RSS).flat


def test_the_warm_up_is_not_judged() -> None:
    rng = random.Random(3)
    t = times(HOUR, 5)
    # Memory fills up for 10 minutes (sessions, caches, allocator arenas), then stays put.
    rss = [100 + min(ti, 600) / 600 * 80 + rng.gauss(0, 1) for ti in t]
    after = judge_series("rss_mb", t, rss, warmup_s=900, bound=RSS)
    assert after.flat, after.reason
    assert after.start == pytest.approx(180, abs=2)
    including = judge_series("rss_mb", t, rss, warmup_s=0, bound=RSS)
    assert not including.flat, "judged from the start, the fill-up looks like growth"


def test_a_falling_series_is_flat() -> None:
    t = times(600, 5)
    assert judge_series("tasks", t, [200 - ti / 10 for ti in t], warmup_s=0, bound=Bound(40, 15)).flat


def test_missing_samples_are_skipped_and_an_unsampled_series_is_not_judged() -> None:
    t = times(300, 5)
    threads = [None if i % 3 == 0 else 12.0 for i in range(len(t))]
    assert judge_series("threads", t, threads, warmup_s=60, bound=Bound(2, 2)).flat
    never = judge_series("threads", t, [None] * len(t), warmup_s=60, bound=Bound(2, 2))
    assert not never.measured and never.flat


def test_too_few_samples_after_the_warm_up_is_an_error_not_a_verdict() -> None:
    t = times(60, 10)
    with pytest.raises(TooShort):
        judge_series("rss_mb", t, [100.0] * len(t), warmup_s=30, bound=RSS)


def test_judge_fails_on_any_growing_series_or_problem_and_passes_otherwise() -> None:
    t = times(1200, 5)
    flat = {"rss_mb": [150.0] * len(t), "fds": [80.0] * len(t), "tasks": [300.0] * len(t)}
    bounds = {"rss_mb": RSS, "fds": Bound(20, 6), "tasks": Bound(40, 15)}
    assert judge(t, flat, 300, bounds).passed
    leaking = {**flat, "tasks": [300 + ti / 10 for ti in t]}  # a task every 10 s
    verdict = judge(t, leaking, 300, bounds)
    assert not verdict.passed and [s.name for s in verdict.series if not s.flat] == ["tasks"]
    assert not judge(t, flat, 300, bounds, problems=["the gateway went away"]).passed
    assert not judge(t, {}, 300, bounds).passed, "nothing measured is no PASS"


def test_duration_strings() -> None:
    assert parse_duration("120s") == 120 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration("90") == 90 and parse_duration("1.5h") == 5400
    for bad in ("", "10d", "-5m", "0", "m30"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_metrics_parsing_sums_workers_and_keeps_the_worst_lag() -> None:
    text = "\n".join([
        "# TYPE cherry_asyncio_tasks gauge",
        'cherry_asyncio_tasks{worker="a-w0"} 120.0',
        'cherry_asyncio_tasks{worker="a-w1"} 80.0',
        "# TYPE cherry_event_loop_lag_seconds gauge",
        'cherry_event_loop_lag_seconds{worker="a-w0"} 0.004',
        'cherry_event_loop_lag_seconds{worker="a-w1"} 0.030',
        "# TYPE cherry_participants gauge",
        'cherry_participants{role="host"} 2.0',
        'cherry_participants{role="viewer"} 8.0',
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 1.048576e+08",
        "",
    ])
    figures = parse_metrics(text)
    assert figures.tasks == 200 and figures.viewers == 8
    assert figures.loop_lag_ms == pytest.approx(30.0)
    assert figures.rss_mb == pytest.approx(100.0)
    assert figures.fds is None and figures.room_sockets is None
