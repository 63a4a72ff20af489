"""Workers of one host, piece by piece: the media port range (real sockets, a real aioice agent), admission
on it, the supervisor's restart delays, ``--workers``, the dev secret the workers share, and their log tag."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import aioice
import pytest

from aiortc_bridge.ice import pin_ice_hosts, port_pool, use_any_port, use_port_range
from aiortc_bridge.udp_ports import UdpPortPool
from gateway.cli import _parser, main
from gateway.logs import JsonFormatter, TextFormatter
from gateway.supervisor import RestartPolicy
from loadtests.webrtc.process import free_port_range
from relay.admission import Admission
from relay.config import LimitsConfig
from relay.errors import CapacityExceeded
from relay.session import SessionRegistry
from signaling.auth import DEV_SECRET_ENV, SecretError, resolve_secrets
from signaling.config import AuthConfig

SHARED = "shared-dev-secret-0123456789abcdef-xyz"


@pytest.fixture
def port_range() -> tuple[int, int]:
    return free_port_range(3)


# -- the pool ---------------------------------------------------------------------------------------------


def test_pool_binds_every_port_of_its_range_once_then_refuses(port_range):
    first, last = port_range
    pool = UdpPortPool(first, last)
    socks = [pool.bind("127.0.0.1") for _ in range(3)]
    try:
        assert sorted(s.getsockname()[1] for s in socks) == [first, first + 1, last]
        assert (pool.free(), pool.in_use) == (0, 3)
        with pytest.raises(OSError, match=f"no free UDP port in {first}-{last}"):
            pool.bind("127.0.0.1")
        # A freed port is the one the next bind takes.
        freed = socks.pop(1)
        port = freed.getsockname()[1]
        freed.close()
        pool.release(port)
        assert pool.free() == 1
        socks.append(pool.bind("127.0.0.1"))
        assert socks[-1].getsockname()[1] == port
    finally:
        for s in socks:
            s.close()


def test_pool_skips_a_port_another_program_holds(port_range):
    first, last = port_range
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", first))
    pool = UdpPortPool(first, last)
    try:
        sock = pool.bind("127.0.0.1")
        assert sock.getsockname()[1] == first + 1
        sock.close()
    finally:
        other.close()


def test_pool_hands_out_ports_round_robin_so_a_just_freed_port_waits(port_range):
    first, last = port_range
    pool = UdpPortPool(first, last)
    a = pool.bind("127.0.0.1")
    a.close()
    pool.release(first)
    b = pool.bind("127.0.0.1")  # the range has others free: not the port a's peer may still send to
    assert b.getsockname()[1] == first + 1
    b.close()


def test_a_reservation_counts_until_it_ends(port_range):
    pool = UdpPortPool(*port_range)
    with pool.reserve(2):
        assert pool.free() == 1
    assert pool.free() == 3


# -- aioice through the range -----------------------------------------------------------------------------


@pytest.fixture
def pinned_range(port_range: tuple[int, int]) -> Iterator[UdpPortPool]:
    pin_ice_hosts(["127.0.0.1"])
    pool = use_port_range(*port_range)
    yield pool
    use_any_port()
    pin_ice_hosts([])


async def test_aioice_host_candidates_bind_in_the_range_and_free_their_port_on_close(pinned_range):
    pool = pinned_range
    connections = [aioice.Connection(ice_controlling=True) for _ in range(2)]
    for conn in connections:
        await conn.gather_candidates()
    ports = [c.port for conn in connections for c in conn.local_candidates]
    assert len(ports) == 2 and all(pool.first <= p <= pool.last for p in ports), ports
    assert pool.in_use == 2
    await connections[0].close()
    assert pool.in_use == 1  # the transport is closed once close() returns
    await connections[1].close()
    assert pool.in_use == 0 and port_pool() is pool


async def test_without_a_range_aioice_binds_ephemeral_ports_as_before():
    pin_ice_hosts(["127.0.0.1"])
    try:
        conn = aioice.Connection(ice_controlling=True)
        await conn.gather_candidates()
        (candidate,) = conn.local_candidates
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
        assert low <= candidate.port <= high  # the kernel chose it
        await conn.close()
    finally:
        pin_ice_hosts([])
    assert port_pool() is None


# -- admission --------------------------------------------------------------------------------------------


def test_admission_refuses_a_session_the_range_has_no_ports_for_and_holds_them_while_it_negotiates(port_range):
    pool = UdpPortPool(*port_range)
    admission = Admission(LimitsConfig(), lambda: 0, media_ports=lambda: pool, ports_per_session=lambda: 2)
    with admission.media_ports():
        assert pool.free() == 1  # held for the negotiating session
        with pytest.raises(CapacityExceeded, match="no free media ports"), admission.media_ports():
            pass
    assert admission.refused["media_ports"] == 1
    assert pool.free() == 3
    with admission.media_ports():  # two of three free again: taken
        pass


def test_admission_without_a_range_never_refuses_for_ports():
    admission = Admission(LimitsConfig(), lambda: 0)
    with admission.media_ports():
        pass
    assert admission.refused["media_ports"] == 0


# -- the supervisor's restart delays --------------------------------------------------------------------


def test_a_worker_that_keeps_dying_young_waits_longer_each_time_and_one_that_ran_well_restarts_at_once():
    policy = RestartPolicy(first_s=0.5, max_s=4.0, stable_s=10.0)
    assert [policy.delay(n) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


# -- the CLI ----------------------------------------------------------------------------------------------


def test_workers_flag_takes_a_count_or_auto():
    parse = _parser().parse_args
    assert parse(["serve", "--workers", "3"]).workers == 3
    assert parse(["serve", "--workers", "auto"]).workers == len(os.sched_getaffinity(0))
    assert parse(["serve"]).workers is None  # cluster.workers from the config (default 1)
    for bad in ("0", "-1", "many"):
        with pytest.raises(SystemExit):
            parse(["serve", "--workers", bad])


def test_several_workers_without_redis_exit_2_naming_the_setting(capsys):
    assert main(["serve", "--dev", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "cluster.redis_url" in err and "2 workers share rooms through Redis" in err, err


def test_a_worker_index_outside_the_workers_is_refused(capsys):
    assert main(["serve", "--dev", "--workers", "2", "--redis-url", "redis://127.0.0.1:1/0",
                 "--worker-index", "2"]) == 2
    assert "--worker-index must be 0-1" in capsys.readouterr().err


# -- the dev secret the workers of a host share ---------------------------------------------------------


def test_dev_workers_share_the_supervisors_secret():
    env = {DEV_SECRET_ENV: SHARED}
    first, second = resolve_secrets(AuthConfig(), True, env), resolve_secrets(AuthConfig(), True, env)
    assert first.current == second.current == SHARED and first.generated


def test_the_shared_dev_secret_is_ignored_outside_dev_mode_and_under_a_configured_secret():
    env = {DEV_SECRET_ENV: SHARED}
    with pytest.raises(SecretError, match="a secret is required outside --dev"):
        resolve_secrets(AuthConfig(), False, env)
    assert resolve_secrets(AuthConfig(secret="configured"), True, env).current == "configured"


def test_a_short_shared_dev_secret_is_refused():
    with pytest.raises(SecretError, match=DEV_SECRET_ENV):
        resolve_secrets(AuthConfig(), True, {DEV_SECRET_ENV: "short"})


# -- log lines name their worker ------------------------------------------------------------------------


def test_log_lines_name_the_worker_in_text_and_json():
    record = logging.LogRecord("cherry.gateway", logging.INFO, __file__, 1, "room=r1 hello", None, None)
    assert " worker=node-w1 room=r1 hello" in TextFormatter("node-w1").format(record)
    assert "worker=" not in TextFormatter().format(record)
    assert json.loads(JsonFormatter("node-w1").format(record))["worker"] == "node-w1"
    assert "worker" not in json.loads(JsonFormatter().format(record))


def test_pipes_to_edges_count_with_viewers_against_a_workers_forwarding_capacity():
    @dataclass
    class Stub:
        session_id: str
        kind: str

    sessions = SessionRegistry()
    for i, kind in enumerate(("playback", "playback", "pipe", "ingest")):
        sessions.add(Stub(str(i), kind))  # type: ignore[arg-type]
    assert (sessions.playback, sessions.pipes, sessions.forwarding) == (2, 1, 3)
    sessions.remove(Stub("2", "pipe"))  # type: ignore[arg-type]
    sessions.remove(Stub("2", "pipe"))  # type: ignore[arg-type]  # twice: counted once
    assert (sessions.playback, sessions.pipes, sessions.forwarding) == (2, 0, 2)
