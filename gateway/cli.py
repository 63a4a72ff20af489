"""``cherry-gateway serve`` and ``cherry-gateway token``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.logs import setup_logging
from signaling.auth import (
    MAX_IDENTITY_LENGTH,
    ROLES,
    ROOM_NAME,
    ROOM_NAME_RULE,
    check_ttl,
    resolve_secrets,
    token_service,
)

log = logging.getLogger("cherry.gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cherry-gateway", description="Cherry Live Gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML file (see configs/gateway.toml)")
    serve.add_argument("--host", help="listen address")
    serve.add_argument("--port", type=int, help="listen port")
    serve.add_argument("--ice-host", action="append", dest="ice_hosts", metavar="ADDR",
                       help="offer only this ICE host address (repeatable), e.g. 127.0.0.1 in tests")
    serve.add_argument("--dev", action="store_true",
                       help="development mode: per-run secret and GET /dev/token")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    token = sub.add_parser("token", help="print a signed access token")
    token.add_argument("--room", required=True, help=f"room name ({ROOM_NAME_RULE})")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--identity", help=f"subject, 1-{MAX_IDENTITY_LENGTH} characters (default: a random one)")
    token.add_argument("--ttl", type=int, help="seconds, 1 to auth.max_ttl (default: auth.default_ttl)")
    token.add_argument("--config", help="TOML file whose [auth] names the secret (secret, secret_env or secret_file)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "host", None):
        overrides["server.host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["server.port"] = args.port
    if getattr(args, "ice_hosts", None):
        overrides["ice.hosts"] = args.ice_hosts
    if getattr(args, "dev", False):
        overrides["dev"] = True
    if getattr(args, "log_level", None):
        overrides["log.level"] = args.log_level
    return overrides


def serve(config: GatewayConfig) -> None:
    from aiohttp import web

    from gateway.app import create_app
    from gateway.drain import handle_signals

    setup_logging(config.log.level, config.log.json)
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # uvloop does not exist on every platform
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if config.dev:
        log.warning("dev mode: per-run token secret, GET /dev/token is open to anyone")
    app = create_app(config)
    handle_signals(app)  # SIGTERM drains (gateway/drain.py); SIGINT still stops at once
    web.run_app(app, host=config.server.host, port=config.server.port,
                loop=loop, access_log=None, print=lambda *_: None, shutdown_timeout=5)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"cherry-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(config)
        return 0
    return mint_token(config, args)


def _token_problem(config: GatewayConfig, args: argparse.Namespace) -> str | None:
    if not ROOM_NAME.match(args.room):
        return f"--room: {args.room!r} is not a room name ({ROOM_NAME_RULE})"
    if args.identity is not None and not 1 <= len(args.identity) <= MAX_IDENTITY_LENGTH:
        return f"--identity: must be 1-{MAX_IDENTITY_LENGTH} characters, got {len(args.identity)}"
    if args.ttl is not None:
        try:
            check_ttl(args.ttl, config.auth.max_ttl)
        except ValueError as exc:
            return f"--ttl: {exc}"
    return None


def mint_token(config: GatewayConfig, args: argparse.Namespace) -> int:
    """``cherry-gateway token``: one token signed with the current secret of ``config``."""
    problem = _token_problem(config, args)
    if problem is None and resolve_secrets(config.auth, config.dev).generated:
        # A dev gateway signs with its own per-run secret: a token from here would never verify.
        problem = ("no secret configured (auth.secret, auth.secret_env or auth.secret_file); "
                   "a --dev gateway mints its own tokens at GET /dev/token")
    if problem is not None:
        print(f"cherry-gateway token: {problem}", file=sys.stderr)
        return 2
    print(token_service(config.auth, config.dev).mint(args.room, args.role, args.identity, args.ttl))
    return 0
