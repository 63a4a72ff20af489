"""Child processes of the benchmark: started, talked to in JSON lines, killed by pid.

Every child gets PR_SET_PDEATHSIG so that even a SIGKILLed benchmark leaves
nothing behind; a normal exit, an error or Ctrl-C goes through :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from bench import procstat
from loadtests.webrtc.process import die_with_parent


class ChildExited(RuntimeError):
    pass


class Child:
    """One subprocess; stdout lines that parse as JSON objects are queued as messages."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._log: IO[bytes] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._start_ticks: int | None = None
        self._stopped = False

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            # Own session: a terminal Ctrl-C reaches only the benchmark, which then stops us in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._start_ticks = procstat.start_ticks(self.process.pid)
        self._reader = asyncio.ensure_future(self._read_stdout())

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message: Any = None
            with contextlib.suppress(ValueError):
                message = json.loads(line)
            if isinstance(message, dict):
                self.messages.put_nowait(message)
            elif self._log is not None:
                self._log.write(b"[stdout] " + line)

    async def next_message(self, accept: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The next queued message that ``accept`` takes (others are dropped); raises if the child dies."""

        async def wait() -> dict[str, Any]:
            while True:
                getter = asyncio.ensure_future(self.messages.get())
                assert self.process is not None
                exited = asyncio.ensure_future(self.process.wait())
                done, _ = await asyncio.wait({getter, exited}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    raise ChildExited(f"{self.name} exited with {self.process.returncode}, see {self.log_path}")
                exited.cancel()
                message = getter.result()
                if accept(message):
                    return message

        return await asyncio.wait_for(wait(), timeout)

    async def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one JSON-line command and wait for the reply with the same ``op``."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        op = command["op"]
        return await self.next_message(lambda m: m.get("op") in (op, "error"), timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; leftover descendants are killed by pid. Idempotent: a
        second call does nothing (the pid may belong to another process by then)."""
        process = self.process
        if process is None or self._stopped:
            return
        leftovers = [(pid, procstat.start_ticks(pid)) for pid in procstat.descendants(process.pid)]
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        for pid, ticks in leftovers:
            if ticks is not None and procstat.start_ticks(pid) == ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.cancel()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._stopped = True

    def kill_now(self) -> None:
        """Last-resort synchronous SIGKILL (from a finally block without a running loop)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
