"""The soak's workload, driven through the load suite's agent (``loadtests.agent``, JSON lines on stdio).

The agent already has every client the soak needs: synthetic WHIP hosts whose room sockets run PK
battles in cycles with the paired room (invite, battle, ``pk_end``, a gap, again), lean WHEP viewers
(with a co-stream slot, so they also receive the PK partner), and room-event clients sending chat and
gifts. Here: rooms in pairs, each with its host; a steady audience per room in which one viewer at a
time is replaced every ``churn_every`` seconds (leave, then a new one joins); a few chat clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from loadtests.summary import Summary
from loadtests.webrtc.process import die_with_parent

ROOT = Path(__file__).resolve().parent.parent


class AgentError(RuntimeError):
    """The agent could not be started or stopped answering."""


class AgentProcess:
    """One ``python -m loadtests.agent`` child; commands carry an id that the reply repeats."""

    def __init__(self, base_url: str, log_path: Path, token_argv: Sequence[str] = ()) -> None:
        self.argv = [sys.executable, "-m", "loadtests.agent", "--base-url", base_url, *token_argv]
        self.log_path = log_path
        self.stats = Summary()  # every delta the agent volunteered, merged
        self.lost = 0
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[bool] | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self, timeout: float = 60.0) -> None:
        self._log = self.log_path.open("wb")
        self._ready = asyncio.get_running_loop().create_future()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True, preexec_fn=die_with_parent,
            limit=1 << 22)  # a stats delta of many rooms is one long line
        self._reader = asyncio.ensure_future(self._read())
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError as exc:
            raise AgentError(f"load agent not ready after {timeout:.0f} s (log {self.log_path})") from exc
        if not self._ready.result():
            raise AgentError(f"load agent exited before it was ready (log {self.log_path})")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if "id" in message:
                    waiter = self._replies.pop(int(message["id"]), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                elif message.get("ev") == "stats":
                    self.stats.merge(Summary.from_json(message["delta"]))
                elif message.get("ev") == "lost":
                    self.lost += 1
                elif message.get("ev") == "ready" and self._ready is not None and not self._ready.done():
                    self._ready.set_result(True)
        finally:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(False)
            for waiter in self._replies.values():
                if not waiter.done():
                    waiter.set_result({"ok": False, "error": "agent_gone"})
            self._replies.clear()

    async def call(self, op: str, wait: float, **fields: Any) -> dict[str, Any]:
        """One command and its reply; ``{"ok": False, "error": ...}`` when the agent is gone or silent."""
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            return {"ok": False, "error": "agent_gone"}
        ident = next(self._ids)
        waiter = self._replies[ident] = asyncio.get_running_loop().create_future()
        try:
            process.stdin.write(json.dumps({"id": ident, "op": op, **fields}).encode() + b"\n")
            await process.stdin.drain()
            return await asyncio.wait_for(waiter, wait)
        except (ConnectionError, RuntimeError):
            return {"ok": False, "error": "agent_gone"}
        except TimeoutError:
            return {"ok": False, "error": "agent_timeout"}
        finally:
            self._replies.pop(ident, None)

    async def stop(self, grace: float = 20.0) -> None:
        """``finish`` (every client stopped, the last delta merged), ``quit``, then SIGKILL by pid if it lingers."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            reply = await self.call("finish", grace)
            if reply.get("ok") and isinstance(reply.get("delta"), dict):
                self.stats.merge(Summary.from_json(reply["delta"]))
            if process.stdin is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    process.stdin.write(json.dumps({"op": "quit"}).encode() + b"\n")
                    await process.stdin.drain()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    room_pairs: int = 1  # rooms come in pairs: each pair's hosts battle each other
    viewers_per_room: int = 4
    churn_every: float = 5.0  # seconds between viewer replacements (one room after the other)
    chat_clients_per_room: int = 1
    chat_per_s: float = 0.5  # per chat client
    gifts_per_s: float = 0.2  # per chat client; during a battle they score for a side
    pk_battle_s: float = 30.0
    pk_gap_s: float = 10.0
    join_timeout: float = 15.0
    room_prefix: str = "soak"


@dataclass(slots=True)
class WorkloadCounts:
    joins_ok: int = 0
    joins_failed: dict[str, int] = field(default_factory=dict)
    leaves: int = 0
    churns: int = 0

    def failed(self, error: str) -> None:
        self.joins_failed[error] = self.joins_failed.get(error, 0) + 1


