"""A stand-in for an app's token endpoint (``pages.token_url``), for the browser tests only.

``python -m tests.browser.token_app PORT GATEWAY_ORIGIN``: answers ``GET /token?room=&role=`` with a token
minted with the secret in $CHERRY_APP_SECRET (a real app checks who is signed in first), with CORS for the
gateway's pages (credentials included), and counts what it handed out at ``GET /count``.
"""

from __future__ import annotations

import os
import sys

from aiohttp import web

from signaling.auth import TokenService


def main() -> None:
    port, origin = int(sys.argv[1]), sys.argv[2]
    tokens = TokenService(os.environ["CHERRY_APP_SECRET"], "cherry-gateway", 600)
    handed: dict[str, int] = {}
    cors = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}

    async def token(request: web.Request) -> web.Response:
        room, role = request.query.get("room", ""), request.query.get("role", "")
        if role not in ("viewer", "host"):
            return web.json_response({"error": {"code": "bad_role", "message": role}}, status=400, headers=cors)
        handed[role] = handed.get(role, 0) + 1
        return web.json_response({"token": tokens.mint(room, role, f"app-{role}-{handed[role]}")}, headers=cors)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(handed, headers=cors)

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print("listening", flush=True))


if __name__ == "__main__":
    main()
