"""The benchmark: gateway vs the naive MediaRelay baseline, same load, same run.

``python -m bench.run`` (``make bench``) runs, each in its own process and on
127.0.0.1 only: the server under test, one synthetic host (pre-encoded VP8 +
Opus over WHIP) and 1-2 processes of non-decoding WHEP viewers. For the
gateway it measures idle-with-host, then N = 10, 50, 100, 200, 300 viewers;
for the baseline N = 1, 2, 4, 8, 12 while it keeps up. Each step joins
viewers, warms up, then measures a watch window: server CPU from /proc
(utime+stime of its process tree), RSS, the viewers' TTFF and stutter, the
gateway's own forwarding delay. A step whose viewer process used > 90 % of a
core, or with the whole machine > 95 % busy, is invalid (a starved generator
reports stutter the server did not cause) and ends the series. Results: a
table on stdout and ``bench/results/bench.json``.

The whole run is bounded (``--deadline``, default 1080 s) and every child is
killed by pid at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat, report
from bench.children import Child, ChildExited
from loadtests.webrtc.process import free_port, wait_healthy_async
from loadtests.webrtc.signaling_client import SignalingError, fetch_dev_token

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GATEWAY_CONFIG = ROOT / "bench" / "gateway-bench.toml"
ROOM = "bench"
ICE_HOST = "127.0.0.1"
JOIN_TIMEOUT = 90.0  # seconds for one join request to a viewer process (many viewers, a few at a time)


PK_VIEWERS_PER_ROOM = 25


@dataclass(slots=True)
class Settings:
    steps: tuple[int, ...] = (10, 50, 100, 200, 300)
    baseline_steps: tuple[int, ...] = (1, 2, 4, 8, 12)
    warmup: float = 3.0
    watch: float = 10.0
    idle_watch: float = 5.0
    viewer_procs: int = 2
    deadline: float = 1080.0
    targets: tuple[str, ...] = ("gateway", "baseline", "events", "pk", "floor", "ttff", "scaling")
    output: Path = RESULTS / "bench.json"
    # The scaling figure (bench/scaling.py): viewer counts N1, N2 and the origin's own viewers in origin + edge.
    scaling_counts: tuple[int, ...] = (20, 60)
    scaling_origin_viewers: int = 10
    scaling_layouts: tuple[str, ...] = ("single", "worker", "workers2", "origin_edge", "single")
    # The floor step (bench/floor_step.py): the floor forwarder, then the gateway, at these viewer counts.
    floor_steps: tuple[int, ...] = (10, 50, 100)
    # The TTFF step (bench/ttff.py): joiners at a steady rate and in one burst, per host keyframe interval
    # (seconds; 0: keyframes only on PLI/FIR).
    ttff_joiners: int = 50
    ttff_rate: float = 5.0
    ttff_burst: int = 20
    ttff_intervals: tuple[float, ...] = (1.0, 2.0, 0.0)


@dataclass(slots=True)
class Reading:
    """Cumulative counters at one instant."""

    at: float
    server_cpu: float
    viewer_cpu: list[float]
    host_cpu: float
    machine: procstat.MachineCpu
    extra_cpu: dict[str, float] = field(default_factory=dict)  # measured apart (e.g. redis-server)
    server_parts: list[float] = field(default_factory=list)  # server_cpu by process tree (nodes of a cluster)


@dataclass(slots=True)
class Fleet:
    """The children of one target's run; :meth:`stop_all` kills them in reverse order."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    async def spawn(self, name: str, argv: Sequence[str]) -> Child:
        child = Child(name, argv, self.log_dir, ROOT)
        self.children.append(child)
        await child.start()
        return child

    async def stop_all(self) -> None:
        for child in reversed(self.children):
            await child.stop()


@contextlib.asynccontextmanager
async def fleet(log_dir: Path) -> AsyncIterator[Fleet]:
    group = Fleet(log_dir)
    try:
        yield group
    finally:
        # Shielded so that a cancellation (Ctrl-C, deadline) still waits for every child to be gone.
        await asyncio.shield(group.stop_all())


