"""Truth tests: the suite's stutter and latency match injected, known freezes and delay.

One run: a host whose video stops for 0.6 s every 4 s, three times (the host logs when each pause really
started and ended), half the viewers on loopback, half behind exactly 100 ms of added delay.
Measured must match the truth within 10 % and 10 ms.
"""

from __future__ import annotations

from pathlib import Path

from tests.load.runs import run_load

FRAME_INTERVAL = 1 / 30


def test_measured_stutter_and_latency_match_the_injected_truth(tmp_path: Path) -> None:
    run = run_load("truth", tmp_path)
    summary = run.summary
    # FAIL by design (the host freezes); INVALID would mean a starved generator: no truth to compare.
    assert run.code == 1 and summary.get("verdict") == "FAIL", (summary.get("invalid_reasons"), run.explain())
    host = summary["hosts"]["truth-0"]
    marks = summary["marks"]
    settled = marks["settled_at"]
    # The profile stops pausing after three, so the run never ends inside a pause (a gap cut short by
    # the end of the run is neither clearly a freeze nor clearly not).
    assert host["open_pause_since"] is None, f"the run ended inside a pause: {host}, {marks}"
    pauses = [(a, b) for a, b in host["pauses"]]
    assert len(pauses) == 3, f"expected the profile's three pauses: {pauses}, {marks}"
    for a, b in pauses:
        assert a > marks["last_join_at"], f"a pause overlapped the joins: {pauses}, {marks}"
        assert b < settled - 1.0, f"a pause ended too close to the end of the run: {pauses}, {marks}"
    room = summary["by_room"]["truth-0"]
    viewers = room["viewers_joined"]
    assert viewers == 6, run.explain()

    # Stutter: every viewer sees each pause as one gap from the last frame before to the first after.
    truth_freeze_s = viewers * sum(b - a for a, b in pauses)
    measured = room["freeze_s"]
    assert room["freezes"] == viewers * len(pauses), (room, pauses)
    assert abs(measured - truth_freeze_s) <= 0.1 * truth_freeze_s, (measured, truth_freeze_s)
    truth_ratio = truth_freeze_s / room["watch_s"]
    assert abs(room["stutter_ratio"] - truth_ratio) <= 0.1 * truth_ratio, (room["stutter_ratio"], truth_ratio)

    # Latency: the delayed viewers measure the loopback latency plus exactly 100 ms.
    base = summary["by_network"]["same-city"]["latency_p50_ms"]
    delayed = summary["by_network"]["truth-delay-100"]["latency_p50_ms"]
    added = delayed - base
    assert abs(added - 100) <= 10, f"added latency {added:.1f} ms (base {base}, delayed {delayed})"
    assert base < 10, f"loopback latency {base} ms"
    assert 100 <= delayed <= 110, f"delayed viewers' latency {delayed} ms"
    print(f"\nfreeze time: measured {measured:.3f} s, truth {truth_freeze_s:.3f} s; stutter measured "
          f"{room['stutter_ratio']:.5f}, truth {truth_ratio:.5f}; latency p50 loopback {base} ms, "
          f"+100 ms condition {delayed} ms (added {added:.1f} ms)")
