"""SIGHUP: reload the TLS certificate and the token secrets without dropping anyone.

The configuration is read again exactly as at start-up (the same ``--config`` file and command-line
overrides) and validated as a whole; if that fails nothing changes and the reason is logged. Otherwise:

* ``server.tls_cert`` / ``server.tls_key`` are loaded into the live TLS context (``gateway/tls.py``): new
  connections get the new certificate, open ones keep theirs;
* the secrets ``auth.secret_env`` / ``auth.secret_file`` / ``previous_secrets`` name are resolved again and
  swapped into the token service (and the cluster's internal API keys derived from them). Tokens verified
  before (open sessions and room sockets) stay verified;
* any other setting that changed is named in the log as needing a restart; it is not applied.

One log line per reload says what changed; never a secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from cryptography import x509  # a dependency of aiortc
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.app import CLUSTER
from gateway.config import ConfigError, GatewayConfig
from gateway.tls import TlsError, reload_chain
from signaling.auth import SecretError, Secrets, resolve_secrets
from signaling.context import CONTEXT

log = logging.getLogger("cherry.gateway.reload")

# What a reload applies; every other difference is reported as needing a restart.
_AUTH_SECRETS = ("secret", "secret_env", "secret_file", "previous_secrets")
_SERVER_TLS = ("tls_cert", "tls_key")


def describe_certificate(path: str) -> tuple[str, str]:
    """(fingerprint, "subject, valid until ...") of the first certificate of a PEM file, for the log."""
    try:
        leaf = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"server.tls_cert: cannot read a certificate from {path}: {exc}") from exc
    fingerprint = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
    return fingerprint, f"{leaf.subject.rfc4514_string()}, valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


def _unapplied(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Settings that differ between ``old`` and ``new`` other than those a reload applies."""
    keep_auth = {name: getattr(old.auth, name) for name in _AUTH_SECRETS}
    keep_tls = {name: getattr(old.server, name) for name in _SERVER_TLS}
    new = dataclasses.replace(new, auth=dataclasses.replace(new.auth, **keep_auth),
                              server=dataclasses.replace(new.server, **keep_tls))
    return [f.name for f in dataclasses.fields(GatewayConfig) if getattr(old, f.name) != getattr(new, f.name)]


class Reloader:
    """Applies one reload to a running app; :meth:`reload` returns the log line it wrote."""

    def __init__(self, app: web.Application, config: GatewayConfig, load: Callable[[], GatewayConfig],
                 tls: ssl.SSLContext | None) -> None:
        self.app = app
        self.config = config
        self._load = load
        self._tls = tls
        self._cert = describe_certificate(config.server.tls_cert)[0] if tls is not None else ""

    def reload(self) -> str:
        try:
            new = self._load()
            # Again, as the files may have changed since the load validated them: all that can fail comes
            # before anything changes.
            resolved = resolve_secrets(new.auth, new.dev)
            parts = [self._reload_tls(new), self._reload_secrets(resolved)]
        except (ConfigError, SecretError, TlsError) as exc:
            line = f"reload refused, nothing changed (still the previous certificate and secrets): {exc}"
            log.error(line)
            return line
        unapplied = _unapplied(self.config, new)
        if unapplied:
            parts.append(f"not applied until a restart: {', '.join(unapplied)}")
        self.config = dataclasses.replace(
            self.config, auth=dataclasses.replace(self.config.auth, **{n: getattr(new.auth, n) for n in _AUTH_SECRETS}),
            server=dataclasses.replace(self.config.server, **{n: getattr(new.server, n) for n in _SERVER_TLS}))
        line = "reloaded: " + "; ".join(part for part in parts if part)
        log.info(line)
        return line

    def _reload_tls(self, new: GatewayConfig) -> str:
        cert, key = new.server.tls_cert, new.server.tls_key
        if self._tls is None:
            return "TLS: off (turning it on needs a restart)" if cert else ""
        if not cert:
            return "TLS: still on (turning it off needs a restart)"
        fingerprint, about = describe_certificate(cert)
        reload_chain(self._tls, cert, key)
        changed = fingerprint != self._cert
        self._cert = fingerprint
        return f"TLS certificate {'replaced' if changed else 'unchanged'} ({about})"

    def _reload_secrets(self, resolved: Secrets) -> str:
        if resolved.generated:  # dev mode's per-run secret: a new random one would cut every token off
            return "token secret: the per-run dev secret, unchanged"
        ctx = self.app[CONTEXT]
        if not ctx.tokens.rekey(resolved.current, resolved.previous):
            return f"token secrets unchanged ({len(resolved.previous)} previous)"
        runtime = self.app.get(CLUSTER)
        if runtime is not None:
            runtime.rekey()
        return f"token secrets replaced ({len(resolved.previous)} previous still accepted)"


def install_reload(app: web.Application, config: GatewayConfig, load: Callable[[], GatewayConfig],
                   tls: ssl.SSLContext | None) -> None:
    """For ``cherry-gateway serve``: SIGHUP reloads (see the module docstring)."""
    reloader = Reloader(app, config, load, tls)

    async def install(app: web.Application) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.reload)
        except NotImplementedError:  # pragma: no cover - no signal handlers on Windows
            pass

    app.on_startup.append(install)
