"""Headless load run against a local gateway that this command starts and stops itself.

``python -m loadtests.run --profile smoke`` (``make loadtest PROFILE=smoke``):

1. loads ``configs/profiles/smoke.toml`` (a ``status = "stub"`` profile is skipped, exit 4);
2. checks the token source (``--secret-env`` / ``--secret-file`` / ``--token-command``: one
   token from the command; exit 5 if it cannot give tokens);
3. starts ``python -m gateway serve --host 127.0.0.1 --port FREE --ice-host 127.0.0.1 --dev
   --config configs/load-gateway.toml`` unless ``--base-url`` names a running gateway or cluster
   (its nodes' URLs, comma-separated); ``--local-cluster N`` starts a cluster instead: a throwaway
   redis-server and N such gateways, each its own node (:class:`loadtests.local_cluster.LocalCluster`);
   with a token source the gateways are not in dev mode and ``--gateway-config`` must name their secret;
4. runs Locust headless with the profile's user count and spawn rate, users spread over the nodes:
   one process, Locust's ``--processes`` (from the profile or the command line), or, with
   ``--locust-workers K``, one ``locust --master`` and K ``locust --worker`` processes on a free
   loopback port (what a run over several load machines does); CSV and HTML reports and the
   summary JSON (totals and per node) in ``--out``, each worker's log as ``locust-worker-I.log``;
   then our ``report.html`` there (:mod:`loadtests.report`: verdict, tables, plots over time);
5. stops Locust (if it overran its time budget) and the gateways, by pid, and exits with Locust's
   code: 0 PASS, 1 FAIL, 3 INVALID, 5 SETUP (tokens refused or no tokens), 2 other set-up errors.

Everything is bounded: the gateways must be healthy within 30 s, Locust workers must connect within
``WORKERS_MAX_WAIT``, Locust gets the run time plus ``--grace`` seconds. Only 127.0.0.1 carries traffic.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import traceback
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from loadtests.local_cluster import LocalCluster
from loadtests.profiles import ROOT, Profile, ProfileError, load_profile
from loadtests.verdict import EXIT
from loadtests.webrtc.process import LOOPBACK, GatewayProcess, die_with_parent, free_port, stop_process
from loadtests.webrtc.token_options import SETUP_HINT, TokenError, TokenSettings, add_token_arguments

GATEWAY_CONFIG = ROOT / "configs" / "load-gateway.toml"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
WORKERS_MAX_WAIT = 60  # seconds the master waits for its --locust-workers to connect before it gives up


def node_urls(value: str) -> list[str]:
    """``--base-url``: one gateway, or a cluster's node URLs, comma-separated."""
    return [url.strip().rstrip("/") for url in value.split(",") if url.strip()]


def locust_argv(args: argparse.Namespace, nodes: list[str], users: int, spawn_rate: float, processes: int,
                out: Path, name: str, master_port: int | None = None) -> list[str]:
    """The headless Locust command: one process, ``--processes`` forks, or the master of ``--locust-workers``."""
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--host", nodes[0], "--nodes", ",".join(nodes), "--load-profile", args.profile,
            "-u", str(users), "-r", str(spawn_rate),
            "--csv", str(out / name), "--html", str(out / f"{name}.html"),
            "--summary-json", str(out / "summary.json"), "--only-summary", "--loglevel", args.loglevel,
            "--exit-code-on-error", "0", *TokenSettings.from_args(args).argv()]
    if args.locust_workers:
        assert master_port is not None
        argv += ["--master", "--expect-workers", str(args.locust_workers),
                 "--expect-workers-max-wait", str(WORKERS_MAX_WAIT),
                 "--master-bind-host", LOOPBACK, "--master-bind-port", str(master_port)]
    elif processes > 1:
        # A free master port: the default (5557) would let workers of another run on this machine
        # join ours (and ours theirs).
        port = free_port()
        argv += ["--processes", str(processes), "--master-bind-host", LOOPBACK, "--master-bind-port", str(port),
                 "--master-host", LOOPBACK, "--master-port", str(port)]
    if args.duration:
        argv += ["--load-duration", str(args.duration)]
    if args.targets:
        argv += ["--targets", args.targets]
    return argv


