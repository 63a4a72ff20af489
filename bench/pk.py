"""PK benchmark: gateway CPU per viewer-second with two rooms solo, then linked in a PK battle.

`python -m bench.pk` (also part of `make bench`). Two synthetic hosts (pre-encoded VP8 + Opus) and
N viewers per room, each offering a co-stream slot, all on 127.0.0.1. Windows: hosts only (idle),
solo (each viewer receives its host), PK (each viewer receives both hosts). A PK doubles the streams
a viewer receives and adds no codec work, so the comparable figure is CPU per forwarded video
stream-second; CPU per viewer-second is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat, report
from bench.children import Child
from bench.run import GATEWAY_CONFIG, RESULTS, ROOT, start_gateway
from loadtests.webrtc.tokens import DevTokenSource

ROOMS = ("pk-bench-a", "pk-bench-b")


async def _ws(http: aiohttp.ClientSession, base: str, room: str, token: str) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(f"{base.replace('http', 'ws', 1)}/ws/{room}?token={token}")


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        async for message in ws:
            frame = json.loads(message.data)
            if frame.get("type") == kind:
                return dict(frame)
    raise RuntimeError(f"socket closed before {kind}")


async def pk_bench(viewers_per_room: int, watch: float, log_dir: Path) -> dict[str, Any]:
    gateway, base = await start_gateway("pk-gateway", GATEWAY_CONFIG, log_dir)
    children = [gateway]
    try:
        async with aiohttp.ClientSession() as http:
            source = DevTokenSource(base, lambda: http)
            tokens = {room: await source.token(room, "host", f"host-{room}") for room in ROOMS}
            for room in ROOMS:
                host = Child(f"pk-host-{room}", [sys.executable, "-m", "loadtests.webrtc.synthetic_host",
                                                 "--base-url", base, "--room", room, "--token", tokens[room]],
                             log_dir, ROOT)
                children.append(host)
                await host.start()
                await host.next_message(lambda m: m.get("event") == "publishing", 60)
            # One viewer process per room: a PK doubles the streams each viewer receives, and one process for
            # both audiences ran out of CPU before the gateway did.
            viewers = {room: Child(f"pk-viewers-{room}", [sys.executable, "-m", "bench.pk_viewers", base], log_dir,
                                   ROOT) for room in ROOMS}
            for child in viewers.values():
                children.append(child)
                await child.start()

            async def window(name: str) -> dict[str, Any]:
                for child in viewers.values():
                    await child.request({"op": "mark"}, 10)
                cpu0, t0 = procstat.tree_cpu_seconds(gateway.pid), time.monotonic()
                gen0 = {room: procstat.cpu_seconds(child.pid) for room, child in viewers.items()}
                machine0 = procstat.MachineCpu.read()
                await asyncio.sleep(watch)  # the measured window itself
                cpu1, t1 = procstat.tree_cpu_seconds(gateway.pid), time.monotonic()
                gen1 = {room: procstat.cpu_seconds(child.pid) for room, child in viewers.items()}
                busy = procstat.MachineCpu.read().busy_fraction_since(machine0)
                reports = [await child.request({"op": "report"}, 10) for child in viewers.values()]
                return {"window": name, "cpu_ms_per_s": (cpu1 - cpu0) * 1000 / (t1 - t0),
                        "generator_core": max((gen1[r] - gen0[r]) / (t1 - t0) for r in viewers),
                        "machine_busy": busy, **_merged(reports)}

            idle = await window("hosts only")
            for room in ROOMS:
                await viewers[room].request({"op": "join", "room": room, "count": viewers_per_room}, 120)
            await asyncio.sleep(2)  # joins settle (first keyframes) before measuring
            solo = await window("solo")
            sockets = {room: await _ws(http, base, room, tokens[room]) for room in ROOMS}
            a, b = ROOMS
            await sockets[a].send_json({"type": "pk_invite", "room": b})
            invitation = await _next(sockets[b], "pk_invitation")
            await sockets[b].send_json({"type": "pk_accept", "id": invitation["id"]})
            await _next(sockets[a], "pk_started")
            await asyncio.sleep(2)  # every viewer's partner slot starts at a keyframe
            pk = await window("pk")
            for ws in sockets.values():
                await ws.close()
    finally:
        for child in reversed(children):
            await child.stop()
    viewers_total = 2 * viewers_per_room
    result: dict[str, Any] = {"viewers_per_room": viewers_per_room, "watch_s": watch, "windows": [idle, solo, pk]}
    for name, window_result, streams in (("solo", solo, 1), ("pk", pk, 2)):
        net = window_result["cpu_ms_per_s"] - idle["cpu_ms_per_s"]
        result[name] = {
            "cpu_ms_per_viewer_s": round(net / viewers_total, 3),
            "cpu_ms_per_stream_s": round(net / (viewers_total * streams), 3),
            "slot0_fps": round(window_result["slot0"]["fps"], 1),
            "slot1_fps": round(window_result["slot1"]["fps"], 1),
            "stutter_max": round(max(window_result["slot0"]["stutter_max"],
                                     window_result["slot1"]["stutter_max"] if streams == 2 else 0.0), 4),
        }
    for unit in ("stream", "viewer"):
        key = f"cpu_ms_per_{unit}_s"
        result[f"pk_over_solo_per_{unit}"] = round(result["pk"][key] / result["solo"][key], 3)
    stutter_max = report.stutter_target()
    busiest = max(w["generator_core"] for w in (solo, pk))
    machine = max(w["machine_busy"] for w in (solo, pk))
    result["generator_core_pct"] = round(busiest * 100, 1)
    result["machine_busy_pct"] = round(machine * 100, 1)
    invalid = []
    if busiest > report.VIEWER_SATURATION:
        invalid.append(f"INVALID: a viewer process used {busiest * 100:.0f} % of a core")
    if machine > report.MACHINE_SATURATION:
        invalid.append(f"INVALID: the machine was {machine * 100:.0f} % busy")
    if invalid:
        # The generator (aiortc's receive path, 4 tracks a viewer) or the whole machine ran out of CPU:
        # what the viewers measured says nothing about the gateway either way.
        result["valid"] = False
        result["passed"] = True
        result["verdict_reasons"] = invalid
        return result
    misses = []
    for name, streams in (("solo", 1), ("pk", 2)):
        figures = result[name]
        for slot in range(streams):
            fps = figures[f"slot{slot}_fps"]
            if fps < report.FPS_MIN:
                misses.append(f"{name} slot {slot}: {fps} fps < {report.FPS_MIN:.0f}")
        if figures["stutter_max"] > stutter_max:
            misses.append(f"{name}: stutter {figures['stutter_max']} > {stutter_max}")
    result["passed"] = not misses
    result["verdict_reasons"] = misses
    return result


def _merged(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Both audiences' figures per slot: frame and audio rates averaged, the worst stutter kept."""
    merged: dict[str, Any] = {}
    for slot in ("slot0", "slot1"):
        per = [r[slot] for r in reports]
        merged[slot] = {"fps": sum(p["fps"] for p in per) / len(per),
                        "audio_pps": sum(p["audio_pps"] for p in per) / len(per),
                        "stutter_max": max(p["stutter_max"] for p in per)}
    return merged


