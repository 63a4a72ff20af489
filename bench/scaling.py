"""Cluster scaling figure: what an added viewer costs through one process, a clustered worker, two workers
and origin + edge, and the origin's egress as edge viewers grow (``python -m bench.run --target scaling``,
also the last step of ``make bench``).

Configurations, each started fresh, all on 127.0.0.1 (ICE pinned there), gateways with the bench's
settings (``bench/gateway-bench.toml``):

* ``single``: ``gateway serve`` as today, no Redis: the baseline of every ratio;
* ``worker``: one process with ``--redis-url`` (``--workers 1``: registry, heartbeats, the cluster broker);
* ``workers2``: ``--workers 2 --redis-url`` on one node (a supervisor and two workers on one public port;
  the room's viewers all fit on its origin worker, the other worker relays signaling and idles);
* ``origin_edge``: two nodes of one worker each. The origin node takes ``origin_viewers`` viewers of a
  room (its ``worker_viewer_capacity``); viewers offer to the edge node, whose placement sends them to the
  origin until the origin refuses, then to itself as the room's edge (one pipe from the origin). The edge
  node keeps the default capacity: with a small one on both, the edge would be full as soon as the origin.

Each has one synthetic host (pre-encoded, no encoding at run time) and two non-decoding viewer processes:
the first holds N1 viewers, the second the N2 - N1 more. Windows, each after a warm-up: N1, N2, N2 again
(no change: no warm-up), N1 again (the second process's viewers leave). CPU is utime+stime from /proc of
every gateway process of the configuration (supervisor, workers, both nodes); redis-server and the load
generator are reported apart.
The arithmetic and verdicts are in ``bench/scaling_report.py``; ``bench/README.md`` says how to read them.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat, report
from bench import scaling_report as figures
from bench.children import Child, ChildExited
from bench.run import (
    GATEWAY_CONFIG,
    ICE_HOST,
    JOIN_TIMEOUT,
    ROOM,
    Fleet,
    Settings,
    TargetRun,
    _step_result,
    fleet,
    wait_healthy,
)
from loadtests.webrtc.process import ProcessExited, RedisServer, free_port, free_port_range
from loadtests.webrtc.signaling_client import SignalingError, fetch_dev_token

LAYOUTS: dict[str, str] = {
    "single": "1 process",
    "worker": "1 worker + Redis",
    "workers2": "2 workers, 1 node",
    "origin_edge": "origin + edge",
}


@dataclass(frozen=True, slots=True)
class ScalingSettings:
    low: int = 20  # N1: viewers of the first viewer process
    high: int = 60  # N2
    origin_viewers: int = 10  # origin_edge: the origin's own viewers (its worker_viewer_capacity)
    warmup: float = 3.0  # after joins and leaves, before a window
    watch: float = 10.0  # one measured window
    # "single" first and again last: the baseline is the mean of the two, and their spread the noise between
    # configurations measured minutes apart.
    layouts: tuple[str, ...] = (*LAYOUTS, "single")

    def estimate_s(self) -> float:
        """A generous time budget for the whole step (start-up, joins, three windows, stop per layout)."""
        return len(self.layouts) * (20 + 4 * (self.warmup + self.watch) + self.high * 0.1)


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One worker's /api/stats figures for the bench room at one instant."""

    at: float
    viewers: int
    packets_out: int
    packets_in: int


def _room_counters(stats: dict[str, Any]) -> tuple[int, int, int]:
    for room in stats.get("rooms") or []:
        if room.get("room") == ROOM:
            packets_in = sum(int(p.get("packets_in", 0)) for p in (room.get("publications") or {}).values())
            return int(room.get("viewers", 0)), int(room.get("packets_out", 0)), packets_in
    return 0, 0, 0


def _node_config(cluster: dict[str, Any], secret: str | None) -> str:
    """The bench's gateway settings plus a [cluster] section (and a shared [auth] secret between nodes)."""
    lines = [GATEWAY_CONFIG.read_text(), "", "[cluster]"]
    for key, value in cluster.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    if secret is not None:
        lines += ["", "[auth]", f'secret = "{secret}"']
    return "\n".join(lines) + "\n"


