"""``make cluster``: a throwaway redis-server and a dev gateway with several workers against it.

Redis listens on 127.0.0.1:6379 when that port is free (else on a free port) with its data in a temporary
directory; the gateway is ``cherry-gateway serve --dev --workers N --redis-url ...`` plus any further
arguments. Stopping this (Ctrl-C, SIGTERM) stops the gateway (SIGTERM: its workers drain), then Redis, and
removes the directory; if the gateway exits by itself, Redis is stopped too. Load runs can target it with
``make loadtest ARGS="--base-url http://127.0.0.1:8080 ..."``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import types
from pathlib import Path

from loadtests.webrtc.process import (
    LOOPBACK,
    RedisServer,
    die_with_parent,
    stop_process,
    wait_healthy,
)

REDIS_PORT = 6379


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
