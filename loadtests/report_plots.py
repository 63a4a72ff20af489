"""The plots over time of a load run's report: PNG files drawn with matplotlib's Agg canvas.

Each plot reads the ``timeline`` section of the verdict document (:func:`loadtests.timeline.series`):
one point per interval, drawn at the interval's middle. Figures are built with
``matplotlib.figure.Figure`` directly (no pyplot: no global state, no GUI backend, nothing to close).
Target lines come from the document's own checks, so a plot shows the limit the verdict used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

WIDTH_IN, HEIGHT_IN, DPI = 9.0, 3.2, 90
TIME_LABEL = "time since the first interval (s)"
Value = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True, slots=True)
class Plot:
    file: str  # PNG file name, next to the report
    title: str
    caption: str


def _limit(document: dict[str, Any], name: str, scope: str = "all") -> float | None:
    for check in document.get("checks", []):
        if check["name"] == name and check["scope"] == scope:
            return float(check["limit"])
    return None


def _axes(title: str, ylabel: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(TIME_LABEL)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _finish(axes: Axes, target: float | None = None, label: str = "", unit: str = "",
            legend: str = "small", always: bool = False) -> None:
    """Axes from zero (after the data: fixing a limit stops autoscaling), the target, the legend.

    The target is a dotted line; unless ``always``, one far above the data (a 400 ms limit over 3 ms
    of latency) is named in the legend, not drawn, so the data keep the plot's height.
    """
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    if target is not None:
        if always or target <= axes.get_ylim()[1] * 2:
            axes.axhline(target, color="tab:red", linestyle=":", linewidth=1.2, label=f"{label} {target:g} {unit}")
        else:
            axes.plot([], [], " ", label=f"{label} {target:g} {unit} (off the scale)")
    axes.legend(loc="upper right", fontsize=legend)


def _line(axes: Axes, points: list[dict[str, Any]], half: float, value: Value, label: str, **style: Any) -> bool:
    """One series; intervals without a value (no viewer watched) are gaps in the line. False: nothing to draw."""
    xs = [p["t_s"] + half for p in points]
    ys = [value(p) for p in points]
    if all(y is None for y in ys):
        return False
    axes.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", markersize=3, label=label, **style)
    return True


def _of_net(net: str, key: str, scale: float = 1.0) -> Value:
    """A point's figure ``key`` for network condition ``net`` (None where it had no viewer then)."""
    def value(point: dict[str, Any]) -> float | None:
        figure = point["by_network"].get(net, {}).get(key)
        return None if figure is None else figure * scale
    return value


def _of_process(proc: str) -> Value:
    def value(point: dict[str, Any]) -> float | None:
        share = point["cpu"].get(proc)
        return None if share is None else share * 100
    return value


def _nets(points: list[dict[str, Any]]) -> list[str]:
    return sorted({net for p in points for net in p["by_network"]})


def _joins(document: dict[str, Any], points: list[dict[str, Any]], interval: int) -> Figure:
    figure, axes = _axes(f"Joins per {interval} s interval (bar height: attempts)", "joins (count per interval)")
    xs = [p["t_s"] + interval / 2 for p in points]
    ok = [p["join_ok"] for p in points]
    failed = [p["join_failed"] for p in points]
    axes.bar(xs, ok, width=interval * 0.8, color="tab:green", label="successes")
    axes.bar(xs, failed, width=interval * 0.8, bottom=ok, color="tab:red", label="failures")
    _finish(axes)
    return figure


def _ttff(document: dict[str, Any], points: list[dict[str, Any]], interval: int) -> Figure:
    figure, axes = _axes("Time to first frame of the joins that ended in each interval", "TTFF (ms)")
    _line(axes, points, interval / 2, lambda p: p["ttff_p50_ms"], "p50")
    _line(axes, points, interval / 2, lambda p: p["ttff_p95_ms"], "p95")
    _finish(axes, _limit(document, "ttff_p95_ms"), "p95 target", "ms")
    return figure


def _latency(document: dict[str, Any], points: list[dict[str, Any]], interval: int) -> Figure:
    figure, axes = _axes("Capture-to-frame latency per network condition", "latency (ms)")
    for index, net in enumerate(_nets(points)):
        color = f"C{index}"
        _line(axes, points, interval / 2, _of_net(net, "latency_p50_ms"), f"{net} p50", color=color, linestyle="--")
        _line(axes, points, interval / 2, _of_net(net, "latency_p95_ms"), f"{net} p95", color=color)
    _finish(axes, _limit(document, "latency_p95_ms"), "p95 target (all viewers)", "ms")
    return figure


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def _stutter(document: dict[str, Any], points: list[dict[str, Any]], interval: int) -> Figure:
    figure, axes = _axes("Stutter: freeze time / watch time per interval", "stutter (% of watch time)")
    for index, net in enumerate(_nets(points)):
        _line(axes, points, interval / 2, _of_net(net, "stutter_ratio", 100), net, color=f"C{index}")
    _line(axes, points, interval / 2, lambda p: _percent(p["stutter_ratio"]), "all viewers", color="black",
          linewidth=1)
    _finish(axes, _percent(_limit(document, "stutter_ratio")), "target (all viewers)", "%", always=True)
    return figure


def _cpu(document: dict[str, Any], points: list[dict[str, Any]], interval: int) -> Figure:
    figure, axes = _axes("Load generator CPU per process", "CPU (% of one core)")
    processes = sorted({proc for p in points for proc in p["cpu"]})
    for proc in processes:
        _line(axes, points, interval / 2, _of_process(proc), proc)
    limit = (document.get("generator_limits") or {}).get("cpu_mean_max")
    _finish(axes, _percent(limit), "INVALID above a mean of", "%", legend="x-small", always=True)
    return figure


PLOTS: list[tuple[str, Callable[[dict[str, Any], list[dict[str, Any]], int], Figure], str, str]] = [
    ("report-joins.png", _joins, "Joins",
     "Join attempts, successes (first frame within the profile's join timeout) and failures, counted in the "
     "interval the join ended in."),
    ("report-ttff.png", _ttff, "Time to first frame (TTFF)",
     "Accepted WHEP POST to the first decodable frame, p50 and p95 of the joins that ended in each interval."),
    ("report-latency.png", _latency, "Latency",
     "Capture (the synthetic host's timestamp in each frame) to the frame becoming decodable at the viewer, "
     "p50 (dashed) and p95 of every frame in the interval, one colour per network condition."),
    ("report-stutter.png", _stutter, "Stutter",
     "Freeze time (W3C freeze rule) divided by watch time, per interval and network condition; the black line "
     "pools every viewer."),
    ("report-cpu.png", _cpu, "Load generator CPU",
     "CPU time over wall time of every generator process (load agents and Locust processes) per interval, "
     "in % of one core. A starved generator reports stutter the gateway did not cause."),
]


def write_plots(document: dict[str, Any], out: Path) -> list[Plot]:
    """Every plot of the document's timeline as a PNG in ``out`` (none when the run has no timeline)."""
    timeline = document.get("timeline") or {}
    points = timeline.get("points") or []
    if not points:
        return []
    interval = int(timeline["interval_s"])
    written = []
    for file, draw, title, caption in PLOTS:
        draw(document, points, interval).savefig(out / file, format="png")
        written.append(Plot(file, title, caption))
    return written
