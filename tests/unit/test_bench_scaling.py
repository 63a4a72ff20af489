"""`make bench`'s scaling figure: the slope, the ratio to one process and the verdicts, on made-up readings."""

import pytest

from bench.scaling_report import (
    Egress,
    Point,
    cost_verdict,
    egress_figures,
    layout_verdict,
    marginal,
    mean_egress,
    ratio,
    repeat_noise,
    saturation_viewers,
)


def test_marginal_cpu_is_the_slope_between_the_two_viewer_counts():
    # 140 CPU-ms/s with 20 viewers, 340 with 60: 200 ms/s for 40 more viewers = 5 CPU-ms per viewer-second.
    assert marginal([Point(20, 140.0)], [Point(60, 340.0)]) == pytest.approx(5.0)


def test_windows_in_n1_n2_n2_n1_order_cancel_a_steady_drift_during_the_run():
    # The machine got 10 ms/s busier per window: N1 130 then 160, N2 340 then 350 (true slope 5, as above).
    assert marginal([Point(20, 130.0), Point(20, 160.0)], [Point(60, 340.0), Point(60, 350.0)]) == pytest.approx(5.0)


def test_the_slope_uses_the_viewers_that_were_connected():
    assert marginal([Point(20, 140.0)], [Point(50, 290.0)]) == pytest.approx(5.0)


def test_no_slope_without_added_viewers():
    assert marginal([Point(20, 140.0)], [Point(20, 150.0)]) is None
    assert marginal([], [Point(60, 340.0)]) is None


def test_noise_is_the_larger_disagreement_of_repeated_windows_as_a_share_of_the_rise():
    assert repeat_noise([Point(20, 130.0), Point(20, 150.0)], [Point(60, 340.0)]) == pytest.approx(0.1)
    assert repeat_noise([Point(20, 140.0), Point(20, 140.0)],
                        [Point(60, 330.0), Point(60, 350.0)]) == pytest.approx(0.1)
    assert repeat_noise([Point(20, 140.0)], [Point(60, 340.0)]) is None


def test_the_ratio_is_to_the_single_process_of_the_same_run():
    assert ratio(5.5, 5.0) == pytest.approx(1.1)
    assert ratio(5.5, None) is None and ratio(None, 5.0) is None and ratio(5.5, 0.0) is None


def test_a_cluster_within_15_percent_of_one_process_passes_and_beyond_fails():
    assert cost_verdict(1.15) == ("ok", [])
    verdict, reasons = cost_verdict(1.16)
    assert verdict == "FAIL" and "1.16x" in reasons[0]


def test_a_cluster_much_cheaper_than_one_process_passes_with_a_note():
    verdict, reasons = cost_verdict(0.6)
    assert verdict == "ok" and "noise" in reasons[0]


def window(label, verdict="ok", **extra):  # type: ignore[no-untyped-def]
    return {"label": label, "verdict": verdict, "verdict_reasons": [], "notes": [], **extra}


def test_a_starved_generator_makes_the_configuration_invalid_not_failed():
    windows = [window("N1"), window("N2", "INVALID", notes=["viewer process saturated"]), window("N1 again")]
    verdict, reasons = layout_verdict(windows, 2.0, baseline=False)
    assert verdict == "INVALID" and "N2: viewer process saturated" in reasons[0]


def test_viewers_missing_their_targets_fail_the_configuration_whatever_its_ratio():
    windows = [window("N1"), window("N2", "FAIL", verdict_reasons=["3 of 60 viewers not joined"]), window("N1 again")]
    verdict, reasons = layout_verdict(windows, 1.0, baseline=False)
    assert verdict == "FAIL" and reasons == ["N2: 3 of 60 viewers not joined"]


def test_the_baseline_is_judged_on_its_windows_only():
    assert layout_verdict([window("N1"), window("N2"), window("N1 again")], None, baseline=True) == ("ok", [])
    assert layout_verdict([window("N1"), window("N2")], 1.3, baseline=False)[0] == "FAIL"


def test_origin_egress_that_stays_flat_while_edge_viewers_grow_passes():
    # 10 viewers of its own and one edge: 11 copies of each of 160 packets/s, whether the edge has 10 or 50.
    figures = egress_figures(Egress(10, 10, 1760.0, 160.0), Egress(10, 50, 1775.0, 160.0))
    assert figures["verdict"] == "ok", figures["verdict_reasons"]
    assert figures["edge_viewer_factor"] == 5.0
    assert figures["origin_copies_per_packet_in"] == [11.0, 11.09]
    assert figures["growth_over_edge_growth"] == pytest.approx(0.0021, abs=1e-4)


def test_origin_egress_that_grows_with_edge_viewers_fails():
    # What per-viewer copies across the hop would look like: egress follows the audience.
    figures = egress_figures(Egress(10, 10, 3200.0, 160.0), Egress(10, 50, 9600.0, 160.0))
    assert figures["verdict"] == "FAIL"
    assert figures["growth_over_edge_growth"] == pytest.approx(0.5)


def test_edge_viewers_that_barely_grew_test_nothing():
    figures = egress_figures(Egress(10, 10, 1760.0, 160.0), Egress(10, 15, 1760.0, 160.0))
    assert figures["verdict"] == "FAIL" and "tests nothing" in figures["verdict_reasons"][0]


def test_the_origins_own_viewers_must_stay_fixed():
    figures = egress_figures(Egress(10, 10, 1760.0, 160.0), Egress(14, 50, 1800.0, 160.0))
    assert figures["verdict"] == "FAIL" and any("own viewers changed" in r for r in figures["verdict_reasons"])


def test_the_two_low_windows_are_averaged_for_egress_too():
    low = mean_egress([Egress(10, 10, 1750.0, 160.0), Egress(10, 10, 1770.0, 160.0)])
    assert low == Egress(10, 10, 1760.0, 160.0)


def test_where_the_machine_would_saturate_is_the_line_through_the_two_counts_extended():
    # 30 % busy with 20 viewers, 60 % with 60: 0.75 % per viewer, 95 % at about 107 viewers.
    assert saturation_viewers([Point(20, 30.0)], [Point(60, 60.0)], 95.0) == pytest.approx(106.67, abs=0.01)
    assert saturation_viewers([Point(20, 30.0)], [Point(60, 30.0)], 95.0) is None
