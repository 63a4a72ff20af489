"""Headless load run against a local gateway that this command starts and stops itself.

``python -m loadtests.run --profile smoke`` (``make loadtest PROFILE=smoke``):

1. loads ``configs/profiles/smoke.toml`` (a ``status = "stub"`` profile is skipped, exit 4);
2. checks the token source (``--secret-env`` / ``--secret-file`` / ``--token-command``: one
   token from the command; exit 5 if it cannot give tokens);
3. starts ``python -m gateway serve --host 127.0.0.1 --port FREE --ice-host 127.0.0.1 --dev
   --config configs/load-gateway.toml`` unless ``--base-url`` names a running gateway; with a
   token source the gateway is not in dev mode and ``--gateway-config`` must name its secret;
4. runs Locust headless with the profile's user count and spawn rate (``--processes`` from the
   profile or the command line), CSV and HTML reports and the summary JSON in ``--out``;
5. stops Locust (if it overran its time budget) and the gateway, by pid, and exits with Locust's
   code: 0 PASS, 1 FAIL, 3 INVALID, 5 SETUP (tokens refused or no tokens), 2 other set-up errors.

Everything is bounded: the gateway must be healthy within 30 s, Locust gets the run time plus
``--grace`` seconds. Only 127.0.0.1 carries traffic.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.profiles import ROOT, Profile, ProfileError, load_profile
from loadtests.verdict import EXIT
from loadtests.webrtc.process import LOOPBACK, GatewayProcess, die_with_parent, free_port, stop_process
from loadtests.webrtc.token_options import SETUP_HINT, TokenError, TokenSettings, add_token_arguments

GATEWAY_CONFIG = ROOT / "configs" / "load-gateway.toml"


def locust_argv(args: argparse.Namespace, base_url: str, users: int, spawn_rate: float, processes: int,
                out: Path, name: str) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
            "--host", base_url, "--load-profile", args.profile, "-u", str(users), "-r", str(spawn_rate),
            "--csv", str(out / name), "--html", str(out / f"{name}.html"),
            "--summary-json", str(out / "summary.json"), "--only-summary", "--loglevel", args.loglevel,
            "--exit-code-on-error", "0", *TokenSettings.from_args(args).argv()]
    if processes > 1:
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
    print(f"loadtest: profile {profile.name} ({profile.description}); {users} users, {processes} process(es), "
          f"{duration:.0f} s; reports in {out}", flush=True)
    gateway: GatewayProcess | None = None
    base_url = args.base_url
    try:
        if not base_url:
            # With a token source the generator mints tokens itself: then the gateway runs as in
            # production (no --dev, no /dev/token), its secret named by --gateway-config.
            gateway = GatewayProcess(out / "gateway.log", module=args.gateway_module, dev=not tokens.given,
                                     config=Path(args.gateway_config), cwd=ROOT)
            gateway.wait_healthy(30)
            base_url = gateway.base_url
            mode = "production mode, tokens minted by the generator" if tokens.given else "dev mode"
            print(f"loadtest: gateway pid {gateway.process.pid} on {base_url} ({mode})", flush=True)
        argv = locust_argv(args, base_url, users, spawn_rate, processes, out, profile.name)
        locust = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, preexec_fn=die_with_parent)
        try:
            code = locust.wait(timeout=duration + args.grace)
        except subprocess.TimeoutExpired:
            print(f"loadtest: Locust overran {duration + args.grace:.0f} s; stopping it", file=sys.stderr)
            stop_process(locust, grace=15)
            return EXIT["ERROR"]
        except KeyboardInterrupt:
            stop_process(locust, grace=15)
            raise
        finally:
            stop_process(locust, grace=15)
    except (RuntimeError, TimeoutError) as exc:  # the gateway did not come up (its log's tail is in the message)
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT["ERROR"]
    finally:
        if gateway is not None:
            gateway.stop()
    print(f"loadtest: Locust exit code {code}; summary {out / 'summary.json'}, report {out / (profile.name + '.html')}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Headless load run with PASS/FAIL/INVALID verdict")
    parser.add_argument("--profile", default="smoke", help="configs/profiles/NAME.toml or a path")
    parser.add_argument("--base-url", default="", help="a running gateway; default: start one on 127.0.0.1")
    parser.add_argument("--processes", type=int, default=0, help="Locust processes; default: the profile's")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds of load; default: the profile's")
    parser.add_argument("--users", type=int, default=0, help="Locust users; default: the profile's")
    parser.add_argument("--spawn-rate", type=float, default=0.0, help="default: the profile's")
    parser.add_argument("--targets", default="", help="targets TOML; default configs/targets.toml")
    parser.add_argument("--out", default="", help="report directory; default loadtests/results/PROFILE")
    parser.add_argument("--grace", type=float, default=120.0, help="seconds Locust may run past the duration")
    parser.add_argument("--gateway-module", default="gateway", help="python -m MODULE serve ... (tests swap it)")
    parser.add_argument("--gateway-config", default=str(GATEWAY_CONFIG))
    parser.add_argument("--loglevel", default="WARNING")
    add_token_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
