"""The cluster view (cluster/view.py) and the room report in each heartbeat (cluster/registry.py)."""

from __future__ import annotations

from cluster.registry import WorkerInfo, WorkerLoad, _held, _parse_held
from cluster.view import cluster_view

NOW = 1000.0


def worker(worker_id: str, node: str, *, viewers: int = 0, state: str = "serving", age: float = 0.5,
           rooms: dict[str, int] | None = None, origins: tuple[str, ...] = ()) -> WorkerInfo:
    held = rooms or {}
    return WorkerInfo(worker_id, node, f"http://{worker_id}", state, viewers, viewers + len(origins), len(held),
                      100, NOW - age, held, origins)


def test_a_room_is_placed_at_its_origin_with_its_edges_and_its_audience_summed():
    view = cluster_view([
        worker("a-w0", "a", viewers=50, rooms={"pk": 40, "solo": 10}, origins=("pk", "solo")),
        worker("a-w1", "a", viewers=100, rooms={"pk": 100}),
        worker("b-w0", "b", viewers=70, rooms={"pk": 70}),
    ], NOW, 5.0, urls=False)
    pk = next(r for r in view["rooms"] if r["room"] == "pk")
    assert pk == {"room": "pk", "origin": "a-w0", "viewers": 210, "origin_viewers": 40,
                  "edges": {"a-w1": 100, "b-w0": 70}}
    assert [r["room"] for r in view["rooms"]] == ["pk", "solo"]  # busiest first
    assert view["viewers"] == 220 and view["workers"] == 3 and view["available_workers"] == 3
    assert [n["id"] for n in view["nodes"]] == ["a", "b"] and view["nodes"][0]["viewers"] == 150
    assert "url" not in view["nodes"][0]["workers"][0]  # the open dashboard gets no internal address


def test_a_silent_worker_is_shown_stale_and_its_rooms_are_not_believed():
    view = cluster_view([
        worker("a-w0", "a", viewers=5, rooms={"r": 5}, origins=("r",), age=9.0),
        worker("b-w0", "b", rooms={"r": 3}),
        worker("c-w0", "c", state="draining"),
    ], NOW, 5.0, urls=True)
    workers = {w["id"]: w for n in view["nodes"] for w in n["workers"]}
    assert workers["a-w0"]["state"] == "stale" and not workers["a-w0"]["available"]
    assert workers["a-w0"]["url"] == "http://a-w0"
    assert view["rooms"] == [{"room": "r", "origin": None, "viewers": 3, "origin_viewers": 0, "edges": {"b-w0": 3}}]
    assert {n["id"]: n["state"] for n in view["nodes"]} == {"a": "down", "b": "serving", "c": "draining"}
    assert view["viewers"] == 0  # a stale worker's viewers are not counted; b-w0's report says 0 in all


def test_the_heartbeats_room_report_is_bounded_and_a_damaged_one_reads_as_empty():
    load = WorkerLoad("serving", 0, 0, 300, 100, {f"r{i}": i for i in range(300)}, tuple(f"r{i}" for i in range(300)))
    viewers, origins = _parse_held(_held(load))
    assert len(viewers) == 200 and min(viewers.values()) == 100  # the busiest 200
    assert len(origins) == 200
    for damaged in ("", "{", "[]", '{"v": [1, 2]}', '{"v": {"r": "x"}}', "null"):
        assert _parse_held(damaged) == ({}, ()), damaged
