"""``make cluster``: a throwaway redis-server and a dev gateway with several workers against it.

Also :class:`LocalCluster`: several gateway *nodes* on one machine, for load runs against a cluster
(``python -m loadtests.run --local-cluster N``) and their tests: one redis-server (or a given one) and N
``serve`` processes, each its own node (``node_id`` n0, n1, ...; its own public port and internal
``advertise_url``; ``--workers W`` each), all on 127.0.0.1 with ICE pinned there.

Redis listens on 127.0.0.1:6379 when that port is free (else on a free port) with its data in a temporary
directory; the gateway is ``cherry-gateway serve --dev --workers N --redis-url ...`` plus any further
arguments. Stopping this (Ctrl-C, SIGTERM) stops the gateway (SIGTERM: its workers drain), then Redis, and
removes the directory; if the gateway exits by itself, Redis is stopped too. Load runs can target it with
``make loadtest ARGS="--base-url http://127.0.0.1:8080 ..."``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadtests.webrtc.process import (
    LOOPBACK,
    GatewayProcess,
    RedisServer,
    die_with_parent,
    free_port_range,
    stop_process,
    wait_healthy,
)

REDIS_PORT = 6379
ROOT = Path(__file__).resolve().parent.parent
# A dev gateway without a configured secret signs with this variable's value when it is set (the supervisor
# hands its workers one this way, signaling.auth.DEV_SECRET_ENV): nodes given the same one accept each other's
# /dev/token tokens.
DEV_SECRET_ENV = "CHERRY_DEV_SECRET"


def toml_text(data: Mapping[str, Any], prefix: str = "") -> str:
    """``data`` as TOML: scalars and lists of scalars, tables nested as ``[a.b]`` (what gateway configs hold)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a TOML basic string
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    lines = [f"{key} = {value(v)}" for key, v in data.items() if not isinstance(v, dict)]
    for key, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{key}" if prefix else key
            lines += ["", f"[{name}]", toml_text(v, name).strip("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def node_config(base: Mapping[str, Any], *, redis_url: str, node_id: str, advertise_url: str,
                workers: int) -> dict[str, Any]:
    """A gateway config for one node of a local cluster: ``base`` with its ``[cluster]`` identity laid over."""
    config = {key: dict(v) if isinstance(v, dict) else v for key, v in base.items()}
    cluster = dict(config.get("cluster", {}))
    cluster.update(redis_url=redis_url, node_id=node_id, advertise_url=advertise_url, workers=workers)
    config["cluster"] = cluster
    return config


class LocalCluster:
    """``nodes`` gateway nodes on one Redis, all on 127.0.0.1: construct, :meth:`wait_healthy`, :meth:`stop` (by pid).

    ``config``: the gateway config every node starts from (its ``[cluster]`` keys other than the node's
    identity are kept: capacities, heartbeats); ``redis_url``: an already running Redis (default: a throwaway
    redis-server in ``workdir``); ``dev``: ``--dev``, with one shared dev secret so that a token from any
    node's ``/dev/token`` verifies on every node. Configs and logs go to ``workdir`` (``n0.toml``, ``n0.log``).
    """

    def __init__(self, workdir: Path, nodes: int, *, workers: int = 1, config: Path | None = None,
                 redis_url: str | None = None, dev: bool = True, module: str = "gateway",
                 env: Mapping[str, str] | None = None) -> None:
        if nodes < 1 or workers < 1:
            raise ValueError("a local cluster needs at least one node of at least one worker")
        workdir.mkdir(parents=True, exist_ok=True)
        self.redis: RedisServer | None = None
        self.nodes: dict[str, GatewayProcess] = {}
        base = tomllib.loads(config.read_text()) if config is not None else {}
        extra_env = dict(env or {})
        if dev and "auth" not in base:
            extra_env.setdefault(DEV_SECRET_ENV, os.environ.get(DEV_SECRET_ENV) or secrets.token_urlsafe(32))
        try:
            if redis_url is None:
                self.redis = RedisServer(workdir / "redis")
                self.redis.wait_ready()
                redis_url = self.redis.url
            self.redis_url = redis_url
            for index in range(nodes):
                node_id = f"n{index}"
                internal, _ = free_port_range(workers, kind=socket.SOCK_STREAM)
                path = workdir / f"{node_id}.toml"
                path.write_text(toml_text(node_config(base, redis_url=redis_url, node_id=node_id, workers=workers,
                                                      advertise_url=f"http://{LOOPBACK}:{internal}")))
                self.nodes[node_id] = GatewayProcess(workdir / f"{node_id}.log", module=module, dev=dev, config=path,
                                                     env=extra_env, cwd=ROOT)
        except BaseException:
            self.stop()
            raise

    @property
    def urls(self) -> list[str]:
        """The nodes' public base URLs, in node order."""
        return [node.base_url for node in self.nodes.values()]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        for node in self.nodes.values():
            node.wait_healthy(timeout)

    def stop(self, grace: float = 10.0) -> None:
        """Idempotent: every node (SIGTERM, the workers drain), then Redis if it is ours."""
        for node in self.nodes.values():
            node.stop(grace)
        if self.redis is not None:
            self.redis.stop()


class _Stop(Exception):
    """SIGTERM, turned into an exception so the cleanup below runs as it does for Ctrl-C."""


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    raise _Stop


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", default="2", help="worker processes (N or auto; default 2)")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=8080)
    args, extra = parser.parse_known_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    with tempfile.TemporaryDirectory(prefix="cherry-redis-") as tmp:
        try:
            redis = RedisServer(Path(tmp), port=REDIS_PORT if _port_free(REDIS_PORT) else None)
        except FileNotFoundError as exc:
            print(f"make cluster: {exc}; install it with: apt-get install -y redis-server", file=sys.stderr)
            return 2
        gateway: subprocess.Popen[bytes] | None = None
        try:
            redis.wait_ready()
            argv_gateway = [sys.executable, "-m", "gateway", "serve", "--dev", "--workers", args.workers,
                            "--redis-url", redis.url, "--host", args.host, "--port", str(args.port), *extra]
            gateway = subprocess.Popen(argv_gateway, start_new_session=True, preexec_fn=die_with_parent)
            base = f"http://{args.host}:{args.port}"
            wait_healthy(base, 30, gateway.poll)
            print(f"\nCherry cluster: {base}  ({args.workers} workers, --dev; Redis {redis.url}, data in {tmp})\n"
                  "Ctrl-C stops it.\n", flush=True)
            return gateway.wait()
        except (KeyboardInterrupt, _Stop):
            return 0
        except Exception as exc:  # not healthy, or Redis did not start: say why, then clean up
            print(f"make cluster: {exc}", file=sys.stderr)
            return 1
        finally:
            if gateway is not None:
                stop_process(gateway, grace=45)  # the workers drain (drain.timeout_s) before they exit
            redis.stop()


if __name__ == "__main__":
    raise SystemExit(main())
