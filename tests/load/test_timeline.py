"""The run over time (loadtests.timeline): intervals that processes fill apart and the master merges."""

from __future__ import annotations

from loadtests.summary import Summary
from loadtests.timeline import INTERVAL_S, PROCESS, VIEWERS, series


def test_processes_measuring_apart_merge_into_one_timeline_that_adds_up() -> None:
    start = 1_000_000 * INTERVAL_S  # an interval boundary
    agent_a, agent_b = Summary(), Summary()
    for at, agent, net, latency in ((start + 0.5, agent_a, "same-city", 3.0), (start + 1.0, agent_b, "same-city", 5.0),
                                    (start + 2.0, agent_b, "cross-region", 85.0)):
        point = agent.interval(at, VIEWERS, net)
        point.join_attempts += 1
        point.join_ok += 1
        point.ttff_ms.add(100.0)
        point.latency_ms.add(latency)
        point.watch_s += 2.0
    late = agent_a.interval(start + 3 * INTERVAL_S + 0.1, VIEWERS, "same-city")  # two intervals later
    late.watch_s, late.freeze_s, late.join_attempts, late.join_failed = 4.0, 1.0, 1, 1
    cpu = agent_b.interval(start + 1.0, PROCESS, "agent-b")
    cpu.cpu_s, cpu.wall_s = 0.5, 2.0
    master = Summary()
    master.merge(Summary.from_json(agent_a.to_json()))  # as the deltas travel: JSON, then merged
    master.merge(Summary.from_json(agent_b.to_json()))
    figures = series(master.timeline)
    points = figures["points"]
    assert figures["start"] == start and [p["t_s"] for p in points] == [0, 5, 10, 15], points
    first, gap, _, last = points
    assert (first["join_attempts"], first["join_ok"], first["join_failed"]) == (3, 3, 0)
    # Latency per network condition, never pooled: same-city's p95 is its own 5 ms, not the 85 ms next door.
    assert first["by_network"]["same-city"]["latency_p95_ms"] == 5.5, first
    assert abs(first["by_network"]["cross-region"]["latency_p50_ms"] - 85.0) < 1.0, first
    assert first["cpu"] == {"agent-b": 0.25}
    assert gap["join_attempts"] == 0 and gap["by_network"] == {} and gap["stutter_ratio"] is None
    assert (last["join_attempts"], last["join_failed"], last["stutter_ratio"]) == (1, 1, 0.25), last
    assert sum(p["watch_s"] for p in points) == 10.0


def test_an_empty_run_has_no_points() -> None:
    assert series({})["points"] == []
