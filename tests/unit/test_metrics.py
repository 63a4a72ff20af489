"""Metrics: monotonic totals, the /metrics output, and the Grafana/Prometheus files that read it."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import load_config
from gateway.logs import REQUEST_ID, JsonFormatter, RequestIdFilter, TextFormatter
from gateway.metrics import QualityTotals, combine_quality
from gateway.operations import OPERATIONS
from relay.config import MediaConfig
from relay.ports import CodecInfo
from relay.publication import Publication
from relay.room import Room
from relay.subscription import Subscription
from signaling.context import CONTEXT
from tests.unit.fakes import VP8_DELTA, VP8_KEY, FakeMember, FakeSink, FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
VP8 = CodecInfo("video/VP8", 90000)
METRIC_NAME = re.compile(r"\b((?:cherry|process|python)_[a-z0-9_]+)\b")


def go_live(room: Room) -> Publication:
    host = FakeMember("amy", f"h-{room.name}", "host").attach(room)
    room.claim_host(host)
    pub = Publication("video", VP8, FakeUpstream(), cache_size=64, keyframe_interval=0.1,
                      retire_into=room.retire_into)
    room.publish(host, pub)
    return pub


def watch(room: Room, sid: str) -> Subscription:
    viewer = FakeMember(f"viewer-{sid}", sid).attach(room)
    sub = Subscription("video", 90000, FakeSink(), media=MediaConfig(), cname="c", retire_into=room.retire_into)
    room.add_viewer(viewer, [sub])
    sub.start()
    return sub


def feed(pub: Publication, seq: int, count: int) -> int:
    for i in range(count):
        pub.on_rtp(0x1234, seq + i, 1000 * (seq + i), True, (VP8_KEY if i == 0 else VP8_DELTA) + b"x" * 100, 0.0)
    return seq + count


def test_quality_totals_stay_monotonic_when_a_room_aggregate_starts_over() -> None:
    totals = QualityTotals()
    totals.update({"a": {"watch_seconds": 100.0, "freeze_seconds": 1.0}})
    totals.update({"a": {"watch_seconds": 150.0, "freeze_seconds": 1.5},
                   "b": {"watch_seconds": 10, "freeze_seconds": 0}})
    assert (totals.watch_seconds, totals.freeze_seconds) == (160.0, 1.5)
    totals.update({"a": {"watch_seconds": 5.0, "freeze_seconds": 0.0}})  # room a's channel was recreated
    assert totals.watch_seconds == 165.0 and totals.freeze_seconds == 1.5
    q = combine_quality([{"watch_seconds": 90, "freeze_seconds": 0.9, "latency_ms_p95": 400, "reports": 3},
                         {"watch_seconds": 10, "freeze_seconds": 0.1, "latency_ms_p95": 900, "reports": 1}])
    assert q.stutter_ratio == pytest.approx(0.01) and q.latency_ms_p95 == pytest.approx(450) and q.reports == 4


# -- the app in-process -------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    # Keep ICE pinned to loopback: other tests in this process run real peers.
    config = load_config(None, {"dev": True, "ice.hosts": ["127.0.0.1"], "metrics.top_rooms": 1})
    app = create_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def exported_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ())
        names.update(family.name + s for s in suffixes)
    return names


def fake_hub_figures(ctx: Any) -> dict[str, dict[str, float]]:
    """Give the app's room-event hub known counters and quality reports; returns the report dict."""
    reports: dict[str, dict[str, float]] = {}
    ctx.hub.stats.update({"messages_in": 7, "messages_out": 70, "dropped_slow": 2, "rate_limited": 1, "sockets": 3})
    ctx.hub.quality_rooms = lambda: reports
    return reports


async def scrape(client: TestClient) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return await response.text()


async def test_metrics_cover_rooms_traffic_joins_events_and_quality(client: TestClient) -> None:
    ctx = client.app[CONTEXT]
    reports = fake_hub_figures(ctx)
    busy, quiet = ctx.rooms.get_or_create("busy"), ctx.rooms.get_or_create("quiet")
    pub = go_live(busy)
    go_live(quiet)
    watch(busy, "v1")
    watch(busy, "v2")
    feed(pub, 1, 4)
    reports["busy"] = {"reports": 4, "watch_seconds": 200.0, "freeze_seconds": 2.0, "stutter_ratio": 0.01,
                         "latency_ms_p50": 300.0, "latency_ms_p95": 700.0, "fps_mean": 29.0}
    # A refused WHEP offer (no token) is a join outcome.
    response = await client.post("/whep/busy", data="v=0", headers={"Content-Type": "application/sdp"})
    assert response.status == 401

    got = families(await scrape(client))

    def value(name: str, **labels: str) -> float:
        samples = [s for family in got.values() for s in family.samples if s.name == name]
        for sample in samples:
            if sample.labels == labels:
                return float(sample.value)
        raise AssertionError(f"{name}{labels} not in {samples}")

    assert value("cherry_rooms", state="live") == 2
    assert value("cherry_participants", role="viewer") == 2 and value("cherry_participants", role="host") == 2
    assert value("cherry_egress_packets_total", kind="video") == 8
    assert value("cherry_ingest_packets_total", kind="video") == 4
    assert value("cherry_join_requests_total", endpoint="whep", code="401") == 1
    assert value("cherry_room_event_messages_total", direction="out") == 70
    assert value("cherry_room_event_drops_total", reason="slow_client") == 2
    assert value("cherry_viewer_watch_seconds_total") == 200
    assert value("cherry_viewer_stutter_ratio") == pytest.approx(0.01)
    assert value("cherry_viewer_latency_p95_seconds") == pytest.approx(0.7)
    # metrics.top_rooms = 1: only the busiest room gets per-room series.
    assert [s.labels["room"] for s in got["cherry_room_viewers"].samples] == ["busy"]
    assert value("cherry_room_stutter_ratio", room="busy") == pytest.approx(0.01)
    assert value("cherry_draining") == 0
    assert "process_cpu_seconds" in got and "process_resident_memory_bytes" in got
    # No per-viewer labels anywhere: every label value set is bounded.
    for family in got.values():
        for sample in family.samples:
            assert not {"participant", "session", "identity"} & set(sample.labels), sample


