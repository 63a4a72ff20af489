"""Real mode with an app's token URL (``pages.token_url``): the studio and the player ask the app for their
tokens, so the studio's plain "Viewers watch at" link works as it is; without one, the studio says so."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from loadtests.webrtc.process import GatewayProcess, die_with_parent, stop_process
from tests.browser.test_pages import go_live

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PORT, APP_PORT = 8093, 8094


def test_studio_and_player_get_their_tokens_from_the_app(context, netns, tmp_path):  # type: ignore[no-untyped-def]
    secret = secrets.token_urlsafe(32)
    env = {"CHERRY_APP_SECRET": secret}
    config = tmp_path / "gateway.toml"
    config.write_text(f'[auth]\nsecret_env = "CHERRY_APP_SECRET"\n[pages]\n'
                      f'token_url = "http://127.0.0.1:{APP_PORT}/token"\n')
    gateway = GatewayProcess(tmp_path / "gateway.log", port=GATEWAY_PORT, netns=netns, cwd=ROOT, dev=False,
                             config=config, env=env)
    app = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "tests.browser.token_app",
                            str(APP_PORT), gateway.base_url], cwd=ROOT, env={**os.environ, **env},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        gateway.wait_healthy(20)
        assert app.stdout is not None and b"listening" in app.stdout.readline(), "the token app did not start"
        host = go_live(context, gateway.base_url, "tok1")
        assert host.inner_text("#watch-note") == "", "the studio must not say viewers need a token"
        link = host.get_attribute("#watch-link", "href")
        assert link == "/watch?room=tok1", link
        viewer = context.new_page()
        viewer.goto(f"{gateway.base_url}{link}")
        viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
        viewer.wait_for_selector("#gift-buttons button", timeout=15000)  # the room socket, with the app's token
        counts = viewer.evaluate(f"async () => (await fetch('http://127.0.0.1:{APP_PORT}/count')).json()")
        assert counts == {"host": 1, "viewer": 1}, counts
        assert viewer.evaluate("fetch('/dev/token?room=tok1&role=viewer').then(r => r.status)") == 404
        host.click("#stop")
    finally:
        stop_process(app, grace=5)
        gateway.stop()


def test_without_a_token_url_the_studio_says_viewers_need_a_token(context, netns, tmp_path):  # type: ignore[no-untyped-def]
    secret = secrets.token_urlsafe(32)
    config = tmp_path / "gateway.toml"
    config.write_text('[auth]\nsecret_env = "CHERRY_APP_SECRET"\n')
    gateway = GatewayProcess(tmp_path / "gateway.log", port=GATEWAY_PORT, netns=netns, cwd=ROOT, dev=False,
                             config=config, env={"CHERRY_APP_SECRET": secret})
    try:
        gateway.wait_healthy(20)
        page = context.new_page()
        page.goto(f"{gateway.base_url}/broadcast?room=tok2")
        page.wait_for_function("document.querySelector('#watch-note').textContent.includes('pages.token_url')",
                               timeout=10000)
        assert page.is_visible("#token-row"), "with no token at all the studio asks for one"
    finally:
        gateway.stop()
