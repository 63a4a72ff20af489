"""Samples of the gateway process every few seconds: /proc for memory, fds, threads and CPU, /metrics for the
rest (asyncio tasks and event-loop lag are only visible from inside the process).

Without a pid (a gateway on another machine, or behind a supervisor) RSS and fds come from the standard
``process_*`` series of ``/metrics`` instead, and threads are not measured. Rows are appended to the
CSV as they are taken, so a run that dies still leaves its samples behind.
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Sample:
    t_s: float  # seconds since the soak's workload started
    wall: float  # time.time()
    rss_mb: float | None = None
    fds: int | None = None
    threads: int | None = None
    cpu_pct: float | None = None  # of one core, since the previous sample
    tasks: int | None = None
    loop_lag_ms: float | None = None
    viewers: int | None = None  # context for the plots: what the gateway carried then
    room_sockets: int | None = None


COLUMNS = [f.name for f in fields(Sample)]


@dataclass(frozen=True, slots=True)
class ProcFigures:
    rss_mb: float
    fds: int
    threads: int
    cpu_s: float


def read_proc(pid: int) -> ProcFigures:
    """RSS, open fds, threads and CPU seconds of ``pid``; ProcessLookupError when it is gone."""
    base = Path("/proc") / str(pid)
    try:
        status = (base / "status").read_text()
        stat = (base / "stat").read_text()
        fds = len(os.listdir(base / "fd"))
    except FileNotFoundError as exc:
        raise ProcessLookupError(pid) from exc
    rss_kb = threads = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    # The command name (field 2) may hold spaces: utime and stime are fields 14 and 15.
    after = stat[stat.rindex(")") + 2 :].split()
    cpu_s = (int(after[11]) + int(after[12])) / CLOCK_TICKS
    return ProcFigures(rss_kb / 1024, fds, threads, cpu_s)


@dataclass(frozen=True, slots=True)
class MetricFigures:
    tasks: int | None
    loop_lag_ms: float | None
    viewers: int | None
    room_sockets: int | None
    rss_mb: float | None
    fds: int | None


def parse_metrics(text: str) -> MetricFigures:
    """The figures the soak wants from a Prometheus exposition (summed over workers if several are exported)."""
    values: dict[str, float] = {}
    lag: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "cherry_event_loop_lag_seconds":
                lag = max(lag or 0.0, sample.value)
            elif name == "cherry_participants" and sample.labels.get("role") != "viewer":
                continue
            elif name in ("cherry_asyncio_tasks", "cherry_participants", "cherry_room_event_sockets",
                          "process_resident_memory_bytes", "process_open_fds"):
                values[name] = values.get(name, 0.0) + sample.value

    def whole(name: str) -> int | None:
        return int(values[name]) if name in values else None

    rss = values.get("process_resident_memory_bytes")
    return MetricFigures(whole("cherry_asyncio_tasks"), None if lag is None else lag * 1000,
                         whole("cherry_participants"), whole("cherry_room_event_sockets"),
                         None if rss is None else rss / (1 << 20), whole("process_open_fds"))


class GatewayGone(RuntimeError):
    """The sampled process exited, or its metrics stopped answering."""


class Sampler:
    """Takes a :class:`Sample` every ``interval`` seconds until cancelled; ``samples`` holds them all."""

    MAX_SCRAPE_FAILURES = 3  # in a row: the gateway is gone (one slow scrape is not a verdict)

    def __init__(self, metrics_url: str, pid: int | None, interval: float, csv_path: Path,
                 http: aiohttp.ClientSession) -> None:
        self.metrics_url = metrics_url
        self.pid = pid
        self.interval = interval
        self.csv_path = csv_path
        self.samples: list[Sample] = []
        self.scrape_errors = 0
        self.gone: str | None = None  # why sampling stopped early
        self._http = http
        self._started = time.monotonic()
        self._last_cpu: tuple[float, float] | None = None  # (cpu seconds, monotonic)

    def restart_clock(self) -> None:
        """t = 0 from now (the workload is up)."""
        self._started = time.monotonic()

    async def scrape(self) -> MetricFigures:
        timeout = aiohttp.ClientTimeout(total=max(2.0, self.interval))
        async with self._http.get(self.metrics_url, timeout=timeout) as response:
            if response.status != 200:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                  message=f"{self.metrics_url} answered {response.status}")
            return parse_metrics(await response.text())

    async def take(self) -> Sample:
        now = time.monotonic()
        sample = Sample(round(now - self._started, 3), time.time())
        if self.pid is not None:
            proc = read_proc(self.pid)
            sample.rss_mb, sample.fds, sample.threads = round(proc.rss_mb, 3), proc.fds, proc.threads
            if self._last_cpu is not None:
                cpu0, at0 = self._last_cpu
                sample.cpu_pct = round(100 * (proc.cpu_s - cpu0) / max(now - at0, 1e-6), 2)
            self._last_cpu = (proc.cpu_s, now)
        figures = await self.scrape()
        sample.tasks, sample.viewers, sample.room_sockets = figures.tasks, figures.viewers, figures.room_sockets
        sample.loop_lag_ms = None if figures.loop_lag_ms is None else round(figures.loop_lag_ms, 3)
        if self.pid is None:
            sample.rss_mb = None if figures.rss_mb is None else round(figures.rss_mb, 3)
            sample.fds = figures.fds
        return sample

    async def run(self) -> None:
        """Sample until cancelled, or until the gateway is gone (then ``gone`` says why)."""
        with self.csv_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            failures = 0
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while True:
                try:
                    sample = await self.take()
                except ProcessLookupError:
                    self.gone = f"gateway pid {self.pid} exited"
                    return
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    failures += 1
                    self.scrape_errors += 1
                    if failures >= self.MAX_SCRAPE_FAILURES:
                        self.gone = f"{self.metrics_url}: {failures} scrapes failed in a row ({exc!r})"
                        return
                else:
                    failures = 0
                    self.samples.append(sample)
                    _write(writer, f, sample)
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))  # a fixed cadence, whatever a scrape took


def _write(writer: csv.DictWriter[str], f: IO[str], sample: Sample) -> None:
    writer.writerow({k: ("" if v is None else v) for k, v in asdict(sample).items()})
    f.flush()


def series(samples: Iterable[Sample]) -> tuple[list[float], dict[str, list[float | None]]]:
    """(times in seconds, {column: values}) for the verdict and the plots."""
    rows = list(samples)
    columns: dict[str, list[float | None]] = {
        name: [None if (v := getattr(s, name)) is None else float(v) for s in rows]
        for name in COLUMNS if name not in ("t_s", "wall")}
    return [s.t_s for s in rows], columns