class LayoutRun(TargetRun):
    """One configuration of the cluster under test, with its host and two viewer processes."""

    def __init__(self, layout: str, name: str, settings: Settings, scaling: ScalingSettings, group: Fleet,
                 http: aiohttp.ClientSession, workdir: Path) -> None:
        super().__init__(f"scaling-{name}", settings, group, http)
        self.layout = layout
        self.scaling = scaling
        self.workdir = workdir
        self.servers: list[Child] = []
        self.redis: RedisServer | None = None
        self.stat_targets: list[tuple[str, int]] = []  # (public URL, workers behind it)
        self.origin_worker: str | None = None
        self._admin_token: str | None = None
        # Stats of a shared public port come from a random worker per connection: never reuse one.
        self._stats_http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                                 timeout=aiohttp.ClientTimeout(total=5))

    # -- the configuration's processes ------------------------------------------------------------------

    async def _gateway(self, name: str, cluster: dict[str, Any] | None, args: Sequence[str] = (),
                       secret: str | None = None) -> tuple[Child, str]:
        port = free_port()
        config = GATEWAY_CONFIG
        if cluster is not None:
            config = self.workdir / f"{name}.toml"
            config.write_text(_node_config(cluster, secret))
            config.chmod(0o600)
        base = f"http://{ICE_HOST}:{port}"
        child = await self.group.spawn(
            f"{self.target}-{name}",
            [sys.executable, "-m", "gateway", "serve", "--host", ICE_HOST, "--port", str(port), "--ice-host", ICE_HOST,
             "--dev", "--config", str(config), "--log-level", "warning", *args],
        )
        self.servers.append(child)
        await wait_healthy(base, child, timeout=30)
        return child, base

    async def _start_redis(self) -> str:
        redis = RedisServer(self.workdir / "redis")
        self.redis = redis
        await asyncio.to_thread(redis.wait_ready)
        return redis.url

    async def start(self) -> dict[str, Any]:
        if self.layout == "single":
            self.server, self.base_url = await self._gateway("gateway", None)
            self.stat_targets = [(self.base_url, 1)]
            viewer_base = self.base_url
        elif self.layout in ("worker", "workers2"):
            redis_url = await self._start_redis()
            workers = 1 if self.layout == "worker" else 2
            first, _ = free_port_range(workers, kind=socket.SOCK_STREAM)  # internal API: port + worker index
            cluster = {"node_id": "bench", "advertise_url": f"http://{ICE_HOST}:{first}"}
            self.server, self.base_url = await self._gateway(
                "gateway", cluster, ["--workers", str(workers), "--redis-url", redis_url])
            self.stat_targets = [(self.base_url, workers)]
            if workers > 1:  # healthy is one worker answering: wait for every worker of the public port
                deadline = time.monotonic() + 30
                while len(await self._snapshots()) < workers:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.layout}: not every worker answered within 30 s")
                    await asyncio.sleep(0.5)
            viewer_base = self.base_url
        elif self.layout == "origin_edge":
            redis_url = await self._start_redis()
            secret = secrets.token_urlsafe(32)  # one for both nodes: tokens and the internal API's keys

            def node(name: str, capacity: int) -> dict[str, Any]:
                return {"redis_url": redis_url, "node_id": name, "advertise_url": f"http://{ICE_HOST}:{free_port()}",
                        "worker_viewer_capacity": capacity}

            self.server, self.base_url = await self._gateway(
                "origin", node("origin", self.scaling.origin_viewers), secret=secret)
        else:
            raise ValueError(f"unknown layout {self.layout!r}")
        published = await self.start_host(self.base_url)
        location = str(published.get("location") or "")
        self.origin_worker = location.rsplit("~", 1)[1] if "~" in location else None
        if self.layout == "origin_edge":
            # Started once the host publishes on the origin node, so the room's origin cannot land here.
            _, viewer_base = await self._gateway("edge", node("edge", 0), secret=secret)
            self.stat_targets = [(self.base_url, 1), (viewer_base, 1)]
        await self.start_viewers(viewer_base)
        return {"host_setup_ms": report.rounded(published.get("setup_ms"), 1), "origin_worker": self.origin_worker}

    def server_cpu_parts(self) -> list[float]:
        return [procstat.tree_cpu_seconds(s.pid) for s in self.servers]

    def server_rss(self) -> int:
        return sum(procstat.tree_rss_bytes(s.pid) for s in self.servers)

    def extra_cpu(self) -> dict[str, float]:
        return {"redis": procstat.cpu_seconds(self.redis.process.pid)} if self.redis is not None else {}

    async def close(self) -> None:
        await self._stats_http.close()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)

    # -- per-worker figures -------------------------------------------------------------------------------

    async def _snapshots(self) -> dict[str, WorkerSnapshot]:
        """Every worker's room counters: a new connection per request on a shared port until each answered."""
        found: dict[str, WorkerSnapshot] = {}
        for base, workers in self.stat_targets:
            if self._admin_token is None:
                try:
                    self._admin_token = await fetch_dev_token(self._stats_http, base, ROOM, "admin")
                except (SignalingError, aiohttp.ClientError, TimeoutError):
                    return found
            seen = 0
            for _ in range(12 * workers):
                try:
                    async with self._stats_http.get(f"{base}/api/stats", headers={
                            "Authorization": f"Bearer {self._admin_token}"}) as response:
                        if response.status != 200:
                            continue
                        worker = response.headers.get("X-Cherry-Worker", base)
                        body = await response.json()
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    continue
                if worker not in found:
                    found[worker] = WorkerSnapshot(time.monotonic(), *_room_counters(body))
                    seen += 1
                if seen >= workers:
                    break
        return found

    # -- the measurement ----------------------------------------------------------------------------------

    async def join_raw(self, index: int, count: int) -> dict[str, Any]:
        """``count`` more viewers on viewer process ``index``: its join reply (``report.pooled_joins`` pools them)."""
        joined = await self.viewers[index].request({"op": "join", "count": count}, JOIN_TIMEOUT)
        self.viewer_counts[index] += count
        return joined

    async def leave_on(self, index: int) -> None:
        await self.viewers[index].request({"op": "leave"}, 30)
        self.viewer_counts[index] = 0

    async def measured(self, label: str, joins: dict[str, Any], stutter_max: float) -> dict[str, Any]:
        """One window: the bench's step figures plus every worker's viewers and packet rates."""
        before = await self._snapshots()
        win = await self.window(self.scaling.watch)
        after = await self._snapshots()
        requested = sum(self.viewer_counts)
        step = _step_result(requested, joins, win, {"server_cpu_ms_per_s": 0.0, "server_rss": 0})
        step["label"] = label
        step["server_cpu_ms_per_s"] = round(win["server_cpu_s"] * 1000 / win["wall_s"], 2)
        step["server_parts_cpu_ms_per_s"] = [round(c * 1000 / win["wall_s"], 2) for c in win["server_parts_cpu_s"]]
        step["redis_cpu_ms_per_s"] = round(win["extra_cpu_s"].get("redis", 0.0) * 1000 / win["wall_s"], 2)
        step["generator_cores"] = round((win["viewer_cpu_s"] + win["host_cpu_s"]) / win["wall_s"], 3)
        workers: dict[str, dict[str, Any]] = {}
        for worker, end in after.items():
            start = before.get(worker)
            dt = end.at - start.at if start is not None else 0.0
            workers[worker] = {
                "viewers": end.viewers,
                "packets_out_per_s": round((end.packets_out - start.packets_out) / dt, 1) if start and dt else None,
                "packets_in_per_s": round((end.packets_in - start.packets_in) / dt, 1) if start and dt else None,
            }
        step["workers"] = workers
        step["verdict"], step["verdict_reasons"] = report.step_verdict(step, stutter_max)
        # The raw snapshot and its per-step cost figures (net of nothing) say little here; the workers do.
        for key in ("server_stats", "cpu_ms_per_viewer_s_net", "viewers_per_core", "rss_mb_per_viewer"):
            step.pop(key, None)
        return step


