"""The TTFF step's figures and verdicts, from the viewer processes' join replies and the host's counters.

TTFF is the lean viewer's: offer POST to the first complete keyframe (every packet from the frame's first
to its marker), the first picture a decoder could show. Catch-up: a joiner is back within ``LIVE_MS`` of
live from the first shown frame after which every frame it showed in its follow window stayed within
``LIVE_MS`` of its capture time (capture tags, loadtests/webrtc/capture_tag.py); it passes when that
happens within ``CATCH_UP_S`` of its offer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report import cell, rounded
from loadtests.webrtc.metrics import percentile

TTFF_P95_MAX_MS = 100.0  # issue 13, for the steady joiners at every keyframe interval
LIVE_MS = 100.0
CATCH_UP_S = 2.0
# Counters a keyframe cache may publish in /api/stats publications: joiners it could not serve.
CACHE_MISS_KEYS = ("keyframe_cache_misses", "cache_fallbacks")


def interval_label(seconds: float) -> str:
    return "pli" if seconds <= 0 else f"{seconds:g} s"


def catch_up_ms(samples: Sequence[Sequence[float]], live_ms: float = LIVE_MS) -> float | None:
    """ms since the offer from which every shown frame was within ``live_ms`` of live; None if the last was not."""
    since: float | None = None
    for at_ms, latency_ms in samples:
        if latency_ms <= live_ms:
            if since is None:
                since = at_ms
        else:
            since = None
    return since


def _counter(publication: dict[str, Any] | None, keys: Sequence[str]) -> int | None:
    for key in keys:
        value = (publication or {}).get(key)
        if isinstance(value, int):
            return value
    return None


def _delta(before: dict[str, Any] | None, after: dict[str, Any] | None, keys: Sequence[str]) -> int | None:
    end = _counter(after, keys)
    if end is None:
        return None
    start = _counter(before, keys)
    return end - (start or 0)


def video_publication(stats: dict[str, Any] | None, room: str) -> dict[str, Any] | None:
    """The room's host video publication in a /api/stats snapshot."""
    for entry in (stats or {}).get("rooms") or []:
        if entry.get("room") == room:
            video = (entry.get("publications") or {}).get("video")
            return video if isinstance(video, dict) else None
    return None


