"""HTTPS on the public port for small deployments: ``server.tls_cert`` and ``server.tls_key``.

One :class:`ssl.SSLContext` per process, built at start-up. On reload (SIGHUP, ``gateway/reload.py``) the new
files are first loaded into a scratch context: only if they load there are they loaded into the live one,
whose certificate then serves every new connection (connections already open keep theirs). A bad new pair
leaves the live context untouched, because ``load_cert_chain`` on a live context that fails half-way (a new
certificate, then a key that does not match it) would leave it serving a pair that cannot handshake.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path


class TlsError(ValueError):
    """A certificate/key pair that cannot be served; the message names the setting."""


def server_context(cert: str, key: str, shown: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A server context serving ``cert`` (a PEM chain, leaf first) with ``key``; :class:`TlsError` if not.
    ``shown``: the paths to name in errors (the originals, when these are copies)."""
    shown_cert, shown_key = shown or (cert, key)
    for name, path, label in (("server.tls_cert", cert, shown_cert), ("server.tls_key", key, shown_key)):
        if not Path(path).is_file():
            raise TlsError(f"{name}: {label} is not a readable file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsError(f"server.tls_cert/server.tls_key: {shown_cert} and {shown_key} do not load as a "
                       f"certificate chain and its private key: {exc.reason or exc}") from exc
    except OSError as exc:
        raise TlsError(f"server.tls_cert/server.tls_key: cannot read {shown_cert} or {shown_key}: {exc}") from exc
    return context


def reload_chain(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Serve ``cert``/``key`` on ``context`` from the next handshake; :class:`TlsError` leaves it as it was.

    Both loads read one private copy of the files, so a renewal that rewrites them in between cannot make the
    live context load a pair the scratch one never checked.
    """
    with tempfile.TemporaryDirectory(prefix="cherry-tls-") as tmp:
        copies = []
        for name, path in (("server.tls_cert", cert), ("server.tls_key", key)):
            copy = Path(tmp) / name
            try:
                shutil.copyfile(path, copy)
            except OSError as exc:
                raise TlsError(f"{name}: cannot read {path}: {exc}") from exc
            copies.append(str(copy))
        server_context(copies[0], copies[1], shown=(cert, key))  # raises before the live context is touched
        context.load_cert_chain(*copies)
