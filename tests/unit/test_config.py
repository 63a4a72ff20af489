import dataclasses
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_run_in_dev_mode_without_a_file():
    config = load_config(None, {"dev": True})
    assert config.server.port == 8080 and config.ice.servers == () and config.ice.hosts == ()


def test_shipped_example_file_is_valid_and_matches_defaults():
    config = load_config(ROOT / "configs" / "gateway.toml", {"dev": True})
    assert config == load_config(None, {"dev": True})


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"media\.video_codec: unknown setting"):
        load_config(write(tmp_path, '[media]\nvideo_codec = ["VP8"]\n'), {"dev": True})


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^servers: unknown setting"):
        load_config(write(tmp_path, "[servers]\nport = 1\n"), {"dev": True})


@pytest.mark.parametrize("text, key", [
    ('[server]\nport = "80"\n', "server.port"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[media]\npacket_cache_size = 1000\n", "media.packet_cache_size"),
    ("[media]\npacket_cache_size = 16384\n", "media.packet_cache_size"),
    ('[media]\nvideo_codecs = ["H265"]\n', "media.video_codecs"),
    ('[[ice.servers]]\nurls = ["http://x"]\n', "ice.servers[0].urls"),
    ('[log]\nlevel = "loud"\n', "log.level"),
    ("[limits]\nmax_rooms = true\n", "limits.max_rooms"),
    ('[server]\ntrusted_proxies = ["10.0.0.0/33"]\n', "server.trusted_proxies[0]"),
    ('[limits]\noffer_limit_exempt = ["load-gen"]\n', "limits.offer_limit_exempt[0]"),
    ('[events]\nallowed_origins = ["https://app.example.com/path"]\n', "events.allowed_origins[0]"),
    ('[events]\nallowed_origins = ["app.example.com"]\n', "events.allowed_origins[0]"),
    ("[operations]\nport = 8080\n", "operations.port"),
    ("[operations]\nport = 70000\n", "operations.port"),
    ('[operations]\ntoken_env = "CHERRY_SURELY_UNSET_VARIABLE"\n', "operations.token_env"),
    ('[operations]\ntoken_file = "/nonexistent/ops-token"\n', "operations.token_file"),
    ("[snapshots]\ninterval_s = 0.5\n", "snapshots.interval_s"),
    ("[snapshots]\nwidth = 32\n", "snapshots.width"),
    ("[snapshots]\nwidth = 1920\n", "snapshots.width"),
    ("[snapshots]\nquality = 5\n", "snapshots.quality"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text), {"dev": True})


def test_secret_is_required_outside_dev_mode():
    with pytest.raises(ConfigError, match="auth.secret"):
        load_config(None, {})
    assert load_config(None, {"auth.secret": "x" * 32}).dev is False


def test_cli_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, '[server]\nport = 9000\n[ice]\nhosts = ["10.0.0.1"]\n')
    config = load_config(path, {"server.port": 9100, "ice.hosts": ["127.0.0.1"], "dev": True})
    assert config.server.port == 9100 and config.ice.hosts == ("127.0.0.1",)


def test_ice_servers_with_credentials_load(tmp_path):
    path = write(tmp_path, '[[ice.servers]]\nurls = ["turn:t.example:3478"]\nusername = "u"\ncredential = "p"\n')
    (server,) = load_config(path, {"dev": True}).ice.servers
    assert server.urls == ("turn:t.example:3478",) and server.credential == "p"


def test_sections_are_frozen_so_no_layer_keeps_a_diverging_copy():
    config = load_config(None, {"dev": True})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.media.packet_cache_size = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.limits = config.limits  # type: ignore[misc]


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["serve", "--config", str(write(tmp_path, "[nope]\n"))]) == 2
    assert "nope: unknown setting" in capsys.readouterr().err


