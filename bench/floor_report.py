"""The floor comparison: gateway vs the minimal forwarder's CPU per viewer-second at the same counts, judged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report import cell, rounded

RATIO_MAX = 1.5  # issue 13: gateway CPU per viewer-second at most 1.5x the floor's, at GATE_VIEWERS
GATE_VIEWERS = 100


def rows(floor_steps: Sequence[dict[str, Any]], gateway_steps: Sequence[dict[str, Any]],
         gate_viewers: int = GATE_VIEWERS, ratio_max: float = RATIO_MAX) -> list[dict[str, Any]]:
    """One row per viewer count either side measured: both figures, their ratio and, at the gate, a verdict.

    Ratios are of net CPU (minus each server's own idle-with-host cost, measured in its own series) and,
    for reference, gross. A row is only judged when both steps met their stream targets: a forwarder that
    fell behind spends less and would flatter or shame the other side for nothing.
    """
    floor = {s["viewers"]: s for s in floor_steps}
    gateway = {s["viewers"]: s for s in gateway_steps}
    result = []
    for n in sorted(set(floor) | set(gateway)):
        f, g = floor.get(n, {}), gateway.get(n, {})
        row: dict[str, Any] = {"viewers": n}
        for kind in ("net", "gross"):
            fv, gv = f.get(f"cpu_ms_per_viewer_s_{kind}"), g.get(f"cpu_ms_per_viewer_s_{kind}")
            row[f"floor_{kind}"], row[f"gateway_{kind}"] = fv, gv
            row[f"ratio_{kind}"] = rounded(gv / fv, 3) if fv and gv and fv > 0 else None
        row["floor_step"] = f.get("verdict", "missing" if not f else "ok")
        row["gateway_step"] = g.get("verdict", "missing" if not g else "ok")
        row["verdict"], row["reasons"] = row_verdict(row, gated=n == gate_viewers, ratio_max=ratio_max)
        result.append(row)
    return result


def row_verdict(row: dict[str, Any], gated: bool, ratio_max: float = RATIO_MAX) -> tuple[str, list[str]]:
    """ok / FAIL at the gated count; INVALID when a side did not meet its stream targets there; '-' elsewhere."""
    if not gated:
        return "-", []
    unusable = [f"{side} step {row[f'{side}_step']}" for side in ("floor", "gateway") if row[f"{side}_step"] != "ok"]
    if unusable:
        return "INVALID", unusable
    ratio = row.get("ratio_net")
    if ratio is None:
        return "INVALID", ["no net CPU figure on one side"]
    if ratio > ratio_max:
        return "FAIL", [f"gateway {ratio:.2f}x the floor > {ratio_max}x"]
    return "ok", []


def verdict(table: Sequence[dict[str, Any]], gate_viewers: int = GATE_VIEWERS) -> tuple[str, list[str]]:
    """The step's verdict: the gated row's; 'not gated' when no run reached that count."""
    for row in table:
        if row["viewers"] == gate_viewers:
            return row["verdict"], list(row["reasons"])
    return "not gated", [f"no {gate_viewers}-viewer step in this run"]


_COLUMNS = [("N", "viewers", 4), ("floor net", "floor_net", 9), ("gw net", "gateway_net", 8),
            ("gw/floor", "ratio_net", 8), ("floor gross", "floor_gross", 11), ("gw gross", "gateway_gross", 8),
            ("gw/floor gross", "ratio_gross", 14), ("floor step", "floor_step", 10), ("gw step", "gateway_step", 8)]


def describe(result: dict[str, Any]) -> str:
    lines = [f"== floor: gateway vs the minimal forwarder (bench/floor.py), CPU-ms per viewer-second; target "
             f"gateway <= {RATIO_MAX}x the floor at {GATE_VIEWERS} viewers"]
    for side in ("floor", "gateway"):
        series = result.get(side) or {}
        idle = (series.get("idle") or {}).get("server_cpu_ms_per_s")
        note = f"   {side}: idle with host {idle} CPU-ms/s"
        for key in ("error", "stopped"):
            if series.get(key):
                note += f"; {key}: {series[key]}"
        lines.append(note)
    lines.append("  ".join(h.rjust(w) for h, _, w in _COLUMNS) + "  verdict")
    for row in result.get("rows", []):
        text = row["verdict"] + (f" ({'; '.join(row['reasons'])})" if row["reasons"] else "")
        lines.append("  ".join(cell(row.get(key), w) for _, key, w in _COLUMNS) + "  " + text)
    reasons = result.get("verdict_reasons") or []
    lines.append(f"floor verdict: {result.get('verdict')}" + (f" ({'; '.join(reasons)})" if reasons else ""))
    return "\n".join(lines)
