"""Real headless Chromium in a loopback-only network namespace, shared by the browser and load tests.

Chromium offers ICE candidates on every interface it sees; inside a fresh namespace the only one is
127.0.0.1, so no test traffic can reach the machine's other interface. Playwright talks to Chromium
over a pipe, so it crosses the namespace boundary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def unavailable() -> str | None:
    """Why Chromium tests cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "python playwright is not installed"
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 for a loopback-only network namespace"
    return None


@contextmanager
def namespace(name: str) -> Iterator[str]:
    """A fresh network namespace ``name`` with only ``lo`` up, deleted on exit (root and iproute2 needed).

    Plain, for tools outside pytest (``tools.screenshots``); the tests use :func:`loopback_netns`.
    """
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@contextmanager
def loopback_netns(prefix: str, what: str) -> Iterator[str]:
    """A fresh namespace with only ``lo`` up; skipped with the reason (failed under CI) when impossible."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{what} cannot run in CI: {reason}")
        pytest.skip(reason)
    with namespace(f"{prefix}-{os.getpid()}") as name:
        yield name


def chromium_in(netns: str, folder: Path) -> Path:
    """An executable that starts Chromium inside ``netns``, for Playwright's ``executable_path``."""
    wrapper = folder / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper
