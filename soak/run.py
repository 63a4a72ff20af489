"""``python -m soak.run --duration 30m``: a bounded soak with a flat-or-not verdict.

Starts a gateway on 127.0.0.1 (ICE pinned there; ``configs/load-gateway.toml``, dev mode) unless
``--base-url`` names a running one, puts the workload in place (:mod:`soak.workload`), samples the
gateway every ``--interval`` seconds for ``--duration``, stops everything it started, judges the series
after ``--warmup`` (:mod:`soak.verdict`) and writes the report folder (:mod:`soak.report`).

Exit codes: 0 PASS, 1 FAIL (a series grows, the gateway died, viewers could not join), 2 set-up error
(no gateway, no metrics, a host could not publish, too few samples to judge).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from loadtests.webrtc.process import GatewayProcess, ProcessExited
from loadtests.webrtc.token_options import TokenSettings, add_token_arguments
from soak.report import write_report
from soak.sampler import Sampler, series
from soak.verdict import DEFAULT_BOUNDS, DEFAULT_NOISE_K, Bound, TooShort, Verdict, judge
from soak.workload import AgentError, AgentProcess, SetupFailed, Workload, WorkloadOptions

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_CONFIG = ROOT / "configs" / "load-gateway.toml"
EXIT_PASS, EXIT_FAIL, EXIT_SETUP = 0, 1, 2
# Joins that fail for this share of attempts make the run a FAIL whatever the series say (a gateway that
# refuses everyone has flat memory too).
MAX_JOIN_FAILURE_RATIO = 0.05
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"120s"``, ``"30m"``, ``"2h"``, ``"1.5h"`` or plain seconds (``"90"``) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 120s, 30m, 2h)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return seconds


def default_warmup(duration: float) -> float:
    """A third of the run, at most 10 minutes: sessions, caches and allocator pools fill up first (measured: the
    gateway's RSS climbs ~20 MB over its first 4 minutes of churn, then levels off)."""
    return min(duration / 3, 600.0)


def _say(message: str) -> None:
    print(f"soak: {message}", flush=True)


async def soak(args: argparse.Namespace, out: Path) -> int:
    duration: float = args.duration
    warmup = args.warmup if args.warmup is not None else default_warmup(duration)
    gateway: GatewayProcess | None = None
    agent: AgentProcess | None = None
    base_url, pid = args.base_url.rstrip("/"), args.pid
    tokens = TokenSettings.from_args(args)
    try:
        if not base_url:
            gateway = GatewayProcess(out / "gateway.log", config=Path(args.gateway_config), cwd=ROOT,
                                     dev=not tokens.given)
            try:
                await asyncio.to_thread(gateway.wait_healthy, 30)
            except (ProcessExited, TimeoutError) as exc:
                _say(f"SETUP: the gateway did not come up: {exc}")
                return EXIT_SETUP
            base_url, pid = gateway.base_url, gateway.process.pid
            _say(f"gateway pid {pid} on {base_url} (log {out / 'gateway.log'})")
        metrics_url = args.metrics_url or f"{base_url}/metrics"
        async with aiohttp.ClientSession() as http:
            sampler = Sampler(metrics_url, pid, args.interval, out / "samples.csv", http)
            try:
                first = await sampler.take()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                _say(f"SETUP: cannot scrape {metrics_url}: {exc!r} (give --metrics-url for an operations port)")
                return EXIT_SETUP
            except ProcessLookupError:
                _say(f"SETUP: no process {pid} to sample")
                return EXIT_SETUP
            if first.tasks is None:
                _say(f"note: {metrics_url} has no cherry_asyncio_tasks: tasks are not measured")
            agent = AgentProcess(base_url, out / "agent.log", tokens.argv())
            options = WorkloadOptions(room_pairs=args.room_pairs, viewers_per_room=args.viewers_per_room,
                                      churn_every=args.churn_every, chat_clients_per_room=args.chat_per_room,
                                      pk_battle_s=args.pk_battle, pk_gap_s=args.pk_gap)
            workload = Workload(agent, options)
            try:
                await agent.start()
                await workload.setup()
            except (AgentError, SetupFailed) as exc:
                _say(f"SETUP: {exc}")
                return EXIT_SETUP
            _say(f"workload up: rooms {', '.join(workload.rooms)}, {options.viewers_per_room} viewers each, one "
                 f"replaced every {options.churn_every:g} s, PK {options.pk_battle_s:g} s on / "
                 f"{options.pk_gap_s:g} s off; sampling every {args.interval:g} s for {duration:g} s "
                 f"(warm-up {warmup:g} s); reports in {out}")
            sampler.restart_clock()
            started = time.monotonic()
            sampling = asyncio.ensure_future(sampler.run())
            churning = asyncio.ensure_future(workload.churn())
            # Bounded: the run ends at the duration, or earlier if the gateway is gone.
            await asyncio.wait([sampling], timeout=duration)
            elapsed = time.monotonic() - started
            for task in (churning, sampling):
                task.cancel()
            await asyncio.gather(churning, sampling, return_exceptions=True)
            await agent.stop()
            samples = sampler.samples
        summary = workload.summary()
        problems = []
        if sampler.gone:
            problems.append(f"the gateway went away after {elapsed:.0f} s: {sampler.gone}")
        attempts = workload.counts.joins_ok + sum(workload.counts.joins_failed.values())
        failed = attempts - workload.counts.joins_ok
        if attempts and failed / attempts > MAX_JOIN_FAILURE_RATIO:
            problems.append(f"{failed} of {attempts} viewer joins failed: {workload.counts.joins_failed}")
        if args.pk_battle > 0 and duration >= args.pk_battle + args.pk_gap and not summary["pk_started"]:
            problems.append("no PK battle started")
        t_s, columns = series(samples)
        bounds = {name: Bound(getattr(args, f"max_{name}_per_hour"), getattr(args, f"{name}_floor"))
                  for name in DEFAULT_BOUNDS}
        try:
            verdict = judge(t_s, columns, warmup, bounds, args.noise_k, problems)
        except TooShort as exc:
            if not problems:
                _say(f"SETUP: {exc}: run longer or sample more often")
                return EXIT_SETUP
            verdict = Verdict(False, warmup, 0.0, [], problems)
        meta: dict[str, Any] = {"base_url": base_url, "pid": pid, "metrics_url": metrics_url,
                                "duration_s": round(elapsed, 1), "interval_s": args.interval,
                                "scrape_errors": sampler.scrape_errors, "workload": summary}
        write_report(out, samples, verdict, meta)
        for s in verdict.series:
            _say(f"{s.name}: {'flat' if s.flat else 'GROWS'}: {s.reason}" if s.measured else f"{s.name}: not measured")
        for problem in verdict.problems:
            _say(f"problem: {problem}")
        _say(f"workload: {summary['joins_ok']} joins ({sum(summary['joins_failed'].values())} failed), "
             f"{summary['leaves']} leaves, {summary['pk_started']} PK battles started / {summary['pk_ended']} ended, "
             f"{summary['chat_echoed']}/{summary['chat_sent']} chat echoed, stutter {summary['stutter_ratio']}")
        _say(f"VERDICT: {verdict.label} ({len(samples)} samples; report {out / 'report.md'})")
        return EXIT_PASS if verdict.passed else EXIT_FAIL
    finally:
        if agent is not None:
            await agent.stop()
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Soak: hosts, churning viewers, chat and PK cycles for a bounded "
                                     "time; memory, fds, threads, tasks and loop lag judged flat after a warm-up")
    parser.add_argument("--duration", type=parse_duration, default=parse_duration("30m"),
                        help="workload time, e.g. 120s, 30m, 2h (default 30m)")
    parser.add_argument("--warmup", type=parse_duration, default=None,
                        help="not judged at the start; default a third of the duration, at most 10m")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--out", default="", help="report folder; default soak/results/UTC-TIMESTAMP")
    parser.add_argument("--base-url", default="", help="a running gateway; default: start one on 127.0.0.1")
    parser.add_argument("--pid", type=int, default=None,
                        help="with --base-url: the gateway process to read /proc of (else RSS and fds come from "
                             "/metrics and threads are not measured)")
    parser.add_argument("--metrics-url", default="", help="default BASE_URL/metrics (an operations port: give it)")
    parser.add_argument("--gateway-config", default=str(GATEWAY_CONFIG), help="config of the gateway it starts")
    parser.add_argument("--room-pairs", type=int, default=1, help="pairs of rooms whose hosts battle (default 1)")
    parser.add_argument("--viewers-per-room", type=int, default=4)
    parser.add_argument("--churn-every", type=float, default=5.0, help="seconds between viewer replacements")
    parser.add_argument("--chat-per-room", type=int, default=1, help="room-event clients sending chat and gifts")
    parser.add_argument("--pk-battle", type=float, default=30.0, help="seconds a PK battle lasts")
    parser.add_argument("--pk-gap", type=float, default=10.0, help="seconds solo between battles")
    parser.add_argument("--noise-k", type=float, default=DEFAULT_NOISE_K,
                        help="standard errors of the slope tolerated above a bound (default 2)")
    for name, bound in DEFAULT_BOUNDS.items():
        flag = name.replace("_", "-")
        parser.add_argument(f"--max-{flag}-per-hour", type=float, default=bound.per_hour,
                            help=f"{name}: slope bound per hour (default {bound.per_hour:g})")
        parser.add_argument(f"--{flag}-floor", type=float, default=bound.floor,
                            help=f"{name}: growth over the judged window always tolerated (default {bound.floor:g})")
    add_token_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.pid is not None and not args.base_url:
        print("soak: --pid goes with --base-url (a gateway it starts is sampled by its own pid)", file=sys.stderr)
        return EXIT_SETUP
    out = Path(args.out) if args.out else ROOT / "soak" / "results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    task = loop.create_task(soak(args, out))
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C ends the run early but still stops what it started (the finally blocks run on cancel).
        loop.add_signal_handler(signum, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        print("soak: interrupted; everything it started was stopped", file=sys.stderr)
        return EXIT_SETUP
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
