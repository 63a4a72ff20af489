"""Our HTML report of a load run, for an SRE to hand on: the verdict, tables with units, plots over time.

``python -m loadtests.run`` writes it into the run's report folder after Locust ends; for a run made
with ``locust`` directly (several load machines), make it from the master's summary::

    python -m loadtests.report out/summary.json [--out DIR]

It writes ``report.html`` and the plots ``report-*.png`` (:mod:`loadtests.report_plots`) next to
it; the HTML embeds the plots too, so the one file can be mailed on. Everything comes from the
verdict document (``summary.json``, :func:`loadtests.verdict.evaluate`), never from Locust's own
statistics: Locust's report pools every request name of type ``WEBRTC`` (joins, per-viewer latency
means, per-session stutter, chat echoes) into one "Aggregated" row and one set of charts.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadtests.report_plots import Plot, write_plots

REPORT_NAME = "report.html"
Format = Callable[[Any], str]


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ms(value: Any) -> str:
    return _number(value, 1)


def _s(value: Any) -> str:
    return _number(value, 1)


def _pct(value: Any) -> str:
    """A ratio as a percentage: 0.0031 -> 0.31; tiny non-zero values keep their significant digits."""
    if value is None:
        return "–"
    percent = float(value) * 100
    if percent == 0:
        return "0"
    return f"{percent:.2f}" if abs(percent) >= 0.01 else f"{percent:.2g}"


def _count(value: Any) -> str:
    return "–" if value is None else str(int(value))


def _errors(value: Any) -> str:
    if not value:
        return "none"
    return ", ".join(f"{kind} ×{count}" for kind, count in sorted(value.items(), key=lambda kv: -kv[1]))


Column = tuple[str, str, Format]  # header (with its unit), figure key, formatter

VIEWER_COLUMNS: list[Column] = [
    ("joined (viewers)", "viewers_joined", _count),
    ("join attempts (count)", "join_attempts", _count),
    ("join success (%)", "join_success", _pct),
    ("TTFF p50 (ms)", "ttff_p50_ms", _ms),
    ("TTFF p95 (ms)", "ttff_p95_ms", _ms),
    ("join p95 (ms)", "join_p95_ms", _ms),
    ("latency p50 (ms)", "latency_p50_ms", _ms),
    ("latency p95 (ms)", "latency_p95_ms", _ms),
    ("watch time (s)", "watch_s", _s),
    ("frame rate (fps)", "fps", _number),
    ("freezes (count)", "freezes", _count),
    ("freeze time (s)", "freeze_s", lambda v: _number(v, 2)),
    ("stutter (% of watch time)", "stutter_ratio", _pct),
    ("session stutter p95 (% of watch time)", "session_stutter_p95", _pct),
    ("decode gaps (count)", "decode_gaps", _count),
    ("lost sessions (count)", "lost", _count),
    ("join errors (kind × count)", "join_errors", _errors),
]

EVENT_COLUMNS: list[Column] = [
    ("room sockets (count)", "sockets", _count),
    ("chat sent (messages)", "chat_sent", _count),
    ("chat echoed (messages)", "chat_echoed", _count),
    ("chat echo p50 (ms)", "chat_echo_p50_ms", _ms),
    ("chat echo p95 (ms)", "chat_echo_p95_ms", _ms),
    ("gifts sent (count)", "gifts_sent", _count),
    ("likes sent (count)", "likes_sent", _count),
    ("event errors (% of sent)", "event_error_rate", _pct),
    ("errors (kind × count)", "event_errors", _errors),
]

PK_COLUMNS: list[Column] = [
    ("invitations (count)", "invites", _count),
    ("battles (count)", "battles", _count),
    ("ended (count)", "ended", _count),
    ("set-up p50 (ms)", "setup_p50_ms", _ms),
    ("set-up p95 (ms)", "setup_p95_ms", _ms),
    ("rooms without a battle (rooms)", "rooms_without_battle", _count),
    ("sessions spanning a battle (sessions)", "sessions", _count),
    ("with partner video (%)", "partner_video", _pct),
    ("partner latency p50 (ms)", "partner_latency_p50_ms", _ms),
    ("partner latency p95 (ms)", "partner_latency_p95_ms", _ms),
]

GENERATOR_COLUMNS: list[Column] = [
    ("CPU mean (% of one core)", "cpu_mean", _pct),
    ("CPU max (% of one core)", "cpu_max", _pct),
    ("busy intervals (count)", "busy_intervals", _count),
    ("intervals (count)", "intervals", _count),
    ("event-loop lag p50 (ms)", "loop_lag_p50_ms", _ms),
    ("event-loop lag p99 (ms)", "loop_lag_p99_ms", _ms),
]

HOST_COLUMNS: list[Column] = [
    ("node", "node", lambda v: str(v or "–")),
    ("publish set-up (ms)", "publish_ms", _ms),
    ("known pauses (count)", "pauses", lambda v: str(len(v or []))),
]

# Units of the targets: figures ending in _ms are milliseconds, these are counts, the rest ratios (shown in %).
_CHECK_COUNTS = {"rooms_without_battle": "rooms"}

VERDICT_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INVALID": "#bf8700", "SETUP": "#6e7781"}
VERDICT_MEANING = {
    "PASS": "every target met, and the load generator was healthy",
    "FAIL": "the gateway missed a target",
    "INVALID": "the load generator, not the gateway, was the bottleneck: nothing is claimed",
    "SETUP": "the gateway refused the generator's tokens, or the token source failed: nothing is claimed",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1f2328; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.5em; text-align: right; }
th { background: #f6f8fa; vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; }
.verdict { display: inline-block; padding: 0.2em 0.6em; color: white; font-weight: bold; border-radius: 4px; }
.fail { color: #cf222e; font-weight: bold; }
.note { color: #57606a; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #d0d7de; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def table(first: str, rows: dict[str, dict[str, Any]], columns: list[Column]) -> str:
    """An HTML table: one row per name, one column per figure; every header names its unit."""
    head = "".join(f"<th>{_esc(header)}</th>" for header, _, _ in columns)
    body = "".join(
        f"<tr><td>{_esc(name)}</td>" + "".join(f"<td>{_esc(fmt(figures.get(key)))}</td>" for _, key, fmt in columns)
        + "</tr>"
        for name, figures in rows.items()
    )
    return f"<table><tr><th>{_esc(first)}</th>{head}</tr>{body}</table>"


def check_unit(name: str) -> tuple[str, Format]:
    if name.endswith("_ms"):
        return "ms", _ms
    if name in _CHECK_COUNTS:
        return _CHECK_COUNTS[name], _number
    return "%", _pct


def checks_table(checks: list[dict[str, Any]]) -> str:
    rows = []
    for check in checks:
        unit, fmt = check_unit(check["name"])
        op = "≤" if check["kind"] == "max" else "≥"
        result = "PASS" if check["passed"] else '<span class="fail">FAIL</span>'
        rows.append(f"<tr><td>{_esc(check['name'])}</td><td>{_esc(check['scope'])}</td>"
                    f"<td>{_esc(fmt(check['measured']))}</td><td>{op} {_esc(fmt(check['limit']))}</td>"
                    f"<td>{_esc(unit)}</td><td>{result}</td><td>{_esc(check.get('detail') or '')}</td></tr>")
    return ("<table><tr><th>target</th><th>scope</th><th>measured (in unit)</th><th>limit (in unit)</th>"
            "<th>unit</th><th>result</th><th>detail</th></tr>" + "".join(rows) + "</table>")


def failed_targets(document: dict[str, Any]) -> list[str]:
    """The missed targets, in words: ``stutter_ratio [all]: 1.2 % > 0.5 %``."""
    lines = []
    for check in document.get("checks", []):
        if check["passed"]:
            continue
        unit, fmt = check_unit(check["name"])
        op = ">" if check["kind"] == "max" else "<"
        measured = "no measurement" if check["measured"] is None else f"{fmt(check['measured'])} {unit}"
        lines.append(f"{check['name']} [{check['scope']}]: {measured} {op} {fmt(check['limit'])} {unit}")
    return lines


def _verdict_section(document: dict[str, Any]) -> str:
    verdict = document["verdict"]
    colour = VERDICT_COLOURS.get(verdict, "#6e7781")
    parts = [f'<p><span class="verdict" style="background:{colour}">{_esc(verdict)}</span> '
             f"exit code {_esc(document['exit_code'])}: {_esc(VERDICT_MEANING.get(verdict, ''))}</p>"]
    reasons = [("Targets missed", failed_targets(document)),
               ("INVALID because", document.get("invalid_reasons") or []),
               ("SETUP because", document.get("setup_reasons") or [])]
    for title, items in reasons:
        if items:
            parts.append(f"<p><b>{_esc(title)}:</b></p><ul>" + "".join(f"<li>{_esc(i)}</li>" for i in items)
                         + "</ul>")
    if document.get("ended_early"):
        parts.append(f"<p>Ended early: {_esc(document['ended_early'])}</p>")
    return "".join(parts)


def _settings(document: dict[str, Any]) -> str:
    settings = document.get("profile_settings") or {}
    if not settings:
        return ""
    network = settings.get("network") or {}
    mix = ", ".join(f"{net} {weight:g}" for net, weight in network.items()) or "–"
    return (f"<p>{_esc(settings.get('description', ''))}<br>run time {_esc(settings.get('run_time_s'))} s; "
            f"{_esc(settings.get('rooms'))} rooms, {_esc(settings.get('viewers'))} viewers "
            f"(network mix: {_esc(mix)}), {_esc(settings.get('chat_users'))} chat users</p>")


def _plot_html(plot: Plot, out: Path) -> str:
    data = base64.b64encode((out / plot.file).read_bytes()).decode()
    return (f"<h3>{_esc(plot.title)}</h3><p class=\"note\">{_esc(plot.caption)} "
            f"(<a href=\"{_esc(plot.file)}\">{_esc(plot.file)}</a>)</p>"
            f"<img alt=\"{_esc(plot.title)}\" src=\"data:image/png;base64,{data}\">")


def render(document: dict[str, Any], plots: list[Plot], out: Path) -> str:
    profile = document.get("profile") or "load run"
    overall = {"ALL": document["overall"]}
    sections = [
        f"<h1>Load test {_esc(profile)}: {_esc(document['verdict'])}</h1>",
        f"<p class=\"note\">Made {_esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} from summary.json by "
        "loadtests.report.</p>",
        _settings(document),
        "<h2>Verdict</h2>", _verdict_section(document),
        "<h2>Targets</h2>", checks_table(document.get("checks", [])),
        "<h2>Viewers per room</h2>", table("room", {**document.get("by_room", {}), **overall}, VIEWER_COLUMNS),
        "<h2>Viewers per network condition</h2>",
        table("network condition", {**document.get("by_network", {}), **overall}, VIEWER_COLUMNS),
    ]
    nodes = {node: f for node, f in (document.get("by_node") or {}).items() if f.get("join_attempts")}
    if nodes:
        sections += ["<h2>Viewers per gateway node</h2><p class=\"note\">The node holding each session "
                     "(where its media came from), whichever node its POST entered through.</p>",
                     table("node", {**nodes, **overall}, VIEWER_COLUMNS)]
    events = document.get("events") or {}
    if events.get("sockets") or events.get("event_errors"):
        sections += ["<h2>Room events</h2>", table("", {"all sockets": events}, EVENT_COLUMNS)]
    pk = document.get("pk") or {}
    if pk.get("invites"):
        sections += ["<h2>PK battles</h2>", table("", {"all rooms": pk}, PK_COLUMNS)]
    if document.get("hosts") or document.get("host_failures"):
        sections += ["<h2>Hosts</h2>", table("room", document.get("hosts") or {}, HOST_COLUMNS)]
        if document.get("host_failures"):
            sections.append(f"<p>Hosts that could not publish: {_esc(_errors(document['host_failures']))}</p>")
    sections += ["<h2>Load generator</h2><p class=\"note\">Share of one core per process; event-loop lag is how "
                 "late a 50 ms timer fires.</p>",
                 table("process", document.get("generator") or {}, GENERATOR_COLUMNS)]
    timeline = document.get("timeline") or {}
    sections.append("<h2>Over time</h2>")
    if plots:
        sections.append(f"<p class=\"note\">One point per {_esc(timeline.get('interval_s'))} s interval of wall "
                        "clock, drawn at its middle; time counts from the start of the first interval.</p>")
        sections += [_plot_html(plot, out) for plot in plots]
    else:
        sections.append("<p>No timeline in this summary (no measurements, or a summary.json from before "
                        "timelines).</p>")
    sections.append("<p class=\"note\">Locust's own report (PROFILE.html, PROFILE_stats.csv) sits next to this "
                    "one; its \"Aggregated\" row and charts pool joins, latency, stutter and chat requests "
                    "together and mean nothing as a whole.</p>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Load test {_esc(profile)}: "
            f"{_esc(document['verdict'])}</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")


def write_report(document: dict[str, Any], out: Path) -> Path:
    """``out/report.html`` and its plots; returns the HTML's path."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(document, out)
    path = out / REPORT_NAME
    path.write_text(render(document, plots, out), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="HTML report (verdict, tables, plots) of a load run's summary.json")
    parser.add_argument("summary", help="summary.json of a run (loadtests.run, or locust --summary-json)")
    parser.add_argument("--out", default="", help="directory for report.html and its plots; default: the summary's")
    args = parser.parse_args(argv)
    summary = Path(args.summary)
    try:
        document = json.loads(summary.read_text())
    except (OSError, ValueError) as exc:
        print(f"loadtests.report: cannot read {summary}: {exc}", file=sys.stderr)
        return 2
    path = write_report(document, Path(args.out) if args.out else summary.parent)
    print(f"loadtests.report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
