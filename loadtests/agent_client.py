"""The gevent side of the load agent: starts it, talks JSON lines to it, fires Locust events.

Imported by the locustfile only; nothing here imports aiortc or asyncio machinery. The agent
is started lazily by the first user of a process (so after ``--processes`` forks, and never
in a master, which runs no users), one per Locust process.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import gevent
from gevent.event import AsyncResult, Event
from locust.env import Environment

from loadtests.summary import HealthStats, Summary
from loadtests.timeline import PROCESS
from loadtests.webrtc.process import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
REQUEST_TYPE = "WEBRTC"


class WebRTCFailure(Exception):
    """A failed measurement; its message is a constant kind, so Locust aggregates failures."""


class AgentGone(RuntimeError):
    pass


def fire(environment: Environment, name: str, ms: float, error: str | None = None, length: int = 0) -> None:
    environment.events.request.fire(
        request_type=REQUEST_TYPE,
        name=name,
        response_time=ms,
        response_length=length,
        exception=WebRTCFailure(error) if error else None,
        context={},
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class AgentClient:
    """One agent child process and the measurements it reported that are not yet shipped."""

    def __init__(self, environment: Environment, base_url: str, network_config: str,
                 token_argv: list[str] | None = None) -> None:
        self.environment = environment
        self.base_url = base_url
        self.network_config = network_config
        self.token_argv = token_argv or []  # the agent's token source (loadtests.webrtc.token_options)
        self.pending = Summary()  # deltas not yet merged into the run's summary / sent to the master
        self.lost: dict[str, Event] = {}
        self.finished = False
        self._ids = itertools.count(1)
        self._replies: dict[int, AsyncResult] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = AsyncResult()
        self._greenlets: list[gevent.Greenlet] = []
        self.proc_id = f"locust@{socket.gethostname()}:{os.getpid()}"
        self.health = HealthStats()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 60.0) -> None:
        argv = [sys.executable, "-m", "loadtests.agent", "--base-url", self.base_url,
                "--network-config", self.network_config, *self.token_argv]
        self._process = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._greenlets = [gevent.spawn(self._read), gevent.spawn(self._watch_health)]
        ready = self._ready.get(timeout=timeout)
        if not ready:
            raise AgentGone("load agent did not start")

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout: IO[bytes] = self._process.stdout
        for line in stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "id" in message:
                waiter = self._replies.pop(int(message["id"]), None)
                if waiter is not None:
                    waiter.set(message)
                continue
            event = message.get("ev")
            if event == "stats":
                self.pending.merge(Summary.from_json(message["delta"]))
            elif event == "reqs":
                for name, ms, error, length in message["items"]:
                    fire(self.environment, name, ms, error, length)
            elif event == "lost":
                flag = self.lost.get(str(message["key"]))
                if flag is not None:
                    flag.set()
            elif event == "ready":
                self._ready.set(True)
        code = self._process.wait()
        if not self.finished:
            self.pending.notes.append(f"load agent pid {self._process.pid} exited with code {code} during the run")
        self._ready.set(False)
        for waiter in self._replies.values():
            waiter.set({"ok": False, "error": "agent_gone"})
        self._replies.clear()

    def _watch_health(self) -> None:
        """CPU and gevent-loop lag of this Locust process itself."""
        cpu, wall = _cpu_seconds(), time.monotonic()
        while True:
            for _ in range(40):
                before = time.monotonic()
                gevent.sleep(0.05)
                self.health.loop_lag_ms.add(max(0.0, (time.monotonic() - before - 0.05) * 1000))
            now_cpu, now_wall = _cpu_seconds(), time.monotonic()
            self.health.add_interval(now_cpu - cpu, now_wall - wall)
            point = self.pending.interval(time.time(), PROCESS, self.proc_id)
            point.cpu_s += now_cpu - cpu
            point.wall_s += now_wall - wall
            cpu, wall = now_cpu, now_wall
            self.pending.health.setdefault(self.proc_id, HealthStats()).merge(self.health)
            self.health = HealthStats()

    def _write(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.poll() is not None:
            raise AgentGone("load agent not running")
        process.stdin.write(json.dumps(message).encode() + b"\n")
        process.stdin.flush()

    def call(self, op: str, wait: float, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its reply (``{"ok": False, "error": ...}`` on trouble)."""
        ident = next(self._ids)
        waiter = AsyncResult()
        self._replies[ident] = waiter
        try:
            self._write({"id": ident, "op": op, **fields})
            reply: dict[str, Any] = waiter.get(timeout=wait)
            return reply
        except AgentGone:
            return {"ok": False, "error": "agent_gone"}
        except gevent.Timeout:
            return {"ok": False, "error": "agent_timeout"}
        finally:
            self._replies.pop(ident, None)

    def send(self, op: str, **fields: Any) -> None:
        """Send a command without waiting for the reply."""
        try:
            self._write({"id": next(self._ids), "op": op, **fields})
        except (AgentGone, OSError):
            pass

    def take_pending(self) -> Summary:
        pending, self.pending = self.pending, Summary()
        return pending

    def stop(self) -> None:
        """Quit the agent (it stops its clients) and reap it; SIGKILL by pid after a grace period."""
        process = self._process
        if process is None:
            return
        self.finished = True
        if process.poll() is None:
            self.send("quit")
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
