"""A real gateway process on 127.0.0.1 (ICE pinned there too) shared by a test module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

import aiortc_bridge
from aiortc_bridge.ice import pin_ice_hosts

ROOT = Path(__file__).resolve().parents[2]

# Test peers in this process offer 127.0.0.1 only: no other address may carry test traffic. They use the
# gateway's compatibility layer too: plain pylibsrtp refuses the full-size packets some tests send.
aiortc_bridge.install()
pin_ice_hosts(["127.0.0.1"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """A gateway subprocess on 127.0.0.1 (ICE pinned there), optionally inside a network namespace.

    By default it runs the instrumented gateway (codec creation counted) on a free port.
    """

    def __init__(self, extra_args: list[str], config_text: str | None, tmp: Path, *,
                 netns: str | None = None, port: int | None = None,
                 module: str = "tests.integration.instrumented_gateway") -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        args = [*self._prefix, sys.executable, "-m", module, "serve",
                "--host", "127.0.0.1", "--port", str(self.port), "--ice-host", "127.0.0.1", "--dev",
                *extra_args]
        if config_text is not None:
            path = tmp / "gateway.toml"
            path.write_text(config_text)
            args += ["--config", str(path)]
        self.log_path = tmp / "gateway.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._wait_ready(timeout=20)

    def _healthy(self) -> bool:
        if self._prefix:  # only a process inside the namespace can reach its loopback
            probe = f"import urllib.request; urllib.request.urlopen('{self.base}/healthz', timeout=1)"
            return subprocess.run([*self._prefix, sys.executable, "-c", probe], capture_output=True).returncode == 0
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            if self._healthy():
                return
            time.sleep(0.1)  # polling a port that is not open yet: nothing to await
        raise RuntimeError(f"gateway not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


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
                    identity: str | None = None) -> str:
    url = f"{base}/dev/token?room={room}&role={role}" + (f"&identity={identity}" if identity else "")
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["token"])
