"""Several workers on one host: real supervisor and worker processes, a real redis-server, 127.0.0.1 only.

Public WHIP/WHEP of a room works end to end only on the worker that holds it until signaling forwards
between workers, so media here is checked per answering worker (its candidates) or on one worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from gateway.supervisor import RestartPolicy, Supervisor
from loadtests.webrtc.process import RedisServer, free_port_range
from tests.cluster import WORKER_HEADER, answering_workers, worker_pids
from tests.integration.conftest import ROOT, GatewayProcess, dev_token
from tests.integration.peers import answer_ports, post_sdp
from tests.integration.test_errors import expect_error, offer_sdp
from tests.integration.test_operations import eventually, metrics, value

T = TypeVar("T")
NODE = "test-node"
IDS = {f"{NODE}-w0", f"{NODE}-w1"}


def cluster_config(udp: tuple[int, int] | None = None, extra: str = "") -> str:
    ports = f"udp_port_min = {udp[0]}\nudp_port_max = {udp[1]}\n" if udp else ""
    internal = free_port_range(2, kind=socket.SOCK_STREAM)[0]  # each worker's internal API: a port of its own
    return f'[cluster]\nnode_id = "{NODE}"\nadvertise_url = "http://127.0.0.1:{internal}"\n{ports}{extra}'


@pytest.fixture(scope="module")
def udp_ports() -> tuple[int, int]:
    return free_port_range(4)  # two per worker


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, udp_ports: tuple[int, int],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # Sessions the tests open never connect: they end (and free their ports) after this.
    config = cluster_config(udp_ports) + "\n[rooms]\nconnect_timeout_s = 5.0\n"
    proc = GatewayProcess(["--workers", "2", "--redis-url", redis_server.url], config,
                          tmp_path_factory.mktemp("gw-workers"))
    yield proc
    proc.stop()


async def within(future: Awaitable[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise AssertionError(f"{what} within {timeout} s") from None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_answer_on_the_one_public_port(cluster):
    seen = await answering_workers(cluster.base + "/healthz", IDS)
    assert seen == {worker: 200 for worker in IDS}
    assert sorted(worker_pids(cluster.proc.pid)) == [0, 1]


async def test_a_dev_token_from_one_worker_verifies_on_the_other(cluster, http):
    token = await dev_token(http, cluster.base, "any", "admin")  # minted by whichever worker answered
    seen = await answering_workers(cluster.base + "/api/stats", IDS, headers={"Authorization": f"Bearer {token}"})
    assert seen == {worker: 200 for worker in IDS}  # 401 on the other worker if each had its own secret


async def test_each_workers_media_candidates_fall_within_its_own_udp_slice(cluster, udp_ports):
    first = udp_ports[0]
    slices = {f"{NODE}-w0": (first, first + 1), f"{NODE}-w1": (first + 2, first + 3)}
    offer = await offer_sdp()
    answered: dict[str, list[int]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for i in range(24):  # a new connection per offer: the kernel picks the worker
            token = await dev_token(http, cluster.base, f"slice{i}", "host")
            status, body, headers = await post_sdp(http, f"{cluster.base}/whip/slice{i}", token, offer)
            worker = headers[WORKER_HEADER]
            if status == 503 and len(answered.get(worker, [])) == 2:
                continue  # both of that worker's ports hold earlier sessions
            assert status == 201, f"{worker}: {status} {body}"
            low, high = slices[worker]
            ports = answer_ports(body)
            assert len(ports) == 1 and low <= ports[0] <= high, f"{worker} answered on {ports}, not {low}-{high}"
            answered.setdefault(worker, []).extend(ports)
            if answered.keys() == IDS:
                break
    assert answered.keys() == IDS, f"only {sorted(answered)} answered offers"


async def test_a_killed_worker_is_started_again_and_answers_again(cluster):
    before = worker_pids(cluster.proc.pid)
    os.kill(before[1], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (now := worker_pids(cluster.proc.pid)).get(1) in (None, before[1]):
        assert time.monotonic() < deadline, f"worker 1 was not started again: {now}\n{cluster.log()}"
        await asyncio.sleep(0.05)  # another process's children: /proc is all there is to watch
    assert now[0] == before[0]  # the other worker went on
    await answering_workers(cluster.base + "/healthz", IDS)
    assert "worker 1 exited unexpectedly (-9)" in cluster.log()


async def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(redis_server, tmp_path):
    gateway = GatewayProcess(["--workers", "2", "--redis-url", redis_server.url], cluster_config(), tmp_path)
    try:
        await answering_workers(gateway.base + "/healthz", IDS)
        pids = worker_pids(gateway.proc.pid)
        assert len(pids) == 2
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(gateway.proc.wait, 20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the supervisor did not exit within 20 s of SIGTERM:\n{gateway.log()}") from None
        assert code == 0, gateway.log()
        assert not [pid for pid in pids.values() if alive(pid)]
        log = gateway.log()
        for worker in IDS:  # each drained, rather than being killed
            assert f"worker={worker} drain complete" in log, log
    finally:
        gateway.stop()


def test_several_workers_without_redis_exit_2_with_the_reason():
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--dev", "--workers", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done
    assert "cluster.redis_url: 2 workers share rooms through Redis: set cluster.redis_url" in done.stderr


async def test_an_exhausted_port_range_answers_503_capacity_and_a_freed_port_is_taken_again(tmp_path, http):
    first, last = free_port_range(2)
    config = cluster_config((first, last), "\n[limits]\nretry_after = 2\n")
    gateway = GatewayProcess([], config, tmp_path)  # one worker, no Redis: the range is all its own
    offer = await offer_sdp()

    async def publish(room: str) -> tuple[int, str, str, list[int]]:
        token = await dev_token(http, gateway.base, room, "host")
        status, body, headers = await post_sdp(http, f"{gateway.base}/whip/{room}", token, offer)
        return status, token, headers.get("Location", ""), answer_ports(body) if status == 201 else []

    try:
        opened = [await publish(room) for room in ("p1", "p2")]
        assert [s for s, *_ in opened] == [201, 201], opened
        assert sorted(p for *_, ports in opened for p in ports) == [first, last]  # one port each, in the range
        token = await dev_token(http, gateway.base, "p3", "host")
        headers = await expect_error(await post_sdp(http, f"{gateway.base}/whip/p3", token, offer), 503, "capacity")
        assert headers["Retry-After"] == "2"
        samples = await metrics(http, gateway.base)
        assert value(samples, "cherry_admission_refused_total", reason="media_ports") == 1
        assert value(samples, "cherry_media_ports", state="free") == 0

        _, token1, location1, ports1 = opened.pop(0)
        async with http.delete(gateway.base + location1, headers={"Authorization": f"Bearer {token1}"}) as r:
            assert r.status == 200
        # The port comes back once the session's socket has closed, a moment after the DELETE.
        async def port_free() -> bool | None:
            return value(await metrics(http, gateway.base), "cherry_media_ports", state="free") == 1 or None

        await eventually(port_free, 5, "the DELETEd session's port was never freed")
        status, *_, ports = again = await publish("p3")
        assert status == 201 and ports == ports1, again
        opened.append(again)
    finally:
        for _, token, location, _ in opened:
            async with http.delete(gateway.base + location, headers={"Authorization": f"Bearer {token}"}):
                pass
        gateway.stop()


# -- the supervisor with stand-in workers (tiny real processes: what it does with them, fast) ------------

STARTS = "import sys, time; open(sys.argv[1], 'a').write(f'{time.monotonic()}\\n')"
CRASH = STARTS + "; raise SystemExit(3)"
# Ignores SIGTERM before it reports its start: a signal sent once it is seen finds the handler in place.
STUBBORN = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + STARTS + "; time.sleep(60)"


def starts(path: Path) -> list[float]:
    return [float(line) for line in path.read_text().split()] if path.exists() else []


async def wait_starts(path: Path, count: int, timeout: float = 10) -> list[float]:
    deadline = time.monotonic() + timeout
    while len(seen := starts(path)) < count:
        assert time.monotonic() < deadline, f"{len(seen)} worker starts, not {count}"
        await asyncio.sleep(0.02)  # stand-in processes report through a file: nothing to await
    return seen


def stand_in(script: str, path: Path) -> Callable[[int], list[str]]:
    return lambda index: [sys.executable, "-c", script, str(path)]


async def test_a_worker_that_crashes_at_start_is_started_again_later_each_time_not_in_a_loop(tmp_path):
    log = tmp_path / "starts"
    supervisor = Supervisor(1, stand_in(CRASH, log), os.environ,
                            policy=RestartPolicy(first_s=0.1, max_s=0.4, stable_s=10))
    run = asyncio.ensure_future(supervisor.run())
    try:
        times = await wait_starts(log, 5)
    finally:
        supervisor.terminate()
        assert await within(run, 5, "the supervisor did not stop") == 0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, delay in zip(gaps, (0.1, 0.2, 0.4, 0.4), strict=False):
        assert gap >= delay, gaps


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT,)],
                         ids=["sigterm-twice", "sigint"])
async def test_a_second_sigterm_or_a_sigint_kills_workers_that_do_not_stop(tmp_path, signals):
    log = tmp_path / "starts"
    supervisor = Supervisor(2, stand_in(STUBBORN, log), os.environ, stop_timeout=60)
    run = asyncio.ensure_future(supervisor.run())
    try:
        await wait_starts(log, 2)
        first, *second = signals
        os.kill(os.getpid(), first)  # to this process: the supervisor's own signal handlers
        deadline = time.monotonic() + 5
        while not supervisor.stopping:  # handled before the next is sent (two pending SIGTERMs would merge)
            assert time.monotonic() < deadline, "the supervisor never saw the signal"
            await asyncio.sleep(0.01)
        if second:
            with pytest.raises(TimeoutError):  # one SIGTERM: it waits for them to drain
                await asyncio.wait_for(asyncio.shield(run), 0.3)
            os.kill(os.getpid(), second[0])
        assert await within(run, 5, "the supervisor did not end its workers") == 1  # only SIGKILL ends them
        assert [p.returncode for p in supervisor.workers.values()] == [-signal.SIGKILL] * 2
    finally:
        supervisor.kill()
        await asyncio.wait_for(run, 5)


async def test_in_dev_mode_a_hang_up_stops_everything_instead_of_reloading(tmp_path):
    """A closed terminal must end `make cluster`, not leave it holding the port (dev workers do not reload)."""
    log = tmp_path / "starts"
    supervisor = Supervisor(2, stand_in(STUBBORN, log), os.environ, stop_timeout=60, reloads=False)
    run = asyncio.ensure_future(supervisor.run())
    try:
        await wait_starts(log, 2)
        os.kill(os.getpid(), signal.SIGHUP)  # to this process: the supervisor's own signal handlers
        assert await within(run, 5, "a hang-up did not stop the supervisor") == 1
        assert [p.returncode for p in supervisor.workers.values()] == [-signal.SIGKILL] * 2
    finally:
        supervisor.kill()
        await asyncio.wait_for(run, 5)


async def test_workers_that_outlast_the_stop_timeout_are_killed(tmp_path):
    log = tmp_path / "starts"
    supervisor = Supervisor(1, stand_in(STUBBORN, log), os.environ, stop_timeout=0.3)
    run = asyncio.ensure_future(supervisor.run())
    try:
        await wait_starts(log, 1)
        supervisor.terminate()
        assert await within(run, 5, "the stop timeout did not end the worker") == 1
        assert supervisor.workers[0].returncode == -signal.SIGKILL
    finally:
        supervisor.kill()
        await asyncio.wait_for(run, 5)


async def test_workers_stop_when_their_supervisor_is_killed(redis_server, tmp_path):
    gateway = GatewayProcess(["--workers", "2", "--redis-url", redis_server.url], cluster_config(), tmp_path)
    pids: dict[int, int] = {}
    try:
        await answering_workers(gateway.base + "/healthz", IDS)
        pids = worker_pids(gateway.proc.pid)
        gateway.proc.kill()
        deadline = time.monotonic() + 10
        while left := [pid for pid in pids.values() if alive(pid)]:
            assert time.monotonic() < deadline, f"workers {left} outlived their supervisor"
            await asyncio.sleep(0.05)  # no longer anyone's children here: /proc is all there is
    finally:
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        gateway.stop()
