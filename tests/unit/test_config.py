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
    ('[media]\nvideo_codecs = ["H265"]\n', "media.video_codecs"),
    ('[[ice.servers]]\nurls = ["http://x"]\n', "ice.servers[0].urls"),
    ('[log]\nlevel = "loud"\n', "log.level"),
    ("[limits]\nmax_rooms = true\n", "limits.max_rooms"),
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