async def measure_layout(layout: str, settings: Settings, scaling: ScalingSettings, log_dir: Path,
                         result: dict[str, Any]) -> None:
    """Start one configuration, measure N1, N2, N2 again, N1 again into ``result`` (as it goes: a deadline keeps
    what was measured), stop it; every child is killed by pid on the way out."""
    result.setdefault("label", LAYOUTS[layout])
    result.update({"layout": layout, "windows": []})
    name = result.get("name", layout)  # names the child logs: a repeated layout gets its own
    stutter_max = report.stutter_target()
    with tempfile.TemporaryDirectory(prefix="cherry-scaling-") as tmp:
        run: LayoutRun | None = None
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                fleet(log_dir) as group,  # on the way out: every child stopped (shielded), then Redis below
            ):
                run = LayoutRun(layout, name, settings, scaling, group, http, Path(tmp))
                try:
                    result.update(await run.start())
                    await asyncio.sleep(scaling.warmup)  # the host's stream settles
                    # N1, N2, N2, N1: symmetric in time, so a steady drift of the machine's load cancels.
                    steps = [("N1", "join", 0, scaling.low), ("N2", "join", 1, scaling.high - scaling.low),
                             ("N2 again", "stay", 1, 0), ("N1 again", "leave", 1, 0)]
                    for label, action, index, count in steps:
                        joins = report.pooled_joins([])
                        if action == "join" and label == "N1" and layout == "origin_edge":
                            # The origin's share first, then the rest: joins racing for the origin's last places
                            # get 409 (room_changed), not an edge (see README, origin + edge).
                            joins = report.pooled_joins([await run.join_raw(index, scaling.origin_viewers),
                                                         await run.join_raw(index, count - scaling.origin_viewers)])
                        elif action == "join":
                            joins = report.pooled_joins([await run.join_raw(index, count)])
                        elif action == "leave":
                            await run.leave_on(index)
                        if action != "stay":  # the same viewers again: a second window, nothing to settle
                            await asyncio.sleep(scaling.warmup)  # joins (first keyframes) or leaves settle
                        window = await run.measured(label, joins, stutter_max)
                        result["windows"].append(window)
                        _progress(layout, window)
                    await run.leave()
                    result["host"] = await run.stop_host()
                except (ChildExited, ProcessExited, RuntimeError, TimeoutError, OSError, aiohttp.ClientError) as exc:
                    result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if run is not None:
                await asyncio.shield(run.close())  # Redis, once its gateways are gone


