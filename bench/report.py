"""Turning raw window readings into the reported figures, a table and JSON."""

from __future__ import annotations

import json
import statistics
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.webrtc.metrics import percentile

MB = 1 << 20
VIEWER_SATURATION = 0.90  # share of one core: above it the load generator, not the server, limits
MACHINE_SATURATION = 0.95  # share of all cores
SOURCE_FPS = 30.0  # the synthetic host's frame rate
FPS_MIN = 0.9 * SOURCE_FPS  # a step delivering less than 90 % of the frames misses its target
AUDIO_PPS_MIN = 45.0  # Opus at 20 ms is 50 packets/s
REFUSALS = ("http_503",)  # admission said no (capacity, overloaded): the gateway protecting its viewers
TARGETS = Path(__file__).resolve().parent.parent / "configs" / "targets.toml"


def stutter_target() -> float:
    """The platform's stutter target (configs/targets.toml [viewers]), which every bench step is held to."""
    with TARGETS.open("rb") as f:
        return float(tomllib.load(f)["viewers"]["stutter_ratio_max"])


def step_verdict(step: dict[str, Any], stutter_max: float) -> tuple[str, list[str]]:
    """ok, FAIL (a target missed), REFUSED (admission refused joins: where the gateway says no) or
    INVALID (the load generator, not the gateway, ran out)."""
    if not step.get("valid"):
        return "INVALID", []
    rooms = (step.get("server_stats") or {}).get("rooms") or []
    if rooms and not any(room.get("live") for room in rooms):
        # The synthetic host's own connection went (aioice drops a peer whose consent checks come back
        # late, as on a saturated box): the step measured no stream at all.
        return "INVALID", ["the synthetic host lost its connection"]
    refused = sum(n for kind, n in (step.get("join_errors") or {}).items() if kind in REFUSALS)
    if refused:
        return "REFUSED", [f"{refused} joins refused by admission (503)"]
    misses = []
    if step["joined_total"] < step["viewers"]:
        misses.append(f"{step['viewers'] - step['joined_total']} of {step['viewers']} viewers not joined")
    stutter = step.get("stutter_ratio")
    if stutter is None or stutter > stutter_max:
        misses.append(f"stutter {stutter} > {stutter_max}")
    fps = step.get("fps_mean") or 0.0
    if fps < FPS_MIN:
        misses.append(f"{fps} fps < {FPS_MIN:.0f}")
    audio = step.get("audio_pps_mean") or 0.0
    if audio < AUDIO_PPS_MIN:
        misses.append(f"{audio} audio packets/s < {AUDIO_PPS_MIN:.0f}")
    return ("FAIL" if misses else "ok"), misses


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def pooled_viewer_stats(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge the window reports of several viewer processes."""
    viewers = sum(r["viewers"] for r in reports)
    watch = sum(r["viewers"] * r["window_s"] for r in reports)
    freeze = sum(r["freeze_s"] for r in reports)
    frames = sum(r["frames"] for r in reports)
    audio = sum(r["audio_packets"] for r in reports)
    return {
        "viewers": viewers,
        "lost": sum(r["lost"] for r in reports),
        "fps_mean": rounded(frames / watch) if watch else None,
        "freezes": sum(r["freezes"] for r in reports),
        "stutter_ratio": rounded(freeze / watch, 5) if watch else None,
        "stutter_p95": max((r["stutter_p95"] or 0.0 for r in reports), default=None),
        "max_gap_ms": max((r["max_gap_ms"] for r in reports), default=None),
        "audio_pps_mean": rounded(audio / watch) if watch else None,
        "frames_abandoned": sum(r["frames_abandoned"] for r in reports),
    }


def pooled_joins(joins: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ttff = [t for j in joins for t in j["ttff_ms"]]
    errors: dict[str, int] = {}
    for join in joins:
        for kind, count in join["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    return {
        "joined": sum(j["ok"] for j in joins),
        "join_retries": sum(j.get("retries", 0) for j in joins),
        "join_failed": sum(j["failed"] for j in joins),
        "join_errors": errors,
        "ttff_p50_ms": rounded(percentile(ttff, 50), 1),
        "ttff_p95_ms": rounded(percentile(ttff, 95), 1),
        "ttff_samples": len(ttff),
        "join_s": max((j["join_s"] for j in joins), default=None),
    }


def forwarding_delay(stats: dict[str, Any] | None) -> dict[str, Any]:
    delay = (stats or {}).get("forwarding_delay_ms")
    if not isinstance(delay, dict) or not delay.get("samples"):
        return {"fwd_p50_ms": None, "fwd_p99_ms": None, "fwd_samples": None}
    return {
        "fwd_p50_ms": rounded(delay.get("p50"), 3),
        "fwd_p99_ms": rounded(delay.get("p99"), 3),
        "fwd_samples": delay.get("samples"),
    }


def cost_figures(
    server_cpu_s: float, wall_s: float, viewers: int, idle_cpu_per_s: float, rss: int, idle_rss: int
) -> dict[str, Any]:
    """CPU-ms per viewer-second, gross and net of the idle-with-host cost, and RSS per viewer."""
    viewer_s = viewers * wall_s
    if viewer_s <= 0:
        return {"cpu_ms_per_viewer_s_gross": None, "cpu_ms_per_viewer_s_net": None}
    gross = server_cpu_s * 1000 / viewer_s
    net = (server_cpu_s - idle_cpu_per_s * wall_s) * 1000 / viewer_s
    return {
        "cpu_ms_per_viewer_s_gross": rounded(gross, 3),
        "cpu_ms_per_viewer_s_net": rounded(net, 3),
        "viewers_per_core": rounded(1000 / net, 1) if net > 0 else None,
        "rss_mb_per_viewer": rounded((rss - idle_rss) / MB / viewers, 3),
    }


def _median(steps: Sequence[dict[str, Any]], value: str, key: str) -> float | None:
    values = [s[value] for s in steps if s.get(key) and s.get(value)]
    return rounded(statistics.median(values), 3) if values else None


def comparison(gateway: dict[str, Any] | None, baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Gateway vs baseline: medians over the gateway's valid and the baseline's surviving steps."""
    result: dict[str, Any] = {}
    for kind in ("net", "gross"):
        value = f"cpu_ms_per_viewer_s_{kind}"
        gw = _median(gateway["steps"], value, "passed") if gateway else None
        bl = _median(baseline["steps"], value, "survived") if baseline else None
        result[f"gateway_{kind}_cpu_ms_per_viewer_s"] = gw
        result[f"baseline_{kind}_cpu_ms_per_viewer_s"] = bl
        result[f"gateway_over_baseline_{kind}"] = rounded(gw / bl, 4) if gw and bl else None
        result[f"baseline_over_gateway_{kind}"] = rounded(bl / gw, 1) if gw and bl else None
    gw_rss = _median(gateway["steps"], "rss_mb_per_viewer", "passed") if gateway else None
    bl_rss = _median(baseline["steps"], "rss_mb_per_viewer", "survived") if baseline else None
    result["gateway_rss_mb_per_viewer"] = gw_rss
    result["baseline_rss_mb_per_viewer"] = bl_rss
    result["how"] = (
        "median over gateway steps that met their targets and over surviving baseline steps; "
        "net = minus the idle-with-host cost measured in the same run"
    )
    return result


_COLUMNS: list[tuple[str, str, int]] = [
    ("N", "viewers", 4),
    ("ok", "joined_total", 4),
    ("cpu gross", "cpu_ms_per_viewer_s_gross", 9),
    ("cpu net", "cpu_ms_per_viewer_s_net", 8),
    ("v/core", "viewers_per_core", 7),
    ("MB/v", "rss_mb_per_viewer", 6),
    ("fwd p50", "fwd_p50_ms", 7),
    ("fwd p99", "fwd_p99_ms", 7),
    ("ttff p50", "ttff_p50_ms", 8),
    ("ttff p95", "ttff_p95_ms", 8),
    ("stutter", "stutter_ratio", 7),
    ("fps", "fps_mean", 5),
    ("aud/s", "audio_pps_mean", 5),
    ("srv %", "server_core_pct", 5),
    ("gen %", "viewer_proc_core_pct_max", 5),
    ("box %", "machine_busy_pct", 5),
    ("bg %", "background_core_pct", 5),
]


def cell(value: Any, width: int, digits: int | None = None) -> str:
    """A table cell: "-" for no value; a float with ``digits`` decimals (None: 3 below 10, else 1)."""
    if value is None:
        text = "-"
    elif isinstance(value, float):
        places = digits if digits is not None else 3 if abs(value) < 10 else 1
        text = f"{value:.{places}f}"
    else:
        text = str(value)
    return text.rjust(width)


def table(name: str, result: dict[str, Any]) -> str:
    idle = result.get("idle") or {}
    lines = [
        f"== {name}: idle with host {cell(idle.get('server_cpu_ms_per_s'), 0).strip()} CPU-ms/s, "
        f"RSS {cell(idle.get('server_rss_mb'), 0).strip()} MB, "
        f"background load {cell(idle.get('background_core_pct'), 0).strip()} % of a core"
        + (f"  [{result['error']}]" if result.get("error") else ""),
        "  ".join(h.rjust(w) for h, _, w in _COLUMNS) + "  verdict",
    ]
    for step in result.get("steps", []):
        if "verdict" in step:
            verdict = step["verdict"]
        elif not step.get("valid"):
            verdict = "INVALID"
        elif not step.get("survived", True):
            verdict = "FELL BEHIND"
        else:
            verdict = "ok"
        notes = step.get("notes", []) + step.get("verdict_reasons", [])
        if notes:
            verdict += " (" + "; ".join(notes) + ")"
        lines.append("  ".join(cell(step.get(key), w) for _, key, w in _COLUMNS) + "  " + verdict)
    return "\n".join(lines)


def legend() -> str:
    return (
        "cpu gross/net: server CPU-ms per viewer-second (net: minus idle-with-host); v/core: 1000/net; "
        "MB/v: RSS growth per viewer;\nfwd: gateway packet-in to packet-out ms (/api/stats); ttff: offer POST "
        "to first complete keyframe, ms; stutter: freeze time / watch time (W3C rule);\nsrv/gen/box %: "
        "server process tree, busiest viewer process (one core = 100), whole machine (all cores = 100);\n"
        "bg %: machine load outside the measured processes (other programs, kernel network work; one core = 100)."
    )


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
