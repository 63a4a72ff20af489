"""The scaling figure's arithmetic: marginal CPU of an added viewer, its ratio to one process, origin egress.

Pure functions over window readings (no processes, no clock), so the figure's rules have unit tests
(``tests/unit/test_bench_scaling.py``); ``bench/scaling.py`` takes the readings.

* Marginal CPU per added viewer: the slope between two viewer counts of the CPU of every gateway process
  of a configuration, ``(CPU(N2) - CPU(N1)) / ((N2 - N1) x window)`` in CPU-ms per viewer-second. The
  windows go N1, N2, N2, N1 and each count's two are averaged, so a steady load drift during the run
  cancels; how far apart the repeated windows were is reported as the figure's noise.
* Ratio: a configuration's marginal CPU over the single process's, from the same run; within
  :data:`RATIO_MAX` passes.
* Origin egress: the origin's RTP packets sent per second (its own viewers plus one copy per edge) at two
  edge-viewer counts with its own viewers fixed; passes when it grows by less than :data:`EGRESS_GROWTH_MAX`
  while the edge viewers grow by a factor of at least :data:`EDGE_FACTOR_MIN`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import MACHINE_SATURATION, cell, rounded

RATIO_MAX = 1.15  # a cluster's marginal CPU per added viewer may exceed one process's by 15 %
EGRESS_GROWTH_MAX = 0.10  # origin egress growth allowed while the edges' viewers grow ...
EDGE_FACTOR_MIN = 2.0  # ... by at least this factor
CHEAPER_NOTE = 0.85  # a ratio below this passes, with a note: more likely noise than a cheaper cluster


@dataclass(frozen=True, slots=True)
class Point:
    """One measured window: connected viewers, and the CPU of all the configuration's gateway processes."""

    viewers: float
    cpu_ms_per_s: float  # CPU-ms per wall second (utime + stime summed over the processes)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def marginal(low: Sequence[Point], high: Sequence[Point]) -> float | None:
    """CPU-ms per added viewer-second between the N1 windows and the N2 windows (each set averaged); None when
    a set is empty or the viewer counts do not grow (nothing to divide by)."""
    if not low or not high:
        return None
    added = _mean([p.viewers for p in high]) - _mean([p.viewers for p in low])
    if added <= 0:
        return None
    return (_mean([p.cpu_ms_per_s for p in high]) - _mean([p.cpu_ms_per_s for p in low])) / added


def _spread(points: Sequence[Point]) -> float:
    return max(p.cpu_ms_per_s for p in points) - min(p.cpu_ms_per_s for p in points)


def repeat_noise(low: Sequence[Point], high: Sequence[Point]) -> float | None:
    """How far apart the repeated windows of one count are (the larger disagreement, N1 or N2), as a share of
    the N1 -> N2 CPU rise: 0.05 means the slope is known to about 5 %. None without a repeat or a rise."""
    if not low or not high or (len(low) < 2 and len(high) < 2):
        return None
    rise = _mean([p.cpu_ms_per_s for p in high]) - _mean([p.cpu_ms_per_s for p in low])
    if rise <= 0:
        return None
    return max(_spread(low), _spread(high)) / rise


def saturation_viewers(low: Sequence[Point], high: Sequence[Point], limit: float) -> float | None:
    """Viewers at which a load figure (``Point.cpu_ms_per_s`` holding e.g. machine busy %) reaches ``limit``,
    extrapolated along the N1 -> N2 line; None if it does not rise."""
    slope = marginal(low, high)
    if slope is None or slope <= 0:
        return None
    return _mean([p.viewers for p in low]) + (limit - _mean([p.cpu_ms_per_s for p in low])) / slope


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


def cost_verdict(value: float | None, limit: float = RATIO_MAX) -> tuple[str, list[str]]:
    """ok or FAIL for a configuration's ratio to the single process; INVALID when there is none to judge."""
    if value is None:
        return "INVALID", ["no ratio: a marginal CPU could not be measured"]
    if value > limit:
        return "FAIL", [f"marginal CPU {value:.2f}x one process's > {limit:.2f}x"]
    if value < CHEAPER_NOTE:
        return "ok", [f"{value:.2f}x: cheaper than one process, likely noise"]
    return "ok", []


