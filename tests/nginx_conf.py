"""deploy/nginx/cherry-gateway.conf made runnable in a temp directory: loopback ports, a throwaway certificate,
everything nginx writes under one prefix. Used by ``nginx -t`` (tests/unit/test_deploy.py) and by the real
nginx in front of a real gateway (tests/integration/test_proxy.py)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "nginx" / "cherry-gateway.conf"


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"{EXAMPLE.name} no longer contains {old!r}: update tests/nginx_conf.py with it"
    return text.replace(old, new)


def render_example(cert: Path, key: str | Path, https_port: int, http_port: int, upstream_port: int) -> str:
    """The example with only its site-specific values changed: listen addresses, certificate, upstream."""
    text = EXAMPLE.read_text()
    text = _replace(text, "listen [::]:443 ssl http2;\n", "")
    text = _replace(text, "listen [::]:80;\n", "")
    text = _replace(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = _replace(text, "/etc/letsencrypt/live/live.example.com/fullchain.pem", str(cert))
    text = _replace(text, "/etc/letsencrypt/live/live.example.com/privkey.pem", str(key))
    text = _replace(text, "/var/log/nginx/cherry-gateway.access.log", "access.log")  # relative: in the prefix
    return _replace(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")


def write_wrapper(prefix: Path, site: str) -> Path:
    """A main nginx.conf under ``prefix`` that includes ``site`` in its http {} block; returns its path."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site)
    temp = {name: prefix / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    # As root nginx would switch its workers to `nobody`, who cannot enter a private temp directory.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {prefix / 'access.log'};\n"
        f"    client_body_temp_path {temp['client_body']};\n    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        f"    include {prefix / 'site.conf'};\n"
        "}\n")
    return conf


def nginx_argv(nginx: str, conf: Path, *extra: str) -> list[str]:
    """``nginx -p PREFIX -c CONF -e ERRORLOG ...``: nothing read or written outside the prefix."""
    prefix = conf.parent
    return [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), *extra]
