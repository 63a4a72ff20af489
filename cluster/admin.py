"""The admin API from any worker: each request asks every live worker and merges what they hold.

A room of a cluster is spread over workers: its origin holds the host, guests and publications; edges
hold some of its viewers; any worker may hold some of its sockets. Listing, describing, ending and
kicking therefore go to every live worker (serving or draining) over the signed internal API
(``/internal/admin``), this worker answering for itself without a hop. A worker that does not answer
leaves the answer ``partial`` (named in ``unreachable``) rather than failing it: an operator ending a
room during an incident wants the rest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cluster.internal import InternalClient
from cluster.registry import RedisRegistry, RegistryUnavailable
from signaling.admin import ROLE_ORDER, LocalAdmin

log = logging.getLogger("cherry.cluster.admin")

_SUMMED = ("viewers", "online")  # ingest is the origin's: an edge's is its pipe


class ClusterAdmin:
    """``signaling.admin.AdminScope`` over every live worker of the cluster (serving or draining)."""

    def __init__(self, local: LocalAdmin, registry: RedisRegistry, client: InternalClient) -> None:
        self.local = local
        self._registry = registry
        self._client = client

    async def _ask(self, op: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Every live worker's answer to ``op`` by worker id, and the workers that did not answer."""
        try:
            workers = await self._registry.fresh()  # a draining worker still holds rooms to end or kick from
        except RegistryUnavailable:
            workers = []  # Redis away: this worker still answers for what it holds
        me = self._registry.worker_id
        others = [w for w in workers if w.worker_id != me]
        results = await asyncio.gather(*(self._client.call(w.url, "/internal/admin", op) for w in others),
                                       return_exceptions=True)
        answers: dict[str, Any] = {me: await self.local.apply(op)}
        unreachable = []
        for worker, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("admin %s: worker %s did not answer: %s", op.get("op"), worker.worker_id, result)
                unreachable.append(worker.worker_id)
            else:
                answers[worker.worker_id] = result[1]
        if not workers:
            unreachable.append("registry")
        return answers, sorted(unreachable)

    async def rooms(self) -> dict[str, Any]:
        answers, unreachable = await self._ask({"op": "rooms"})
        merged: dict[str, dict[str, Any]] = {}
        for worker, answer in sorted(answers.items()):
            for entry in answer.get("rooms", []) if isinstance(answer, dict) else []:
                merged.setdefault(str(entry.get("room")), {})[worker] = entry
        rooms = [_merge_summaries(per_worker) for _, per_worker in sorted(merged.items())]
        return _partial({"rooms": rooms}, unreachable)

    async def room(self, name: str) -> dict[str, Any] | None:
        answers, unreachable = await self._ask({"op": "room", "room": name})
        per_worker = {w: a for w, a in answers.items() if isinstance(a, dict) and a.get("room") == name}
        if not per_worker:
            return None
        detail = _merge_summaries(per_worker)
        participants = []
        for worker, answer in sorted(per_worker.items()):
            for participant in answer.get("participants", []):
                participants.append({**participant, "worker": worker})
        detail["participants"] = sorted(participants, key=lambda p: (p["role"] != "host", p["identity"], p["worker"]))
        origin = detail.get("origin")
        detail["publications"] = per_worker[origin].get("publications", {}) if origin in per_worker else {}
        return _partial(detail, unreachable)

    async def participants(self, name: str) -> list[dict[str, Any]] | None:
        """Everyone in the room on any worker, once each: an identity with a socket on one worker and a session
        on another (or sessions on two) is one participant, its sockets and sessions summed."""
        answers, _ = await self._ask({"op": "participants", "room": name})
        merged: dict[str, dict[str, Any]] = {}
        found = False
        for _, answer in sorted(answers.items()):
            listed = answer.get("participants") if isinstance(answer, dict) else None
            if not isinstance(listed, list):
                continue
            found = True
            for p in listed:
                seen = merged.get(p["identity"])
                if seen is None:
                    merged[p["identity"]] = dict(p)
                    continue
                seen["sockets"] += p["sockets"]
                seen["sessions"] += p["sessions"]
                seen["on_mic"] = seen["on_mic"] or p["on_mic"]
                if ROLE_ORDER.get(p["role"], 2) < ROLE_ORDER.get(seen["role"], 2):
                    seen["role"] = p["role"]
        return list(merged.values()) if found else None

    async def end(self, name: str) -> dict[str, Any] | None:
        answers, unreachable = await self._ask({"op": "end", "room": name})
        ended = {w: a for w, a in answers.items() if isinstance(a, dict) and a.get("ended") == name}
        if not ended:
            return None
        return _partial({"ended": name, "sockets_closed": sum(int(a.get("sockets_closed", 0)) for a in ended.values()),
                         "workers": sorted(ended)}, unreachable)

    async def kick(self, name: str, identity: str) -> dict[str, Any] | None:
        answers, unreachable = await self._ask({"op": "kick", "room": name, "identity": identity})
        sessions = sum(int(a.get("sessions", 0)) for a in answers.values() if isinstance(a, dict))
        sockets = sum(int(a.get("sockets", 0)) for a in answers.values() if isinstance(a, dict))
        if sessions + sockets == 0:
            return None
        return _partial({"kicked": identity, "sessions": sessions, "sockets": sockets}, unreachable)


def _merge_summaries(per_worker: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One room from each worker's summary: the origin's view of the stage, the audience summed."""
    origin = next((w for w, s in sorted(per_worker.items()) if s.get("held_here")), None)
    base = dict(per_worker[origin] if origin is not None else next(iter(sorted(per_worker.items())))[1])
    for key in _SUMMED:
        base[key] = sum(int(s.get(key) or 0) for s in per_worker.values())
    base.pop("held_here", None)
    base["origin"] = origin
    base["workers"] = {w: int(s.get("viewers") or 0) for w, s in sorted(per_worker.items())}
    return base


def _partial(answer: dict[str, Any], unreachable: list[str]) -> dict[str, Any]:
    if unreachable:
        answer["partial"] = True
        answer["unreachable"] = unreachable
    return answer
