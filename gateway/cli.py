"""``cherry-gateway serve`` and ``cherry-gateway token``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cluster.worker import WorkerSlot
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.logs import setup_logging
from signaling.auth import (
    DEV_SECRET_ENV,
    MAX_IDENTITY_LENGTH,
    MAX_NAME_LENGTH,
    ROLES,
    ROOM_NAME,
    ROOM_NAME_RULE,
    check_name,
    check_ttl,
    resolve_secrets,
    token_service,
)

log = logging.getLogger("cherry.gateway")


def _workers(value: str) -> int:
    """``--workers``: a count, or ``auto``: one per CPU this process may run on."""
    if value == "auto":
        return len(os.sched_getaffinity(0))
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of workers or 'auto'")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cherry-gateway", description="Cherry Live Gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML file (see configs/gateway.toml)")
    serve.add_argument("--host", help="listen address")
    serve.add_argument("--port", type=int, help="listen port")
    serve.add_argument("--ice-host", action="append", dest="ice_hosts", metavar="ADDR",
                       help="offer only this ICE host address (repeatable), e.g. 127.0.0.1 in tests")
    serve.add_argument("--tls-cert", metavar="PATH",
                       help="HTTPS: PEM certificate chain (server.tls_cert; with --tls-key)")
    serve.add_argument("--tls-key", metavar="PATH", help="HTTPS: its PEM private key (server.tls_key)")
    serve.add_argument("--dev", action="store_true",
                       help="development mode: per-run secret and GET /dev/token")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--workers", type=_workers, metavar="N|auto",
                       help="worker processes on this host (cluster.workers); auto: one per available CPU; "
                            "more than one needs cluster.redis_url")
    serve.add_argument("--redis-url", help="cluster.redis_url, e.g. redis://127.0.0.1:6379/0")
    # Set by the supervisor of `--workers N` on the workers it starts: which one this is.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    token = sub.add_parser("token", help="print a signed access token")
    token.add_argument("--room", required=True, help=f"room name ({ROOM_NAME_RULE})")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--identity", help=f"subject, 1-{MAX_IDENTITY_LENGTH} characters (default: a random one)")
    token.add_argument("--name", help=f"display name shown in chat, at most {MAX_NAME_LENGTH} characters")
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
    for flag in ("tls_cert", "tls_key"):
        if getattr(args, flag, None):
            overrides[f"server.{flag}"] = getattr(args, flag)
    if getattr(args, "dev", False):
        overrides["dev"] = True
    if getattr(args, "log_level", None):
        overrides["log.level"] = args.log_level
    if getattr(args, "workers", None) is not None:
        overrides["cluster.workers"] = args.workers
    if getattr(args, "redis_url", None):
        overrides["cluster.redis_url"] = args.redis_url
    return overrides


def serve(config: GatewayConfig, slot: WorkerSlot | None = None,
          reload: Callable[[], GatewayConfig] | None = None) -> None:
    """Run one gateway process: the only one (one worker), or worker ``slot.index`` of a supervisor's.
    ``reload``: how SIGHUP reads the configuration again (gateway/reload.py); default: ``config`` as it is."""
    from aiortc_bridge.heap import freeze_start_up_heap
    from aiortc_bridge.ice import use_port_range
    from gateway.app import create_app
    from gateway.drain import handle_signals
    from gateway.listen import Listener, run
    from gateway.reload import install_reload
    from gateway.tls import server_context

    slot = slot or WorkerSlot.of(config.cluster)
    several = slot.count > 1
    setup_logging(config.log.level, config.log.json, worker=slot.worker_id if several else None)
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # uvloop does not exist on every platform
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if config.dev and slot.index == 0:
        generated = resolve_secrets(config.auth, True).generated or bool(os.environ.get(DEV_SECRET_ENV))
        log.warning("dev mode: GET /dev/token is open to anyone%s",
                    "; the token secret is made for this run" if generated else "")
    ports = slot.udp_ports(config.cluster)
    if ports is not None:
        use_port_range(*ports)
    app = create_app(config, slot=slot)
    handle_signals(app)  # SIGTERM drains (gateway/drain.py); SIGINT still stops at once
    # Every worker loads the pair itself; SIGHUP loads it again into this same context.
    tls = server_context(config.server.tls_cert, config.server.tls_key) if config.server.tls_cert else None
    if not config.dev:
        # In dev mode SIGHUP keeps its default: a closed terminal must end `make run`, not leave it holding the port
        # (and a per-run secret has nothing to reload).
        install_reload(app, config, reload or (lambda: config), tls)
    scheme = "https" if tls else "http"
    if several:
        log.info("worker %s: %s://%s:%d shared with %d other workers (SO_REUSEPORT), media UDP %s",
                 slot.worker_id, scheme, config.server.host, config.server.port, slot.count - 1,
                 f"{ports[0]}-{ports[1]}" if ports else "any port")
    # Every worker of a host listens on the one public port; the kernel spreads connections over them.
    listeners = [Listener(config.server.host, config.server.port, ssl_context=tls, reuse_port=several)]
    if config.operations.port:
        listeners.append(Listener(config.operations.host, config.operations.port + slot.index))

    def listening() -> None:
        # Started: what exists now lives as long as the worker, so full collections need not walk it again.
        log.debug("start-up heap frozen: %d objects", freeze_start_up_heap())
        if not several:
            print_startup(config, ports)

    run(app, listeners, loop, on_listening=listening)


def print_startup(config: GatewayConfig, udp_ports: tuple[int, int] | None = None) -> None:
    """The start-up report on stdout (where ``make run`` shows it), its warnings in the log too. ICE hosts must be
    pinned already (``create_app`` does it; the supervisor for itself)."""
    from aiortc_bridge.ice import machine_addresses, offered_host_addresses
    from gateway.startup import startup_report

    report = startup_report(config, offered_host_addresses(), machine_addresses(), udp_ports)
    for line in report.lines:
        if config.log.json:  # one JSON object per line on the output, for log shippers
            log.info("%s", line)
        else:
            print(f"cherry-gateway: {line}", flush=True)
    for warning in report.warnings:
        log.warning("%s", warning)


def worker_program() -> list[str]:
    """How to start a worker: the program this process runs (``python -m gateway``, or a wrapper of it such
    as the instrumented test gateway), so workers run exactly what their supervisor was started as."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = spec.name.removesuffix(".__main__") if spec is not None and spec.name else "gateway"
    return [sys.executable, "-m", name]


