"""CPU time and memory of processes (and their descendants) from /proc; Linux only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loadtests.webrtc.process import descendants  # a multi-process server counts as a whole

__all__ = ["MachineCpu", "cpu_seconds", "descendants", "rss_bytes", "start_ticks", "tree_cpu_seconds",
           "tree_rss_bytes"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces or parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process; 0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start_ticks(pid: int) -> int | None:
    """Start time since boot, to tell a process from a later one with a recycled pid."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def rss_bytes(pid: int) -> int:
    try:
        resident = Path(f"/proc/{pid}/statm").read_text().split()[1]
    except (OSError, IndexError):
        return 0
    return int(resident) * PAGE_SIZE


def tree_cpu_seconds(pid: int) -> float:
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in descendants(pid))


def tree_rss_bytes(pid: int) -> int:
    return rss_bytes(pid) + sum(rss_bytes(child) for child in descendants(pid))


@dataclass(frozen=True, slots=True)
class MachineCpu:
    busy: float  # seconds of all cores
    total: float

    @classmethod
    def read(cls) -> MachineCpu:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        total = sum(values[:8])  # guest time is already inside user
        return cls((total - idle) / CLOCK_TICKS, total / CLOCK_TICKS)

    def busy_fraction_since(self, earlier: MachineCpu) -> float:
        """Share of all cores busy between two readings (0..1)."""
        total = self.total - earlier.total
        return (self.busy - earlier.busy) / total if total > 0 else 0.0
