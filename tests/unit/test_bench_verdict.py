"""`make bench` judges each gateway step against the platform's targets instead of printing "ok"."""

from bench.report import step_verdict, stutter_target


def step(**overrides):  # type: ignore[no-untyped-def]
    base = {"viewers": 300, "joined_total": 300, "valid": True, "join_errors": {}, "stutter_ratio": 0.0,
            "fps_mean": 29.8, "audio_pps_mean": 50.0}
    return {**base, **overrides}


def test_a_step_that_collapsed_is_a_failure_not_ok():
    # What the 300-viewer step once printed as "ok": stutter 0.89 and 20 joins that never made it.
    verdict, reasons = step_verdict(step(joined_total=280, stutter_ratio=0.89, fps_mean=3.1), stutter_target())
    assert verdict == "FAIL"
    assert any("stutter" in r for r in reasons) and any("not joined" in r for r in reasons)
    assert any("fps" in r for r in reasons)


def test_meeting_every_target_is_ok():
    assert step_verdict(step(stutter_ratio=0.001), 0.005) == ("ok", [])


def test_stutter_just_over_the_target_fails():
    assert step_verdict(step(stutter_ratio=0.0051), 0.005)[0] == "FAIL"


def test_admission_refusing_joins_is_reported_as_where_the_gateway_says_no():
    verdict, reasons = step_verdict(step(joined_total=250, join_errors={"http_503": 50}), 0.005)
    assert verdict == "REFUSED" and "50 joins refused" in reasons[0]


def test_a_starved_generator_claims_nothing_either_way():
    assert step_verdict(step(valid=False, stutter_ratio=0.5), 0.005)[0] == "INVALID"


def test_the_bench_holds_steps_to_the_platform_stutter_target():
    assert stutter_target() == 0.005


def test_a_step_without_a_live_host_measured_nothing():
    lost = step(fps_mean=0.0, stutter_ratio=1.0, server_stats={"rooms": [{"room": "bench", "live": False}]})
    assert step_verdict(lost, 0.005) == ("INVALID", ["the synthetic host lost its connection"])
