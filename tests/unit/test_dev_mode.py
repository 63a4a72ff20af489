"""/dev/token exists only in dev mode (the real app, served in-process on 127.0.0.1)."""

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import load_config


async def status_of(dev: bool, path: str) -> int:
    overrides = {"dev": True} if dev else {"auth.secret": "s" * 32}
    app = create_app(load_config(None, {**overrides, "ice.hosts": ["127.0.0.1"]}))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client, client.get(path) as response:
        return response.status


async def test_dev_token_route_exists_only_in_dev_mode():
    assert await status_of(True, "/dev/token?room=r&role=viewer") == 200
    assert await status_of(False, "/dev/token?room=r&role=viewer") == 404
