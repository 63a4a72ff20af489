"""What tests of several workers need: a real redis-server, and which worker of a gateway answered.

``redis_server`` (session-scoped) is a throwaway ``redis-server`` on a free loopback port with nothing
persisted, stopped by pid at the end; each test that needs a clean slate uses its own database number or
key prefix. Register it in a conftest with ``from tests.cluster import redis_server  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from loadtests.webrtc.process import RedisServer

WORKER_HEADER = "X-Cherry-Worker"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            raise  # .ci/run installs it: missing there is a failure, not a skip
        pytest.skip(str(exc))
    try:
        server.wait_ready(10)
        yield server
    finally:
        server.stop()


def worker_pids(supervisor: int) -> dict[int, int]:
    """The supervisor's workers now, worker index -> pid (from /proc: each has ``--worker-index I``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) != supervisor or b"--worker-index" not in argv:
            continue
        found[int(argv[argv.index(b"--worker-index") + 1])] = int(entry.name)
    return found


async def answering_workers(url: str, expected: set[str], timeout: float = 20.0,
                            headers: dict[str, str] | None = None) -> dict[str, int]:
    """GET ``url`` on a new connection each time (the kernel picks a worker per connection) until every
    worker of ``expected`` has answered; worker id -> last status. A worker still starting is not listening
    yet, and nothing outside it can be awaited: this polls, bounded by ``timeout``, and names who never answered."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, headers=headers or {}) as r:
                    seen[r.headers[WORKER_HEADER]] = r.status
            except aiohttp.ClientConnectionError:
                pass  # a worker that died with connections in its queue resets them
            if expected <= seen.keys():
                return seen
            await asyncio.sleep(0.02)
    raise AssertionError(f"within {timeout} s only {sorted(seen)} answered {url}, not {sorted(expected - seen.keys())}")