def test_cli_token_prints_a_verifiable_token(tmp_path, capsys):
    from signaling.auth import TokenService

    path = write(tmp_path, '[auth]\nsecret = "0123456789abcdef0123456789abcdef"\n')
    assert main(["token", "--room", "r", "--role", "host", "--identity", "amy", "--config", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    grant = TokenService("0123456789abcdef0123456789abcdef", "cherry-gateway", 60).verify(token)
    assert (grant.room, grant.role, grant.identity) == ("r", "host", "amy")


SECRET = "0123456789abcdef0123456789abcdef"


def test_serve_exits_2_naming_a_secret_variable_that_is_not_set(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CHERRY_TEST_UNSET_SECRET", raising=False)
    path = write(tmp_path, '[auth]\nsecret_env = "CHERRY_TEST_UNSET_SECRET"\n')
    assert main(["serve", "--config", str(path)]) == 2
    assert "auth.secret_env: environment variable CHERRY_TEST_UNSET_SECRET is not set" in capsys.readouterr().err


def test_serve_exits_2_when_two_secret_sources_are_set(tmp_path, capsys):
    path = write(tmp_path, f'[auth]\nsecret = "{SECRET}"\nsecret_file = "/run/secrets/cherry"\n')
    assert main(["serve", "--config", str(path)]) == 2
    assert "auth.secret and auth.secret_file: set only one of" in capsys.readouterr().err


def test_max_ttl_below_default_ttl_is_an_error():
    with pytest.raises(ConfigError, match=r"auth\.max_ttl"):
        load_config(None, {"dev": True, "auth.max_ttl": 60})


def test_cli_token_reads_the_secret_from_the_environment(tmp_path, capsys, monkeypatch):
    from signaling.auth import TokenService

    monkeypatch.setenv("CHERRY_TEST_SECRET", SECRET)
    path = write(tmp_path, '[auth]\nsecret_env = "CHERRY_TEST_SECRET"\nissuer = "cherry-test"\n')
    assert main(["token", "--room", "r.1", "--role", "viewer", "--ttl", "60", "--config", str(path)]) == 0
    grant = TokenService(SECRET, "cherry-test", 60).verify(capsys.readouterr().out.strip())
    assert (grant.room, grant.role) == ("r.1", "viewer")


@pytest.mark.parametrize("args, message", [
    (["--ttl", "-5"], "--ttl: ttl must be from 1 to 86400 seconds"),
    (["--ttl", "0"], "--ttl: ttl must be from 1 to 86400 seconds"),
    (["--ttl", "86401"], "--ttl: ttl must be from 1 to 86400 seconds"),
    (["--room", "two words"], "--room: 'two words' is not a room name"),
    (["--room=.dot-first"], "--room: '.dot-first' is not a room name"),
    (["--room", "r" * 65], "is not a room name"),
    (["--identity", "i" * 129], "--identity: must be 1-128 characters, got 129"),
    (["--identity", ""], "--identity: must be 1-128 characters, got 0"),
    (["--name", "n" * 65], "--name: name must be at most 64 characters"),
    (["--name", "tab\there"], "--name: name must hold no control"),
])
def test_cli_token_refuses_bad_options_with_exit_code_2(tmp_path, capsys, args, message):
    path = write(tmp_path, f'[auth]\nsecret = "{SECRET}"\n')
    argv = ["token", "--room", "r", "--role", "host", "--config", str(path)]
    assert main(argv + args) == 2  # the last --room wins
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_cli_token_ttl_bound_follows_auth_max_ttl(tmp_path, capsys):
    path = write(tmp_path, f'[auth]\nsecret = "{SECRET}"\ndefault_ttl = 60\nmax_ttl = 600\n')
    assert main(["token", "--room", "r", "--role", "host", "--ttl", "600", "--config", str(path)]) == 0
    assert main(["token", "--room", "r", "--role", "host", "--ttl", "601", "--config", str(path)]) == 2
    assert "from 1 to 600 seconds" in capsys.readouterr().err


def test_cli_token_refuses_an_unknown_role(tmp_path, capsys):
    path = write(tmp_path, f'[auth]\nsecret = "{SECRET}"\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["token", "--room", "r", "--role", "king", "--config", str(path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'king'" in capsys.readouterr().err


def test_cli_token_without_a_configured_secret_says_so(tmp_path, capsys):
    assert main(["token", "--room", "r", "--role", "host"]) == 2
    assert "auth.secret: a secret is required" in capsys.readouterr().err
    dev = write(tmp_path, "dev = true\n")  # a dev gateway's per-run secret is unknowable from here
    assert main(["token", "--room", "r", "--role", "host", "--config", str(dev)]) == 2
    assert "no secret configured" in capsys.readouterr().err


def test_an_operations_token_must_be_long_enough(tmp_path, monkeypatch):
    monkeypatch.setenv("CHERRY_TEST_OPS_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(write(tmp_path, '[operations]\ntoken_env = "CHERRY_TEST_OPS_TOKEN"\n'), {"dev": True})
    (tmp_path / "token").write_text("a-long-enough-operations-token\n")
    config = load_config(write(tmp_path, f'[operations]\ntoken_file = "{tmp_path / "token"}"\n'), {"dev": True})
    assert config.operations.token_file


@pytest.mark.parametrize("url, ok", [
    ("", True), ("/api/live-token", True), ("https://app.example.com/live/token", True),
    ("http://127.0.0.1:9000/token", True), ("javascript:alert(1)", False), ("app.example.com/token", False),
    ("//evil.example/token", False), ("ftp://app.example.com/token", False),
])
def test_pages_token_url_is_a_path_here_or_an_http_url(tmp_path, url, ok):
    text = f'[pages]\ntoken_url = "{url}"\n'
    if ok:
        assert load_config(write(tmp_path, text), {"dev": True}).pages.token_url == url
    else:
        with pytest.raises(ConfigError, match=r"pages\.token_url"):
            load_config(write(tmp_path, text), {"dev": True})


def test_a_token_url_of_another_origin_joins_the_pages_connect_src_and_nothing_else():
    from gateway.security import PAGE_POLICY, page_policy

    assert page_policy("") == page_policy("/api/token") == PAGE_POLICY
    policy = page_policy("https://app.example.com:8443/live/token?x=1")
    assert "connect-src 'self' https://app.example.com:8443;" in policy
    assert policy.replace(" https://app.example.com:8443", "") == PAGE_POLICY
