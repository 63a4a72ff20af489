"""The SRE dashboard in real headless Chromium: it renders, and its numbers move while a host streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.test_pages import go_live, open_player, screenshot_dir


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory)


# True once the chart canvas has anything drawn on it.
CANVAS_DRAWN = """(canvas) => {
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true;
  return false;
}"""


def test_dashboard_renders_and_follows_a_live_stream(context, gateway, shots):  # type: ignore[no-untyped-def]
    dash = context.new_page()
    errors: list[str] = []
    dash.on("pageerror", lambda e: errors.append(str(e)))
    dash.goto(f"{gateway.base}/dashboard")
    dash.wait_for_selector("body[data-state=ok]", timeout=20000)
    dash.wait_for_function("window.cherryDashboard.updates >= 2", timeout=20000)
    assert dash.inner_text("#stat-cpu").endswith("%")
    # Laid out as meant (shared CSS must not stretch it): compact figures, charts of their set height.
    stat = dash.locator(".dash-stat").first.bounding_box()
    chart = dash.locator("#chart-bitrate").bounding_box()
    assert stat is not None and stat["height"] < 120, stat
    assert chart is not None and 80 < chart["height"] < 200 and chart["width"] > 250, chart
    assert dash.inner_text("#stat-rss").endswith("iB")

    host = go_live(context, gateway.base, "dash1", identity="dashhost", title="Dashboard check")
    viewer = open_player(context, gateway.base, "dash1")
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)

    # The room shows up in the busiest-rooms table with its viewer and bitrate.
    dash.wait_for_function(
        """() => { const r = (window.cherryDashboard.rooms || []).find((x) => x.room === 'dash1');
                   return r && r.viewers >= 1 && r.egress_bps > 0; }""", timeout=20000)
    dash.wait_for_selector("#rooms-table tr[data-room=dash1]", timeout=10000)
    row = dash.inner_text("#rooms-table tr[data-room=dash1]")
    assert "dashhost" in row and "Dashboard check" in row, row
    assert int(dash.inner_text("#stat-viewers")) >= 1
    assert dash.inner_text("#stat-egress") != "0 b/s"

    # Numbers move: new samples arrive and the egress counter behind them keeps growing.
    before = dash.evaluate("({n: window.cherryDashboard.updates, t: window.cherryDashboard.latest.t})")
    dash.wait_for_function(f"window.cherryDashboard.updates >= {before['n'] + 2}", timeout=20000)
    after = dash.evaluate("window.cherryDashboard.latest")
    assert after["t"] > before["t"] and after["egress_bps"] > 0 and after["sessions"] >= 2, after
    assert dash.eval_on_selector("#chart-bitrate", CANVAS_DRAWN), "bitrate chart is empty"
    assert dash.eval_on_selector("#chart-audience", CANVAS_DRAWN), "audience chart is empty"

    # The watch page reports its own getStats() quality every 5 s: real-user stutter reaches the dashboard.
    dash.wait_for_function(
        """() => { const r = (window.cherryDashboard.rooms || []).find((x) => x.room === 'dash1');
                   return r && r.stutter_ratio !== null && window.cherryDashboard.latest.watch_reports > 0; }""",
        timeout=20000)
    assert dash.inner_text("#stat-stutter").endswith("%")

    dash.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    host.click("#stop")
    assert not errors, errors


# A two-node view as /dashboard/cluster gives it (its shape is checked against real nodes in
# tests/integration/test_cluster.py); here only the page's rendering of it is under test.
CLUSTER_VIEW = {
    "clustered": True, "workers": 3, "available_workers": 2, "viewers": 210,
    "nodes": [
        {"id": "a", "state": "serving", "viewers": 140, "workers": [
            {"id": "a-w0", "state": "serving", "available": True, "heartbeat_age_s": 0.4, "viewers": 40,
             "sessions": 41, "rooms": 2, "capacity": 500, "load": 0.08},
            {"id": "a-w1", "state": "serving", "available": True, "heartbeat_age_s": 0.9, "viewers": 100,
             "sessions": 100, "rooms": 1, "capacity": 500, "load": 0.2}]},
        {"id": "b", "state": "draining", "viewers": 70, "workers": [
            {"id": "b-w0", "state": "draining", "available": False, "heartbeat_age_s": 1.2, "viewers": 70,
             "sessions": 70, "rooms": 1, "capacity": 500, "load": 0.14}]}],
    "rooms": [{"room": "headline-pk", "origin": "a-w0", "viewers": 210, "origin_viewers": 40,
               "edges": {"a-w1": 100, "b-w0": 70}}],
}


def test_dashboard_shows_the_cluster_only_when_there_is_one(context, gateway):  # type: ignore[no-untyped-def]
    dash = context.new_page()
    errors: list[str] = []
    dash.on("pageerror", lambda e: errors.append(str(e)))
    dash.goto(f"{gateway.base}/dashboard")
    dash.wait_for_function("window.cherryDashboard.cluster !== null", timeout=20000)
    assert dash.evaluate("window.cherryDashboard.cluster.clustered") is False  # one process: the real answer
    assert dash.locator("#cluster").is_hidden()
    dash.route("**/dashboard/cluster", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(CLUSTER_VIEW)))
    dash.wait_for_selector("#cluster-workers tbody tr", timeout=10000)
    assert dash.locator("#cluster").is_visible()
    assert "2 nodes, 2/3 workers serving, 210 viewers" in dash.inner_text("#cluster-summary")
    rows = dash.locator("#cluster-workers tbody tr").all_inner_texts()
    assert len(rows) == 3 and "b-w0" in rows[2] and "draining" in rows[2], rows
    room = dash.inner_text("#cluster-rooms tbody tr")
    assert "headline-pk" in room and "a-w0" in room and "a-w1: 100, b-w0: 70" in room, room
    assert not errors, errors


def test_dashboard_drills_into_a_room_kicks_a_viewer_and_hovers(context, gateway, shots):  # type: ignore[no-untyped-def]
    """Hover a chart: the time and the values at that point. Click a room: its sessions; kick: the viewer
    is out (dev mode: the page gets its admin token from /dev/token itself)."""
    go_live(context, gateway.base, "drill2", identity="drillhost")
    viewer = context.new_page()
    viewer.goto(f"{gateway.base}/watch?room=drill2&identity=drillviewer")
    viewer.wait_for_selector("body[data-state=playing]", timeout=20000)

    dash = context.new_page()
    errors: list[str] = []
    dash.on("pageerror", lambda e: errors.append(str(e)))
    dash.on("dialog", lambda dialog: dialog.accept())  # "Kick drillviewer out of drill2?"
    dash.goto(f"{gateway.base}/dashboard")
    dash.wait_for_function("window.cherryDashboard.points.length >= 3", timeout=20000)
    box = dash.locator("#chart-bitrate").bounding_box()
    assert box is not None
    dash.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
    dash.wait_for_selector("#chart-bitrate ~ .dash-tip:not([hidden])", timeout=5000)
    hover = dash.evaluate("({...window.cherryDashboard.hover, canvas: undefined})")
    assert hover["chart"] == "chart-bitrate" and len(hover["time"]) == 8 and hover["time"][2] == ":", hover
    assert [v["label"] for v in hover["values"]] == ["egress", "ingest"], hover
    assert all(v["text"].endswith("b/s") for v in hover["values"]), hover
    tip = dash.inner_text("#chart-bitrate ~ .dash-tip")
    assert hover["time"] in tip and "egress" in tip, tip
    point = dash.evaluate(f"window.cherryDashboard.points.find((p) => p.t === {hover['t']})")
    assert point is not None, "the hovered time is one of the samples"

    dash.wait_for_selector("#rooms-table tr[data-room=drill2]", timeout=10000)
    dash.click("#rooms-table tr[data-room=drill2]")
    dash.wait_for_selector("#drill-sessions tr[data-identity=drillviewer]", timeout=10000)
    assert dash.inner_text("#drill-room") == "drill2"
    host_row = dash.inner_text("#drill-sessions tr[data-identity=drillhost]")
    viewer_row = dash.inner_text("#drill-sessions tr[data-identity=drillviewer]")
    assert "host" in host_row and "ingest" in host_row and "connected" in host_row, host_row
    assert "viewer" in viewer_row and "playback" in viewer_row and "connected" in viewer_row, viewer_row
    assert dash.inner_text("#drill-codec") not in ("", "–")
    dash.wait_for_function("window.cherryDashboard.drill.view.ingest_bps > 0", timeout=10000)
    dash.screenshot(path=str(shots / "dashboard-drilldown.png"), full_page=True)

    dash.click("button[data-kick=drillviewer]")
    dash.wait_for_function("window.cherryDashboard.drill.kicked", timeout=10000)
    kicked = dash.evaluate("window.cherryDashboard.drill.kicked")
    assert kicked["kicked"] == "drillviewer" and kicked["sessions"] >= 1 and kicked["sockets"] >= 1, kicked
    assert "Kicked drillviewer" in dash.inner_text("#drill-status")
    # The player is told: its room socket was closed as kicked (4003); it says so and reconnects nothing.
    viewer.wait_for_selector("body[data-state=removed]", timeout=10000)
    viewer.wait_for_function("window.cherryPlayer.stopped === true && window.cherryPlayer.pc === null", timeout=5000)
    assert dash.evaluate("sessionStorage.getItem('token:*:admin')"), "the admin token is kept for the tab"
    assert not errors, errors


OPS_TOKEN = "browser-ops-token-0123456789"


def test_dashboard_behind_an_operations_token_asks_for_it_then_uses_it(context, netns, tmp_path):  # type: ignore[no-untyped-def]
    from tests.integration.conftest import GatewayProcess

    (tmp_path / "ops-token").write_text(OPS_TOKEN + "\n")
    config = f'[operations]\ntoken_file = "{tmp_path / "ops-token"}"\n'
    proc = GatewayProcess([], config, tmp_path, netns=netns, port=8092, module="gateway")
    try:
        dash = context.new_page()
        dash.goto(f"{proc.base}/dashboard")
        dash.wait_for_selector("body[data-state=error]", timeout=10000)
        assert "operations token" in dash.inner_text("#state")
        dash.goto(f"{proc.base}/dashboard#ops_token={OPS_TOKEN}")
        dash.wait_for_selector("body[data-state=ok]", timeout=10000)
        assert "ops_token" not in dash.url, "the token must leave the address bar"
        dash.reload()  # kept for the tab
        dash.wait_for_selector("body[data-state=ok]", timeout=10000)
    finally:
        proc.stop()
