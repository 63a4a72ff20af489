"""A real gateway process on 127.0.0.1 (ICE pinned there too) shared by a test module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from loadtests.webrtc import process
from loadtests.webrtc.peer import configure_ice
from loadtests.webrtc.process import free_port
from loadtests.webrtc.signaling_client import fetch_dev_token
from tests.cluster import redis_server  # noqa: F401  (a fixture: importing it registers it for these tests)

ROOT = Path(__file__).resolve().parents[2]

# Test peers in this process offer 127.0.0.1 only: no other address may carry test traffic. They use the
# gateway's compatibility layer too: plain pylibsrtp refuses the full-size packets some tests send.
configure_ice(["127.0.0.1"])

__all__ = ["GatewayProcess", "NodesOnRedis", "dev_token", "free_port"]


class GatewayProcess(process.GatewayProcess):
    """A dev gateway subprocess on 127.0.0.1 (ICE pinned there), optionally inside a network namespace,
    healthy when constructed.

    By default it runs the instrumented gateway (codec creation counted) on a free port;
    ``config_text`` becomes its ``--config`` file.
    """

    def __init__(self, extra_args: list[str], config_text: str | None, tmp: Path, *,
                 netns: str | None = None, port: int | None = None,
                 module: str = "tests.integration.instrumented_gateway") -> None:
        config = None
        if config_text is not None:
            config = tmp / "gateway.toml"
            config.write_text(config_text)
        super().__init__(tmp / "gateway.log", module=module, config=config, extra_args=extra_args, port=port,
                         netns=netns, cwd=ROOT)
        self.base = self.base_url
        self.proc = self.process
        self.wait_healthy(timeout=20)

    def log(self) -> str:
        return self.log_tail()


class NodesOnRedis:
    """A throwaway ``redis-server`` (free loopback port, nothing persisted) and the gateway nodes a test adds
    to ``nodes``; :meth:`stop` ends the nodes, then Redis, each by pid (stopping twice is harmless)."""

    def __init__(self, tmp: Path) -> None:
        self.redis = process.RedisServer(tmp / "redis")
        self.redis.wait_ready()
        self.nodes: dict[str, GatewayProcess] = {}
        self.internal: dict[str, int] = {}  # a one-worker node's internal port (its own /metrics), by node

    @classmethod
    def single_workers(cls, tmp: Path, config: Callable[[str, str, int], str],
                       names: tuple[str, ...] = ("a", "b")) -> NodesOnRedis:
        """Nodes of one worker each on a new Redis, ``config(redis_url, node, internal_port)`` their config text;
        everything started is stopped again if one fails."""
        nodes = cls(tmp)
        try:
            for name in names:
                (tmp / name).mkdir(exist_ok=True)
                nodes.internal[name] = free_port()
                nodes.nodes[name] = GatewayProcess([], config(nodes.redis.url, name, nodes.internal[name]), tmp / name)
        except BaseException:
            nodes.stop()
            raise
        return nodes

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], None, tmp_path_factory.mktemp("gw"))
    yield proc
    proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def dev_token(http: aiohttp.ClientSession, base: str, room: str, role: str,
                    identity: str | None = None, ttl: int | None = None) -> str:
    """A token from the dev gateway under test (the clients' one /dev/token helper)."""
    return await fetch_dev_token(http, base, room, role, identity, ttl)