class SetupFailed(RuntimeError):
    """The workload could not be put in place (a host could not publish, a chat socket was refused)."""


class Workload:
    def __init__(self, agent: AgentProcess, options: WorkloadOptions) -> None:
        self.agent = agent
        self.options = options
        self.rooms = [f"{options.room_prefix}-{i}" for i in range(2 * options.room_pairs)]
        self.counts = WorkloadCounts()
        self._audience: dict[str, deque[str]] = {room: deque() for room in self.rooms}
        self._keys = itertools.count(1)

    async def setup(self) -> None:
        """Hosts (with their PK cycles), the initial audience, the chat clients; SetupFailed if any host fails."""
        o = self.options
        for pair in range(o.room_pairs):
            rooms = self.rooms[2 * pair : 2 * pair + 2]
            for side in range(2):
                # Both hosts of a pair offer both rooms: the second one's 409 moves it to the other room,
                # and the agent pairs room 2k with 2k+1 for battles (the even room invites).
                reply = await self.agent.call("host", 60, key=f"host-{pair}-{side}", rooms=rooms,
                                              pk={"battle_s": o.pk_battle_s, "gap_s": o.pk_gap_s})
                if not reply.get("ok"):
                    raise SetupFailed(f"host for {rooms} could not publish: {reply.get('error')}")
        for room in self.rooms:
            for _ in range(o.chat_clients_per_room):
                reply = await self.agent.call("chat", 30, key=f"chat-{room}-{next(self._keys)}", room=room,
                                              chat_per_s=o.chat_per_s, gifts_per_s=o.gifts_per_s)
                if not reply.get("ok"):
                    raise SetupFailed(f"chat client in {room} refused: {reply.get('error')}")
            for _ in range(o.viewers_per_room):
                await self._join(room)
        if not self.counts.joins_ok:
            raise SetupFailed(f"no viewer could join: {self.counts.joins_failed}")

    async def _join(self, room: str) -> None:
        key = f"viewer-{next(self._keys)}"
        reply = await self.agent.call("view", self.options.join_timeout + 15, key=key, room=room,
                                      timeout=self.options.join_timeout, slots=2)
        if reply.get("ok"):
            self.counts.joins_ok += 1
            self._audience[room].append(key)
        elif reply.get("error") != "finishing":
            self.counts.failed(str(reply.get("error")))

    async def churn(self) -> None:
        """Replace one viewer every ``churn_every`` seconds, room after room, until cancelled."""
        for room in itertools.cycle(self.rooms):
            await asyncio.sleep(self.options.churn_every)
            audience = self._audience[room]
            if audience:
                reply = await self.agent.call("leave", 30, key=audience.popleft())
                if reply.get("ok"):
                    self.counts.leaves += 1
            await self._join(room)
            self.counts.churns += 1

    def summary(self) -> dict[str, Any]:
        """What the workload did, from its own counts and the agent's measurements."""
        groups = self.agent.stats.groups.values()
        total = {name: sum(getattr(g, name) for g in groups)
                 for name in ("join_ok", "sessions", "lost", "watch_s", "frames", "freeze_s", "partner_frames",
                              "sockets", "chat_sent", "chat_echoed", "gifts_sent", "pk_invites", "pk_started",
                              "pk_ended")}
        errors: dict[str, int] = {}
        for g in groups:
            for code, n in g.event_errors.items():
                errors[code] = errors.get(code, 0) + n
        watch = total["watch_s"]
        return {
            "rooms": self.rooms,
            "joins_ok": self.counts.joins_ok,
            "joins_failed": dict(self.counts.joins_failed),
            "leaves": self.counts.leaves,
            "churns": self.counts.churns,
            "viewer_sessions": total["sessions"],
            "lost_sessions": total["lost"],
            "watch_s": round(watch, 1),
            "stutter_ratio": round(total["freeze_s"] / watch, 4) if watch else None,
            "partner_frames": total["partner_frames"],
            "chat_sent": total["chat_sent"],
            "chat_echoed": total["chat_echoed"],
            "gifts_sent": total["gifts_sent"],
            "pk_invites": total["pk_invites"],
            "pk_started": total["pk_started"],
            "pk_ended": total["pk_ended"],
            "event_errors": errors,
        }
