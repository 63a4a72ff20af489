"""A planned drain seen from the pages, in real headless Chromium: the player keeps playing while it
tries to move to another instance, the studio tells the host and moves its stream before the deadline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.test_pages import frames, go_live
from tests.integration.conftest import GatewayProcess

DRAIN_S = 16.0  # the studio moves 10 s before the deadline (broadcast.js MOVE_LEAD_MS): about 6 s in


@pytest.fixture
def draining_gateway(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway of this test's own (draining ends it), beside the shared one, in the same namespace."""
    config = f"[drain]\ntimeout_s = {DRAIN_S}\n[limits]\nretry_after = 1\n"
    proc = GatewayProcess([], config, tmp_path_factory.mktemp("drain-gw"), netns=netns, port=8091, module="gateway")
    yield proc
    proc.stop()


START_DRAIN = """async () => {
  const token = (await (await fetch('/dev/token?room=*&role=admin')).json()).token;
  const response = await fetch('/api/drain', {method: 'POST', headers: {Authorization: `Bearer ${token}`}});
  return response.status;
}"""


def test_pages_act_on_a_planned_drain(context, draining_gateway):  # type: ignore[no-untyped-def]
    base = draining_gateway.base
    host = go_live(context, base, "drain1", identity="drainhost")
    viewer = context.new_page()
    errors: list[str] = []
    viewer.on("pageerror", lambda e: errors.append(str(e)))
    host.on("pageerror", lambda e: errors.append(str(e)))
    viewer.goto(f"{base}/watch?room=drain1")
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)
    viewer.wait_for_function("window.cherryChat.events.ws.readyState === 1", timeout=10000)
    host.wait_for_function("window.cherryStudioChat.events.ws.readyState === 1", timeout=10000)

    assert viewer.evaluate(START_DRAIN) == 202
    # The studio says so in plain words and plans its move before the deadline.
    host.wait_for_function("window.cherryStudio.drain", timeout=10000)
    assert "shutting down for maintenance" in host.inner_text("#message")
    plan = host.evaluate("window.cherryStudio.drain")
    assert plan["moveAt"] <= plan["deadline"] - 10000, plan

    # The player tries a new session (here the only instance refuses: 503 draining) and keeps the old one
    # playing meanwhile: no gap for the viewer while it cannot move yet.
    viewer.wait_for_function("window.cherryPlayer.moveAttempts >= 2", timeout=10000)
    before = frames(viewer)
    viewer.wait_for_function(f"window.cherryPlayer.quality.framesDecoded > {before + 10}", timeout=10000)
    assert viewer.evaluate("document.body.dataset.state") == "playing"
    assert viewer.evaluate("window.cherryPlayer.moves") == 0
    assert "moving you to another server" in viewer.inner_text("#chat-state")

    # Before the deadline the studio reconnects its WHIP session (to another instance behind a load balancer;
    # this one refuses it, and the host is told it is retrying).
    host.wait_for_function("window.cherryStudio.drain.moved", timeout=10000)
    host.wait_for_function("document.querySelector('#message').textContent.includes('Retrying')", timeout=10000)
    assert not errors, errors
