"""Per-node results, pure logic: whose node a session is, per-node figures and checks, node configs."""

from __future__ import annotations

import tomllib

from cluster.config import ClusterConfig
from cluster.worker import WorkerSlot
from loadtests.local_cluster import node_config, toml_text
from loadtests.profiles import load_targets
from loadtests.summary import GroupStats, Summary, group_key, split_key
from loadtests.verdict import evaluate, render
from loadtests.webrtc.signaling_client import SessionResource, node_of, worker_in_location


def test_node_of_reads_the_gateways_own_worker_ids() -> None:
    for node in ("a", "n0", "gw-west", "host-w", "edge-w3x"):
        for index in (0, 1, 12):
            worker_id = WorkerSlot(index, 13, node).worker_id  # how the gateway spells them
            assert node_of(worker_id) == node, worker_id
    assert node_of("no-index") == "no-index"
    assert WorkerSlot.of(ClusterConfig(node_id="b")).worker_id == "b-w0"


def test_the_holding_worker_comes_from_the_location_else_from_the_answer() -> None:
    assert worker_in_location("http://127.0.0.1:8080/whep/room-1/3f2a~b-w1") == "b-w1"
    assert worker_in_location("/whip/r/abc") is None
    clustered = SessionResource("http://127.0.0.1:8080/whep/r/abc~b-w1", None, "", answered_by="a-w0")
    assert clustered.holder == "b-w1"  # answered by a, held by b: the media comes from b
    single = SessionResource("http://127.0.0.1:8080/whep/r/abc", None, "", answered_by="box-w0")
    assert single.holder == "box-w0"


def test_group_keys_carry_the_node_and_old_keys_still_read() -> None:
    assert split_key(group_key("r", "same-city", "a")) == ("r", "same-city", "a")
    assert split_key("r|same-city") == ("r", "same-city", "")


def _viewers(joined: int, freeze_s: float = 0.0, failed: int = 0) -> GroupStats:
    group = GroupStats(join_attempts=joined + failed, join_ok=joined, sessions=joined, watch_s=10.0 * joined,
                       frames=300 * joined, freeze_s=freeze_s)
    if failed:
        group.join_failed["http_503"] = failed
    for _ in range(joined):
        group.ttff_ms.add(300)
        group.latency_ms.add(20)
    return group


def test_each_node_must_meet_the_viewer_targets_and_the_totals_are_its_sums() -> None:
    summary = Summary()
    summary.groups[group_key("r0", "same-city", "a")] = _viewers(20)
    summary.groups[group_key("r1", "same-city", "b")] = _viewers(20, freeze_s=0.0)
    summary.groups[group_key("r1", "same-city", "c")] = _viewers(2, freeze_s=1.0)  # one bad node, 5 % stutter
    summary.hosts["r0"] = {"node": "a"}
    document = evaluate(summary, load_targets(), "t")
    pooled = next(c for c in document["checks"] if c["name"] == "stutter_ratio" and c["scope"] == "all")
    assert pooled["passed"], pooled  # 1 s in 420 s: the pool hides node c
    bad = next(c for c in document["checks"] if c["name"] == "stutter_ratio" and c["scope"] == "node:c")
    assert not bad["passed"] and document["verdict"] == "FAIL", document["checks"]
    by_node = document["by_node"]
    assert sum(f["viewers_joined"] for f in by_node.values()) == document["overall"]["viewers_joined"] == 42
    assert by_node["a"]["hosts"] == ["r0"] and by_node["b"]["hosts"] == []
    text = render(document)
    assert "== per gateway node" in text and "stutter_ratio [node:c]" in text, text


def test_one_node_adds_no_per_node_checks() -> None:
    summary = Summary()
    summary.groups[group_key("r", "same-city", "box")] = _viewers(5)
    document = evaluate(summary, load_targets(), "t")
    assert {c["scope"] for c in document["checks"]} == {"all"}
    assert list(document["by_node"]) == ["box"] and document["verdict"] == "PASS"


def test_a_node_config_keeps_the_base_and_sets_the_nodes_identity() -> None:
    base = {"limits": {"offers_per_second": 0.0}, "cluster": {"worker_viewer_capacity": 4},
            "auth": {"issuer": "x", "previous_secrets": ["env:OLD"]}, "log": {"level": "info"}}
    text = toml_text(node_config(base, redis_url="redis://127.0.0.1:1/3", node_id="n1",
                                 advertise_url="http://127.0.0.1:9500", workers=2))
    parsed = tomllib.loads(text)
    assert parsed["limits"] == base["limits"] and parsed["auth"] == base["auth"]
    assert parsed["cluster"] == {"worker_viewer_capacity": 4, "redis_url": "redis://127.0.0.1:1/3", "node_id": "n1",
                                 "advertise_url": "http://127.0.0.1:9500", "workers": 2}
    assert base["cluster"] == {"worker_viewer_capacity": 4}  # the base itself is untouched
