"""A first run on a machine with no address but loopback, in real Chromium: the gateway says what to open and
why a stock browser cannot connect; it offers loopback, which a browser allowed to use it connects over; a
stock browser gets a clear reason instead of "Connecting…" forever; a plain-http page of another name is told
that the camera needs HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.webrtc.process import GatewayProcess
from tests.chromium import FLAGS, chromium_in

ROOT = Path(__file__).resolve().parents[2]
PORT = 8093
# A stock browser: no loopback candidates. It resolves a made-up name to 127.0.0.1 (traffic stays on
# loopback), which makes the page an insecure origin: not https, not localhost.
STOCK_FLAGS = [f for f in FLAGS if f != "--allow-loopback-in-peer-connection"] + [
    "--host-resolver-rules=MAP studio.test 127.0.0.1"]


@pytest.fixture(scope="module")
def bare_gateway(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A dev gateway as `make run` starts it: no --ice-host, on a machine (this namespace) with only loopback."""
    tmp = tmp_path_factory.mktemp("first-run")
    proc = GatewayProcess(tmp / "gateway.log", port=PORT, netns=netns, cwd=ROOT, ice_hosts=())
    proc.wait_healthy(20)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browsers(netns: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    wrapper = chromium_in(netns, tmp_path_factory.mktemp("chromium-first-run"))
    with sync_playwright() as p:
        allowed = p.chromium.launch(executable_path=str(wrapper), headless=True, args=FLAGS)
        stock = p.chromium.launch(executable_path=str(wrapper), headless=True, args=STOCK_FLAGS)
        yield allowed, stock
        stock.close()
        allowed.close()


def test_the_gateway_says_what_to_open_and_why_a_browser_here_cannot_connect(bare_gateway):  # type: ignore[no-untyped-def]
    log = bare_gateway.log_tail(20000)
    assert f"open http://127.0.0.1:{PORT}/ : go live at http://127.0.0.1:{PORT}/broadcast?room=NAME" in log, log
    assert "media (ICE) offered on 127.0.0.1 (" in log, "only loopback here: nothing else may carry test traffic"
    assert "no network address besides loopback" in log and "--allow-loopback-in-peer-connection" in log, log


def test_a_browser_allowed_loopback_goes_live_and_watches_over_the_offered_loopback(browsers, bare_gateway):  # type: ignore[no-untyped-def]
    allowed, _ = browsers
    context = allowed.new_context()
    try:
        host = context.new_page()
        host.goto(f"{bare_gateway.base_url}/broadcast?room=first1&identity=firsthost")
        host.click("#go-live", timeout=15000)
        host.wait_for_selector("body[data-state=live]", timeout=15000)
        viewer = context.new_page()
        viewer.goto(f"{bare_gateway.base_url}/watch?room=first1")
        viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
        host.click("#stop")
    finally:
        context.close()


def test_a_stock_browser_is_told_why_it_cannot_connect_instead_of_connecting_forever(browsers, bare_gateway):  # type: ignore[no-untyped-def]
    _, stock = browsers
    context = stock.new_context()
    try:
        host = context.new_page()
        host.goto(f"{bare_gateway.base_url}/broadcast?room=first2&identity=stockhost")
        host.click("#go-live", timeout=15000)
        host.wait_for_selector("#message:has-text('offered no network address')", timeout=15000)
        assert host.evaluate("document.body.dataset.state") == "idle", "no retry loop: nothing a retry could change"
        assert "--allow-loopback-in-peer-connection" in host.inner_text("#message")
        viewer = context.new_page()
        viewer.goto(f"{bare_gateway.base_url}/watch?room=first2")
        viewer.wait_for_selector("#stage-status:has-text('offered no network address')", timeout=15000)
    finally:
        context.close()


def test_the_studio_on_plain_http_of_another_name_says_the_camera_needs_https(browsers, bare_gateway):  # type: ignore[no-untyped-def]
    _, stock = browsers
    context = stock.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://studio.test:{PORT}/broadcast?room=first3")
        page.wait_for_selector("#message:has-text('need a secure page')", timeout=15000)
        assert "https://" in page.inner_text("#message") and page.is_disabled("#go-live")
        assert page.evaluate("window.isSecureContext") is False
    finally:
        context.close()
