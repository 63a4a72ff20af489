"""A distributed load run against a real 2-node cluster: one Locust master, two ``locust --worker`` processes.

Two gateway processes (nodes ``n0`` and ``n1``, one worker each, their own public and internal ports) on one
real redis-server, all on 127.0.0.1. Room i goes live through node i, so each node is the origin of one room;
viewers enter through both nodes and are held by their room's origin: results per node (the holding node)
must exist for both, and add up to the totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.local_cluster import LocalCluster
from loadtests.webrtc.process import RedisServer
from tests.cluster import redis_server  # noqa: F401  (a fixture: importing it registers it here)
from tests.load.runs import ROOT, check, run_load

REDIS_DB = 3  # this module's own database on the session's redis-server
NODE_CONFIG = """
[cluster]
heartbeat_interval_s = 0.5
stale_after_s = 2.0
"""


@pytest.fixture(scope="module")
def two_nodes(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("two-nodes")
    config = tmp / "gateway.toml"
    config.write_text((ROOT / "configs" / "load-gateway.toml").read_text() + NODE_CONFIG)
    cluster = LocalCluster(tmp, 2, config=config, redis_url=redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}")
    try:
        cluster.wait_healthy(30)
        yield cluster
    finally:
        cluster.stop()


def test_distributed_run_reports_each_node_and_totals_that_add_up(two_nodes: LocalCluster, tmp_path: Path) -> None:
    run = run_load("cluster", tmp_path, "--base-url", ",".join(two_nodes.urls), "--locust-workers", "2")
    assert run.code == 0 and run.summary.get("verdict") == "PASS", run.explain()
    summary = run.summary
    overall, by_node = summary["overall"], summary["by_node"]
    assert set(by_node) == {"n0", "n1"}, (sorted(by_node), run.explain())
    for node, figures in by_node.items():
        assert figures["viewers_joined"] > 0, (node, figures)
        assert figures["ttff_p95_ms"] is not None and figures["latency_samples"] > 0, (node, figures)
        assert figures["fps"] is not None and figures["fps"] > 25, (node, figures)
        for name in ("join_success", "ttff_p95_ms", "latency_p95_ms", "stutter_ratio"):
            assert check(summary, name, f"node:{node}")["passed"], (node, name, summary["checks"])
    # The totals are the nodes' sums.
    assert overall["viewers_joined"] == 6, run.explain()
    for field in ("viewers_joined", "join_attempts", "sessions", "freezes", "latency_samples", "lost"):
        assert sum(f[field] for f in by_node.values()) == overall[field], (field, by_node, overall)
    assert abs(sum(f["watch_s"] for f in by_node.values()) - overall["watch_s"]) < 0.05, (by_node, overall)
    sockets = sum(f["events"]["sockets"] for f in by_node.values() if "events" in f)
    assert sockets == summary["events"]["sockets"] == 2, (by_node, summary["events"])
    # Each node is the origin of the room that went live through it, and its per-node figures say so.
    origins = {room: facts["node"] for room, facts in summary["hosts"].items()}
    assert origins == {"dist-0": "n0", "dist-1": "n1"}, summary["hosts"]
    assert by_node["n0"]["hosts"] == ["dist-0"] and by_node["n1"]["hosts"] == ["dist-1"], by_node
    # Distributed: two Locust workers, each with its own agent, reported their health (the master runs none).
    generator = summary["generator"]
    assert len([p for p in generator if p.startswith("locust@")]) == 2, generator
    assert len([p for p in generator if not p.startswith("locust@")]) == 2, generator
    for index in range(2):
        assert (tmp_path / f"locust-worker-{index}.log").exists()
    assert "== per gateway node" in run.output and "VERDICT: PASS" in run.output, run.output[-3000:]
