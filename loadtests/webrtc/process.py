"""Child processes our tools start: a gateway on 127.0.0.1, free ports, /healthz, stopping by pid.

One home for what ``loadtests.run``, the benchmark and the integration, browser and load tests
all need. Every child gets PR_SET_PDEATHSIG (it dies with its parent, even a SIGKILLed one) and
its own session (a terminal's Ctrl-C reaches only the parent, which then stops it in order);
stopping is SIGTERM, SIGKILL after a grace period, then SIGKILL for leftover descendants, always
by pid. Also a throwaway redis-server for multi-worker runs. Standard library only (the gevent side of the
load suite imports it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

LOOPBACK = "127.0.0.1"  # the only address that may carry test, benchmark and load traffic here
_PR_SET_PDEATHSIG = 1


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (a race with other programs is possible, not likely)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_range(count: int, host: str = LOOPBACK, low: int = 20000, high: int = 32000,
                    kind: socket.SocketKind = socket.SOCK_DGRAM) -> tuple[int, int]:
    """``count`` consecutive ports (UDP, or TCP with ``kind=SOCK_STREAM``) nobody holds right now, below
    Linux's ephemeral range (32768-60999) so that no program's ephemeral socket lands in it meanwhile:
    (first, last)."""
    rng = random.Random()
    for _ in range(100):
        first = rng.randrange(low, high - count)
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, kind)
                socks.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return first, first + count - 1
    raise RuntimeError(f"no {count} consecutive free {kind.name} ports in {low}-{high}")


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: this process gets SIGKILL when its parent exits (Linux; run between fork and exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces or parentheses: split after the last ')'.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, SIGKILL after ``grace`` s; then SIGKILL its leftover descendants, by pid."""
    leftovers = descendants(process.pid)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def healthy(base_url: str, netns: str | None = None) -> bool:
    """``GET /healthz`` answers 200 (from inside ``netns`` when given: only there is its loopback)."""
    url = f"{base_url.rstrip('/')}/healthz"
    if netns is not None:
        probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=1)"
        return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe],
                              capture_output=True, check=False).returncode == 0
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class ProcessExited(RuntimeError):
    """A child exited while we waited for it."""


def _no_log() -> str:
    return ""


def _exited_message(what: str, code: int | None, log_tail: Callable[[], str]) -> str:
    tail = log_tail().strip()
    return f"{what} exited with {code}" + (f":\n{tail}" if tail else "")


def wait_healthy(base_url: str, timeout: float, returncode: Callable[[], int | None], *, what: str = "gateway",
                 netns: str | None = None, log_tail: Callable[[], str] = _no_log) -> None:
    """Poll /healthz until it answers (the server offers nothing to await); raise if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (code := returncode()) is not None:
            raise ProcessExited(_exited_message(what, code, log_tail))
        if healthy(base_url, netns):
            return
        time.sleep(0.1)  # polling a port that is not open yet: there is nothing to await
    tail = log_tail().strip()
    raise TimeoutError(f"{what} not healthy after {timeout:.0f} s" + (f":\n{tail}" if tail else ""))


async def wait_healthy_async(base_url: str, timeout: float, returncode: Callable[[], int | None], *,
                             what: str = "gateway", log_tail: Callable[[], str] = _no_log) -> None:
    """:func:`wait_healthy` for a caller with a running event loop (the probe runs in a thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (code := returncode()) is not None:
            raise ProcessExited(_exited_message(what, code, log_tail))
        if await asyncio.to_thread(healthy, base_url):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} not healthy after {timeout:.0f} s")


class GatewayProcess:
    """``python -m MODULE serve`` on 127.0.0.1 (ICE pinned there too), optionally inside a network namespace.

    ``ice_hosts``: its ``--ice-host`` flags (none: the gateway's own choice, only in a loopback-only namespace);
    ``dev``: ``--dev`` (per-run secret, ``/dev/token``); ``config``: ``--config PATH``; ``env``:
    extra environment (e.g. the variable ``auth.secret_env`` names). Output goes to ``log_path``.
    Construct, then :meth:`wait_healthy`; :meth:`stop` when done.
    """

    def __init__(self, log_path: Path, *, module: str = "gateway", dev: bool = True, config: Path | None = None,
                 extra_args: Sequence[str] = (), port: int | None = None, netns: str | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 ice_hosts: Sequence[str] = (LOOPBACK,)) -> None:
        self.port = port or free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.netns = netns
        self.log_path = log_path
        prefix = ["ip", "netns", "exec", netns] if netns else []
        argv = [*prefix, sys.executable, "-m", module, "serve", "--host", LOOPBACK, "--port", str(self.port),
                *(a for host in ice_hosts for a in ("--ice-host", host)), *(["--dev"] if dev else []),
                *(["--config", str(config)] if config else []), *extra_args]
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=die_with_parent,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_healthy(self, timeout: float) -> None:
        wait_healthy(self.base_url, timeout, self.process.poll, netns=self.netns, log_tail=self.log_tail)

    def stop(self, grace: float = 10.0) -> None:
        """Idempotent: SIGTERM (the gateway drains), SIGKILL after ``grace``."""
        stop_process(self.process, grace)
        if not self._log.closed:
            self._log.close()


def redis_ready(port: int, host: str = LOOPBACK) -> bool:
    """A redis-server on ``port`` answers PING (it refuses commands while it loads, so connecting is not enough)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1 for a cluster of workers: ``port`` (default: a free one),
    data and log in ``workdir``, nothing persisted. Construct, :meth:`wait_ready`, :meth:`stop` (by pid).

    FileNotFoundError if Debian's ``redis-server`` (package redis-server) is not installed.
    """

    def __init__(self, workdir: Path, port: int | None = None, executable: str = "redis-server") -> None:
        path = shutil.which(executable)
        if path is None:
            raise FileNotFoundError(f"{executable} not found (Debian package redis-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.log_path = workdir / "redis.log"
        argv = [path, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                "--dir", str(workdir), "--logfile", str(self.log_path), "--daemonize", "no"]
        self._argv = argv
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)

    def respawn(self) -> None:
        """Start again after :meth:`stop`, on the same port and empty (nothing is persisted), without waiting.

        The server gets SIGKILL when the *thread* that started it exits (PR_SET_PDEATHSIG follows threads): start
        it from a thread that outlives it, such as an event loop's, never from an executor's (``to_thread``),
        whose threads end with their loop. :meth:`wait_ready` may then wait in any thread."""
        self.process = self._spawn()

    def start(self, timeout: float = 10.0) -> None:
        """:meth:`respawn` and wait until it answers (mind the thread: see :meth:`respawn`)."""
        self.respawn()
        self.wait_ready(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """A Redis restart in production: stopped, started again on the same port, empty."""
        self.stop()
        self.start(timeout)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self.process.poll()) is not None:
                raise ProcessExited(_exited_message("redis-server", code, self.log_tail))
            if redis_ready(self.port):
                return
            time.sleep(0.05)  # polling a port that is not open yet: there is nothing to await
        raise TimeoutError(f"redis-server not ready on port {self.port} after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 5.0) -> None:
        """Idempotent: SIGTERM, SIGKILL after ``grace``."""
        stop_process(self.process, grace)
