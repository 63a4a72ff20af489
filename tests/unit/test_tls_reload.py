"""server.tls_cert/tls_key validation, the live TLS context's reload, TokenService.rekey and what a reload
reports as needing a restart. Real files and real ssl contexts; no process."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import pytest

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.reload import _unapplied
from gateway.tls import TlsError, reload_chain, server_context
from signaling.auth import AuthError, TokenService
from tests.certs import TestCa

OLD = "old-secret-old-secret-old-secret-0123456789"
NEW = "new-secret-new-secret-new-secret-0123456789"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[TestCa, Path, Path]:
    ca = TestCa.create(tmp_path / "ca")
    ca.issue(tmp_path / "cert.pem", tmp_path / "key.pem", "one")
    return ca, tmp_path / "cert.pem", tmp_path / "key.pem"


def tls(cert: Path | str, key: Path | str) -> dict[str, object]:
    return {"dev": True, "server.tls_cert": str(cert), "server.tls_key": str(key)}


def test_a_valid_pair_loads(pair):
    _, cert, key = pair
    assert load_config(None, tls(cert, key)).server.tls_cert == str(cert)


@pytest.mark.parametrize("given, named", [("server.tls_cert", "server.tls_key"), ("server.tls_key", "server.tls_cert")])
def test_one_of_the_pair_alone_is_an_error_naming_the_missing_one(pair, given, named):
    _, cert, _ = pair
    with pytest.raises(ConfigError, match=f"^{named}: set both"):
        load_config(None, {"dev": True, given: str(cert)})


def test_a_missing_file_or_a_key_of_another_certificate_is_an_error_naming_the_key(pair, tmp_path):
    ca, cert, key = pair
    with pytest.raises(ConfigError, match="^server.tls_key: .*missing.key is not a readable file"):
        load_config(None, tls(cert, tmp_path / "missing.key"))
    ca.issue(tmp_path / "other.pem", tmp_path / "other.key", "two")
    with pytest.raises(ConfigError, match="^server.tls_cert/server.tls_key: .* do not load"):
        load_config(None, tls(cert, tmp_path / "other.key"))


def test_reload_swaps_the_chain_of_the_live_context_and_a_bad_pair_leaves_it(pair, tmp_path):
    ca, cert, key = pair
    context = server_context(str(cert), str(key))
    ca.issue(tmp_path / "other.pem", tmp_path / "other.key", "two")
    reload_chain(context, str(tmp_path / "other.pem"), str(tmp_path / "other.key"))
    with pytest.raises(TlsError, match=r"other.key do not load"):
        reload_chain(context, str(cert), str(tmp_path / "other.key"))
    # The live context still serves a consistent pair: a handshake against it succeeds (in memory).
    client = ca.client_context()
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = context.wrap_bio(server_in, server_out, server_side=True)
    peer = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    for _ in range(10):
        for side in (peer, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    assert peer.getpeercert()["subject"] == ((("commonName", "two"),),)


def test_rekey_mints_with_the_new_secret_and_verifies_only_the_listed_ones():
    tokens = TokenService(OLD, "iss", 60)
    old = tokens.mint("r", "viewer")
    assert tokens.rekey(NEW, (OLD,)) is True
    assert tokens.rekey(NEW, (OLD,)) is False, "the same keys again is no change"
    assert tokens.verify(old).room == "r" and TokenService(NEW, "iss", 60).verify(tokens.mint("r", "host"))
    old_keys = tokens.derive_keys("label")
    tokens.rekey(NEW)
    with pytest.raises(AuthError, match="signature"):
        tokens.verify(old)
    assert tokens.derive_keys("label") == old_keys[:1], "derived keys follow the current and previous secrets"


def test_a_reload_names_what_it_does_not_apply():
    old = GatewayConfig()
    rotated = dataclasses.replace(old, auth=dataclasses.replace(old.auth, secret_file="/x", previous_secrets=("a",)),
                                  server=dataclasses.replace(old.server, tls_cert="/c", tls_key="/k"))
    assert _unapplied(old, rotated) == []
    moved = dataclasses.replace(rotated, server=dataclasses.replace(rotated.server, port=9999),
                                auth=dataclasses.replace(rotated.auth, issuer="other"))
    assert _unapplied(old, moved) == ["server", "auth"]
