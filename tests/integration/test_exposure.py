"""What a gateway exposes to whom, against real non-dev gateway processes: operations endpoints on their own
port or behind a bearer token, security headers, room-socket origins, request ids, and per-address offer
limits behind a trusted proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from loadtests.webrtc.process import GatewayProcess, free_port
from signaling.auth import TokenService

SECRET = "exposure-test-secret-0123456789abcdef"
OPS_TOKEN = "ops-bearer-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


class Gateway:
    def __init__(self, tmp: Path, config: str) -> None:
        path = tmp / "gateway.toml"
        path.write_text('[auth]\nsecret_env = "CHERRY_TEST_SECRET"\n' + config)
        self.proc = GatewayProcess(tmp / "gateway.log", dev=False, config=path, cwd=ROOT,
                                   env={"CHERRY_TEST_SECRET": SECRET, "CHERRY_TEST_OPS": OPS_TOKEN})
        self.base = self.proc.base_url
        self.proc.wait_healthy(20)

    def token(self, room: str, role: str) -> str:
        return TokenService(SECRET, "cherry-gateway", 600).mint(room, role)


@pytest.fixture(scope="module")
def ops_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def separate(tmp_path_factory: pytest.TempPathFactory, ops_port: int) -> Iterator[Gateway]:
    """Operations on a listener of their own; offers limited per client behind a trusted proxy on loopback."""
    gw = Gateway(tmp_path_factory.mktemp("separate"), f"""
