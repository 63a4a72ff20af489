"""deploy/nginx/cherry-gateway.conf with a real nginx (its own temp prefix, loopback ports, stopped by pid) in
front of a real gateway: WHIP and WHEP through it, a room socket upgraded through it, operations kept private."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from loadtests.webrtc.process import LOOPBACK, die_with_parent, free_port
from tests.certs import TestCa
from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host, Viewer
from tests.nginx_conf import nginx_argv, render_example, write_wrapper


class Nginx:
    """nginx in the foreground under ``tmp``, serving the example for ``upstream_port`` on https://127.0.0.1."""

    def __init__(self, tmp: Path, upstream_port: int) -> None:
        executable = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if executable is None:
            if os.environ.get("CI"):
                pytest.fail("nginx is not installed: .ci/run installs it (Debian package nginx)")
            pytest.skip("nginx is not installed (Debian package nginx)")
        self.ca = TestCa.create(tmp / "ca")
        self.ca.issue(tmp / "cert.pem", tmp / "key.pem", "localhost")
        self.port = free_port()
        site = render_example(tmp / "cert.pem", tmp / "key.pem", self.port, free_port(), upstream_port)
        self.conf = write_wrapper(tmp / "nginx", site)
        self.base = f"https://{LOOPBACK}:{self.port}"
        self.process = subprocess.Popen(nginx_argv(executable, self.conf, "-g", "daemon off;"),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                        preexec_fn=die_with_parent)
        self._wait_listening(10)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"nginx exited with {self.process.returncode}: {stderr}")
            try:
                ssl.get_server_certificate((LOOPBACK, self.port), ca_certs=str(self.ca.cert_path), timeout=1)
                return
            except OSError:
                time.sleep(0.05)  # its port is not open yet: nothing to await
        raise AssertionError(f"nginx not listening on {self.port} after {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown, workers included
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def access_log(self) -> str:
        return (self.conf.parent / "access.log").read_text()


@pytest.fixture(scope="module")
def proxied(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), gateway.port)
    yield nginx
    nginx.stop()


def client(nginx: Nginx) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=nginx.ca.client_context()))


async def test_whip_and_whep_go_through_nginx_with_their_headers(proxied: Nginx) -> None:
    async with client(proxied) as http:
        async with http.options(f"{proxied.base}/whip/proxied", headers={
                "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}) as preflight:
            assert preflight.status in (200, 204), "CORS preflight passes through"
            assert "POST" in preflight.headers.get("Access-Control-Allow-Methods", "")
        host = Host(proxied.base, "proxied", await dev_token(http, proxied.base, "proxied", "host"))
        viewer = Viewer(proxied.base, "proxied", await dev_token(http, proxied.base, "proxied", "viewer"))
        try:
            await host.publish(http)  # asserts 201 and reads Location
            await viewer.watch(http)
            await viewer.wait_frames(20, timeout=20)  # media is UDP straight to the gateway; signaling went via nginx
        finally:
            await viewer.stop(http)  # DELETE through nginx, asserted 200
            await host.stop(http)
    log = proxied.access_log()
    assert '"POST /whip/proxied HTTP/1.1" 201' in log and '"POST /whep/proxied HTTP/1.1" 201' in log
    assert '"DELETE /whip/proxied/' in log, "the DELETE went to the Location, through nginx"


async def test_a_room_socket_upgrades_through_nginx_and_carries_frames_both_ways(proxied: Nginx) -> None:
    async with client(proxied) as http:
        token = await dev_token(http, proxied.base, "sockets", "viewer", identity="ann")
        events = await EventsClient.connect(http, proxied.base, "sockets", token)  # waits for "welcome"
        try:
            await events.send(type="chat", text="through the proxy")
            chat = await events.next("chat")
            assert chat["text"] == "through the proxy"
        finally:
            await events.close()
    # nginx logs an upgraded request when the connection ends, a moment after the client closed it: nothing to
    # await but the file, so poll it, bounded.
    deadline = time.monotonic() + 10
    while '"GET /ws/sockets ' not in proxied.access_log() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log = proxied.access_log()
    assert '"GET /ws/sockets HTTP/1.1" 101 ' in log, log[-2000:]
    assert token not in log and "token=" not in log, "the access log must hold no token"


async def test_the_gateways_own_pages_open_room_sockets_through_nginx_and_others_are_refused(proxied: Nginx) -> None:
    """nginx passes Host with its port ($http_host): a page of the proxy's origin is same-origin to the gateway."""
    async with client(proxied) as http:
        url = proxied.base.replace("https://", "wss://") + "/ws/origins?token="
        url += await dev_token(http, proxied.base, "origins", "viewer")
        ws = await http.ws_connect(url, headers={"Origin": proxied.base})
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Origin": "https://elsewhere.example"})
        assert refused.value.status == 403


async def test_operations_endpoints_are_not_served_through_nginx(proxied: Nginx, gateway: GatewayProcess) -> None:
    async with client(proxied) as http:
        for path in ("/metrics", "/dashboard", "/dashboard/data"):
            async with http.get(f"{proxied.base}{path}") as response:
                assert response.status == 404, path
        async with http.get(f"{proxied.base}/healthz") as response:
            assert response.status == 200, "everything else is proxied"
    async with aiohttp.ClientSession() as direct, direct.get(f"{gateway.base}/metrics") as response:
        assert response.status == 200, "the gateway serves /metrics itself: the 404 above is nginx's"
