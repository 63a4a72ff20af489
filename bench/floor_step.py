"""`make bench`'s floor step: the floor forwarder (bench/floor.py), then the gateway, same load, same counts.

Each side is a full series of ``bench.run.run_target`` (server, one synthetic host, the viewer processes,
idle-with-host, then each viewer count), back to back so the machine's load drifts as little as possible
between them; bench/floor_report.py puts them side by side and judges the ratio.
"""

from __future__ import annotations

from typing import Any

from bench import floor_report
from bench.run import Settings, run_target


async def floor_bench(settings: Settings, ends_at: float, result: dict[str, Any]) -> None:
    """Fills ``result`` as it goes (a deadline keeps what was measured)."""
    for side in ("floor", "gateway"):
        series = result[side] = {"target": side, "steps": []}
        await run_target(side, settings.floor_steps, settings, ends_at, series, label=f"floor-{side}")
    result["rows"] = floor_report.rows(result["floor"]["steps"], result["gateway"]["steps"])
    result["verdict"], result["verdict_reasons"] = floor_report.verdict(result["rows"])
