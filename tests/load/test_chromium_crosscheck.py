"""Cross-check against Chromium: its own getStats() freeze figures for the same frozen stream.

A synthetic host stops its video for 0.6 s every 3 s. Chromium watches the room through the
player page and reports ``freezeCount`` / ``totalFreezesDuration`` (libwebrtc's counters, the
same W3C rule); our non-decoding viewer watches the same stream. The windows cannot start at
the same instant, so the comparison is per freeze: the same freezes (count within one) and the
same mean duration of a whole freeze within 10 %. Chromium decoding the stream at full rate also shows
that the capture-time trailer in each VP8 frame is harmless to a real decoder.

Like the browser tests: Chromium, the gateway and both clients run in a network namespace that
has only loopback; skipped without Chromium or root (failed instead under CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtests.webrtc.process import GatewayProcess, die_with_parent, stop_process
from tests.chromium import FLAGS, chromium_in, loopback_netns

ROOT = Path(__file__).resolve().parents[2]
ROOM = "crosscheck"
WATCH_S = 12.0
STATS_JS = """async () => {
  const pc = window.cherryPlayer && window.cherryPlayer.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  let best = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && (!best || (s.framesDecoded || 0) > (best.framesDecoded || 0)))
      best = s;
  });
  return best && {frames: best.framesDecoded || 0, freezes: best.freezeCount || 0,
                  freeze_s: best.totalFreezesDuration || 0, at: performance.now() / 1000};
}"""


@pytest.fixture
def netns() -> Iterator[str]:
    with loopback_netns("cherry-load", "Chromium cross-check") as name:
        yield name


def _spawn(netns: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=handle, env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent)


def _line(process: subprocess.Popen[bytes], want: str, timeout: float) -> dict[str, Any]:
    """The first JSON line on stdout whose ``event`` or ``op`` is ``want`` (bounded by ``timeout``)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"process exited ({process.poll()}) before {want!r}")
        message = json.loads(line)
        if want in (message.get("event"), message.get("op")):
            return dict(message)
    raise AssertionError(f"no {want!r} within {timeout} s")


def test_freezes_match_chromiums_own_getstats(netns: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    gateway = GatewayProcess(tmp_path / "gateway.log", port=8080, netns=netns, cwd=ROOT)
    base = gateway.base_url
    processes: list[subprocess.Popen[bytes]] = []
    try:
        gateway.wait_healthy(20)
        host = _spawn(netns, ["-m", "loadtests.webrtc.synthetic_host", "--base-url", base, "--room", ROOM,
                              "--freeze-every", "3", "--freeze-for", "0.6", "--freeze-first", "3"],
                      tmp_path / "host.log")
        processes.append(host)
        _line(host, "publishing", 60)
        wrapper = chromium_in(netns, tmp_path)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(wrapper), headless=True, args=FLAGS)
            try:
                page = browser.new_page()
                page.goto(f"{base}/watch?room={ROOM}")
                page.wait_for_function("() => window.cherryPlayer && window.cherryPlayer.frames > 0", timeout=20000)
                viewer = _spawn(netns, ["-m", "loadtests.webrtc.viewer", "--base-url", base, "--room", ROOM,
                                        "--count", "1", "--warmup", "1", "--watch", str(WATCH_S)],
                                tmp_path / "viewer.log")
                processes.append(viewer)
                joined = _line(viewer, "join", 30)
                assert joined["ok"] == 1, joined
                start = page.evaluate(STATS_JS)
                ours = _line(viewer, "report", WATCH_S + 30)
                end = page.evaluate(STATS_JS)
            finally:
                browser.close()
    finally:
        for process in reversed(processes):
            stop_process(process, grace=10)
        gateway.stop()
    chrome_freezes = end["freezes"] - start["freezes"]
    chrome_freeze_s = end["freeze_s"] - start["freeze_s"]
    chrome_fps = (end["frames"] - start["frames"]) / (end["at"] - start["at"])
    detail = f"chromium {start} -> {end}; ours {ours}"
    assert chrome_fps > 20, f"Chromium did not decode the tagged stream at full rate: {detail}"
    assert chrome_freezes >= 3 and ours["freezes"] >= 3, detail
    assert abs(chrome_freezes - ours["freezes"]) <= 1, detail
    chrome_mean = chrome_freeze_s / chrome_freezes
    # Whole gaps of the freezes that ended in our window, as libwebrtc counts them (our freeze_s
    # counts only the part of a freeze inside the window, and the windows cannot be aligned).
    gaps = ours["freeze_gaps_ms"]
    our_mean = sum(gaps) / len(gaps) / 1000
    assert abs(our_mean - chrome_mean) <= 0.1 * chrome_mean, f"mean {our_mean:.3f} vs {chrome_mean:.3f} s; {detail}"
    print(f"\nmean freeze: ours {our_mean * 1000:.0f} ms, Chromium {chrome_mean * 1000:.0f} ms; "
          f"freezes: ours {ours['freezes']}, Chromium {chrome_freezes}")