def _progress(layout: str, window: dict[str, Any]) -> None:
    workers = ", ".join(f"{w} {v['viewers']}" for w, v in sorted(window["workers"].items()))
    print(f"[scaling {layout}] {window['label']}: {window['joined_total']}/{window['viewers']} viewers ({workers}), "
          f"generator {window['generator_cores']} cores, busiest viewer process {window['viewer_proc_core_pct_max']} %"
          f", machine {window['machine_busy_pct']} %: {window['verdict']}", flush=True)


LOW, HIGH = ("N1", "N1 again"), ("N2", "N2 again")  # the windows of each count


def _points(windows: Sequence[dict[str, Any]], key: str = "server_cpu_ms_per_s",
            ) -> tuple[list[figures.Point], list[figures.Point]]:
    """The N1 windows and the N2 windows as (connected viewers, ``key``)."""
    points = {w["label"]: figures.Point(w["joined_total"], w[key]) for w in windows if w.get(key) is not None}
    return [points[label] for label in LOW if label in points], [points[label] for label in HIGH if label in points]


def summarize(layouts: list[dict[str, Any]], scaling: ScalingSettings) -> dict[str, Any]:
    """Marginal CPU, ratios and verdicts of every configuration; the origin's egress (origin_edge)."""
    for layout in layouts:
        windows = layout["windows"]
        low, high = _points(windows)
        layout["viewers_label"] = f"{scaling.low}->{scaling.high}"
        marginal = figures.marginal(low, high)
        layout["marginal_cpu_ms_per_viewer_s"] = report.rounded(marginal, 3)
        layout["noise"] = report.rounded(figures.repeat_noise(low, high), 3)
        layout["fixed_cpu_ms_per_s"] = report.rounded(sum(p.cpu_ms_per_s for p in low) / len(low), 1) if low else None
        for key, source in (("redis_cpu_ms_per_s", "redis_cpu_ms_per_s"), ("generator_cores_max", "generator_cores"),
                            ("viewer_proc_core_pct_max", "viewer_proc_core_pct_max"),
                            ("machine_busy_pct_max", "machine_busy_pct"),
                            ("background_core_pct_max", "background_core_pct")):
            values = [w[source] for w in windows if w.get(source) is not None]
            layout[key] = max(values) if values else None
        # The load generator's own slope, and where the machine's busy share would cross the validity limit.
        gen_low, gen_high = _points(windows, "generator_cores")
        gen = figures.marginal(gen_low, gen_high)
        layout["generator_cpu_ms_per_viewer_s"] = report.rounded(gen * 1000, 3) if gen is not None else None
        layout["generator_over_gateway"] = (report.rounded(gen * 1000 / marginal, 2)
                                            if gen is not None and marginal else None)
        box_low, box_high = _points(windows, "machine_busy_pct")
        saturation = figures.saturation_viewers(box_low, box_high, report.MACHINE_SATURATION * 100)
        layout["machine_saturation_viewers"] = report.rounded(saturation, 0)
    # The baseline: the single process's marginal, the mean over its runs (first and last by default) that met
    # their targets; how far those runs disagree is the noise between configurations measured minutes apart.
    singles = [x for x in layouts if x["layout"] == "single"]
    for layout in singles:
        _judge(layout, None, baseline=True)
    usable = [x["marginal_cpu_ms_per_viewer_s"] for x in singles
              if x["verdict"] == "ok" and x["marginal_cpu_ms_per_viewer_s"] is not None]
    base_marginal = sum(usable) / len(usable) if usable else None
    for layout in layouts:
        value = figures.ratio(layout["marginal_cpu_ms_per_viewer_s"], base_marginal)
        layout["ratio"] = report.rounded(value, 3)
        if layout["layout"] == "single":
            continue
        _judge(layout, value, baseline=False)
        if base_marginal is None and layout["verdict"] != "FAIL":
            layout["verdict"], layout["verdict_reasons"] = "INVALID", ["no valid single-process baseline"]
    result: dict[str, Any] = {
        "counts": [scaling.low, scaling.high],
        "origin_viewers": scaling.origin_viewers,
        "ratio_max": figures.RATIO_MAX,
        "baseline_marginal_cpu_ms_per_viewer_s": report.rounded(base_marginal, 3),
        "baseline_runs": len(usable),
        # The single process's runs against each other: max - min over their mean (None with one run).
        "baseline_spread": (report.rounded((max(usable) - min(usable)) / base_marginal, 3)
                            if base_marginal and len(usable) > 1 else None),
        "layouts": layouts,
    }
    origin_edge = next((x for x in layouts if x["layout"] == "origin_edge"), None)
    if origin_edge is not None:
        result["egress"] = _egress(origin_edge)
    judged = [x for x in layouts] + ([result["egress"]] if "egress" in result else [])
    result["failed"] = any(x.get("verdict") == "FAIL" for x in judged)
    result["invalid"] = [x.get("layout", "egress") for x in judged if x.get("verdict") == "INVALID"]
    return result


