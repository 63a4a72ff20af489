"""Cherry Live Gateway load suite for Locust: join, latency and stutter against the targets.

Run headless through ``python -m loadtests.run --profile smoke`` (``make loadtest PROFILE=smoke``),
which also starts a local gateway, or directly against a running one::

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8080 --load-profile smoke \\
        -u 21 -r 10 [--processes 2] [--csv out/smoke --html out/smoke.html] [--summary-json out/summary.json]

Against a cluster, ``--nodes URL,URL,...`` names its nodes' public URLs (``--host`` then defaults to
the first): room i goes live through node i mod N, each room's viewers and chat users spread over
the nodes round-robin, and the results are
reported per node (the node holding each session) as well as in total. Distributed: one
``locust --master --expect-workers K`` and K ``locust --worker`` processes (``python -m
loadtests.run --locust-workers K`` starts them), or ``--processes``.

Users: ``HostUser`` (one per room: WHIP publish of a synthetic stream; with ``[pk]`` the hosts of
rooms 0-1, 2-3, ... battle back to back over room events), ``ViewerUser`` (WHEP join, watch, leave,
maybe rejoin; with ``slots = 2`` it also receives the PK partner) and ``ChatUser`` (room events:
chat, gifts, likes). The WebRTC and WebSocket clients run
in one plain-asyncio agent process per Locust process (:mod:`loadtests.agent`).

Every measurement is a Locust request of type ``WEBRTC``: ``publish``, ``whep``, ``join``,
``first_frame``, ``latency`` (a viewer's mean over a report interval), ``stutter`` (per
session: freeze ms, length = watched ms), ``reconnect`` (after a lost session), ``rejoin``
(churn), ``chat`` (echo time), ``ws``,
``pk_start`` (invite to battle started).
The run ends after the profile's ``run_time_s``: the master asks every worker's agent to
settle its viewers, merges the results, prints a table per room and per network condition
and PASS/FAIL per target, and exits 0 PASS, 1 FAIL, 3 INVALID (generator-bound), 5 SETUP (the
gateway refused the generator's tokens, or its token source failed: the run then ends at once).
Token options: ``--secret-env NAME`` / ``--secret-file PATH`` (``--token-issuer``) or
``--token-command CMD``; none: ``GET /dev/token`` of a dev gateway.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from locust import User, constant, events, task
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadtests import verdict
from loadtests.agent_client import AgentClient, fire
from loadtests.profiles import NETWORK_PATH, TARGETS_PATH, Profile, load_profile, load_targets
from loadtests.summary import Summary
from loadtests.webrtc.process import die_with_parent
from loadtests.webrtc.token_options import TokenSettings, add_token_arguments

FINISH_TIMEOUT = 60.0  # seconds the master waits for the workers' last results
# Agent errors that mean the generator's tokens are wrong: the run's verdict is SETUP whatever
# else happens, so it ends at once instead of after run_time_s.
SETUP_ERRORS = frozenset({"http_401", "http_403", "token_error"})


class _State:
    """Per Locust process: the profile, the agent, the merged summary (master or local)."""

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.profile: Profile | None = None
        self.agent: AgentClient | None = None
        self.agent_failed = False
        self._agent_lock = BoundedSemaphore()
        self.summary = Summary()
        self.started_at: float | None = None
        self.finals: dict[str, bool] = {}
        self.finishing = False
        self.ending_early = False  # a set-up error (refused token) ends the run before its time
        self.counter = itertools.count()
        self.rng = random.Random()
        self._net_credit: dict[str, float] = {}
        self.hosts_starting = 0
        self.hosts_settled = Event()
        self._ordinals: dict[str, itertools.count[int]] = {}

    def options(self) -> Any:
        assert self.environment is not None and self.environment.parsed_options is not None
        return self.environment.parsed_options

    def get_profile(self) -> Profile:
        if self.profile is None:
            self.profile = load_profile(self.options().load_profile)
        return self.profile

    def get_agent(self) -> AgentClient | None:
        """The process's agent, started on first use (never in a master: it runs no users)."""
        with self._agent_lock:  # the first user starts it, the others wait for it
            if self.agent is None and not self.agent_failed:
                assert self.environment is not None
                agent = AgentClient(self.environment, self.nodes()[0],
                                    self.options().network_config, TokenSettings.from_args(self.options()).argv())
                self.agent = agent
                try:
                    agent.start()
                except Exception as exc:
                    self.agent_failed = True
                    agent.pending.notes.append(f"load agent failed to start: {exc}")
        return None if self.agent_failed else self.agent

    def next_network(self, weights: dict[str, float]) -> str:
        """Smooth weighted round-robin: the profile's mix exactly over every cycle, not by chance."""
        total = sum(weights.values())
        for name, weight in weights.items():
            self._net_credit[name] = self._net_credit.get(name, 0.0) + weight
        chosen = max(weights, key=lambda name: self._net_credit[name])
        self._net_credit[chosen] -= total
        return chosen

    def nodes(self) -> list[str]:
        """The gateway nodes' public URLs users spread over (``--nodes``, else ``--host``)."""
        listed = [url.strip() for url in str(getattr(self.options(), "nodes", "") or "").split(",") if url.strip()]
        assert self.environment is not None
        return listed or [self.environment.host or "http://127.0.0.1:8080"]

    def place(self, kind: str, rooms: int) -> tuple[int, str]:
        """(room index, node URL) for the next user of ``kind`` in this run, over every Locust worker.

        Users of a kind are numbered across workers (``n * workers + worker``); user ``g`` goes to room
        ``g % rooms`` through node ``(g // rooms) % nodes``, so each room's audience spreads over every node.
        """
        counter = self._ordinals.setdefault(kind, itertools.count())
        worker, workers = self.worker_slot()
        ordinal = next(counter) * workers + worker
        nodes = self.nodes()
        return ordinal % max(rooms, 1), nodes[(ordinal // max(rooms, 1)) % len(nodes)]

    def worker_slot(self) -> tuple[int, int]:
        """(index of this worker, number of workers), to spread rooms over processes."""
        assert self.environment is not None
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            # The master's --expect-workers counts every worker of the run, forked ones included (Locust sets
            # it from --processes on one machine, and sends it with each spawn message); a worker's own
            # --processes counts only its machine's.
            opts = self.options()
            count = int(getattr(opts, "expect_workers", 0) or 0) or int(getattr(opts, "processes", 0) or 0)
            return runner.worker_index, max(count, 1)
        return 0, 1


STATE = _State()


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--load-profile", default="smoke", help="load profile: configs/profiles/NAME.toml, or a path")
    parser.add_argument("--targets", default=str(TARGETS_PATH), help="stability targets TOML")
    parser.add_argument("--network-config", default=str(NETWORK_PATH), help="network conditions TOML")
    parser.add_argument("--summary-json", default="", help="write the end-of-run summary and verdict here")
    parser.add_argument("--load-duration", type=float, default=0.0,
                        help="seconds of load before the verdict; 0: the profile's run_time_s")
    parser.add_argument("--nodes", default="",
                        help="a cluster's node URLs, comma-separated: users spread over them (default: --host)")
    add_token_arguments(parser)


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    STATE.environment = environment
    runner = environment.runner
    if environment.parsed_options is None:
        return
    profile = STATE.get_profile()
    HostUser.fixed_count = profile.rooms
    ChatUser.fixed_count = profile.chat_users
    # The profile decides who runs (a worker spawns only what the master dispatches).
    classes: list[type[User]] = [HostUser]
    if profile.viewers > 0:
        classes.append(ViewerUser)
    if profile.chat_users > 0 or isinstance(runner, WorkerRunner):
        classes.append(ChatUser)
    environment.user_classes = classes
    if isinstance(runner, WorkerRunner):
        runner.register_message("cherry_finish", _worker_finish)
        if getattr(environment.parsed_options, "processes", None):
            die_with_parent()  # a worker forked by --processes goes when its master goes
    if isinstance(runner, MasterRunner):
        runner.register_message("cherry_final", _master_final)
        runner.register_message("cherry_setup_error", lambda environment, msg, **_: _end_early(None))


@events.test_start.add_listener
def _test_start(environment: Environment, **_: Any) -> None:
    STATE.started_at = time.monotonic()
    if isinstance(environment.runner, (MasterRunner, LocalRunner)):
        profile = STATE.get_profile()
        duration = STATE.options().load_duration or profile.run_time_s
        gevent.spawn_later(duration, _finish_run)


def _finish_run() -> None:
    """End of the load: collect every agent's final results, then quit Locust."""
    environment = STATE.environment
    assert environment is not None and environment.runner is not None
    runner = environment.runner
    if STATE.finishing:  # already ending (early, after a set-up error)
        return
    STATE.finishing = True
    if isinstance(runner, MasterRunner):
        workers = [client.id for client in runner.clients.values()]
        STATE.finals = {worker: False for worker in workers}
        runner.send_message("cherry_finish")
        deadline = time.monotonic() + FINISH_TIMEOUT
        while not all(STATE.finals.values()) and time.monotonic() < deadline:
            gevent.sleep(0.1)  # waiting on messages from other processes
        missing = [w for w, done in STATE.finals.items() if not done]
        if missing:
            STATE.summary.notes.append(f"no final results from {len(missing)} worker(s) within {FINISH_TIMEOUT:.0f} s")
    else:
        STATE.summary.merge(_finish_agent())
    runner.quit()


def _finish_agent() -> Summary:
    """This process's agent: stop every client and return everything it measured."""
    agent = STATE.agent
    if agent is None:
        return Summary()
    reply = agent.call("finish", wait=45)
    result = agent.take_pending()
    if reply.get("ok"):
        result.merge(Summary.from_json(reply["delta"]))
    else:
        result.notes.append(f"load agent did not finish: {reply.get('error')}")
    agent.stop()
    result.merge(agent.take_pending())
    return result


def _end_early(error: str | None) -> None:
    """A refused token (or a failed token source) decides the run: end it now (``error`` None: asked by a worker)."""
    if (error is not None and error not in SETUP_ERRORS) or STATE.ending_early or STATE.finishing:
        return
    STATE.ending_early = True
    assert STATE.environment is not None
    runner = STATE.environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message("cherry_setup_error")  # only the master ends a distributed run
    else:
        gevent.spawn(_finish_run)


def _worker_finish(environment: Environment, msg: Any, **_: Any) -> None:
    def run() -> None:
        STATE.finishing = True
        summary = _finish_agent()
        assert environment.runner is not None
        environment.runner.send_message("cherry_final", summary.to_json())

    gevent.spawn(run)


def _master_final(environment: Environment, msg: Any, **_: Any) -> None:
    STATE.summary.merge(Summary.from_json(msg.data))
    STATE.finals[msg.node_id] = True


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if STATE.agent is not None and not STATE.finishing:
        data["cherry"] = STATE.agent.take_pending().to_json()


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if "cherry" in data:
        STATE.summary.merge(Summary.from_json(data["cherry"]))


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        if STATE.agent is not None:
            STATE.agent.stop()
        return
    if STATE.agent is not None and not STATE.finishing:  # stopped early (Ctrl-C, web UI)
        STATE.summary.merge(_finish_agent())
    elif STATE.agent is not None:
        STATE.summary.merge(STATE.agent.take_pending())
    options = STATE.options()
    profile = STATE.get_profile()
    try:
        targets = load_targets(Path(options.targets), profile.targets)
    except (OSError, ValueError) as exc:  # a broken targets file: no verdict, a set-up error
        print(f"\nloadtest: cannot read targets: {exc}", flush=True)
        environment.process_exit_code = verdict.EXIT["ERROR"]
        return
    document = verdict.evaluate(STATE.summary, targets, profile.name)
    document["profile_settings"] = {"description": profile.description, "run_time_s": profile.run_time_s,
                                    "rooms": profile.rooms, "viewers": profile.viewers,
                                    "network": profile.network, "chat_users": profile.chat_users}
    if STATE.ending_early:
        document["ended_early"] = "a set-up error (token refused or token source failed) ended the run at once"
    print("\n" + verdict.render(document), flush=True)
    if options.summary_json:
        path = Path(options.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
    environment.process_exit_code = document["exit_code"]


def _stopping() -> bool:
    return STATE.finishing


def _wait_for_hosts(profile: Profile) -> None:
    """Viewers start ``start_after_s`` into the run, and after this process's own hosts are live.

    Hosts on other workers cannot be awaited from here: ``start_after_s`` covers them, and a
    viewer that still finds its room not live retries within its join timeout.
    """
    if STATE.started_at is not None:
        wait = STATE.started_at + profile.start_after_s - time.monotonic()
        if wait > 0:
            gevent.sleep(wait)  # a run-level schedule, not a synchronisation point
    if STATE.hosts_starting:
        STATE.hosts_settled.wait(timeout=60)


class HostUser(User):
    """One synthetic host per room (WHIP, pre-encoded VP8 + Opus, capture-time tags)."""

    fixed_count = 1
    weight = 0
    wait_time = constant(1)

    def on_start(self) -> None:
        profile = STATE.get_profile()
        STATE.hosts_starting += 1
        try:
            self._publish(profile)
        finally:
            STATE.hosts_starting -= 1
            if STATE.hosts_starting == 0:
                STATE.hosts_settled.set()

    def _publish(self, profile: Profile) -> None:
        agent = STATE.get_agent()
        if agent is None:
            return
        # Room i goes live through node i mod N: its origin is placed from there (ties go to the asking
        # worker), so the rooms' origins spread over the nodes whichever Locust worker runs which host.
        nodes = STATE.nodes()
        urls = [nodes[i % len(nodes)] for i in range(profile.rooms)]
        reply = agent.call("host", wait=60, key=f"h{next(STATE.counter)}", urls=urls, rooms=profile.room_names,
                           freeze=profile.freeze, pk=profile.pk_settings,
                           freeze_rooms=[profile.room_names[i] for i in profile.freeze_rooms if i < profile.rooms])
        error = None if reply.get("ok") else str(reply.get("error"))
        fire(self.environment, "publish", float(reply.get("ms") or 0.0), error)
        if error and error != "no_free_room":
            agent.pending.host_failures[error] = agent.pending.host_failures.get(error, 0) + 1
        if error:
            _end_early(error)

    @task
    def publishing(self) -> None:
        pass  # the agent streams; nothing to do per tick


class ViewerUser(User):
    """Joins a room over WHEP, watches for a profile-drawn time, leaves, maybe rejoins."""

    weight = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        profile = STATE.get_profile()
        index = next(STATE.counter)
        worker, _ = STATE.worker_slot()
        self.key = f"v{worker}-{index}"
        room, self.url = STATE.place("viewer", profile.rooms)
        self.room = profile.room_names[room]
        self.net = STATE.next_network(profile.network)
        self.watching = False
        self.sessions = 0
        self.lost_last = False
        _wait_for_hosts(profile)

    @task
    def session(self) -> None:
        profile = STATE.get_profile()
        agent = STATE.get_agent()
        if agent is None or _stopping():
            gevent.sleep(1)
            return
        flag = agent.lost[self.key] = Event()
        reply = agent.call("view", wait=profile.join_timeout_s + 30, key=self.key, room=self.room, net=self.net,
                           url=self.url,
                           timeout=profile.join_timeout_s, slots=profile.video_slots, pk_span_s=profile.pk_span_s)
        if reply.get("stage") == "token":  # no token for this viewer: the generator's set-up, not a join
            fire(self.environment, "join", 0.0, str(reply.get("error")))
            _end_early(str(reply.get("error")))
            gevent.sleep(1)
            return
        if reply.get("stage") == "agent" or reply.get("error") in ("agent_gone", "agent_timeout"):
            if reply.get("error") == "agent_timeout":
                note = "the load agent left a join unanswered past its timeout (generator overloaded or stuck)"
                if note not in agent.pending.notes:
                    agent.pending.notes.append(note)
            gevent.sleep(1)  # the generator's problem, not a join failure: the verdict says INVALID
            return
        ms = float(reply.get("ms") or 0.0)
        if self.sessions:  # a reconnect after a lost session, or a viewer coming back (churn)
            error = None if reply.get("ok") else str(reply.get("error"))
            fire(self.environment, "reconnect" if self.lost_last else "rejoin",
                 float(reply["join_ms"]) if reply.get("ok") else ms, error)
        if not reply.get("ok"):
            error = str(reply.get("error"))
            if reply.get("stage") == "whep":
                fire(self.environment, "whep", ms, error)
            fire(self.environment, "join", ms, error)
            _end_early(error)
            gevent.sleep(profile.retry_after_failure_s)
            return
        fire(self.environment, "whep", float(reply["whep_ms"]))
        fire(self.environment, "join", float(reply["join_ms"]))
        fire(self.environment, "first_frame", float(reply["ttff_ms"]))
        self.sessions += 1
        self.watching = True
        low, high = profile.watch_s
        duration = STATE.rng.uniform(low, high) if high > 0 else None
        flag.wait(timeout=duration)  # ends early if the session is lost
        if _stopping():
            self._park()
        left = agent.call("leave", wait=30, key=self.key)
        self.watching = False
        if left.get("ok"):
            fire(self.environment, "stutter", float(left["freeze_s"]) * 1000, None, int(float(left["watch_s"]) * 1000))
        self.lost_last = flag.is_set()
        if self.lost_last:
            return  # lost: reconnect right away, as a player would
        if STATE.rng.random() >= profile.rejoin:
            self._park()
        gevent.sleep(STATE.rng.uniform(*profile.pause_s))

    def _park(self) -> None:
        while True:
            gevent.sleep(3600)  # this viewer is done; the run's end stops it

    def on_stop(self) -> None:
        if self.watching and STATE.agent is not None and not _stopping():
            STATE.agent.send("leave", key=self.key)


class ChatUser(User):
    """A room-events client: chat, gifts and likes at the profile's rates (run by the agent)."""

    fixed_count = 0
    weight = 0
    wait_time = constant(1)

    def on_start(self) -> None:
        profile = STATE.get_profile()
        agent = STATE.get_agent()
        if agent is None:
            return
        _wait_for_hosts(profile)
        index = next(STATE.counter)
        worker, _ = STATE.worker_slot()
        room, url = STATE.place("chat", profile.rooms)
        reply = agent.call("chat", wait=30, key=f"c{worker}-{index}", room=profile.room_names[room], url=url,
                           chat_per_s=profile.chat_per_s,
                           gifts_per_s=profile.gifts_per_s, likes_per_s=profile.likes_per_s)
        error = None if reply.get("ok") else str(reply.get("error"))
        fire(self.environment, "ws", float(reply.get("ms") or 0.0), error)
        if error:
            _end_early(error)

    @task
    def chatting(self) -> None:
        pass


