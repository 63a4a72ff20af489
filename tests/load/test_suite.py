"""End-to-end load runs: smoke on two Locust processes, a broken gateway, a starved generator.

Each run starts its own gateway on 127.0.0.1 and stops it; every run is bounded in time.
"""

from __future__ import annotations

from pathlib import Path

from tests.load.reports import check_report
from tests.load.runs import check, run_load


def test_smoke_profile_passes_with_two_locust_processes(tmp_path: Path) -> None:
    run = run_load("smoke", tmp_path, "--processes", "2", report=True)
    assert run.code == 0, run.explain()
    summary = run.summary
    assert summary["verdict"] == "PASS", run.explain()
    overall = summary["overall"]
    assert overall["viewers_joined"] == 20, run.explain()
    assert overall["fps"] is not None and overall["fps"] > 27, run.explain()
    assert overall["latency_samples"] > 1000, run.explain()
    # Both Locust workers ran an agent and reported their health.
    agents = [proc for proc in summary["generator"] if not proc.startswith("locust@")]
    assert len(agents) == 2, summary["generator"]
    assert set(summary["by_network"]) == {"same-city", "cross-region"}
    # The cross-region condition adds 80 ms one way; same-city is loopback.
    assert summary["by_network"]["cross-region"]["latency_p50_ms"] > 70, summary["by_network"]
    assert summary["by_network"]["same-city"]["latency_p50_ms"] < 30, summary["by_network"]
    assert summary["events"]["chat_echoed"] > 0, summary["events"]
    # Locust's own reports.
    for name in ("smoke_stats.csv", "smoke_failures.csv", "smoke.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    stats_csv = (tmp_path / "smoke_stats.csv").read_text()
    for name in ("WEBRTC,whep", "WEBRTC,join", "WEBRTC,first_frame", "WEBRTC,latency", "WEBRTC,stutter"):
        assert name in stats_csv, f"{name} missing from the Locust CSV:\n{stats_csv}"
    # Ours: both network conditions over time, each with its own latency (80 ms apart), not one pooled figure.
    check_report(tmp_path, summary)
    points = [p for p in summary["timeline"]["points"] if len(p["by_network"]) == 2]
    assert points, summary["timeline"]
    assert all(p["by_network"]["cross-region"]["latency_p50_ms"] > p["by_network"]["same-city"]["latency_p50_ms"] + 60
               for p in points if p["by_network"]["same-city"]["latency_p50_ms"] is not None
               and p["by_network"]["cross-region"]["latency_p50_ms"] is not None), points


def test_gateway_dropping_5_percent_of_video_frames_fails(tmp_path: Path) -> None:
    run = run_load("tiny", tmp_path, "--gateway-module", "tests.load.broken_gateway", report=True)
    assert run.code == 1, run.explain()
    assert run.summary["verdict"] == "FAIL", run.explain()
    stutter = check(run.summary, "stutter_ratio")
    assert not stutter["passed"], stutter
    assert run.summary["overall"]["decode_gaps"] > 0, run.summary["overall"]
    # Our report says FAIL and names the missed stutter target; its stutter plot has the freezes over time.
    page = check_report(tmp_path, run.summary)
    assert "Targets missed" in page and "stutter_ratio [all]:" in page, page[:3000]
    assert any((p["stutter_ratio"] or 0) > stutter["limit"] for p in run.summary["timeline"]["points"])


def test_starved_generator_is_invalid_not_fail(tmp_path: Path) -> None:
    run = run_load("tiny", tmp_path, env={"CHERRY_LOAD_STARVE": "0.95"})
    assert run.code == 3, run.explain()
    assert run.summary["verdict"] == "INVALID", run.explain()
    reasons = " ".join(run.summary["invalid_reasons"])
    assert "lag" in reasons or "CPU" in reasons, reasons


def test_pk_battles_keep_both_audiences_watching_both_hosts(tmp_path: Path) -> None:
    run = run_load("pk", tmp_path)
    assert run.code == 0 and run.summary["verdict"] == "PASS", run.explain()
    pk = run.summary["pk"]
    assert pk["battles"] >= 2 and pk["ended"] >= 1, pk  # battles start and end back to back
    assert pk["sessions"] == 6 and pk["sessions_with_partner"] == 6, pk
    assert pk["partner_latency_p50_ms"] is not None, pk
    assert run.summary["overall"]["stutter_ratio"] == 0, run.summary["overall"]  # PK start/end: no freeze


def test_stub_profile_is_skipped_with_its_reason(tmp_path: Path) -> None:
    stub = tmp_path / "future.toml"
    stub.write_text('status = "stub"\nskip_reason = "waits for the feature"\n')
    run = run_load(str(stub), tmp_path, timeout=30)
    assert run.code == 4, run.explain()
    assert "SKIPPED" in run.output and "waits for the feature" in run.output, run.output