def layout_verdict(windows: Sequence[dict[str, Any]], value: float | None, baseline: bool,
                   limit: float = RATIO_MAX) -> tuple[str, list[str]]:
    """A configuration's verdict from its windows' own verdicts (``report.step_verdict``) and its ratio.

    INVALID if any window was (the load generator ran out, the host's connection went: nothing measured
    says anything about the gateway); FAIL if a window missed the viewers' targets or was refused, or the
    ratio is over ``limit``; the baseline itself is only judged on its windows."""
    invalid = [w for w in windows if w.get("verdict") == "INVALID"]
    if invalid or not windows:
        reasons = [f"{w['label']}: {'; '.join(w.get('notes', []) + w.get('verdict_reasons', [])) or 'invalid'}"
                   for w in invalid]
        return "INVALID", reasons or ["no window measured"]
    missed = [f"{w['label']}: {'; '.join(w.get('verdict_reasons', []))}" for w in windows
              if w.get("verdict") in ("FAIL", "REFUSED")]
    if baseline:
        return ("FAIL", missed) if missed else ("ok", [])
    verdict, reasons = cost_verdict(value, limit)
    if missed:
        return "FAIL", missed + [r for r in reasons if verdict == "FAIL"]
    return verdict, reasons


@dataclass(frozen=True, slots=True)
class Egress:
    """The origin worker over one window: viewers on it and on the edges, packets it sent and received."""

    origin_viewers: float
    edge_viewers: float
    packets_out_per_s: float  # RTP packets sent: to its own viewers and one copy per packet to each edge
    packets_in_per_s: float  # RTP packets received from the host


def mean_egress(windows: Sequence[Egress]) -> Egress:
    return Egress(_mean([w.origin_viewers for w in windows]), _mean([w.edge_viewers for w in windows]),
                  _mean([w.packets_out_per_s for w in windows]), _mean([w.packets_in_per_s for w in windows]))


def egress_figures(low: Egress, high: Egress, growth_max: float = EGRESS_GROWTH_MAX,
                   factor_min: float = EDGE_FACTOR_MIN) -> dict[str, Any]:
    """Origin egress at E1 and E2 edge viewers, its growth, and the verdict (ok, FAIL)."""
    growth = high.packets_out_per_s / low.packets_out_per_s - 1 if low.packets_out_per_s > 0 else None
    factor = high.edge_viewers / low.edge_viewers if low.edge_viewers > 0 else None
    reasons = []
    if factor is None or factor < factor_min:
        reasons.append(f"edge viewers grew {'from none' if factor is None else f'{factor:.2f}x'}, "
                       f"< {factor_min:.0f}x: the figure tests nothing")
    if growth is None:
        reasons.append("the origin sent nothing")
    elif growth >= growth_max:
        reasons.append(f"origin egress grew {growth * 100:.1f} % >= {growth_max * 100:.0f} %")
    if abs(high.origin_viewers - low.origin_viewers) > 0.5:
        reasons.append(f"the origin's own viewers changed ({low.origin_viewers:.0f} -> {high.origin_viewers:.0f})")

    def copies(e: Egress) -> float | None:  # packets out per packet in: own viewers + edges
        return rounded(e.packets_out_per_s / e.packets_in_per_s, 2) if e.packets_in_per_s > 0 else None

    return {
        "edge_viewers": [rounded(low.edge_viewers, 1), rounded(high.edge_viewers, 1)],
        "origin_viewers": [rounded(low.origin_viewers, 1), rounded(high.origin_viewers, 1)],
        "origin_packets_out_per_s": [rounded(low.packets_out_per_s, 1), rounded(high.packets_out_per_s, 1)],
        "origin_packets_in_per_s": [rounded(low.packets_in_per_s, 1), rounded(high.packets_in_per_s, 1)],
        "origin_copies_per_packet_in": [copies(low), copies(high)],
        "origin_egress_growth": rounded(growth, 4),
        "edge_viewer_factor": rounded(factor, 2),
        # Growth of the origin's egress per growth of the edges' audience: 0 = independent, 1 = per viewer.
        "growth_over_edge_growth": (rounded(growth / (factor - 1), 4)
                                    if growth is not None and factor is not None and factor > 1 else None),
        "verdict": "FAIL" if reasons else "ok",
        "verdict_reasons": reasons,
    }


