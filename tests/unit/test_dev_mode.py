"""/dev/token exists only in dev mode; a gateway's tokens across a secret rotation (the real app,
served in-process on 127.0.0.1)."""

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import load_config
from signaling.auth import TokenService

OLD = "old-secret-0123456789abcdef-0123456789"
NEW = "new-secret-0123456789abcdef-0123456789"


async def status_of(dev: bool, path: str, overrides: dict[str, Any] | None = None,
                    token: str | None = None) -> int:
    mode = {"dev": True} if dev else {"auth.secret": "s" * 32}
    app = create_app(load_config(None, {**mode, "ice.hosts": ["127.0.0.1"], **(overrides or {})}))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with TestClient(TestServer(app, host="127.0.0.1")) as client, client.get(path, headers=headers) as response:
        return response.status


async def test_dev_token_route_exists_only_in_dev_mode():
    assert await status_of(True, "/dev/token?room=r&role=viewer") == 200
    assert await status_of(False, "/dev/token?room=r&role=viewer") == 404


async def test_dev_token_options_are_validated():
    assert await status_of(True, "/dev/token?room=r&role=viewer&name=Ann%20%F0%9F%8C%B8") == 200
    for query in ("room=two%20words&role=viewer", "room=r&role=viewer&identity=" + "i" * 129,
                  "room=r&role=viewer&name=" + "n" * 65, "room=r&role=viewer&name=%0Aline", "room=r&role=boss"):
        assert await status_of(True, "/dev/token?" + query) == 400, query


async def test_dev_token_ttl_is_bounded_by_auth_max_ttl():
    bounded = {"auth.default_ttl": 60, "auth.max_ttl": 600}
    assert await status_of(True, "/dev/token?room=r&role=viewer&ttl=600", bounded) == 200
    assert await status_of(True, "/dev/token?room=r&role=viewer&ttl=601", bounded) == 400
    assert await status_of(True, "/dev/token?room=r&role=viewer&ttl=0", bounded) == 400


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHERRY_TEST_NEW", NEW)
    monkeypatch.setenv("CHERRY_TEST_OLD", OLD)


async def test_gateway_accepts_old_tokens_while_rotating_and_refuses_them_after(secrets_in_env: None):
    def admin(secret: str) -> str:
        return TokenService(secret, "cherry-gateway", 60).mint("*", "admin")

    current = {"auth.secret": "", "auth.secret_env": "CHERRY_TEST_NEW"}
    rotating = {**current, "auth.previous_secrets": ["env:CHERRY_TEST_OLD"]}
    for secret, during, after in ((NEW, 200, 200), (OLD, 200, 401), ("x" * 40, 401, 401)):
        assert await status_of(False, "/api/stats", rotating, admin(secret)) == during, secret
        assert await status_of(False, "/api/stats", current, admin(secret)) == after, secret