def worker_argv(args: argparse.Namespace, nodes: list[str], master_port: int) -> list[str]:
    """One ``locust --worker`` of ``--locust-workers``. The master's own options reach it with each spawn
    message; the profile it needs before that (it decides which user classes exist), and the token source."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", LOOPBACK,
            "--master-port", str(master_port), "--load-profile", args.profile, "--nodes", ",".join(nodes),
            "--loglevel", args.loglevel, *TokenSettings.from_args(args).argv()]


def run_locust(args: argparse.Namespace, nodes: list[str], users: int, spawn_rate: float, processes: int,
               out: Path, name: str, budget: float) -> int:
    """Locust (master and workers) until it ends by itself, at most ``budget`` s; everything stopped by pid."""
    master_port = free_port() if args.locust_workers else None
    argv = locust_argv(args, nodes, users, spawn_rate, processes, out, name, master_port)
    with ExitStack() as stack:
        locust = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, preexec_fn=die_with_parent)
        stack.callback(stop_process, locust, 15)
        workers: list[subprocess.Popen[bytes]] = []
        if master_port is not None:
            budget += WORKERS_MAX_WAIT
            for index in range(args.locust_workers):
                log: IO[bytes] = stack.enter_context((out / f"locust-worker-{index}.log").open("wb"))
                worker = subprocess.Popen(worker_argv(args, nodes, master_port), cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent)
                workers.append(worker)
                stack.callback(stop_process, worker, 15)
            print(f"loadtest: Locust master pid {locust.pid} on {LOOPBACK}:{master_port}, workers pids "
                  f"{', '.join(str(w.pid) for w in workers)}", flush=True)
        try:
            code = locust.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            print(f"loadtest: Locust overran {budget:.0f} s; stopping it", file=sys.stderr)
            return EXIT["ERROR"]
        for worker in workers:  # the master told them to quit; they go within a few seconds
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                print(f"loadtest: Locust worker pid {worker.pid} did not quit with its master; stopping it",
                      file=sys.stderr)
        return code


def check_tokens(settings: TokenSettings, profile: Profile) -> str | None:
    """Why the token source cannot give tokens (None: it can); a command is run once to see."""
    try:
        settings.check()
        if settings.command:
            import asyncio  # only here: this process otherwise runs no event loop

            from loadtests.webrtc.tokens import CommandTokenSource

            room = profile.room_names[0] if profile.room_names else "loadtest"
            asyncio.run(CommandTokenSource(settings.command).token(room, "viewer", "loadtest-preflight"))
    except TokenError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except (ProfileError, OSError, ValueError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT["ERROR"]
    if profile.status == "stub":
        print(f"loadtest: SKIPPED profile {profile.name}: {profile.skip_reason}")
        return EXIT["SKIPPED"]
    tokens = TokenSettings.from_args(args)
    problem = check_tokens(tokens, profile)
    if problem is not None:
        print(f"loadtest: SETUP: no tokens: {problem}; {SETUP_HINT}", file=sys.stderr)
        return EXIT["SETUP"]
    out = Path(args.out) if args.out else ROOT / "loadtests" / "results" / profile.name
    out.mkdir(parents=True, exist_ok=True)
    processes = args.processes or profile.processes
    duration = args.duration or profile.run_time_s
    users = args.users or profile.users
    spawn_rate = args.spawn_rate or profile.spawn_rate
    if args.locust_workers and args.processes:
        print("loadtest: --locust-workers and --processes exclude each other", file=sys.stderr)
        return EXIT["ERROR"]
    if args.local_cluster and args.base_url:
        print("loadtest: --local-cluster starts its own nodes: give it no --base-url", file=sys.stderr)
        return EXIT["ERROR"]
    generators = (f"1 Locust master + {args.locust_workers} workers" if args.locust_workers
                  else f"{processes} process(es)")
    print(f"loadtest: profile {profile.name} ({profile.description}); {users} users, {generators}, "
          f"{duration:.0f} s; reports in {out}", flush=True)
    nodes = node_urls(args.base_url)
    # With a token source the generator mints tokens itself: then the gateways run as in production
    # (no --dev, no /dev/token), their secret named by --gateway-config.
    mode = "production mode, tokens minted by the generator" if tokens.given else "dev mode"
    with ExitStack() as stack:
        try:
            if args.local_cluster:
                cluster = LocalCluster(out / "cluster", args.local_cluster, workers=args.node_workers,
                                       config=Path(args.gateway_config), dev=not tokens.given,
                                       module=args.gateway_module)
                stack.callback(cluster.stop)
                cluster.wait_healthy(30)
                nodes = cluster.urls
                for node_id, node in cluster.nodes.items():
                    print(f"loadtest: node {node_id} pid {node.process.pid} on {node.base_url} "
                          f"({args.node_workers} worker(s), {mode}; log {node.log_path})", flush=True)
                print(f"loadtest: Redis {cluster.redis_url}", flush=True)
            elif not nodes:
                gateway = GatewayProcess(out / "gateway.log", module=args.gateway_module, dev=not tokens.given,
                                         config=Path(args.gateway_config), cwd=ROOT)
                stack.callback(gateway.stop)
                gateway.wait_healthy(30)
                nodes = [gateway.base_url]
                print(f"loadtest: gateway pid {gateway.process.pid} on {gateway.base_url} ({mode})", flush=True)
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
            # A gateway did not come up (its log's tail is in the message), Redis missing, a bad config.
            print(f"loadtest: {exc}", file=sys.stderr)
            return EXIT["ERROR"]
        code = run_locust(args, nodes, users, spawn_rate, processes, out, profile.name, duration + args.grace)
    print(f"loadtest: Locust exit code {code}; summary {out / 'summary.json'}, Locust's report "
          f"{out / (profile.name + '.html')}")
    if args.report:
        write_our_report(out)
    return code


def write_our_report(out: Path) -> None:
    """``report.html`` (verdict, tables, plots over time) from the run's summary; the verdict stands without it."""
    summary = out / "summary.json"
    if not summary.exists():
        return
    try:
        from loadtests.report import write_report  # matplotlib: loaded only once there is something to plot

        path = write_report(json.loads(summary.read_text()), out)
    except Exception:  # a report bug must not turn a measured verdict into a set-up error
        print("loadtest: could not write report.html:", file=sys.stderr)
        traceback.print_exc()
        return
    print(f"loadtest: report {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Headless load run with PASS/FAIL/INVALID verdict")
    parser.add_argument("--profile", default="smoke", help="configs/profiles/NAME.toml or a path")
    parser.add_argument("--base-url", default="",
                        help="a running gateway, or a cluster's node URLs comma-separated; default: start one on "
                             "127.0.0.1")
    parser.add_argument("--local-cluster", type=int, default=0, metavar="N",
                        help="start a cluster of N gateway nodes on one throwaway redis-server (127.0.0.1)")
    parser.add_argument("--node-workers", type=int, default=1, metavar="W",
                        help="with --local-cluster: worker processes per node")
    parser.add_argument("--processes", type=int, default=0, help="Locust processes; default: the profile's")
    parser.add_argument("--locust-workers", type=int, default=0, metavar="K",
                        help="distributed: one Locust master and K `locust --worker` processes (instead of "
                             "--processes)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds of load; default: the profile's")
    parser.add_argument("--users", type=int, default=0, help="Locust users; default: the profile's")
    parser.add_argument("--spawn-rate", type=float, default=0.0, help="default: the profile's")
    parser.add_argument("--targets", default="", help="targets TOML; default configs/targets.toml")
    parser.add_argument("--out", default="", help="report directory; default loadtests/results/PROFILE")
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="skip our report.html and its plots (summary.json and Locust's reports are still written)")
    parser.add_argument("--grace", type=float, default=120.0, help="seconds Locust may run past the duration")
    parser.add_argument("--gateway-module", default="gateway", help="python -m MODULE serve ... (tests swap it)")
    parser.add_argument("--gateway-config", default=str(GATEWAY_CONFIG))
    parser.add_argument("--loglevel", default="WARNING")
    add_token_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
