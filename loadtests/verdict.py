"""PASS / FAIL / INVALID / SETUP from a run's :class:`~loadtests.summary.Summary` and the targets.

SETUP wins over everything: when the gateway refused the generator's tokens (401/403 on WHIP,
WHEP or a room socket) or the token source failed, the run measured the generator's
configuration, not the gateway. Then INVALID: when a generator process was starved (CPU,
event-loop lag) or died, its timings say nothing about the gateway, so neither PASS nor FAIL may
be claimed. Otherwise any missed target is FAIL. Exit codes: 0 PASS, 1 FAIL, 3 INVALID,
4 SKIPPED (a stub profile), 5 SETUP (tokens), 2 for other set-up errors (no gateway, bad profile).

Against a cluster (more than one gateway node in the results) every node's viewers must also meet
the ``[viewers]`` targets on their own (checks scoped ``node:NAME``): a pooled figure can hide one
bad node behind several good ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadtests import timeline
from loadtests.profiles import Targets
from loadtests.summary import GroupStats, Summary
from loadtests.webrtc.token_options import SETUP_HINT

EXIT = {"PASS": 0, "FAIL": 1, "ERROR": 2, "INVALID": 3, "SKIPPED": 4, "SETUP": 5}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    scope: str  # "all", or a network condition
    measured: float | None
    limit: float
    kind: str  # "max" or "min"
    detail: str = ""

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        return self.measured <= self.limit if self.kind == "max" else self.measured >= self.limit

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "scope": self.scope, "measured": self.measured, "limit": self.limit,
                "kind": self.kind, "passed": self.passed, "detail": self.detail}


def viewer_figures(stats: GroupStats) -> dict[str, Any]:
    """The figures targets are checked on, for one pooled group."""
    attempts = stats.join_attempts
    whep_errors = sum(v for k, v in stats.join_failed.items() if k.startswith("http_"))
    return {
        "viewers_joined": stats.join_ok,
        "join_attempts": attempts,
        "join_success": stats.join_ok / attempts if attempts else None,
        "join_errors": dict(sorted(stats.join_failed.items())),
        "whep_error_rate": whep_errors / attempts if attempts else None,
        "ttff_p50_ms": _r(stats.ttff_ms.percentile(50)),
        "ttff_p95_ms": _r(stats.ttff_ms.percentile(95)),
        "join_p95_ms": _r(stats.join_ms.percentile(95)),
        "whep_p95_ms": _r(stats.whep_ms.percentile(95)),
        "watch_s": round(stats.watch_s, 2),
        "fps": round(stats.frames / stats.watch_s, 2) if stats.watch_s else None,
        "freezes": stats.freezes,
        "freeze_s": round(stats.freeze_s, 3),
        "stutter_ratio": round(stats.freeze_s / stats.watch_s, 6) if stats.watch_s else None,
        "session_stutter_p95": _r(_div(stats.session_stutter.percentile(95), 1000), 5),
        "decode_gaps": stats.decode_gaps,
        "latency_p50_ms": _r(stats.latency_ms.percentile(50)),
        "latency_p95_ms": _r(stats.latency_ms.percentile(95)),
        "latency_samples": stats.latency_ms.total,
        "sessions": stats.sessions,
        "lost": stats.lost,
        "lost_session_rate": stats.lost / stats.sessions if stats.sessions else (0.0 if stats.join_ok == 0 else None),
    }


def event_figures(stats: GroupStats) -> dict[str, Any]:
    sent = stats.chat_sent + stats.gifts_sent + stats.likes_sent
    errors = sum(stats.event_errors.values())
    return {
        "sockets": stats.sockets,
        "chat_sent": stats.chat_sent,
        "chat_echoed": stats.chat_echoed,
        "gifts_sent": stats.gifts_sent,
        "likes_sent": stats.likes_sent,
        "event_errors": dict(sorted(stats.event_errors.items())),
        "event_error_rate": errors / sent if sent else (1.0 if errors else None),
        "chat_echo_p50_ms": _r(stats.chat_latency.percentile(50)),
        "chat_echo_p95_ms": _r(stats.chat_latency.percentile(95)),
    }


def pk_figures(summary: Summary) -> dict[str, Any]:
    events = summary.pooled(events=True)
    viewers = summary.pooled()
    inviting = [summary.pooled(room=room, events=True) for room in summary.rooms()]
    return {
        "invites": events.pk_invites,
        "battles": events.pk_started,
        "ended": events.pk_ended,
        "setup_p50_ms": _r(events.pk_setup_ms.percentile(50)),
        "setup_p95_ms": _r(events.pk_setup_ms.percentile(95)),
        "rooms_without_battle": sum(1 for g in inviting if g.pk_invites and not g.pk_started),
        "sessions": viewers.pk_sessions,
        "sessions_with_partner": viewers.pk_sessions_with_partner,
        "partner_video": viewers.pk_sessions_with_partner / viewers.pk_sessions if viewers.pk_sessions else None,
        "partner_frames": viewers.partner_frames,
        "partner_latency_p50_ms": _r(viewers.partner_latency_ms.percentile(50)),
        "partner_latency_p95_ms": _r(viewers.partner_latency_ms.percentile(95)),
    }


def _div(value: float | None, by: float) -> float | None:
    return None if value is None else value / by


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _viewer_checks(figures: dict[str, Any], limits: dict[str, float], scope: str) -> list[Check]:
    table = [
        ("stutter_ratio", "stutter_ratio_max", "max"),
        ("join_success", "join_success_min", "min"),
        ("ttff_p95_ms", "ttff_p95_ms_max", "max"),
        ("latency_p95_ms", "latency_p95_ms_max", "max"),
        ("whep_error_rate", "whep_error_rate_max", "max"),
        ("lost_session_rate", "lost_session_rate_max", "max"),
    ]
    return [Check(figure, scope, figures[figure], limits[key], kind) for figure, key, kind in table if key in limits]


def node_figures(summary: Summary, node: str) -> dict[str, Any]:
    """One gateway node: its viewers' figures (sessions it held), its room sockets, the rooms it originated."""
    figures = viewer_figures(summary.pooled(node=node))
    events = summary.pooled(events=True, node=node)
    if events.sockets or events.event_errors:
        figures["events"] = event_figures(events)
    figures["hosts"] = sorted(room for room, facts in summary.hosts.items() if facts.get("node") == node)
    return figures


