"""The soak's report folder: samples (CSV written as sampled, JSON at the end), one plot per series, the
verdict (JSON and a short Markdown page that shows the plots)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display here, and none wanted
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from soak.sampler import Sample, series  # noqa: E402
from soak.verdict import Verdict  # noqa: E402

TITLES = {
    "rss_mb": "Resident memory (MB)",
    "fds": "Open file descriptors",
    "threads": "Threads",
    "tasks": "asyncio tasks",
    "loop_lag_ms": "Event-loop lag, worst of the last second (ms)",
    "cpu_pct": "CPU (% of one core)",
    "viewers": "Viewers connected",
    "room_sockets": "Room-event sockets",
}
PLOTTED = tuple(TITLES)


def plot_series(path: Path, name: str, t_s: Sequence[float], values: Sequence[float | None], verdict: Verdict) -> bool:
    """One series over time: the warm-up shaded, the fitted line over the judged part; False if never sampled."""
    points = [(t / 60, v) for t, v in zip(t_s, values, strict=True) if v is not None]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1, marker=".", ms=3, label=name)
        ax.axvspan(0, verdict.warmup_s / 60, color="0.9", label="warm-up (not judged)")
        judged = next((s for s in verdict.series if s.name == name and s.measured), None)
        if judged is not None and judged.start is not None and judged.end is not None:
            after = [p[0] for p in points if p[0] * 60 >= verdict.warmup_s]
            word = "flat" if judged.flat else "GROWS"
            ax.plot([after[0], after[-1]], [judged.start, judged.end], color="green" if judged.flat else "red",
                    lw=2, label=f"fit: {judged.slope_per_hour:+.3g} {judged.unit}/h ({word})")
        ax.set_title(TITLES.get(name, name))
        ax.set_xlabel("minutes since the workload started")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return True


def write_report(out: Path, samples: Sequence[Sample], verdict: Verdict, meta: dict[str, Any]) -> dict[str, Path]:
    """samples.json, one PNG per sampled series, verdict.json and report.md in ``out``; the plots by series."""
    t_s, columns = series(samples)
    (out / "samples.json").write_text(json.dumps([asdict(s) for s in samples], indent=1))
    plots: dict[str, Path] = {}
    for name in PLOTTED:
        path = out / f"{name}.png"
        if plot_series(path, name, t_s, columns[name], verdict):
            plots[name] = path
    (out / "verdict.json").write_text(json.dumps({**verdict.to_json(), **meta}, indent=2))
    (out / "report.md").write_text(_markdown(verdict, meta, plots, len(samples)))
    return plots


def _markdown(verdict: Verdict, meta: dict[str, Any], plots: dict[str, Path], count: int) -> str:
    lines = [f"# Soak: {verdict.label}", "",
             f"{meta.get('duration_s', 0):.0f} s of workload against {meta.get('base_url', '?')}; {count} samples "
             f"every {meta.get('interval_s', '?')} s; judged after a warm-up of {verdict.warmup_s:.0f} s "
             f"({verdict.judged_s:.0f} s judged).", ""]
    for problem in verdict.problems:
        lines.append(f"- **problem**: {problem}")
    lines += ["", "| series | flat | samples | slope (unit/h) | stderr (unit/h) | growth over window | bound (unit/h) "
              "| floor | why |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in verdict.series:
        if not s.measured:
            lines.append(f"| {s.name} | not measured | 0 | | | | {s.bound_per_hour:g} | {s.floor:g} | {s.reason} |")
            continue
        lines.append(f"| {s.name} ({s.unit}) | {'yes' if s.flat else '**no**'} | {s.samples} | "
                     f"{s.slope_per_hour:+.3g} | {s.stderr_per_hour:.3g} | {s.growth:+.3g} | {s.bound_per_hour:g} | "
                     f"{s.floor:g} | {s.reason} |")
    workload = meta.get("workload")
    if workload:
        lines += ["", "## Workload", "", "```json", json.dumps(workload, indent=2), "```"]
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"