def gateway_available() -> bool:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--help"],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def server_argv(target: str, port: int) -> list[str]:
    if target == "gateway":
        return [sys.executable, "-m", "gateway", "serve", "--host", ICE_HOST, "--port", str(port)]
    if target == "floor":
        return [sys.executable, "-m", "bench.floor", "--host", ICE_HOST, "--port", str(port)]
    return [sys.executable, "-m", "bench.baseline", "--host", ICE_HOST, "--port", str(port)]


def _server_extra(target: str) -> list[str]:
    if target != "gateway":
        return ["--ice-host", ICE_HOST]
    # All load comes from 127.0.0.1, where a real audience has one address per viewer: lift the
    # per-address offer rate limit (documented in configs/gateway.toml) so it does not pace joins.
    return ["--ice-host", ICE_HOST, "--dev", "--config", str(GATEWAY_CONFIG)]


async def wait_healthy(base_url: str, server: Child, timeout: float) -> None:
    """Poll /healthz: the server offers no other readiness signal to await."""

    def returncode() -> int | None:
        return server.process.returncode if server.process is not None else None

    await wait_healthy_async(base_url, timeout, returncode, what=f"{server.name} (log: {server.log_path})")


async def start_gateway(name: str, config: Path, log_dir: Path) -> tuple[Child, str]:
    """A gateway child process on a free port of 127.0.0.1 (ICE pinned there too), once healthy."""
    port = free_port()
    base = f"http://{ICE_HOST}:{port}"
    gateway = Child(name, [sys.executable, "-m", "gateway", "serve", "--host", ICE_HOST, "--port", str(port),
                           "--ice-host", ICE_HOST, "--dev", "--config", str(config), "--log-level", "warning"],
                    log_dir, ROOT)
    await gateway.start()
    await wait_healthy(base, gateway, 30)
    return gateway, base


async def fetch_stats(http: aiohttp.ClientSession, base_url: str, window: float | None = None) -> dict[str, Any] | None:
    """GET /api/stats with an admin dev token (delay percentiles over the last ``window`` s); None if absent."""
    try:
        try:
            token: str | None = await fetch_dev_token(http, base_url, ROOM, "admin")
        except SignalingError:
            token = None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"window": f"{window:.1f}"} if window else {}
        async with http.get(f"{base_url}/api/stats", headers=headers, params=params) as response:
            if response.status != 200:
                return None
            body = await response.json()
            return body if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


