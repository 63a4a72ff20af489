"""HTTPS on the public port and SIGHUP reloads, on real gateway processes (127.0.0.1 only).

A test CA (tests/certs.py) signs the gateway's certificates; clients trust that CA only. The gateway runs
outside dev mode with ``auth.secret_file``, so the secrets are the ones a deployment would rotate.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from http.client import HTTPResponse
from pathlib import Path

import aiohttp
import pytest

from loadtests.webrtc import process
from loadtests.webrtc.process import LOOPBACK, RedisServer
from signaling.auth import TokenService
from tests.certs import TestCa
from tests.cluster import WORKER_HEADER
from tests.integration.conftest import ROOT
from tests.integration.peers import Host, Viewer
from tests.integration.test_workers import cluster_config

ISSUER = "cherry-gateway"
FIRST = "first-secret-first-secret-first-secret-0123"
SECOND = "second-secret-second-secret-second-secret-45"
THIRD = "third-secret-third-secret-third-secret-6789"
UNUSED = "unused-secret-unused-secret-unused-secret-00"


def token(secret: str, room: str, role: str, identity: str | None = None) -> str:
    return TokenService(secret, ISSUER, 600).mint(room, role, identity)


class TlsGateway(process.GatewayProcess):
    """``cherry-gateway serve`` (not dev) with HTTPS and a secret file, in ``tmp``."""

    def __init__(self, tmp: Path, extra_config: str = "", extra_args: tuple[str, ...] = ()) -> None:
        self.ca = TestCa.create(tmp / "ca")
        self.cert, self.key = tmp / "server.pem", tmp / "server.key"
        self.served = self.ca.issue(self.cert, self.key, "cherry-one")
        self.secret_file, self.previous_file = tmp / "secret", tmp / "previous"
        self.secret_file.write_text(FIRST + "\n")
        self.previous_file.write_text(UNUSED)  # read only by a config that lists it in previous_secrets
        config = tmp / "gateway.toml"
        config.write_text(f'[server]\ntls_cert = "{self.cert}"\ntls_key = "{self.key}"\n'
                          f'[auth]\nsecret_file = "{self.secret_file}"\n{extra_config}')
        super().__init__(tmp / "gateway.log", dev=False, config=config, extra_args=extra_args, cwd=ROOT)
        self.base_url = f"https://{LOOPBACK}:{self.port}"
        self.wait_healthy(20)

    def wait_healthy(self, timeout: float) -> None:
        context = self.ca.client_context()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1, context=context) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)  # a port that is not open yet: nothing to await
        raise AssertionError(f"gateway not healthy over https after {timeout} s:\n{self.log_tail()}")

    def new_certificate(self, common_name: str) -> bytes:
        """Replace the certificate and key files (as a renewal does); the DER a client should see next."""
        return self.ca.issue(self.cert, self.key, common_name)

    def served_certificate(self) -> bytes:
        """The certificate a new connection gets now (verified against the test CA)."""
        pem = ssl.get_server_certificate((LOOPBACK, self.port), ca_certs=str(self.ca.cert_path), timeout=5)
        return ssl.PEM_cert_to_DER_cert(pem)

    def get_on_new_connection(self, path: str, secret: str) -> tuple[int, str, bytes]:
        """GET ``path`` with an admin token of ``secret`` on a new TLS connection, by hand so the answer and the
        certificate are known to come from one connection: (status, answering worker, certificate DER)."""
        context = self.ca.client_context()
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
            cert = tls.getpeercert(binary_form=True) or b""
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n"
                        f"Authorization: Bearer {token(secret, '*', 'admin')}\r\n\r\n".encode())
            response = HTTPResponse(tls)
            response.begin()
            return response.status, response.getheader(WORKER_HEADER, ""), cert

    def hangup(self) -> None:
        os.kill(self.process.pid, signal.SIGHUP)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str | Callable[[], str]) -> None:
    """A reload happens inside the gateway when it handles the signal: nothing outside can await it, so poll.
    ``what``: the failure message (a callable: made when it fails, from what the checks saw)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what() if callable(what) else what} within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[TlsGateway]:
    proc = await asyncio.to_thread(TlsGateway, tmp_path)
    yield proc
    proc.stop()


def https(gw: TlsGateway, fresh: bool = False) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gw.ca.client_context(), force_close=fresh))


async def admin_status(http: aiohttp.ClientSession, gw: TlsGateway, secret: str) -> int:
    async with http.get(f"{gw.base_url}/api/drain",
                        headers={"Authorization": f"Bearer {token(secret, '*', 'admin')}"}) as response:
        return response.status


async def test_pages_whip_and_whep_work_over_https(gateway: TlsGateway) -> None:
    async with https(gateway) as http:
        async with http.get(f"{gateway.base_url}/watch?room=tls") as page:
            assert page.status == 200 and "text/html" in page.headers["Content-Type"]
        host = Host(gateway.base_url, "tls", token(FIRST, "tls", "host"))
        viewer = Viewer(gateway.base_url, "tls", token(FIRST, "tls", "viewer"))
        try:
            await host.publish(http)
            await viewer.watch(http)
            assert host.location is not None and host.location.startswith("/whip/"), \
                "a relative Location works on any scheme"
            await viewer.wait_frames(20, timeout=20)
        finally:
            await viewer.stop(http)
            await host.stop(http)
    assert gateway.served_certificate() == gateway.served


