"""Distributed load runs against a real 2-node cluster: one Locust master, two ``locust --worker`` processes.

Two gateway processes (nodes ``n0`` and ``n1``, one worker each, their own public and internal ports) on one
real redis-server, all on 127.0.0.1, in production mode (no ``--dev``: the generator mints its tokens from the
secret). Room i goes live through node i, so each node is the origin of one room; viewers enter through both
nodes and are held by their room's origin: results per node (the holding node) must exist for both, and add
up to the totals. One run goes through ``loadtests.run --locust-workers 2``; the other runs the multi-machine
recipe of docs/loadtesting.md, its command lines verbatim, as two load machines on loopback would.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from loadtests.local_cluster import LocalCluster
from loadtests.profiles import load_profile
from loadtests.webrtc.process import LOOPBACK, RedisServer, free_port, stop_process
from tests.cluster import redis_server  # noqa: F401  (a fixture: importing it registers it here)
from tests.load.reports import check_report
from tests.load.runs import PROFILES, ROOT, check, run_load

REDIS_DB = 3  # this module's own database on the session's redis-server
NODE_CONFIG = """
[cluster]
heartbeat_interval_s = 0.5
stale_after_s = 2.0

[auth]
secret_env = "CHERRY_SECRET"
"""
SECRET = "distributed-load-secret-0123456789abcdef"
RECIPE = "<!-- recipe: multi-machine"
RECIPE_BUDGET_S = 90  # the master: profile run time + start-up + the workers' final figures, with room to spare


@pytest.fixture(scope="module")
def two_nodes(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("two-nodes")
    config = tmp / "gateway.toml"
    config.write_text((ROOT / "configs" / "load-gateway.toml").read_text() + NODE_CONFIG)
    cluster = LocalCluster(tmp, 2, config=config, redis_url=redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}",
                           dev=False, env={"CHERRY_SECRET": SECRET})
    try:
        cluster.wait_healthy(30)
        yield cluster
    finally:
        cluster.stop()


def test_distributed_run_reports_each_node_and_totals_that_add_up(two_nodes: LocalCluster, tmp_path: Path) -> None:
    run = run_load("cluster", tmp_path, "--base-url", ",".join(two_nodes.urls), "--locust-workers", "2",
                   "--secret-env", "CHERRY_SECRET", env={"CHERRY_SECRET": SECRET}, report=True)
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
    page = check_report(tmp_path, summary)
    assert "Viewers per gateway node" in page


def recipe() -> tuple[set[str], list[str]]:
    """The names the docs' multi-machine block exports, and its other command lines (continuations joined)."""
    text = (ROOT / "docs" / "loadtesting.md").read_text()
    start = text.index("```sh\n", text.index(RECIPE)) + len("```sh\n")
    block = text[start:text.index("```", start)].replace("\\\n", " ")
    names: set[str] = set()
    commands: list[str] = []
    for line in (raw.strip() for raw in block.splitlines()):
        if line.startswith("export "):
            names |= {word.split("=", 1)[0] for word in shlex.split(line, comments=True)[1:]}
        elif line and not line.startswith("#"):
            commands.append(line)
    return names, commands


def test_the_docs_multi_machine_recipe_runs_on_loopback(two_nodes: LocalCluster, tmp_path: Path) -> None:
    names, commands = recipe()
    profile = PROFILES / "recipe.toml"
    env = {"PROFILE": str(profile), "USERS": str(load_profile(str(profile)).users), "RATE": "20", "WORKERS": "2",
           "CORES": "1", "OUT": str(tmp_path / "out"), "GATEWAYS": ",".join(two_nodes.urls), "MASTER": LOOPBACK,
           "MASTER_PORT": str(free_port()), "CHERRY_SECRET": SECRET}
    assert names == set(env), f"the recipe exports {sorted(names)}; this test sets {sorted(env)}"
    kinds = ["master" if " --master " in c else "worker" if " --worker " in c else "step" for c in commands]
    assert kinds.count("master") == 1 and kinds.count("worker") == 1, commands
    run_env = {**os.environ, **env}
    master: subprocess.Popen[bytes] | None = None
    with ExitStack() as stack:
        for command, kind in zip(commands, kinds, strict=True):
            if kind == "step" and master is not None:  # after the run: wait for the master's verdict first
                try:
                    code = master.wait(timeout=RECIPE_BUDGET_S)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"the recipe's master ran past {RECIPE_BUDGET_S} s:\n{_tail(tmp_path / 'master.log')}")
                assert code == 0, f"master exit code {code}:\n{_tail(tmp_path / 'master.log')}"
            if kind == "step":
                done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=run_env, capture_output=True, text=True,
                                      timeout=60, check=False)
                assert done.returncode == 0, (command, done.stdout, done.stderr)
                continue
            # The master, and the worker line run twice: two load machines of one worker process each.
            for index in range(1 if kind == "master" else 2):
                name = "master" if kind == "master" else f"machine-{index}"
                log = stack.enter_context((tmp_path / f"{name}.log").open("wb"))
                process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=run_env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                stack.callback(stop_process, process, 15)
                if kind == "master":
                    master = process
    assert master is not None
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "PASS", (summary["verdict"], summary["checks"], summary["invalid_reasons"])
    assert summary["overall"]["viewers_joined"] == 4, summary["overall"]
    assert {room: facts["node"] for room, facts in summary["hosts"].items()} == {"recipe-0": "n0", "recipe-1": "n1"}
    for node in ("n0", "n1"):
        assert summary["by_node"][node]["viewers_joined"] > 0, summary["by_node"]
    # Two worker processes, each with its own agent, from the two "machines"; the master ran none.
    generator = summary["generator"]
    assert len([p for p in generator if p.startswith("locust@")]) == 2, generator
    assert len([p for p in generator if not p.startswith("locust@")]) == 2, generator
    for name in ("locust_stats.csv", "locust.html"):
        assert (out / name).stat().st_size > 0, name
    check_report(out, summary)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