class TargetRun:
    """One server under test with its host and viewer processes."""

    def __init__(self, target: str, settings: Settings, group: Fleet, http: aiohttp.ClientSession,
                 label: str | None = None) -> None:
        self.target = target
        self.label = label or target  # child and log names
        self.settings = settings
        self.group = group
        self.http = http
        self.port = free_port()
        self.base_url = f"http://{ICE_HOST}:{self.port}"
        self.server: Child | None = None
        self.host: Child | None = None
        self.viewers: list[Child] = []
        self.viewer_counts: list[int] = []

    async def start(self) -> dict[str, Any]:
        self.server = await self.group.spawn(
            self.label, server_argv(self.target, self.port) + _server_extra(self.target)
        )
        await wait_healthy(self.base_url, self.server, timeout=30)
        published = await self.start_host(self.base_url)
        await self.start_viewers(self.base_url)
        return {"host_setup_ms": report.rounded(published.get("setup_ms"), 1)}

    async def start_host(self, base_url: str) -> dict[str, Any]:
        """The synthetic host, publishing to ``base_url``: its ``publishing`` message."""
        self.host = await self.group.spawn(
            f"{self.label}-host",
            [sys.executable, "-m", "loadtests.webrtc.synthetic_host", "--base-url", base_url]
            + ["--room", ROOM, "--ice-host", ICE_HOST],
        )
        published = await self.host.next_message(lambda m: m.get("event") in ("publishing", "failed"), 60)
        if published["event"] != "publishing":
            raise RuntimeError(f"host could not publish: {published.get('error')}")
        return published

    async def start_viewers(self, base_url: str) -> None:
        """``settings.viewer_procs`` viewer processes (no viewers yet) whose offers go to ``base_url``."""
        for index in range(self.settings.viewer_procs):
            self.viewers.append(
                await self.group.spawn(
                    f"{self.label}-viewers-{index}",
                    [sys.executable, "-m", "loadtests.webrtc.viewer", "--serve", "--base-url", base_url]
                    + ["--room", ROOM, "--ice-host", ICE_HOST],
                )
            )
            self.viewer_counts.append(0)

    def server_cpu_parts(self) -> list[float]:
        """utime+stime of everything under test, by part (here one: the server's process tree)."""
        assert self.server is not None
        return [procstat.tree_cpu_seconds(self.server.pid)]

    def server_rss(self) -> int:
        assert self.server is not None
        return procstat.tree_rss_bytes(self.server.pid)

    def extra_cpu(self) -> dict[str, float]:
        """CPU of helpers measured apart from the server and the load generator (none here)."""
        return {}

    def read(self) -> Reading:
        assert self.host is not None
        parts = self.server_cpu_parts()
        return Reading(
            time.monotonic(),
            sum(parts),
            [procstat.cpu_seconds(v.pid) for v in self.viewers],
            procstat.cpu_seconds(self.host.pid),
            procstat.MachineCpu.read(),
            self.extra_cpu(),
            parts,
        )

    async def join(self, total: int) -> dict[str, Any]:
        """Bring the viewer count up to ``total``, spreading new viewers over the processes."""
        plan = list(self.viewer_counts)
        for _ in range(total - sum(plan)):
            plan[plan.index(min(plan))] += 1
        requests = [
            proc.request({"op": "join", "count": want - have}, JOIN_TIMEOUT)
            for proc, want, have in zip(self.viewers, plan, self.viewer_counts, strict=True)
            if want > have
        ]
        joins = await asyncio.gather(*requests)
        self.viewer_counts = plan
        return report.pooled_joins(joins)

    async def window(self, seconds: float) -> dict[str, Any]:
        """Measure one watch window of ``seconds``."""
        await asyncio.gather(*(v.request({"op": "mark"}, 10) for v in self.viewers))
        start = self.read()
        await asyncio.sleep(seconds)  # the measurement interval itself
        end = self.read()
        reports = await asyncio.gather(*(v.request({"op": "report"}, 10) for v in self.viewers))
        wall = end.at - start.at
        stats = await fetch_stats(self.http, self.base_url, wall)
        viewer_core = [(b - a) / wall for a, b in zip(start.viewer_cpu, end.viewer_cpu, strict=True)]
        server_core = (end.server_cpu - start.server_cpu) / wall
        host_core = (end.host_cpu - start.host_cpu) / wall
        machine_cores = end.machine.busy_fraction_since(start.machine) * (os.cpu_count() or 1)
        extra = {name: end.extra_cpu[name] - start.extra_cpu.get(name, 0.0) for name in end.extra_cpu}
        # Load outside the measured processes (other programs, kernel softirq for loopback traffic, the bench).
        background = machine_cores - server_core - host_core - sum(viewer_core) - sum(extra.values()) / wall
        return {
            "wall_s": wall,
            "server_cpu_s": end.server_cpu - start.server_cpu,
            "extra_cpu_s": extra,
            "server_parts_cpu_s": [b - a for a, b in zip(start.server_parts, end.server_parts, strict=True)],
            "host_cpu_s": end.host_cpu - start.host_cpu,
            "server_rss": self.server_rss(),
            "server_core_pct": report.rounded(server_core * 100, 1),
            "host_core_pct": report.rounded(host_core * 100, 1),
            "background_core_pct": report.rounded(max(0.0, background) * 100, 1),
            "viewer_proc_core_pct": [report.rounded(c * 100, 1) for c in viewer_core],
            "viewer_proc_core_pct_max": report.rounded(max(viewer_core, default=0.0) * 100, 1),
            "viewer_cpu_s": sum(b - a for a, b in zip(start.viewer_cpu, end.viewer_cpu, strict=True)),
            "machine_busy_pct": report.rounded(end.machine.busy_fraction_since(start.machine) * 100, 1),
            "viewer_stats": report.pooled_viewer_stats(reports),
            "server_stats": stats,
        }

    async def leave(self) -> None:
        await asyncio.gather(*(v.request({"op": "leave"}, 30) for v in self.viewers), return_exceptions=True)
        self.viewer_counts = [0 for _ in self.viewers]

    async def stop_host(self) -> dict[str, Any] | None:
        """Stop the host first so its own counters (keyframe requests honoured) are kept."""
        if self.host is None:
            return None
        await self.host.stop()
        stopped = None
        while not self.host.messages.empty():
            message = self.host.messages.get_nowait()
            if message.get("event") == "stopped":
                stopped = message
        return stopped


