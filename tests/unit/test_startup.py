"""The start-up report (gateway/startup.py): what a newcomer is told, for the machines they may be on."""

from __future__ import annotations

from gateway.config import load_config
from gateway.startup import offers_loopback, startup_report

SECRET = {"auth.secret": "s" * 32}


def test_make_run_on_a_laptop_with_a_network() -> None:
    config = load_config(None, {"dev": True})
    assert offers_loopback(config)
    report = startup_report(config, ["192.168.1.20", "127.0.0.1"], ["192.168.1.20"])
    assert report.lines[0].startswith("open http://127.0.0.1:8080/ : go live at http://127.0.0.1:8080/broadcast?room=")
    assert "dashboard: http://127.0.0.1:8080/dashboard" in report.lines
    assert any("offered on 192.168.1.20, 127.0.0.1 (any free UDP port)" in line for line in report.lines)
    assert report.warnings == []


def test_an_offline_machine_is_told_why_its_browser_cannot_connect_and_how_to_fix_it() -> None:
    report = startup_report(load_config(None, {"dev": True}), ["127.0.0.1"], [])
    (warning,) = report.warnings
    assert "no network address besides loopback" in warning
    for fix in ("--ice-host", "--allow-loopback-in-peer-connection", "media.peerconnection.ice.loopback"):
        assert fix in warning


def test_pages_served_to_other_machines_over_plain_http_warn_about_the_camera_and_loopback_ice() -> None:
    config = load_config(None, {"dev": True, "server.host": "0.0.0.0", "ice.hosts": ["127.0.0.1"]})
    assert not offers_loopback(config)
    report = startup_report(config, ["127.0.0.1"], ["10.0.0.5"])
    assert any("camera only to https://" in w for w in report.warnings)
    assert any("ICE offers only loopback" in w for w in report.warnings)
    https = load_config(None, {"dev": True, "server.host": "0.0.0.0", "server.public_url": "https://live.example.com"})
    report = startup_report(https, ["10.0.0.5"], ["10.0.0.5"], (40000, 40099))
    assert report.warnings == [] and report.lines[0].startswith("open https://live.example.com/ ")
    assert any("(UDP 40000-40099)" in line for line in report.lines)


def test_no_ice_address_at_all_is_a_warning() -> None:
    report = startup_report(load_config(None, {"dev": True, "server.host": "0.0.0.0"}), [], [])
    assert any("ICE offers no address" in w for w in report.warnings)


def test_where_the_dashboard_is_follows_the_operations_settings() -> None:
    production = load_config(None, SECRET)
    assert any(line.startswith("dashboard: off: set operations.port") for line in startup_report(
        production, ["10.0.0.5"], ["10.0.0.5"]).lines)
    assert any("tokens: your app's backend mints them" in line for line in startup_report(
        production, ["10.0.0.5"], ["10.0.0.5"]).lines)
    separate = load_config(None, {**SECRET, "operations.port": 9100})
    assert "dashboard: http://127.0.0.1:9100/dashboard (operations listener; worker i: port + i)" in startup_report(
        separate, ["10.0.0.5"], ["10.0.0.5"]).lines
