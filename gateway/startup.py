"""What the gateway tells whoever started it: where to open it, which media addresses it offers, and
why a browser on this machine or elsewhere could not connect, before anyone has to find out.

Pure: :func:`startup_report` takes the configuration and the addresses; ``serve`` prints its lines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.config import GatewayConfig

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def offers_loopback(config: GatewayConfig) -> bool:
    """With the server on loopback and no ICE hosts configured, loopback is offered too: whoever reaches the
    pages there is on this machine (tools, tests, a browser started with loopback allowed)."""
    return not config.ice.hosts and is_loopback(config.server.host)


@dataclass(frozen=True, slots=True)
class StartupReport:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def startup_report(config: GatewayConfig, offered: Sequence[str], machine: Sequence[str],
                   udp_ports: tuple[int, int] | None = None) -> StartupReport:
    """``offered``: the ICE host addresses the gateway offers; ``machine``: this machine's addresses but
    loopback (what a browser here could gather candidates on)."""
    report = StartupReport()
    base = _base_url(config, machine)
    report.lines.append(f"open {base}/ : go live at {base}/broadcast?room=NAME, watch at {base}/watch?room=NAME")
    dashboard = _dashboard(config, base)
    if dashboard:
        report.lines.append(f"dashboard: {dashboard}")
    ports = f"UDP {udp_ports[0]}-{udp_ports[1]}" if udp_ports else "any free UDP port"
    report.lines.append(f"media (ICE) offered on {', '.join(offered) or 'no address'} ({ports})")
    if config.dev:
        report.lines.append("dev mode: the pages get their tokens from /dev/token, which anyone can call: "
                            "never let a --dev gateway face a network")
    else:
        report.lines.append("tokens: your app's backend mints them (docs/tokens.md), or "
                            "cherry-gateway token --config FILE --room NAME --role host")
    report.warnings.extend(_reachability(config, offered, machine))
    return report


def _base_url(config: GatewayConfig, machine: Sequence[str]) -> str:
    if config.server.public_url:
        return config.server.public_url.rstrip("/")
    scheme = "https" if config.server.tls_cert else "http"
    host = config.server.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{config.server.port}"


def _dashboard(config: GatewayConfig, base: str) -> str:
    if not config.metrics.dashboard:
        return ""
    ops = config.operations
    if ops.port:
        return f"http://{ops.host}:{ops.port}/dashboard (operations listener; worker i: port + i)"
    if config.dev:
        return f"{base}/dashboard"
    if ops.token_env or ops.token_file:
        return f"{base}/dashboard#ops_token=TOKEN (the operations bearer token)"
    return "off: set operations.port or an operations token to open /metrics and /dashboard (docs/deployment.md)"


def _reachability(config: GatewayConfig, offered: Sequence[str], machine: Sequence[str]) -> list[str]:
    warnings = []
    if not offered:
        warnings.append("ICE offers no address, so no session can ever connect: set --ice-host ADDR "
                        "(ice.hosts) to an address the clients reach")
    if not machine:
        warnings.append(
            "this machine has no network address besides loopback: browsers gather no ICE candidate on loopback "
            "(Chromium and Firefox by default), so a browser here opens the pages but its video never connects. "
            "Fix: connect to a network and restart (or pass --ice-host with the new address), or start Chromium "
            "with --allow-loopback-in-peer-connection (Firefox: media.peerconnection.ice.loopback = true in "
            "about:config). Tools on this machine (the load suite, the tests) connect over loopback as they are.")
    if offered and all(is_loopback(a) for a in offered) and not is_loopback(config.server.host):
        warnings.append("ICE offers only loopback while the pages are served to other machines: their browsers "
                        "cannot connect; set --ice-host to an address they reach")
    secure = config.server.tls_cert or config.server.public_url.startswith("https://")
    if not secure and not is_loopback(config.server.host):
        warnings.append("browsers give the camera only to https:// pages or to localhost: hosts on other "
                        "machines need HTTPS (--tls-cert/--tls-key, or a reverse proxy: docs/deployment.md)")
    return warnings