def summarize(joins: Sequence[dict[str, Any]], expected: int, *, host: dict[str, Any] | None = None,
              before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> dict[str, Any]:
    """One cell's figures: joins pooled over the viewer processes, keyframe requests, catch-up."""
    ttff = [t for j in joins for t in j.get("ttff_ms", [])]
    early = [s for j in joins for s in j.get("early_latency", [])]
    catch = [catch_up_ms(s) for s in early]
    caught = sum(1 for c in catch if c is not None and c <= CATCH_UP_S * 1000)
    errors: dict[str, int] = {}
    for join in joins:
        for kind, count in (join.get("errors") or {}).items():
            errors[kind] = errors.get(kind, 0) + count
    first_latency = [s[0][1] for s in early if s]
    return {
        "expected": expected,
        "joined": sum(j.get("ok", 0) for j in joins),
        "join_errors": errors,
        "ttff_p50_ms": rounded(percentile(ttff, 50), 1),
        "ttff_p95_ms": rounded(percentile(ttff, 95), 1),
        "ttff_max_ms": rounded(max(ttff), 1) if ttff else None,
        "ttff_samples": len(ttff),
        "caught_up": caught,
        "followed": len(early),
        # A joiner that never got back counts as never: the p95 is then None when more than 5 % did not.
        "catch_up_p95_ms": _p95_or_none(catch),
        "first_frame_latency_p95_ms": rounded(percentile(first_latency, 95), 1),
        "host_keyframe_requests": (host or {}).get("keyframe_requests"),
        "host_keyframes_sent": (host or {}).get("keyframes_sent"),
        "gateway_keyframe_requests": _delta(before, after, ("keyframe_requests",)),
        "cache_misses": _delta(before, after, CACHE_MISS_KEYS),
    }


def _p95_or_none(values: Sequence[float | None]) -> float | None:
    if not values:
        return None
    ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
    rank = max(0, -(-95 * len(ordered) // 100) - 1)  # nearest rank
    value = ordered[rank]
    return None if value is None else round(value, 1)


def cell_verdict(cell_result: dict[str, Any], gated: bool) -> tuple[str, list[str]]:
    """INVALID (the generator ran out), else for gated cells ok/FAIL against TTFF p95, joins and catch-up;
    ungated cells (bursts) are 'reported'."""
    if cell_result.get("invalid"):
        return "INVALID", list(cell_result["invalid"])
    if not gated:
        return "reported", []
    misses = []
    missing = cell_result["expected"] - cell_result["joined"]
    if missing > 0:
        misses.append(f"{missing} of {cell_result['expected']} joiners got no first keyframe")
    p95 = cell_result.get("ttff_p95_ms")
    if p95 is None or p95 > TTFF_P95_MAX_MS:
        misses.append(f"TTFF p95 {p95} ms > {TTFF_P95_MAX_MS:.0f}")
    late = cell_result["joined"] - cell_result["caught_up"]
    if late > 0:
        misses.append(f"{late} joiners not within {LIVE_MS:.0f} ms of live by {CATCH_UP_S:g} s")
    return ("FAIL" if misses else "ok"), misses


def step_verdict(cells: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """FAIL if a gated cell failed; INVALID if one could not be judged; ok when every gated cell passed."""
    gated = [c for c in cells if c.get("gated")]
    failed = [f"{c['keyframe_interval']} {c['pattern']}" for c in gated if c["verdict"] == "FAIL"]
    if failed:
        return "FAIL", [f"missed the target: {', '.join(failed)}"]
    invalid = [f"{c['keyframe_interval']} {c['pattern']}" for c in gated if c["verdict"] != "ok"]
    if invalid or not gated:
        return "INVALID", [f"not judged: {', '.join(invalid) or 'no steady cell measured'}"]
    return "ok", []


_COLUMNS = [("keyframes", "keyframe_interval", 9), ("joiners", "pattern", 13), ("ok", "joined", 4),
            ("ttff p50", "ttff_p50_ms", 8), ("ttff p95", "ttff_p95_ms", 8), ("max", "ttff_max_ms", 7),
            ("live<=2s", "caught_up_text", 8), ("catch p95", "catch_up_p95_ms", 9),
            ("kf req host", "host_keyframe_requests", 11), ("kf req gw", "gateway_keyframe_requests", 9),
            ("cache miss", "cache_misses", 10), ("gen %", "viewer_proc_core_pct_max", 5),
            ("box %", "machine_busy_pct", 5)]


def describe(result: dict[str, Any]) -> str:
    lines = [f"== TTFF: offer POST to first complete keyframe, ms; target p95 <= {TTFF_P95_MAX_MS:.0f} ms and every "
             f"joiner within {LIVE_MS:.0f} ms of live by {CATCH_UP_S:g} s, for the steady joiners (bursts reported)"]
    if result.get("error"):
        lines.append(f"   error: {result['error']}")
    lines.append("  ".join(h.rjust(w) for h, _, w in _COLUMNS) + "  verdict")
    for c in result.get("cells", []):
        shown = {**c, "caught_up_text": f"{c.get('caught_up')}/{c.get('joined')}"}
        text = c.get("verdict", "-") + (f" ({'; '.join(c['verdict_reasons'])})" if c.get("verdict_reasons") else "")
        lines.append("  ".join(cell(shown.get(key), w, 1 if key.endswith("_pct_max") or key.endswith("_pct")
                                    else None) for _, key, w in _COLUMNS) + "  " + text)
    lines.append("kf req host: PLI/FIR the synthetic host received over its life (start-up included); kf req gw: "
                 "keyframe requests the gateway sent upstream during the joins (/api/stats); cache miss: "
                 "joiners its keyframe cache could not serve, when it reports them")
    reasons = result.get("verdict_reasons") or []
    lines.append(f"TTFF verdict: {result.get('verdict')}" + (f" ({'; '.join(reasons)})" if reasons else ""))
    return "\n".join(lines)
