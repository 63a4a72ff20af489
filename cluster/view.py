"""The cluster as the registry sees it: nodes, their workers and load, and where each room is held.

Built from the workers' heartbeats only (no call to any worker), so any worker can answer it and it costs
one Redis round trip. A room's *origin* is the fresh worker that reports holding its host or guests; its
*edges* are the other fresh workers reporting viewers of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cluster.registry import WorkerInfo


def cluster_view(workers: Sequence[WorkerInfo], now: float, stale_after: float, *, urls: bool) -> dict[str, Any]:
    """JSON-ready view; ``urls`` adds each worker's internal URL (the admin API's, not the public page's)."""
    nodes: dict[str, dict[str, Any]] = {}
    rooms: dict[str, dict[str, Any]] = {}
    for worker in sorted(workers, key=lambda w: (w.node_id, w.worker_id)):
        fresh = worker.fresh(now, stale_after)
        entry: dict[str, Any] = {
            "id": worker.worker_id, "state": worker.state if fresh else "stale", "available":
            worker.available(now, stale_after), "heartbeat_age_s": round(max(0.0, now - worker.updated_at), 1),
            "viewers": worker.viewers, "sessions": worker.sessions, "rooms": worker.rooms,
            "capacity": worker.capacity, "load": round(worker.load, 3) if worker.capacity else None}
        if urls:
            entry["url"] = worker.url
        node = nodes.setdefault(worker.node_id, {"id": worker.node_id, "workers": []})
        node["workers"].append(entry)
        if not fresh:
            continue  # what a silent worker last said about rooms is not where they are now
        for name in worker.origins:
            _room(rooms, name)["origin"] = worker.worker_id
        for name, viewers in worker.room_viewers.items():
            room = _room(rooms, name)
            room["viewers"] += viewers
            room["held_by"][worker.worker_id] = viewers
    for room in rooms.values():
        held_by = room.pop("held_by")
        room["origin_viewers"] = held_by.pop(room["origin"], 0) if room["origin"] else 0
        room["edges"] = dict(sorted(held_by.items()))
    for node in nodes.values():
        serving = [w for w in node["workers"] if w["available"]]
        node["state"] = "serving" if serving else "draining" if any(
            w["state"] == "draining" for w in node["workers"]) else "down"
        node["viewers"] = sum(w["viewers"] for w in node["workers"] if w["state"] != "stale")
    return {
        "clustered": True,
        "nodes": sorted(nodes.values(), key=lambda n: n["id"]),
        "rooms": [rooms[name] for name in sorted(rooms, key=lambda n: (-rooms[n]["viewers"], n))],
        "workers": sum(len(n["workers"]) for n in nodes.values()),
        "available_workers": sum(1 for n in nodes.values() for w in n["workers"] if w["available"]),
        "viewers": sum(n["viewers"] for n in nodes.values()),
    }


def _room(rooms: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    room = rooms.get(name)
    if room is None:
        room = rooms[name] = {"room": name, "origin": None, "viewers": 0, "held_by": {}}
    return room