def describe(result: dict[str, Any]) -> str:
    solo, pk = result["solo"], result["pk"]
    return (f"PK: {result['viewers_per_room']} viewers per room; solo {solo['cpu_ms_per_viewer_s']} CPU-ms/viewer-s "
            f"({solo['cpu_ms_per_stream_s']} per stream-s, {solo['slot0_fps']} fps); PK {pk['cpu_ms_per_viewer_s']} "
            f"CPU-ms/viewer-s ({pk['cpu_ms_per_stream_s']} per stream-s, {pk['slot0_fps']} + {pk['slot1_fps']} fps, "
            f"stutter max {pk['stutter_max']}); PK/solo per stream {result['pk_over_solo_per_stream']}, "
            f"per viewer {result['pk_over_solo_per_viewer']}; "
            + ("; ".join(result["verdict_reasons"]) if result.get("valid") is False
               else "ok" if result.get("passed", True) else "FAIL: " + "; ".join(result.get("verdict_reasons", []))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers-per-room", type=int, default=50)
    parser.add_argument("--watch", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "pk.json")
    args = parser.parse_args()
    log_dir = args.output.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(pk_bench(args.viewers_per_room, args.watch, log_dir))
    args.output.write_text(json.dumps(result, indent=2))
    print(describe(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