[server]
trusted_proxies = ["127.0.0.1"]
public_url = "https://live.example.com"
[limits]
offers_per_second = 0.01
offer_burst = 2
offer_limit_exempt = ["198.51.100.0/24"]
[events]
allowed_origins = ["https://App.Example.com"]
[operations]
port = {ops_port}
""")
    yield gw
    gw.proc.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Operations on the public port behind a bearer token; no proxy is trusted."""
    gw = Gateway(tmp_path_factory.mktemp("guarded"), """
[limits]
offers_per_second = 0.01
offer_burst = 2
[operations]
token_env = "CHERRY_TEST_OPS"
""")
    yield gw
    gw.proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def status_code(http: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with http.get(url, **kw) as r:  # type: ignore[arg-type]
        body = await r.json() if r.content_type == "application/json" else {}
        error = body.get("error") if isinstance(body, dict) else None
        return r.status, error.get("code", "") if isinstance(error, dict) else ""


async def test_operations_endpoints_live_on_their_own_port_only(separate: Gateway, ops_port: int,
                                                                http: aiohttp.ClientSession) -> None:
    for path in ("/metrics", "/dashboard", "/dashboard/data"):
        assert await status_code(http, separate.base + path) == (404, "not_found"), path
    ops = f"http://127.0.0.1:{ops_port}"
    async with http.get(ops + "/metrics") as r:
        assert r.status == 200 and "cherry_rooms" in await r.text()
    for path in ("/dashboard", "/dashboard/data", "/healthz", "/static/dashboard.js"):
        async with http.get(ops + path) as r:
            assert r.status == 200, path
    # The operations listener is not a second public port.
    for path in ("/", "/rooms", "/watch"):
        assert (await status_code(http, ops + path))[0] == 404, path
    async with http.post(ops + "/whip/r1", data="v=0", headers={"Content-Type": "application/sdp"}) as r:
        assert r.status == 404
    # The dashboard's admin actions call the admin API from the operations origin: served there, admin grant needed.
    admin = {"Authorization": f"Bearer {separate.token('*', 'admin')}"}
    async with http.get(ops + "/api/rooms") as r:
        assert r.status == 401
    async with http.get(ops + "/api/rooms", headers=admin) as r:
        assert r.status == 200 and "rooms" in await r.json()
    async with http.post(ops + "/api/rooms/nobody-here/kick", json={"identity": "x"}, headers=admin) as r:
        assert r.status == 404, "reached the admin API (no such room), not refused by the listener"


async def test_operations_endpoints_on_the_public_port_need_the_bearer_token(guarded: Gateway,
                                                                             http: aiohttp.ClientSession) -> None:
    for path in ("/metrics", "/dashboard/data", "/dashboard/cluster"):
        assert await status_code(http, guarded.base + path) == (401, "unauthorized"), path
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert await status_code(http, guarded.base + path, headers=wrong) == (401, "unauthorized"), path
        async with http.get(guarded.base + path, headers={"Authorization": f"Bearer {OPS_TOKEN}"}) as r:
            assert r.status == 200, path
    # The page itself holds no data; its scripts send the token.
    async with http.get(guarded.base + "/dashboard") as r:
        assert r.status == 200


async def test_without_a_port_or_token_a_production_gateway_serves_no_operations_endpoint(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    gw = Gateway(tmp_path, "")
    try:
        assert await status_code(http, gw.base + "/metrics") == (404, "not_found")
        assert await status_code(http, gw.base + "/dashboard") == (404, "not_found")
        assert (await status_code(http, gw.base + "/healthz"))[0] == 200
    finally:
        gw.proc.stop()


async def test_pages_carry_security_headers_and_every_response_nosniff(separate: Gateway,
                                                                      http: aiohttp.ClientSession) -> None:
    for path in ("/", "/watch", "/broadcast"):
        async with http.get(separate.base + path) as r:
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"
    async with http.get(separate.base + "/rooms") as r:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in r.headers
    async with http.post(separate.base + "/whip/r1") as r:  # an error response too
        assert r.status >= 400 and r.headers["X-Content-Type-Options"] == "nosniff"


async def test_request_ids_are_echoed_only_when_short_and_plain(separate: Gateway,
                                                                http: aiohttp.ClientSession) -> None:
    async with http.get(separate.base + "/healthz", headers={"X-Request-Id": "lb-7f3a:01"}) as r:
        assert r.headers["X-Request-Id"] == "lb-7f3a:01"
    for bad in ("x" * 65, "a b", "id<script>", "ünïcode"):
        async with http.get(separate.base + "/healthz", headers={"X-Request-Id": bad}) as r:
            echoed = r.headers["X-Request-Id"]
            assert echoed != bad and len(echoed) == 12 and echoed.isalnum(), (bad, echoed)


async def test_room_sockets_refuse_pages_of_other_origins(separate: Gateway, http: aiohttp.ClientSession) -> None:
    url = f"{separate.base}/ws/lobby?token={separate.token('lobby', 'viewer')}"
    for origin in ("https://evil.example.net", "http://127.0.0.1:1", "null"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Origin": origin})
        assert refused.value.status == 403, origin
    host = separate.base.removeprefix("http://")
    # Its own host, an allowed app (listed in another case), the public URL's origin (a proxy in front), no Origin.
    for headers in ({"Origin": f"http://{host}"}, {"Origin": "https://app.example.com"},
                    {"Origin": "https://LIVE.example.com"}, {}):
        ws = await http.ws_connect(url, headers=headers)
        welcome = await ws.receive_json(timeout=10)
        assert welcome["type"] == "welcome", (headers, welcome)
        await ws.close()


async def offer_statuses(http: aiohttp.ClientSession, base: str, forwarded_for: str, count: int) -> list[int]:
    statuses = []
    for _ in range(count):  # no token: 401 once the rate check has passed, 429 when it has not
        async with http.post(base + "/whep/r1", data="v=0\r\n", headers={
                "Content-Type": "application/sdp", "X-Forwarded-For": forwarded_for}) as r:
            statuses.append(r.status)
    return statuses


async def test_offer_limit_counts_the_client_behind_a_trusted_proxy_and_skips_exempt_sources(
        separate: Gateway, http: aiohttp.ClientSession) -> None:
    assert await offer_statuses(http, separate.base, "203.0.113.5", 3) == [401, 401, 429]
    # Another client behind the same proxy has its own budget; a spoofed hop before the proxy's is ignored.
    assert await offer_statuses(http, separate.base, "203.0.113.5, 203.0.113.6", 2) == [401, 401]
    # A load generator's range is exempt.
    assert await offer_statuses(http, separate.base, "198.51.100.7", 6) == [401] * 6


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(guarded: Gateway, http: aiohttp.ClientSession) -> None:
    first = await offer_statuses(http, guarded.base, "203.0.113.5", 2)
    assert first == [401, 401]
    # Claiming another address does not buy a new budget: the TCP peer is the client.
    assert await offer_statuses(http, guarded.base, "203.0.113.99", 1) == [429]
