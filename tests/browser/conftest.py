"""Real headless Chromium and a real gateway, together in a network namespace that has only loopback.

Chromium offers ICE candidates on every interface it sees; inside a fresh namespace the only one
is 127.0.0.1, so no test traffic can reach the machine's other interface. Playwright talks to
Chromium over a pipe, so it crosses the namespace boundary; HTTP checks run inside the page.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chromium import FLAGS, chromium_in, loopback_netns

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def netns() -> Iterator[str]:
    with loopback_netns("cherry-browser", "browser tests") as name:
        yield name


class NetnsGateway:
    def __init__(self, netns: str, tmp: Path) -> None:
        self.port = 8080
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "gateway.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "gateway", "serve", "--dev",
             "--host", "127.0.0.1", "--port", str(self.port), "--ice-host", "127.0.0.1"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        probe = f"import urllib.request; urllib.request.urlopen('{self.base}/healthz', timeout=1)"
        deadline = time.monotonic() + 20
        while subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe],
                             capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def gateway(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsGateway]:
    proc = NetnsGateway(netns, tmp_path_factory.mktemp("browser-gw"))
    yield proc
    proc.stop()


# Module scope: sync Playwright runs an event loop in this thread while it is open, and the asyncio
# tests of other modules need the thread to themselves.
@pytest.fixture(scope="module")
def browser(netns: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    wrapper = chromium_in(netns, tmp_path_factory.mktemp("chromium"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(wrapper), headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield context
    context.close()
