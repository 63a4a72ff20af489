"""Checks on our report.html (loadtests.report) of a real run, shared by the load tests that make one."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

PLOTS = ("report-joins.png", "report-ttff.png", "report-latency.png", "report-stutter.png", "report-cpu.png")
# First-column and text headers: they name rows or hold words, not measurements.
NAME_HEADERS = {"", "room", "network condition", "node", "process", "target", "scope", "unit", "result", "detail"}


class _Tables(HTMLParser):
    """Every table of a page as rows of cell texts (header cells marked), and the plots' image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[bool, str]]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None
        self._header = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._header = [], tag == "th"
        elif tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append((self._header, "".join(self._cell).strip()))
            self._cell = None


def check_report(out: Path, document: dict[str, Any]) -> str:
    """report.html in ``out`` says the verdict and its missed targets, has the tables with a unit in every
    measurement header, rows for every room and network condition, and the plots (files and embedded) of a
    timeline that adds up to the run's totals. Returns the page."""
    page = (out / "report.html").read_text()
    verdict = document["verdict"]
    assert f"<title>Load test {document['profile']}: {verdict}</title>" in page, page[:500]
    assert 'class="verdict" style="background:' in page and f">{verdict}</span>" in page
    for check in document["checks"]:
        if not check["passed"]:
            assert f"{check['name']} [{check['scope']}]:" in page, (check, page[:3000])
    parsed = _Tables()
    parsed.feed(page)
    headers = [text for table in parsed.tables for row in table for is_header, text in row if is_header]
    unitless = [h for h in headers if h not in NAME_HEADERS and not ("(" in h and h.endswith(")"))]
    assert not unitless, f"headers without a unit: {unitless}"
    for header in ("join success (%)", "TTFF p95 (ms)", "latency p95 (ms)", "watch time (s)", "frame rate (fps)",
                   "stutter (% of watch time)", "CPU mean (% of one core)"):
        assert header in headers, (header, sorted(set(headers)))
    row_names = {row[0][1] for table in parsed.tables for row in table if row and not row[0][0]}
    for name in [*document["by_room"], *document["by_network"], *document["generator"]]:
        assert name in row_names, (name, sorted(row_names))
    # The plots: files next to the page, the same pictures embedded in it.
    for plot in PLOTS:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    assert len([src for src in parsed.images if src.startswith("data:image/png;base64,")]) == len(PLOTS)
    # What they plot: the run's timeline adds up to its totals.
    points = document["timeline"]["points"]
    overall = document["overall"]
    assert sum(p["join_attempts"] for p in points) == overall["join_attempts"], (points, overall)
    assert sum(p["join_ok"] for p in points) == overall["viewers_joined"], (points, overall)
    assert abs(sum(p["watch_s"] for p in points) - overall["watch_s"]) < 0.05, (points, overall)
    assert {net for p in points for net in p["by_network"]} == set(document["by_network"]), points
    assert {proc for p in points for proc in p["cpu"]} == set(document["generator"]), points
    return page
