"""`make bench`'s TTFF step: per-cell figures, catch-up after joining, keyframe requests and the verdicts."""

from bench.ttff_report import catch_up_ms, cell_verdict, describe, step_verdict, summarize, video_publication


def join(ttff, early=None, ok=None, errors=None):  # type: ignore[no-untyped-def]
    reply = {"op": "join", "ok": len(ttff) if ok is None else ok, "ttff_ms": ttff, "errors": errors or {}}
    if early is not None:
        reply["early_latency"] = early
    return reply


LIVE = [[100.0, 20.0], [133.0, 21.0]]  # a joiner whose first frames are live


def test_a_joiner_served_stale_frames_is_back_at_live_from_the_first_frame_that_stays_live():
    samples = [[40.0, 900.0], [300.0, 400.0], [600.0, 90.0], [700.0, 150.0], [900.0, 60.0], [1200.0, 20.0]]
    assert catch_up_ms(samples) == 900.0


def test_a_joiner_still_behind_at_the_end_of_its_follow_window_never_caught_up():
    assert catch_up_ms([[100.0, 20.0], [2500.0, 300.0]]) is None
    assert catch_up_ms([]) is None


def test_ttff_percentiles_pool_both_viewer_processes():
    cell = summarize([join([40.0, 60.0], [LIVE, LIVE]), join([80.0, 500.0], [LIVE, LIVE])], 4)
    assert cell["joined"] == 4 and cell["ttff_samples"] == 4
    assert cell["ttff_p50_ms"] == 70.0 and cell["ttff_max_ms"] == 500.0
    assert cell["caught_up"] == 4


def test_keyframe_requests_are_counted_at_the_host_and_as_the_gateways_delta_during_the_joins():
    before = {"rooms": [{"room": "ttff", "publications": {"video": {"keyframe_requests": 3}}}]}
    after = {"rooms": [{"room": "ttff", "publications": {"video": {"keyframe_requests": 10}}}]}
    cell = summarize([join([50.0])], 1, host={"keyframe_requests": 12, "keyframes_sent": 20},
                     before=video_publication(before, "ttff"), after=video_publication(after, "ttff"))
    assert cell["host_keyframe_requests"] == 12 and cell["gateway_keyframe_requests"] == 7
    assert cell["cache_misses"] is None  # today's gateway publishes no such counter


def test_a_keyframe_cache_counter_is_read_when_the_gateway_publishes_one():
    before = {"keyframe_requests": 1, "keyframe_cache_misses": 2}
    after = {"keyframe_requests": 1, "keyframe_cache_misses": 5}
    assert summarize([join([50.0])], 1, before=before, after=after)["cache_misses"] == 3
    assert summarize([join([50.0])], 1, after={"cache_fallbacks": 4})["cache_misses"] == 4


def gated_cell(**overrides):  # type: ignore[no-untyped-def]
    base = summarize([join([40.0, 60.0, 90.0], [LIVE, LIVE, LIVE])], 3)
    return {**base, **overrides}


def test_steady_joiners_within_target_pass():
    assert cell_verdict(gated_cell(), gated=True) == ("ok", [])


def test_todays_wait_for_the_next_keyframe_fails_the_steady_cell():
    outcome, reasons = cell_verdict(gated_cell(ttff_p95_ms=570.0), gated=True)
    assert outcome == "FAIL" and "TTFF p95 570.0 ms > 100" in reasons[0]


def test_joiners_without_a_first_keyframe_fail_even_with_fast_others():
    outcome, reasons = cell_verdict(gated_cell(expected=5), gated=True)
    assert outcome == "FAIL" and reasons == ["2 of 5 joiners got no first keyframe"]


def test_a_joiner_not_back_at_live_within_two_seconds_fails():
    late = [[100.0, 900.0], [2100.0, 50.0], [2900.0, 40.0]]  # stale start, live only after 2.1 s
    cell = summarize([join([40.0, 60.0], [LIVE, late])], 2)
    assert cell["caught_up"] == 1
    outcome, reasons = cell_verdict(cell, gated=True)
    assert outcome == "FAIL" and "1 joiners not within 100 ms of live by 2 s" in reasons


def test_bursts_are_reported_not_gated():
    assert cell_verdict(gated_cell(ttff_p95_ms=900.0), gated=False) == ("reported", [])


def test_a_starved_generator_claims_nothing():
    assert cell_verdict(gated_cell(invalid=["machine 99 % busy"]), gated=True)[0] == "INVALID"


def cells(*verdicts):  # type: ignore[no-untyped-def]
    return [{"keyframe_interval": f"{i} s", "pattern": "50 at 5/s", "gated": True, "verdict": v}
            for i, v in enumerate(verdicts)] + [{"keyframe_interval": "1 s", "pattern": "20 at once", "gated": False,
                                                 "verdict": "reported"}]


def test_the_step_fails_when_any_keyframe_interval_misses():
    assert step_verdict(cells("ok", "FAIL", "ok"))[0] == "FAIL"


def test_the_step_passes_only_when_every_steady_cell_passed():
    assert step_verdict(cells("ok", "ok", "ok")) == ("ok", [])
    assert step_verdict(cells("ok", "INVALID"))[0] == "INVALID"
    assert step_verdict([])[0] == "INVALID"


def test_the_table_lists_each_cell():
    cell = {**gated_cell(), "keyframe_interval": "pli", "pattern": "50 at 5/s", "verdict": "ok", "verdict_reasons": []}
    text = describe({"cells": [cell], "verdict": "ok"})
    assert "pli" in text and "3/3" in text and "TTFF verdict: ok" in text
