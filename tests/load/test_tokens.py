"""The load generator's own tokens: minted from the gateway's secret or by a command, refused ones a SETUP error.

The pieces run in this process; the runs start a production-mode gateway (no --dev, no /dev/token)
whose secret comes from an environment variable, through ``python -m loadtests.run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import load_config
from loadtests.profiles import ROOT
from loadtests.webrtc.signaling_client import SignalingError
from loadtests.webrtc.token_options import TokenError, TokenSettings, add_token_arguments
from loadtests.webrtc.tokens import (
    CommandTokenSource,
    DevTokenSource,
    SecretTokenSource,
    describe_refusal,
    is_refusal,
)
from signaling.auth import TokenService
from tests.load.runs import check, run_load

SECRET = "load-test-secret-0123456789abcdef-0123"
WRONG = "not-the-secret-0123456789abcdef-012345"


def gateway_config(tmp_path: Path, auth: str) -> Path:
    """configs/load-gateway.toml plus an [auth] section."""
    path = tmp_path / "gateway.toml"
    path.write_text((ROOT / "configs" / "load-gateway.toml").read_text() + f"\n[auth]\n{auth}\n")
    return path


# -- pieces -------------------------------------------------------------------------------------


async def test_minted_load_tokens_carry_the_claims_the_gateway_mints_and_verify_there() -> None:
    service = TokenService(SECRET, "cherry-test", 60)
    token = await SecretTokenSource(SECRET, "cherry-test").token("room-1", "host", "lt-host")
    grant = service.verify(token)
    assert (grant.room, grant.role, grant.identity) == ("room-1", "host", "lt-host")
    ours = jwt.decode(token, options={"verify_signature": False})
    theirs = jwt.decode(service.mint("room-1", "host", "lt-host"), options={"verify_signature": False})
    assert set(ours) == set(theirs) == {"iss", "sub", "room", "role", "iat", "exp"}
    with pytest.raises(Exception, match="issuer"):  # the issuer must match the gateway's auth.issuer
        service.verify(await SecretTokenSource(SECRET).token("room-1", "host"))


async def test_token_command_runs_once_per_identity_and_prints_a_token_the_gateway_accepts(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, f'secret = "{SECRET}"')
    source = CommandTokenSource(f"{sys.executable} -m gateway token --config {config}")
    first = await source.token("room-1", "viewer", "v1")
    assert await source.token("room-1", "viewer", "v1") == first and source.runs == 1  # reused until near expiry
    await source.token("room-1", "viewer", "v2")
    assert source.runs == 2
    assert TokenService(SECRET, "cherry-gateway", 60).verify(first).identity == "v1"


async def test_failing_token_command_says_how_it_failed() -> None:
    with pytest.raises(TokenError, match="exited with 3: no token service here"):
        await CommandTokenSource("sh -c 'echo no token service here >&2; exit 3'").token("r", "viewer")
    with pytest.raises(TokenError, match="printed no JWT"):
        await CommandTokenSource("echo hello").token("r", "viewer")
    with pytest.raises(TokenError, match="could not start"):
        await CommandTokenSource("/nonexistent/token-tool").token("r", "viewer")


async def test_dev_token_source_against_a_production_gateway_explains_what_to_give_instead() -> None:
    app = create_app(load_config(None, {"auth.secret": SECRET, "ice.hosts": ["127.0.0.1"]}))
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        source = DevTokenSource(str(server.make_url("/")), lambda: http)
        with pytest.raises(TokenError, match="not in --dev mode.*--secret-env NAME, --secret-file PATH or --token-"):
            await source.token("r", "viewer")


def test_token_settings_travel_to_child_processes_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_token_arguments(parser)
    for settings in (TokenSettings(secret_env="S", issuer="iss-x"), TokenSettings(command="tool --config a b.toml"),
                     TokenSettings(secret_file="/run/secret"), TokenSettings()):
        assert TokenSettings.from_args(parser.parse_args(settings.argv())) == settings
    monkeypatch.delenv("CHERRY_TEST_UNSET", raising=False)
    with pytest.raises(TokenError, match="--secret-env: environment variable CHERRY_TEST_UNSET is not set"):
        TokenSettings(secret_env="CHERRY_TEST_UNSET").check()
    with pytest.raises(TokenError, match="give only one token source"):
        TokenSettings(secret_env="A", command="tool").check()


def test_refusals_are_told_apart_from_other_failures_and_described_by_the_gateways_reason() -> None:
    whep = SignalingError(401, '{"error": {"code": "unauthorized", "message": "token expired"}}')
    socket = aiohttp.WSServerHandshakeError(None, (), status=403, message="Invalid response status")
    assert is_refusal(whep) and is_refusal(socket)
    assert not is_refusal(SignalingError(404, "room_not_live")) and not is_refusal(TimeoutError())
    assert describe_refusal("WHEP", whep) == "WHEP 401 unauthorized: token expired"
    assert describe_refusal("room socket", socket) == "room socket 403 forbidden"


# -- runs ---------------------------------------------------------------------------------------


def test_run_against_a_production_gateway_with_its_secret_gives_every_client_a_token(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, 'secret_env = "CHERRY_LOAD_GATEWAY_SECRET"')
    run = run_load("tokens", tmp_path / "out", "--gateway-config", str(config), "--secret-env", "CHERRY_LOAD_SECRET",
                   env={"CHERRY_LOAD_GATEWAY_SECRET": SECRET, "CHERRY_LOAD_SECRET": SECRET})
    assert run.code == 0 and run.summary["verdict"] == "PASS", run.explain()
    assert "dev=False" in (run.out / "gateway.log").read_text(), "the gateway ran in dev mode"
    summary = run.summary
    assert check(summary, "join_success")["passed"] and summary["overall"]["viewers_joined"] == 4, run.explain()
    assert check(summary, "publish_success", "hosts")["measured"] == 1.0, run.explain()  # WHIP: hosts
    assert summary["events"]["sockets"] == 2 and summary["events"]["chat_echoed"] > 0, summary["events"]  # chat
    assert summary["pk"]["battles"] >= 1, summary["pk"]  # the PK hosts' room sockets
    assert summary["setup_reasons"] == [], summary["setup_reasons"]


def test_wrong_secret_ends_the_run_as_a_setup_error_that_says_why(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, 'secret_env = "CHERRY_LOAD_GATEWAY_SECRET"')
    run = run_load("tiny", tmp_path / "out", "--gateway-config", str(config), "--secret-env", "CHERRY_LOAD_SECRET",
                   env={"CHERRY_LOAD_GATEWAY_SECRET": SECRET, "CHERRY_LOAD_SECRET": WRONG})
    assert run.code == 5 and run.summary["verdict"] == "SETUP", run.explain()
    (reason,) = run.summary["setup_reasons"]
    assert reason.startswith("tokens refused by the gateway: ") and "WHIP 401 unauthorized" in reason, reason
    assert "check --secret-env" in reason, reason
    assert "SETUP  tokens refused by the gateway" in run.output and "VERDICT: SETUP (exit code 5)" in run.output
    assert run.summary.get("ended_early"), "a refused token should end the run at once"


def test_failing_token_command_is_a_setup_error_before_anything_starts(tmp_path: Path) -> None:
    run = run_load("tiny", tmp_path / "out", "--token-command", "sh -c 'echo token service down >&2; exit 1'",
                   timeout=30)
    assert run.code == 5, run.explain()
    assert "SETUP: no tokens: token command" in run.output and "exited with 1: token service down" in run.output
    assert not (run.out / "gateway.log").exists(), "no gateway should start without tokens"
