"""The soak tool end to end: a real gateway on 127.0.0.1, the load agent's real hosts, churning viewers, chat and
PK cycles for about a minute and a half, sampled every 2 s; the report folder and a PASS verdict.

The slope test's maths has its own unit tests (tests/unit/test_soak_verdict.py); this one checks the tool
does what it says on a real run: samples of every series, plots, a verdict, the workload really ran, and
nothing it started is left running.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.webrtc.process import free_port

ROOT = Path(__file__).resolve().parents[2]
JUDGED = ("rss_mb", "fds", "threads", "tasks", "loop_lag_ms")


def soak(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "soak.run", "--out", str(out), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)


@pytest.mark.timeout(240)
def test_two_minute_soak_samples_plots_and_passes(tmp_path: Path) -> None:
    # 95 s of workload plus ~10 s of set-up and teardown: the smoke stays near two minutes. That is inside the
    # gateway's fill-up (its RSS climbs ~20 MB over the first 4 minutes of churn, then levels off: docs/soak.md),
    # so RSS gets a floor of 12 MB here; fds, threads and tasks settle within seconds and keep the default floors.
    # Loop lag is each second's worst, on a machine the rest of the suite has just loaded: one full run's smoke saw
    # it "grow" 25 ms over its 60 s window, so the smoke tolerates 40 ms (real soaks keep the default 20 over
    # 30 min and more, where a trend shows beyond such noise).
    done = soak(tmp_path, "--duration", "95s", "--warmup", "35s", "--interval", "2", "--pk-battle", "10",
                "--pk-gap", "5", "--churn-every", "4", "--rss-mb-floor", "12", "--loop-lag-ms-floor", "40",
                timeout=220)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit code {done.returncode}:\n{output[-4000:]}"
    assert "VERDICT: PASS" in done.stdout

    with (tmp_path / "samples.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 40, f"one sample every 2 s for 95 s, got {len(rows)}"
    for name in JUDGED:
        assert all(row[name] != "" for row in rows), f"{name} missing from some samples"
    assert all(int(row["tasks"]) > 0 for row in rows), "cherry_asyncio_tasks is read from /metrics"
    assert all(float(row["rss_mb"]) > 10 and int(row["fds"]) > 3 and int(row["threads"]) >= 1 for row in rows)
    assert max(int(row["viewers"]) for row in rows) >= 6, "the audience was connected while sampled"

    for name in JUDGED:
        plot = tmp_path / f"{name}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{plot} is not a PNG"

    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["verdict"] == "PASS" and verdict["problems"] == []
    judged = {s["name"]: s for s in verdict["series"]}
    assert set(JUDGED) <= set(judged)
    for name in JUDGED:
        assert judged[name]["measured"] and judged[name]["flat"], judged[name]
        assert judged[name]["samples"] >= 25, "the warm-up's samples are left out, the rest are judged"
    workload = verdict["workload"]
    assert workload["leaves"] >= 10 and workload["joins_ok"] >= 8 + workload["leaves"] - 1, "viewers churned"
    assert workload["pk_started"] >= 2, "PK battles came round again"
    assert workload["pk_ended"] >= 1
    assert workload["chat_echoed"] > 0 and workload["gifts_sent"] > 0
    assert (tmp_path / "report.md").read_text().startswith("# Soak: PASS")

    pid = verdict["pid"]
    assert not Path(f"/proc/{pid}").exists(), "the gateway the soak started is stopped"


def test_no_gateway_at_the_base_url_is_a_setup_error(tmp_path: Path) -> None:
    done = soak(tmp_path, "--duration", "60s", "--base-url", f"http://127.0.0.1:{free_port()}", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SETUP: cannot scrape" in done.stdout