def generator_problems(summary: Summary, targets: Targets) -> list[str]:
    """Why the generator, not the gateway, may have limited this run (empty: healthy)."""
    limits = targets.generator
    problems = list(summary.notes)
    for proc, health in sorted(summary.health.items()):
        lag = health.loop_lag_ms.percentile(99)
        busy = health.busy_intervals / health.intervals if health.intervals else 0.0
        if health.cpu_mean > limits["cpu_mean_max"]:
            problems.append(f"{proc}: CPU {health.cpu_mean:.0%} of a core on average > {limits['cpu_mean_max']:.0%}")
        if busy > limits["cpu_busy_share_max"]:
            problems.append(f"{proc}: over {health.BUSY:.0%} CPU in {busy:.0%} of intervals "
                            f"> {limits['cpu_busy_share_max']:.0%}")
        # Agents take every timing, so their loop must be prompt. A Locust process only issues
        # commands (and Locust blocks its own loop on each spawn message in distributed mode).
        lag_key = "locust_lag_p99_ms_max" if proc.startswith("locust@") else "loop_lag_p99_ms_max"
        if lag is not None and lag > limits[lag_key]:
            problems.append(f"{proc}: event-loop lag p99 {lag:.0f} ms > {limits[lag_key]:.0f} ms")
    return problems


