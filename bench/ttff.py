"""`make bench`'s TTFF step: joiners at a steady rate and in a burst, per host keyframe interval.

One gateway (the bench's settings), two viewer processes (non-decoding lean viewers) and, per cell
(keyframe interval x arrival pattern), a fresh synthetic host publishing with that interval
(``--keyframe-interval``; 0: keyframes only on PLI/FIR), so that the PLI/FIR count it reports when it
stops is the cell's. Per cell: the host publishes and settles, the joiners arrive (steady: offers
1/rate apart, alternating between the viewer processes; burst: all at once, half in each), each
joiner is followed for a few seconds after its offer (its frames' latency: catch-up), then everybody
leaves and the host stops. Figures and verdicts: bench/ttff_report.py.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat, report, ttff_report
from bench.children import Child, ChildExited
from bench.run import GATEWAY_CONFIG, ICE_HOST, JOIN_TIMEOUT, ROOT, Settings, fetch_stats, start_gateway

ROOM = "ttff"
SETTLE_S = 2.0  # the host's stream flowing (the gateway has seen a keyframe) before the first joiner
FOLLOW_S = 3.0  # each joiner's catch-up is judged over this long after its offer (the target: 2 s)
CELL_OVERHEAD_S = 15.0  # host start (encoding its clip, publishing), leaving, stopping: generously


def cell_cost(settings: Settings, pattern: str) -> float:
    joins = settings.ttff_joiners / settings.ttff_rate if pattern == "steady" else 1.0
    return SETTLE_S + joins + FOLLOW_S + CELL_OVERHEAD_S


async def _host(base: str, interval: float, name: str, log_dir: Path) -> Child:
    host = Child(name, [sys.executable, "-m", "loadtests.webrtc.synthetic_host", "--base-url", base, "--room", ROOM,
                        "--ice-host", ICE_HOST, "--keyframe-interval", str(interval)], log_dir, ROOT)
    await host.start()
    published = await host.next_message(lambda m: m.get("event") in ("publishing", "failed"), 60)
    if published["event"] != "publishing":
        await host.stop()
        raise RuntimeError(f"host could not publish: {published.get('error')}")
    return host


async def _stop_host(host: Child) -> dict[str, Any] | None:
    """Stop the host and keep its ``stopped`` message (its PLI/FIR count)."""
    await host.stop()
    stopped = None
    while not host.messages.empty():
        message = host.messages.get_nowait()
        if message.get("event") == "stopped":
            stopped = message
    return stopped


async def _arrivals(viewers: list[Child], pattern: str, settings: Settings) -> list[dict[str, Any]]:
    """The joins of one cell, pooled later: each process gets its share of the joiners."""
    if pattern == "steady":
        total, gap = settings.ttff_joiners, 1.0 / settings.ttff_rate
    else:
        total, gap = settings.ttff_burst, 0.0
    shares = [math.ceil(total / 2), total // 2]

    async def one(index: int) -> dict[str, Any]:
        command: dict[str, Any] = {"op": "join", "count": shares[index], "follow_s": FOLLOW_S}
        if pattern == "steady":
            await asyncio.sleep(index * gap)  # the second process's joiners fall between the first's
            command["interval"] = 2 * gap
        else:
            command["concurrency"] = shares[index]  # all at once: no client-side queue in the burst
        return await viewers[index].request(command, JOIN_TIMEOUT)

    return list(await asyncio.gather(*(one(i) for i in range(2) if shares[i])))


def _generator_cpu(viewers: list[Child]) -> list[float]:
    return [procstat.cpu_seconds(v.pid) for v in viewers]


async def _cell(base: str, http: aiohttp.ClientSession, viewers: list[Child], interval: float, pattern: str,
                settings: Settings, log_dir: Path) -> dict[str, Any]:
    label = ttff_report.interval_label(interval)
    host = await _host(base, interval, f"ttff-host-{label.replace(' ', '')}-{pattern}", log_dir)
    stopped: dict[str, Any] | None = None
    try:
        await asyncio.sleep(SETTLE_S)  # part of the scenario: a live room before anyone joins
        before = await fetch_stats(http, base)
        cpu0, machine0, t0 = _generator_cpu(viewers), procstat.MachineCpu.read(), time.monotonic()
        joins = await _arrivals(viewers, pattern, settings)
        cpu1, machine1, t1 = _generator_cpu(viewers), procstat.MachineCpu.read(), time.monotonic()
        after = await fetch_stats(http, base)
        await asyncio.gather(*(v.request({"op": "leave"}, 30) for v in viewers))
    finally:
        stopped = await _stop_host(host)
    errors = [j for j in joins if j.get("op") == "error"]
    if errors:
        raise RuntimeError(f"viewer process refused the join: {errors[0].get('error')}")
    expected = settings.ttff_joiners if pattern == "steady" else settings.ttff_burst
    result = ttff_report.summarize(joins, expected, host=stopped, before=ttff_report.video_publication(before, ROOM),
                                   after=ttff_report.video_publication(after, ROOM))
    wall = t1 - t0
    gen = max((b - a) / wall for a, b in zip(cpu0, cpu1, strict=True)) if wall > 0 else 0.0
    busy = machine1.busy_fraction_since(machine0)
    invalid = []
    if gen > report.VIEWER_SATURATION:
        invalid.append(f"a viewer process used {gen * 100:.0f} % of a core")
    if busy > report.MACHINE_SATURATION:
        invalid.append(f"machine {busy * 100:.0f} % busy")
    gated = pattern == "steady"
    result.update({
        "keyframe_interval": label,
        "keyframe_interval_s": interval,
        "pattern": (f"{settings.ttff_joiners} at {settings.ttff_rate:g}/s" if gated
                    else f"{settings.ttff_burst} at once"),
        "gated": gated,
        "join_wall_s": round(wall, 2),
        "viewer_proc_core_pct_max": round(gen * 100, 1),
        "machine_busy_pct": round(busy * 100, 1),
        "cpus": os.cpu_count(),
        "invalid": invalid,
    })
    result["verdict"], result["verdict_reasons"] = ttff_report.cell_verdict(result, gated)
    return result


async def ttff_bench(settings: Settings, ends_at: float, log_dir: Path, result: dict[str, Any]) -> None:
    """Fills ``result["cells"]`` as it goes (a deadline keeps what was measured), then the step's verdict."""
    children: list[Child] = []
    try:
        gateway, base = await start_gateway("ttff-gateway", GATEWAY_CONFIG, log_dir)
        children.append(gateway)
        viewers = []
        for index in range(2):
            child = Child(f"ttff-viewers-{index}", [sys.executable, "-m", "loadtests.webrtc.viewer", "--serve",
                                                    "--base-url", base, "--room", ROOM, "--ice-host", ICE_HOST],
                          log_dir, ROOT)
            children.append(child)
            await child.start()
            viewers.append(child)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for interval in settings.ttff_intervals:
                for pattern in ("steady", "burst"):
                    if time.monotonic() + cell_cost(settings, pattern) > ends_at:
                        result["stopped"] = "time budget: cells skipped"
                        break
                    cell = await _cell(base, http, viewers, interval, pattern, settings, log_dir)
                    result["cells"].append(cell)
                    print(f"[ttff] keyframes {cell['keyframe_interval']}, {cell['pattern']}: TTFF p50/p95 "
                          f"{cell['ttff_p50_ms']}/{cell['ttff_p95_ms']} ms, {cell['verdict']}", flush=True)
    except (ChildExited, RuntimeError, TimeoutError, aiohttp.ClientError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for child in reversed(children):
            await asyncio.shield(child.stop())
    result["verdict"], result["verdict_reasons"] = ttff_report.step_verdict(result["cells"])
    if result.get("error") and result["verdict"] == "ok":
        result["verdict"] = "INVALID"