def _judge(layout: dict[str, Any], value: float | None, baseline: bool) -> None:
    if layout.get("error") and len(layout["windows"]) < len(LOW + HIGH):
        layout["verdict"], layout["verdict_reasons"] = "INVALID", ["not measured to the end"]
    else:
        layout["verdict"], layout["verdict_reasons"] = figures.layout_verdict(layout["windows"], value, baseline)


def _egress(layout: dict[str, Any]) -> dict[str, Any]:
    origin = layout.get("origin_worker")
    by_label: dict[str, figures.Egress] = {}
    for window in layout["windows"]:
        workers = window["workers"]
        mine = workers.get(origin) if origin else None
        if mine is None or mine["packets_out_per_s"] is None:
            continue
        edge_viewers = sum(v["viewers"] for w, v in workers.items() if w != origin)
        by_label[window["label"]] = figures.Egress(mine["viewers"], edge_viewers, mine["packets_out_per_s"],
                                                   mine["packets_in_per_s"] or 0.0)
    low = [by_label[label] for label in LOW if label in by_label]
    high = [by_label[label] for label in HIGH if label in by_label]
    if not low or not high:
        return {"error": "origin figures missing (see the layout's error)", "verdict": "INVALID"}
    egress = figures.egress_figures(figures.mean_egress(low), figures.mean_egress(high))
    if layout.get("verdict") == "INVALID":  # a starved generator: the counts may not be what they seem either
        egress["verdict"], egress["verdict_reasons"] = "INVALID", ["the configuration's windows were invalid"]
    egress["origin_worker"] = origin
    return egress


async def scaling_bench(settings: Settings, scaling: ScalingSettings, log_dir: Path,
                        layouts: list[dict[str, Any]]) -> None:
    """Measure every configuration in turn, appending each to ``layouts`` (then :func:`summarize`)."""
    for index, layout in enumerate(scaling.layouts):
        again = layout in scaling.layouts[:index]
        label = LAYOUTS[layout] + (", again" if again else "")
        print(f"scaling: {label}", flush=True)
        result: dict[str, Any] = {"layout": layout, "label": label, "name": layout + ("-again" if again else ""),
                                  "windows": []}
        layouts.append(result)
        await measure_layout(layout, settings, scaling, log_dir, result)


def describe(result: dict[str, Any]) -> str:
    lines = [figures.table(result), figures.legend()]
    if result.get("invalid"):
        lines.append(f"INVALID (load generator or set-up, not the gateway): {', '.join(result['invalid'])}")
    return "\n".join(lines)