def _listed(counts: dict[str, int]) -> str:
    return "; ".join(f"{reason} (x{count})" for reason, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def setup_problems(summary: Summary) -> list[str]:
    """Why the generator's own set-up (its tokens) decided this run (empty: it did not)."""
    problems = []
    if summary.token_refusals:
        problems.append(f"tokens refused by the gateway: {_listed(summary.token_refusals)}; {SETUP_HINT}")
    if summary.token_failures:
        problems.append(f"the token source failed: {_listed(summary.token_failures)}; {SETUP_HINT}")
    return problems


def evaluate(summary: Summary, targets: Targets, profile_name: str = "") -> dict[str, Any]:
    """The verdict document: checks, figures per room and per network condition, health."""
    viewers = summary.pooled()
    events = summary.pooled(events=True)
    overall = viewer_figures(viewers)
    checks = _viewer_checks(overall, targets.viewers, "all")
    for net, limits in sorted(targets.by_network.items()):
        if net in summary.nets():
            checks += _viewer_checks(viewer_figures(summary.pooled(net=net)), limits, net)
    by_node = {node: node_figures(summary, node) for node in summary.nodes()}
    if len(by_node) > 1:
        for node, figures in by_node.items():
            if figures["join_attempts"]:
                checks += _viewer_checks(figures, targets.viewers, f"node:{node}")
    chat = event_figures(events)
    if events.chat_sent:
        checks.append(Check("chat_echo_p95_ms", "events", chat["chat_echo_p95_ms"],
                            targets.events["chat_echo_p95_ms_max"], "max"))
    if events.sockets or events.event_errors:
        checks.append(Check("event_error_rate", "events", chat["event_error_rate"],
                            targets.events["event_error_rate_max"], "max"))
    pk = pk_figures(summary)
    if pk["invites"]:
        limits = targets.pk
        checks.append(Check("pk_setup_p95_ms", "pk", pk["setup_p95_ms"], limits["pk_setup_p95_ms_max"], "max"))
        checks.append(Check("rooms_without_battle", "pk", float(pk["rooms_without_battle"]),
                            limits["rooms_without_battle_max"], "max"))
        if pk["sessions"]:
            checks.append(Check("partner_video", "pk", pk["partner_video"], limits["partner_video_min"], "min",
                                f"{pk['sessions_with_partner']} of {pk['sessions']} sessions"))
    published = len(summary.hosts)
    host_attempts = published + sum(summary.host_failures.values())
    if host_attempts:
        checks.append(Check("publish_success", "hosts", published / host_attempts,
                            targets.hosts["publish_success_min"], "min",
                            ", ".join(f"{k}: {v}" for k, v in sorted(summary.host_failures.items()))))
    setup = setup_problems(summary)
    problems = generator_problems(summary, targets)
    if viewers.join_attempts == 0 and not events.sockets:
        problems.append("no measurements: the generator made no join attempt")
    if setup:
        verdict = "SETUP"
    elif problems:
        verdict = "INVALID"
    elif all(c.passed for c in checks):
        verdict = "PASS"
    else:
        verdict = "FAIL"
    return {
        "profile": profile_name,
        "verdict": verdict,
        "exit_code": EXIT[verdict],
        "setup_reasons": setup,
        "invalid_reasons": problems,
        "checks": [c.to_json() for c in checks],
        "overall": overall,
        "events": chat,
        "pk": pk,
        "by_room": {room: viewer_figures(summary.pooled(room=room)) for room in summary.rooms()
                    if summary.pooled(room=room).join_attempts},
        "by_network": {net: viewer_figures(summary.pooled(net=net)) for net in summary.nets()},
        "by_node": by_node,
        "generator": {
            proc: {
                "cpu_mean": round(h.cpu_mean, 4),
                "cpu_max": round(h.cpu_max, 4),
                "busy_intervals": h.busy_intervals,
                "intervals": h.intervals,
                "loop_lag_p50_ms": _r(h.loop_lag_ms.percentile(50)),
                "loop_lag_p99_ms": _r(h.loop_lag_ms.percentile(99)),
            }
            for proc, h in sorted(summary.health.items())
        },
        "generator_limits": dict(targets.generator),
        "hosts": summary.hosts,
        "host_failures": summary.host_failures,
        "marks": summary.marks,
        "timeline": timeline.series(summary.timeline),
    }


# -- text rendering -------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


_ROW = [
    ("joined", "viewers_joined", 6),
    ("tries", "join_attempts", 6),
    ("join ok", "join_success", 8),
    ("ttff p50", "ttff_p50_ms", 8),
    ("ttff p95", "ttff_p95_ms", 8),
    ("lat p50", "latency_p50_ms", 7),
    ("lat p95", "latency_p95_ms", 7),
    ("watch s", "watch_s", 8),
    ("fps", "fps", 5),
    ("freezes", "freezes", 7),
    ("stutter", "stutter_ratio", 8),
    ("lost", "lost", 4),
]


def _table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    width = max([len(title)] + [len(k) for k in rows])
    lines = [title.ljust(width) + "  " + "  ".join(h.rjust(w) for h, _, w in _ROW)]
    for name, figures in rows.items():
        lines.append(name.ljust(width) + "  " + "  ".join(_fmt(figures.get(k)).rjust(w) for _, k, w in _ROW))
    return lines


def render(document: dict[str, Any]) -> str:
    lines = [f"== load test {document['profile']}: per room"]
    lines += _table("room", document["by_room"])
    lines += ["", "== per network condition"]
    lines += _table("network", document["by_network"])
    lines += _table("ALL", {"ALL": document["overall"]})[1:]
    by_node = document.get("by_node") or {}
    if by_node:
        lines += ["", "== per gateway node (the node holding each session)"]
        lines += _table("node", {node: f for node, f in by_node.items() if f["join_attempts"]})
        lines += _table("ALL", {"ALL": document["overall"]})[1:]
        for node, figures in by_node.items():
            facts = []
            if figures["hosts"]:
                facts.append(f"origin of {', '.join(figures['hosts'])}")
            if figures["join_errors"]:
                facts.append(f"join errors {figures['join_errors']}")
            if "events" in figures:
                ev = figures["events"]
                facts.append(f"{ev['sockets']} room sockets, chat echo p95 {_fmt(ev['chat_echo_p95_ms'])} ms, "
                             f"errors {ev['event_errors'] or 'none'}")
            if facts:
                lines.append(f"  {node}: " + "; ".join(facts))
    events = document["events"]
    if events["sockets"] or events["event_errors"]:
        lines += ["", f"== room events: {events['sockets']} sockets, chat {events['chat_sent']} sent / "
                  f"{events['chat_echoed']} echoed (p50 {_fmt(events['chat_echo_p50_ms'])} ms, p95 "
                  f"{_fmt(events['chat_echo_p95_ms'])} ms), gifts {events['gifts_sent']}, "
                  f"likes {events['likes_sent']}, "
                  f"errors {events['event_errors'] or 'none'}"]
    pk = document.get("pk") or {}
    if pk.get("invites"):
        lines += ["", f"== PK: {pk['battles']} battles from {pk['invites']} invitations (set-up p50 "
                  f"{_fmt(pk['setup_p50_ms'])} ms, p95 {_fmt(pk['setup_p95_ms'])} ms), {pk['ended']} ended; partner "
                  f"video in {pk['sessions_with_partner']} of {pk['sessions']} sessions spanning a battle, "
                  f"partner latency p50 {_fmt(pk['partner_latency_p50_ms'])} ms, "
                  f"p95 {_fmt(pk['partner_latency_p95_ms'])} ms"]
    lines += ["", "== generator (share of one core; event-loop lag of a 50 ms timer)"]
    for proc, h in document["generator"].items():
        lines.append(f"{proc}: CPU mean {h['cpu_mean']:.0%}, max {h['cpu_max']:.0%}, "
                     f"lag p50 {_fmt(h['loop_lag_p50_ms'])} ms, p99 {_fmt(h['loop_lag_p99_ms'])} ms")
    lines += ["", "== targets"]
    for check in document["checks"]:
        mark = "PASS" if check["passed"] else "FAIL"
        op = "<=" if check["kind"] == "max" else ">="
        scope = "" if check["scope"] == "all" else f" [{check['scope']}]"
        detail = f"  ({check['detail']})" if check["detail"] else ""
        lines.append(f"{mark}  {check['name']}{scope}: {_fmt(check['measured'])} {op} {_fmt(check['limit'])}{detail}")
    for reason in document["invalid_reasons"]:
        lines.append(f"INVALID  {reason}")
    for reason in document.get("setup_reasons", []):  # last, next to the verdict they decide
        lines.append(f"SETUP  {reason}")
    if document.get("ended_early"):
        lines.append(f"(ended early: {document['ended_early']})")
    lines.append(f"\nVERDICT: {document['verdict']} (exit code {document['exit_code']})")
    return "\n".join(lines)