async def test_sighup_serves_the_new_certificate_and_secret_while_a_session_keeps_flowing(gateway: TlsGateway) -> None:
    async with https(gateway) as http:
        host = Host(gateway.base_url, "rotate", token(FIRST, "rotate", "host", "the-host"))
        viewer = Viewer(gateway.base_url, "rotate", token(FIRST, "rotate", "viewer", "the-viewer"))
        try:
            await host.publish(http)
            await viewer.watch(http)
            await viewer.wait_frames(20, timeout=20)
            assert await admin_status(http, gateway, FIRST) == 200
            assert await admin_status(http, gateway, SECOND) == 401

            renewed = gateway.new_certificate("cherry-two")
            gateway.secret_file.write_text(SECOND)  # the first is not kept in previous_secrets
            assert renewed != gateway.served
            gateway.hangup()

            async def new_cert() -> bool:
                return await asyncio.to_thread(gateway.served_certificate) == renewed

            await until(new_cert, 10, "a new connection gets the new certificate")
            async with https(gateway, fresh=True) as fresh:
                assert await admin_status(fresh, gateway, SECOND) == 200, "a token of the new secret is accepted"
                assert await admin_status(fresh, gateway, FIRST) == 401, "the old secret is no longer accepted"
            await viewer.wait_frames(30, timeout=10)  # the session opened before the reload still flows
            assert host.pc.connectionState == "connected" and viewer.pc.connectionState == "connected"
            assert "reloaded: TLS certificate replaced (CN=cherry-two" in gateway.log_tail(20000)
            assert SECOND not in gateway.log_tail(20000), "the log never shows a secret"
            # Ending a session needs a token the gateway accepts now: the same participant's, of the new secret.
            host.token = token(SECOND, "rotate", "host", "the-host")
            viewer.token = token(SECOND, "rotate", "viewer", "the-viewer")
        finally:
            await viewer.stop(http)
            await host.stop(http)


async def test_previous_secrets_stay_accepted_after_a_reload(tmp_path: Path) -> None:
    gw = await asyncio.to_thread(TlsGateway, tmp_path, f'previous_secrets = ["file:{tmp_path / "previous"}"]\n')
    try:
        gw.previous_file.write_text(FIRST)
        gw.secret_file.write_text(SECOND)
        gw.hangup()
        async with https(gw, fresh=True) as http:
            async def rotated() -> bool:
                return await admin_status(http, gw, SECOND) == 200

            await until(rotated, 10, "the new secret is accepted")
            assert await admin_status(http, gw, FIRST) == 200, "the old secret, now in previous_secrets, still is"
            assert await admin_status(http, gw, THIRD) == 401
    finally:
        gw.stop()


async def test_a_bad_new_certificate_is_refused_and_the_old_one_kept(gateway: TlsGateway) -> None:
    before = gateway.log_tail(20000).count("reload refused")
    # The key file stays; the certificate file becomes one whose key it is not (a botched renewal).
    other = TestCa.create(gateway.cert.parent / "other-ca")
    other.issue(gateway.cert, gateway.cert.parent / "unrelated.key", "not-matching")
    gateway.secret_file.write_text(SECOND)
    gateway.hangup()

    async def refused() -> bool:
        return gateway.log_tail(20000).count("reload refused") > before

    await until(refused, 10, "the gateway logs that it refused the reload")
    assert "server.tls_cert/server.tls_key" in gateway.log_tail(20000), "the error names the keys"
    assert gateway.served_certificate() == gateway.served, "new connections still get the old certificate"
    async with https(gateway, fresh=True) as http:
        assert await admin_status(http, gateway, FIRST) == 200, "and nothing else changed either"
        assert await admin_status(http, gateway, SECOND) == 401
    assert gateway.process.poll() is None


async def test_the_supervisor_forwards_sighup_to_every_worker(redis_server: RedisServer, tmp_path: Path) -> None:
    gw = await asyncio.to_thread(TlsGateway, tmp_path, cluster_config(), ("--workers", "2",
                                                                            "--redis-url", redis_server.url))
    try:
        renewed = gw.new_certificate("cherry-workers")
        gw.secret_file.write_text(SECOND)
        gw.hangup()  # the supervisor: the workers get it from there
        seen: dict[str, bool] = {}

        async def both_reloaded() -> bool:
            # A new connection each time: the kernel picks the worker; each must show both changes.
            status, worker, cert = await asyncio.to_thread(gw.get_on_new_connection, "/api/drain", SECOND)
            seen[worker] = status == 200 and cert == renewed
            return len(seen) == 2 and all(seen.values())

        await until(both_reloaded, 20, lambda: f"both workers serve the new certificate and secret (seen: {seen}):\n"
                                               f"{gw.log_tail()}")
    finally:
        gw.stop()