def _step_result(n: int, joins: dict[str, Any], win: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    viewer_stats = win["viewer_stats"]
    connected = viewer_stats["viewers"] - viewer_stats["lost"]
    result: dict[str, Any] = {
        "viewers": n,
        "joined_total": connected,
        **joins,
        **report.cost_figures(
            win["server_cpu_s"],
            win["wall_s"],
            connected,
            idle["server_cpu_ms_per_s"] / 1000,
            win["server_rss"],
            idle["server_rss"],
        ),
        **report.forwarding_delay(win["server_stats"]),
        **{k: v for k, v in viewer_stats.items() if k != "viewers"},
        "server_stats": win["server_stats"],  # the raw /api/stats snapshot, for what the table leaves out
        "window_s": round(win["wall_s"], 3),
        "server_cpu_s": round(win["server_cpu_s"], 3),
        "server_rss_mb": round(win["server_rss"] / report.MB, 1),
        # The load client's own cost (loadtests/webrtc lean viewers): its CPU per simulated viewer-second.
        "client_cpu_ms_per_viewer_s": (
            round(win["viewer_cpu_s"] * 1000 / (connected * win["wall_s"]), 3) if connected and win["wall_s"] else None
        ),
        **{k: win[k] for k in ("server_core_pct", "host_core_pct", "viewer_proc_core_pct")},
        **{k: win[k] for k in ("viewer_proc_core_pct_max", "machine_busy_pct", "background_core_pct")},
    }
    notes: list[str] = []
    saturated = (win["viewer_proc_core_pct_max"] or 0) > report.VIEWER_SATURATION * 100
    if saturated:
        notes.append("viewer process saturated")
    # With every core busy the generator is starved as well, whatever its own share says.
    machine = (win["machine_busy_pct"] or 0) > report.MACHINE_SATURATION * 100
    if machine:
        notes.append("machine saturated")
    if joins["join_failed"]:
        notes.append(f"{joins['join_failed']} joins failed")
    result["valid"] = not saturated and not machine and connected > 0
    result["notes"] = notes
    return result


def _survived(step: dict[str, Any]) -> bool:
    """The baseline keeps up: everyone joined, >= 90 % of the sent video and audio rate, little stutter."""
    fps = step.get("fps_mean") or 0.0
    audio = step.get("audio_pps_mean") or 0.0
    stutter = step.get("stutter_ratio")
    return (
        step["join_failed"] == 0
        and step["joined_total"] == step["viewers"]
        and fps >= 27.0
        and audio >= 45.0
        and stutter is not None
        and stutter <= 0.05
    )


async def run_target(
    target: str, steps: Sequence[int], settings: Settings, ends_at: float, result: dict[str, Any],
    label: str | None = None,
) -> None:
    """Idle-with-host, then each N while valid (and, for the baseline, while it survives).

    Fills ``result`` as it goes, so a run cut short by the deadline keeps what it measured.
    """
    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    step_cost = settings.warmup + settings.watch + 15  # join + reports, generously
    stutter_max = report.stutter_target()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        fleet(log_dir) as group,
    ):
        run = TargetRun(target, settings, group, http, label)
        try:
            result.update(await run.start())
            await asyncio.sleep(settings.warmup)  # let the host's stream settle before the idle window
            win = await run.window(settings.idle_watch)
            idle = {
                "server_cpu_ms_per_s": round(win["server_cpu_s"] * 1000 / win["wall_s"], 3),
                "server_rss": win["server_rss"],
                "server_rss_mb": round(win["server_rss"] / report.MB, 1),
                "host_core_pct": win["host_core_pct"],
                "machine_busy_pct": win["machine_busy_pct"],
                "background_core_pct": win["background_core_pct"],
                **report.forwarding_delay(win["server_stats"]),
            }
            result["idle"] = idle
            for n in steps:
                if time.monotonic() + step_cost > ends_at:
                    result["stopped"] = f"time budget: skipped N >= {n}"
                    break
                joins = await run.join(n)
                await asyncio.sleep(settings.warmup)
                step = _step_result(n, joins, await run.window(settings.watch), idle)
                if target in ("gateway", "floor"):  # the floor too: its CPU figure means nothing if it fell behind
                    step["verdict"], step["verdict_reasons"] = report.step_verdict(step, stutter_max)
                    step["passed"] = step["verdict"] == "ok"
                if target == "baseline":
                    step["survived"] = _survived(step)
                    if not step["survived"]:
                        step["notes"].append(
                            f"fell behind: {step['fps_mean']} fps, {step['audio_pps_mean']} audio pkt/s, "
                            f"stutter {step['stutter_ratio']}"
                        )
                result["steps"].append(step)
                _progress(target, step)
                if not step["valid"]:
                    result["stopped"] = f"invalid at N={n}: {'; '.join(step['notes']) or 'no viewers'}"
                    break
                if step.get("verdict") == "FAIL":
                    result["stopped"] = f"FAILED its targets at N={n}: {'; '.join(step['verdict_reasons'])}"
                    result["failed"] = True
                    break
                if step.get("verdict") == "INVALID":
                    result["stopped"] = f"invalid at N={n}: {'; '.join(step['verdict_reasons'])}"
                    break
                if step.get("verdict") == "REFUSED":
                    result["stopped"] = f"admission refuses from N={n}: the gateway says no instead of degrading"
                    break
                if target == "baseline" and not step["survived"]:
                    result["stopped"] = f"baseline could not keep up at N={n}"
                    break
            await run.leave()
            result["host"] = await run.stop_host()
        except (ChildExited, RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"


def _progress(target: str, step: dict[str, Any]) -> None:
    print(
        f"[{target}] N={step['viewers']}: net {step.get('cpu_ms_per_viewer_s_net')} CPU-ms/viewer-s, "
        f"stutter {step.get('stutter_ratio')}, viewer proc {step['viewer_proc_core_pct']} %",
        flush=True,
    )


async def bench(settings: Settings) -> dict[str, Any]:
    started = time.monotonic()
    ends_at = started + settings.deadline
    document: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "settings": {
                "steps": list(settings.steps),
                "baseline_steps": list(settings.baseline_steps),
                "warmup_s": settings.warmup,
                "watch_s": settings.watch,
                "idle_watch_s": settings.idle_watch,
                "viewer_procs": settings.viewer_procs,
                "scaling_counts": list(settings.scaling_counts),
                "scaling_origin_viewers": settings.scaling_origin_viewers,
                "floor_steps": list(settings.floor_steps),
                "ttff": {"joiners": settings.ttff_joiners, "rate_per_s": settings.ttff_rate,
                         "burst": settings.ttff_burst, "keyframe_intervals_s": list(settings.ttff_intervals)},
            },
        }
    }
    gateway: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    scaling_layouts: list[dict[str, Any]] = []  # filled as measured: a deadline keeps what was
    try:
        async with asyncio.timeout(settings.deadline):
            if "gateway" in settings.targets:
                gateway = document["gateway"] = {"target": "gateway", "steps": []}
                if gateway_available():
                    print("gateway: measuring", flush=True)
                    await run_target("gateway", settings.steps, settings, ends_at, gateway)
                else:
                    gateway["error"] = "gateway serve not available"
            if "baseline" in settings.targets:
                baseline = document["baseline"] = {"target": "baseline", "steps": []}
                print("baseline: measuring", flush=True)
                await run_target("baseline", settings.baseline_steps, settings, ends_at, baseline)
            log_dir = RESULTS / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            if "events" in settings.targets:
                from bench import events_fanout  # imports this module: load it only when used

                print("room events: measuring fan-out", flush=True)
                try:
                    document["events_fanout"] = await events_fanout.fanout(1000, 20.0, 10.0, log_dir)
                except (ChildExited, RuntimeError, OSError, aiohttp.ClientError) as exc:
                    document["events_fanout_error"] = f"{type(exc).__name__}: {exc}"
            if "pk" in settings.targets:
                from bench import pk  # imports this module: load it only when used

                print("PK: measuring solo and linked rooms", flush=True)
                try:
                    # 25 per room: one viewer process takes the PK window's 100 streams (50 viewers x 2 slots)
                    # without saturating; at 50 per room it used a whole core and the step was the generator's.
                    document["pk"] = await pk.pk_bench(PK_VIEWERS_PER_ROOM, 10.0, log_dir)
                except (ChildExited, RuntimeError, OSError, aiohttp.ClientError) as exc:
                    document["pk"] = {"error": f"{type(exc).__name__}: {exc}", "passed": False}
            if "floor" in settings.targets:
                from bench import floor_step  # imports this module: load it only when used

                print("floor: the minimal forwarder, then the gateway, at the same viewer counts", flush=True)
                document["floor"] = {}
                await floor_step.floor_bench(settings, ends_at, document["floor"])
            if "ttff" in settings.targets:
                from bench import ttff  # imports this module: load it only when used

                print("TTFF: joiners one by one and in a burst, per host keyframe interval", flush=True)
                document["ttff"] = {"cells": []}
                await ttff.ttff_bench(settings, ends_at, log_dir, document["ttff"])
            if "scaling" in settings.targets:
                from bench import scaling  # imports this module: load it only when used

                budget = scaling_settings(settings).estimate_s()
                if ends_at - time.monotonic() < budget:
                    document["scaling_skipped"] = (f"time budget: {ends_at - time.monotonic():.0f} s left of the "
                                                   f"deadline, the scaling step needs about {budget:.0f} s")
                else:
                    print("scaling: marginal CPU per added viewer, one process vs the cluster", flush=True)
                    await scaling.scaling_bench(settings, scaling_settings(settings), log_dir, scaling_layouts)
    except TimeoutError:
        document["aborted"] = f"deadline of {settings.deadline:.0f} s reached"
    except asyncio.CancelledError:
        # Ctrl-C or SIGTERM: the children are already stopped (fleet); keep what was measured.
        document["aborted"] = "interrupted"
    if scaling_layouts:
        from bench import scaling

        document["scaling"] = scaling.summarize(scaling_layouts, scaling_settings(settings))
    document["comparison"] = report.comparison(gateway, baseline)
    document["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    return document


def scaling_settings(settings: Settings) -> Any:
    """The scaling step's settings (``bench.scaling.ScalingSettings``) from the command line's."""
    from bench.scaling import ScalingSettings

    low, high = settings.scaling_counts
    return ScalingSettings(low, high, settings.scaling_origin_viewers, settings.warmup, settings.watch,
                           settings.scaling_layouts)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _counts(text: str) -> tuple[int, ...]:
    counts = _ints(text)
    if len(counts) != 2 or not 0 < counts[0] < counts[1]:
        raise argparse.ArgumentTypeError("two viewer counts N1,N2 with 0 < N1 < N2")
    return counts


TARGETS = ("gateway", "baseline", "events", "pk", "floor", "ttff", "scaling")


def _targets(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    if not chosen or any(t not in TARGETS for t in chosen):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {','.join(TARGETS)}")
    return chosen


def _intervals(text: str) -> tuple[float, ...]:
    try:
        values = tuple(0.0 if p.strip().lower() == "pli" else float(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("keyframe intervals in seconds, or pli") from exc
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("keyframe intervals in seconds (>= 0), or pli")
    return values


def _layouts(text: str) -> tuple[str, ...]:
    known = ("single", "worker", "workers2", "origin_edge")
    layouts = tuple(part.strip() for part in text.split(",") if part.strip())
    if not layouts or any(layout not in known for layout in layouts):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {','.join(known)} (single may repeat)")
    return layouts


def parse_args(argv: Sequence[str] | None) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(description="Gateway vs MediaRelay baseline benchmark")
    parser.add_argument("--steps", type=_ints, default=defaults.steps, help="gateway viewer counts")
    parser.add_argument("--baseline-steps", type=_ints, default=defaults.baseline_steps)
    parser.add_argument("--warmup", type=float, default=defaults.warmup, help="seconds after joins")
    parser.add_argument("--watch", type=float, default=defaults.watch, help="measured seconds per step")
    parser.add_argument("--idle-watch", type=float, default=defaults.idle_watch)
    parser.add_argument("--viewer-procs", type=int, choices=(1, 2), default=defaults.viewer_procs)
    parser.add_argument("--deadline", type=float, default=defaults.deadline, help="hard limit, seconds")
    parser.add_argument("--target", choices=("all", "both", *TARGETS), default="all")
    parser.add_argument("--only", type=_targets, metavar="T1,T2",
                        help=f"run only these steps, in the bench's order (of {','.join(TARGETS)}); overrides --target")
    parser.add_argument("--floor-steps", type=_ints, default=defaults.floor_steps,
                        help="floor step: viewer counts (the floor, then the gateway); the gate is at 100")
    parser.add_argument("--ttff-joiners", type=int, default=defaults.ttff_joiners, help="TTFF step: steady joiners")
    parser.add_argument("--ttff-rate", type=float, default=defaults.ttff_rate, help="TTFF step: joiners per second")
    parser.add_argument("--ttff-burst", type=int, default=defaults.ttff_burst, help="TTFF step: joiners at once")
    parser.add_argument("--ttff-intervals", type=_intervals, default=defaults.ttff_intervals, metavar="1,2,pli",
                        help="TTFF step: host keyframe intervals in seconds; pli (or 0): only on request")
    parser.add_argument("--output", type=Path, default=defaults.output)
    parser.add_argument("--scaling-counts", type=_counts, default=defaults.scaling_counts, metavar="N1,N2",
                        help="scaling step: the two viewer counts of the slope")
    parser.add_argument("--scaling-origin-viewers", type=int, default=defaults.scaling_origin_viewers,
                        help="scaling step, origin + edge: the origin's own viewers (its worker_viewer_capacity)")
    parser.add_argument("--scaling-layouts", type=_layouts, default=defaults.scaling_layouts,
                        help="scaling step: which configurations, in order (single: the baseline of the ratios, "
                             "the mean of its runs)")
    args = parser.parse_args(argv)
    if not 0 < args.scaling_origin_viewers < args.scaling_counts[0]:
        parser.error("--scaling-origin-viewers must be between 0 and N1 (the origin's share stays fixed)")
    targets = {"all": Settings().targets, "both": ("gateway", "baseline")}.get(args.target, (args.target,))
    if args.only:
        targets = tuple(t for t in TARGETS if t in args.only)
    if args.ttff_joiners < 2 or args.ttff_burst < 2 or args.ttff_rate <= 0:
        parser.error("--ttff-joiners and --ttff-burst need at least 2 (two viewer processes), --ttff-rate > 0")
    return Settings(
        args.steps,
        args.baseline_steps,
        args.warmup,
        args.watch,
        args.idle_watch,
        args.viewer_procs,
        args.deadline,
        targets,
        args.output,
        args.scaling_counts,
        args.scaling_origin_viewers,
        args.scaling_layouts,
        args.floor_steps,
        args.ttff_joiners,
        args.ttff_rate,
        args.ttff_burst,
        args.ttff_intervals,
    )


async def _main(settings: Settings) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: task.cancel() and None)
    document = await bench(settings)
    report.write_json(settings.output, document)
    print()
    for name in ("gateway", "baseline"):
        if name in document:
            print(report.table(name, document[name]))
            if document[name].get("stopped"):
                print(f"   stopped: {document[name]['stopped']}")
    comp = document["comparison"]
    if "gateway" in document or "baseline" in document:
        print(report.legend())
        print()
        for kind in ("net", "gross"):
            print(
                f"{kind} CPU-ms per viewer-second: gateway {comp[f'gateway_{kind}_cpu_ms_per_viewer_s']}, "
                f"baseline {comp[f'baseline_{kind}_cpu_ms_per_viewer_s']}, gateway/baseline "
                f"{comp[f'gateway_over_baseline_{kind}']} (baseline costs {comp[f'baseline_over_gateway_{kind}']}x)"
            )
        print(f"RSS MB per viewer: gateway {comp['gateway_rss_mb_per_viewer']}, "
              f"baseline {comp['baseline_rss_mb_per_viewer']}")
    client = [
        s["client_cpu_ms_per_viewer_s"]
        for s in (document.get("gateway") or {}).get("steps", [])
        if s.get("valid") and s.get("client_cpu_ms_per_viewer_s")
    ]
    if client:
        print(
            f"Load client (loadtests/webrtc lean viewers): {sorted(client)[len(client) // 2]} CPU-ms per simulated "
            f"viewer-second (median over valid gateway steps; per step {client}; goal <= 3; each viewer process's "
            f"fixed cost dominates below ~50 viewers per process)"
        )
    if "events_fanout" in document:
        from bench import events_fanout

        print(events_fanout.describe(document["events_fanout"]))
    if "pk" in document:
        from bench import pk

        print(pk.describe(document["pk"]) if "error" not in document["pk"] else f"PK: {document['pk']['error']}")
    if "events_fanout_error" in document:
        print(f"room events: {document['events_fanout_error']}")
    if "scaling" in document:
        from bench import scaling

        print()
        print(scaling.describe(document["scaling"]))
    if "floor" in document:
        from bench import floor_report

        print()
        print(floor_report.describe(document["floor"]))
    if "ttff" in document:
        from bench import ttff_report

        print()
        print(ttff_report.describe(document["ttff"]))
    if document.get("scaling_skipped"):
        print(f"scaling: skipped ({document['scaling_skipped']})")
    if document.get("aborted"):
        print(f"ABORTED: {document['aborted']}")
    print(f"\nJSON: {settings.output}  (duration {document['meta']['duration_s']} s)")
    failed = [name for name in ("gateway",) if (document.get(name) or {}).get("failed")]
    if "pk" in document and not document["pk"].get("passed", True):
        failed.append("pk")
    if (document.get("scaling") or {}).get("failed"):
        failed.append("scaling")
    for name in ("floor", "ttff"):
        if (document.get(name) or {}).get("verdict") == "FAIL":
            failed.append(name)
    if failed:
        print(f"FAILED: {', '.join(failed)} missed the targets (see the verdict column)")
    if document.get("aborted") == "interrupted":
        return 130
    return 0 if not document.get("aborted") and not failed else 1


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        return asyncio.run(_main(settings))
    except KeyboardInterrupt:  # a second Ctrl-C during clean-up; PR_SET_PDEATHSIG ends the children
        return 130


if __name__ == "__main__":
    sys.exit(main())