_COLUMNS: list[tuple[str, str, int, int]] = [
    ("viewers", "viewers_label", 9, 0),
    ("marginal", "marginal_cpu_ms_per_viewer_s", 8, 2),
    ("ratio", "ratio", 6, 3),
    ("noise", "noise", 6, 3),
    ("fixed", "fixed_cpu_ms_per_s", 6, 0),
    ("redis", "redis_cpu_ms_per_s", 6, 1),
    ("gen/gw", "generator_over_gateway", 6, 2),
    ("sat N", "machine_saturation_viewers", 5, 0),
    ("gen cores", "generator_cores_max", 9, 2),
    ("gen %", "viewer_proc_core_pct_max", 5, 1),
    ("box %", "machine_busy_pct_max", 5, 1),
    ("bg %", "background_core_pct_max", 5, 1),
]


def table(result: dict[str, Any]) -> str:
    """The scaling figure: one line per configuration, then origin egress."""
    name_width = max([len(layout.get("label", "")) for layout in result.get("layouts", [])] + [13])
    lines = ["== scaling: marginal gateway CPU per added viewer, cluster vs one process (same run)",
             "configuration".ljust(name_width) + "  " + "  ".join(h.rjust(w) for h, _, w, _ in _COLUMNS)
             + "  verdict"]
    for layout in result.get("layouts", []):
        verdict = layout.get("verdict", "-")
        notes = layout.get("verdict_reasons", []) + ([layout["error"]] if layout.get("error") else [])
        if notes:
            verdict += " (" + "; ".join(notes) + ")"
        lines.append(layout.get("label", layout.get("layout", "?")).ljust(name_width) + "  "
                     + "  ".join(cell(layout.get(key), w, d) for _, key, w, d in _COLUMNS) + "  " + verdict)
    base = result.get("baseline_marginal_cpu_ms_per_viewer_s")
    spread = result.get("baseline_spread")
    lines.append(f"baseline (ratio 1): one process's marginal CPU, mean of {result.get('baseline_runs', 0)} run(s) "
                 f"that met their targets: {cell(base, 0, 2).strip()} CPU-ms per viewer-second"
                 + (f"; its runs differ by {spread * 100:.1f} % of it" if spread is not None else ""))
    egress = result.get("egress")
    if egress:
        if "error" in egress:
            lines.append(f"origin egress: {egress['error']}")
        else:
            e1, e2 = egress["edge_viewers"]
            p1, p2 = egress["origin_packets_out_per_s"]
            c1, c2 = egress["origin_copies_per_packet_in"]
            growth = egress["origin_egress_growth"]
            lines.append(
                f"origin egress: edge viewers {e1} -> {e2} (x{egress['edge_viewer_factor']}), origin's own viewers "
                f"{egress['origin_viewers'][0]}: origin sends {p1} -> {p2} RTP packets/s ({c1} -> {c2} copies per "
                f"packet in), growth {cell(None if growth is None else growth * 100, 0, 1).strip()} %, growth / "
                f"edge growth {egress['growth_over_edge_growth']}  {egress['verdict']}"
                + (" (" + "; ".join(egress["verdict_reasons"]) + ")" if egress["verdict_reasons"] else ""))
    return "\n".join(lines)


def legend() -> str:
    return (
        "marginal: (CPU(N2) - CPU(N1)) / (N2 - N1) over every gateway process of the configuration (supervisor, "
        "workers, nodes), CPU-ms per viewer-second;\nratio: marginal / the single process's (pass <= "
        f"{RATIO_MAX:.2f}); noise: repeated windows' disagreement as a share of the N1 -> N2 rise; fixed: "
        "CPU-ms/s at N1\n(host ingest, heartbeats, idle workers); redis: redis-server CPU-ms/s, not in the figure; "
        "gen/gw: the load generator's marginal CPU per added viewer over the gateway's;\nsat N: viewers at which the "
        f"machine would be {MACHINE_SATURATION * 100:.0f} % busy (the N1 -> N2 line extended: where this generator "
        "saturates); gen cores: viewer processes + host;\ngen %: busiest viewer process; box %: whole machine; "
        "bg %: load outside the measured processes, one core = 100; maxima over the configuration's windows."
    )