def supervise(config: GatewayConfig, serve_args: Sequence[str]) -> int:
    """``serve --workers N`` with N > 1: start N workers with the same arguments and keep them running."""
    from gateway.supervisor import SUPERVISOR_PID_ENV, Supervisor

    setup_logging(config.log.level, config.log.json)
    count = config.cluster.workers
    env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())}
    if config.dev and resolve_secrets(config.auth, True).generated:
        # One per-run secret for the host: a token from /dev/token of any worker verifies on every worker.
        env[DEV_SECRET_ENV] = os.environ.get(DEV_SECRET_ENV) or secrets.token_urlsafe(32)
    program = worker_program()

    def command(index: int) -> list[str]:
        return [*program, "serve", *serve_args, "--workers", str(count), "--worker-index", str(index)]

    # Not the Redis URL: it may carry a password.
    log.info("supervisor: %d workers on %s://%s:%d", count, "https" if config.server.tls_cert else "http",
             config.server.host, config.server.port)
    from aiortc_bridge.ice import pin_ice_hosts
    from gateway.startup import offers_loopback

    pin_ice_hosts(config.ice.hosts, with_loopback=offers_loopback(config))  # as each worker's create_app does
    cl = config.cluster
    print_startup(config, (cl.udp_port_min, cl.udp_port_max) if cl.udp_port_max else None)
    # Long enough for a worker to drain (drain.timeout_s) and then shut down (aiohttp's 5 s), with margin.
    supervisor = Supervisor(count, command, env, stop_timeout=config.drain.timeout_s + 15, reloads=not config.dev)
    return asyncio.run(supervisor.run())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"cherry-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command != "serve":
        return mint_token(config, args)
    count = config.cluster.workers

    def reload() -> GatewayConfig:  # SIGHUP: the same file and flags, read again
        return load_config(args.config, _overrides(args))

    if args.worker_index is None:
        if count > 1:
            return supervise(config, argv[argv.index("serve") + 1:])
        serve(config, reload=reload)
        return 0
    if not 0 <= args.worker_index < count:
        print(f"cherry-gateway: --worker-index must be 0-{count - 1}, got {args.worker_index}", file=sys.stderr)
        return 2
    from gateway.supervisor import die_with_supervisor

    die_with_supervisor()
    serve(config, WorkerSlot.of(config.cluster, args.worker_index), reload)
    return 0


def _token_problem(config: GatewayConfig, args: argparse.Namespace) -> str | None:
    if not ROOM_NAME.match(args.room):
        return f"--room: {args.room!r} is not a room name ({ROOM_NAME_RULE})"
    if args.identity is not None and not 1 <= len(args.identity) <= MAX_IDENTITY_LENGTH:
        return f"--identity: must be 1-{MAX_IDENTITY_LENGTH} characters, got {len(args.identity)}"
    if args.name is not None:
        try:
            check_name(args.name)
        except ValueError as exc:
            return f"--name: {exc}"
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
    print(token_service(config.auth, config.dev).mint(args.room, args.role, args.identity, args.ttl,
                                                      name=args.name or ""))
    return 0
