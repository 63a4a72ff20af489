"""`make bench`'s floor step: the gateway's CPU per viewer-second against the minimal forwarder's, judged."""

from bench.floor_report import describe, rows, verdict
from bench.run import parse_args


def step(n, net, gross=None, verdict="ok"):  # type: ignore[no-untyped-def]
    return {"viewers": n, "cpu_ms_per_viewer_s_net": net, "cpu_ms_per_viewer_s_gross": gross or net + 1,
            "verdict": verdict}


def test_the_ratio_is_the_gateways_net_cpu_over_the_floors_at_each_count():
    table = rows([step(10, 2.0), step(100, 1.6)], [step(10, 5.0), step(100, 2.0)])
    assert [(r["viewers"], r["ratio_net"]) for r in table] == [(10, 2.5), (100, 1.25)]


def test_only_the_hundred_viewer_row_is_judged():
    table = rows([step(10, 2.0), step(100, 1.6)], [step(10, 5.0), step(100, 2.0)])
    assert [r["verdict"] for r in table] == ["-", "ok"]
    assert verdict(table) == ("ok", [])


def test_a_gateway_past_one_and_a_half_floors_fails():
    table = rows([step(100, 2.0)], [step(100, 3.2)])
    outcome, reasons = verdict(table)
    assert outcome == "FAIL" and "1.60x" in reasons[0]


def test_exactly_one_and_a_half_floors_passes():
    assert verdict(rows([step(100, 2.0)], [step(100, 3.0)]))[0] == "ok"


def test_a_floor_that_fell_behind_judges_nothing():
    # A forwarder that delivered too few frames spent less: its figure would shame the gateway for nothing.
    table = rows([step(100, 1.0, verdict="FAIL")], [step(100, 3.0)])
    outcome, reasons = verdict(table)
    assert outcome == "INVALID" and reasons == ["floor step FAIL"]


def test_a_count_only_one_side_reached_is_shown_and_invalid_at_the_gate():
    table = rows([step(50, 2.0), step(100, 2.0)], [step(50, 3.0)])
    assert table[1]["gateway_step"] == "missing" and table[1]["ratio_net"] is None
    assert verdict(table)[0] == "INVALID"


def test_a_run_without_the_hundred_viewer_step_is_not_gated():
    assert verdict(rows([step(10, 2.0)], [step(10, 3.0)]))[0] == "not gated"


def test_the_table_shows_both_sides_and_the_verdict():
    table = rows([step(100, 2.0)], [step(100, 3.2)])
    text = describe({"floor": {"idle": {"server_cpu_ms_per_s": 90.0}}, "gateway": {"stopped": "x"},
                     "rows": table, "verdict": "FAIL", "verdict_reasons": ["gateway 1.60x the floor > 1.5x"]})
    assert "1.600" in text and "floor verdict: FAIL" in text and "stopped: x" in text


def test_only_runs_the_named_steps_in_the_bench_order():
    settings = parse_args(["--only", "ttff,floor", "--floor-steps", "2,4", "--ttff-intervals", "1,pli"])
    assert settings.targets == ("floor", "ttff")
    assert settings.floor_steps == (2, 4) and settings.ttff_intervals == (1.0, 0.0)


def test_the_new_steps_are_part_of_a_full_bench():
    assert {"floor", "ttff"} <= set(parse_args([]).targets)