async def test_dashboard_data_reports_rates_and_busiest_rooms(client: TestClient) -> None:
    from gateway.dashboard import DASHBOARD

    ctx = client.app[CONTEXT]
    dashboard = client.app[DASHBOARD]
    room = ctx.rooms.get_or_create("show")
    room.title = "Evening show"
    pub = go_live(room)
    watch(room, "v1")
    dashboard.sample()
    feed(pub, 1, 50)
    dashboard.sample()
    response = await client.get("/dashboard/data?since=0")
    assert response.status == 200
    data = await response.json()
    latest = data["latest"]
    assert latest["viewers"] == 1 and latest["rooms_live"] == 1
    assert latest["egress_bps"] > 0 and latest["ingest_bps"] > 0
    assert data["rooms"][0]["room"] == "show" and data["rooms"][0]["title"] == "Evening show"
    assert data["rooms"][0]["egress_bps"] > 0
    newer = await (await client.get(f"/dashboard/data?since={latest['t']}")).json()
    assert newer["points"] == []
    page = await client.get("/dashboard")
    assert page.status == 200 and "dashboard.js" in await page.text()


async def test_grafana_dashboard_and_alert_rules_reference_only_exported_metrics(client: TestClient) -> None:
    # Make every per-room family non-empty too.
    ctx = client.app[CONTEXT]
    fake_hub_figures(ctx)["r"] = {"reports": 1, "watch_seconds": 1.0, "freeze_seconds": 0.0, "stutter_ratio": 0.0}
    room = ctx.rooms.get_or_create("r")
    feed(go_live(room), 1, 2)
    watch(room, "v")
    exported = exported_names(await scrape(client))

    dashboard = json.loads((ROOT / "configs" / "grafana" / "cherry-gateway.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    assert len(exprs) >= 20
    uids = [p["id"] for p in dashboard["panels"]]
    assert len(uids) == len(set(uids)), "panel ids must be unique"

    rules = yaml.safe_load((ROOT / "configs" / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"CherryStutterRatioHigh", "CherryJoinSuccessLow", "CherryViewerLatencyHigh",
            "CherryForwardingDelayHigh"} <= set(alerts)

    scrape_config = yaml.safe_load((ROOT / "configs" / "prometheus.yml").read_text())
    assert scrape_config["scrape_configs"][0]["metrics_path"] == "/metrics"
    assert all((ROOT / "configs" / f).exists() for f in scrape_config["rule_files"])

    missing = {}
    for expr in exprs + list(alerts.values()):
        for name in METRIC_NAME.findall(expr):
            if name not in exported:
                missing[name] = expr
    assert not missing, f"referenced but not exported: {missing}"


async def test_promtool_accepts_rules_grafana_queries_and_metrics(client: TestClient, tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        reason = "promtool not installed (Debian package prometheus)"
        if os.environ.get("CI"):  # .ci/run installs it: missing there is a broken CI image, not a skip
            pytest.fail(f"the promtool check cannot run in CI: {reason}")
        pytest.skip(reason)

    def promtool(*args: str, stdin: str | None = None) -> None:
        result = subprocess.run(["promtool", *args], input=stdin, capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr

    promtool("check", "config", str(ROOT / "configs" / "prometheus.yml"))  # also checks alerts.yml
    # Every Grafana query, with its variables filled in, must parse as PromQL: check them as recording rules.
    dashboard = json.loads((ROOT / "configs" / "grafana" / "cherry-gateway.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:panel_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "grafana-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool("check", "rules", str(path))
    promtool("check", "metrics", stdin=await scrape(client))


async def test_request_ids_reach_log_lines_and_response_headers(client: TestClient,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cherry.gateway.http")
    response = await client.post("/whip/room1", data="v=0", headers={
        "Content-Type": "application/sdp", "X-Request-Id": "req-abc123"})
    assert response.status == 401 and response.headers["X-Request-Id"] == "req-abc123"
    lines = [r.getMessage() for r in caplog.records if r.name == "cherry.gateway.http"]
    assert any("request=req-abc123 POST /whip/room1 -> 401" in line for line in lines), lines


def test_log_formats_carry_tags_and_the_current_request_id() -> None:
    record = logging.LogRecord("cherry.test", logging.INFO, __file__, 1, "room=%s participant=%s joined",
                               ("r1", "amy"), None)
    token = REQUEST_ID.set("req-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["room"] == "r1" and entry["participant"] == "amy" and entry["request"] == "req-1"
    assert entry["level"] == "info" and entry["msg"] == "room=r1 participant=amy joined"
    assert TextFormatter().format(record).endswith("room=r1 participant=amy joined request=req-1")


async def test_a_workers_series_all_carry_its_node_and_worker_labels(client: TestClient) -> None:
    ops = client.server.app[OPERATIONS]
    ops.label_all({"node": "a", "worker": "a-w1"})
    text = await scrape(client)
    found = families(text)
    assert {"cherry_rooms", "cherry_forwarding_delay_seconds", "process_cpu_seconds"} <= set(found)
    for family in found.values():
        for sample in family.samples:
            assert sample.labels.get("node") == "a" and sample.labels.get("worker") == "a-w1", sample
    assert found["cherry_forwarding_delay_seconds"].type == "histogram"  # the family kept its type
