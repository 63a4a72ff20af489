"""The load agent: one plain-asyncio process of WebRTC and room-event clients per Locust process.

Locust runs on gevent and monkey-patches the standard library; aiortc needs real asyncio,
threads and epoll. So each Locust process (a worker, or the only process of a local run)
starts one agent lazily, on its first user, and drives it over stdin/stdout in JSON lines;
Locust's own process stays nearly idle. Commands carry an ``id`` that the reply repeats::

    {"id": 1, "op": "host", "key": "h1", "rooms": ["lt-0", "lt-1"], "urls": ["http://a", "http://b"], "freeze": null}
        -> {"id": 1, "ok": true, "room": "lt-0", "ms": 512.3}
    {"id": 2, "op": "view", "key": "v1", "room": "lt-0", "net": "mobile-4g", "timeout": 10, "url": "http://node-b"}
        -> {"id": 2, "ok": true, "whep_ms": 20.1, "ttff_ms": 95.2, "join_ms": 96.0, "retries": 0}
        -> {"id": 2, "ok": false, "stage": "whep" | "first_frame", "error": "http_404", ...}
    {"id": 3, "op": "leave", "key": "v1"}      -> {"id": 3, "ok": true, "watch_s": ..., "freeze_s": ...}
    {"id": 4, "op": "chat", "key": "c1", "room": "lt-0", "chat_per_s": 0.5, ...} -> {"id": 4, "ok": true, "ms": 8.1}
    {"id": 5, "op": "finish"}   -> every client stopped, {"id": 5, "ok": true, "delta": {...}, "hosts": {...}}
    {"id": 6, "op": "quit"}     -> exits

``url`` is the gateway node a client enters through (default ``--base-url``; a host publishes room i
through ``urls[i mod len]``): Locust spreads its users over a cluster's nodes. Measurements are
grouped by the node holding each session (the worker its ``Location`` names), a refused join by the
node that answered (``X-Cherry-Worker``), room sockets by the node they entered; a node that never
answered is named by its URL's ``host:port``.

and it volunteers, every ``--report-interval`` seconds::

    {"ev": "stats", "delta": {...}}         measurements since the last report (see loadtests.summary)
    {"ev": "reqs", "items": [[name, ms, error_or_null, length], ...]}   samples for Locust's statistics
    {"ev": "lost", "key": "v1"}             a viewer's session failed while watching

Tokens come from the source the agent is started with (``--secret-env`` / ``--secret-file`` /
``--token-command``, :mod:`loadtests.webrtc.token_options`; none: a dev gateway's
``/dev/token``), minted here for each host, viewer and chat user. A token the gateway refuses
(401/403 on WHIP, WHEP or a room socket) or a source that fails is counted in the delta's
``token_refusals`` / ``token_failures``: the run's verdict is then SETUP, not FAIL.

Generator health rides along in each delta: the agent's CPU time against wall time, and
event-loop lag (how late a 50 ms timer fires). ``CHERRY_LOAD_STARVE=0.9`` makes the agent
burn 90 % of each 100 ms on its event loop: a deliberately starved generator, for the test
that the verdict then says INVALID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from aiortc_bridge.heap import freeze_start_up_heap
from loadtests.network import NetworkCondition, load_conditions
from loadtests.summary import EVENTS_NET, GroupStats, HealthStats, Summary, group_key
from loadtests.timeline import PROCESS, VIEWERS
from loadtests.webrtc.metrics import Histogram
from loadtests.webrtc.peer import DEFAULT_ICE_HOSTS, configure_ice
from loadtests.webrtc.signaling_client import WORKER_HEADER, SignalingError, node_of
from loadtests.webrtc.synthetic_host import HostMedia, HostOptions, SyntheticHost
from loadtests.webrtc.token_options import TokenError, TokenSettings, add_token_arguments
from loadtests.webrtc.tokens import TokenSource, describe_refusal, is_refusal
from loadtests.webrtc.tracks import FreezeSchedule
from loadtests.webrtc.viewer import Viewer, ViewerOptions, error_kind

ROOT = Path(__file__).resolve().parent.parent
LAG_TICK = 0.05


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class ViewerSlot:
    """One viewer session in the agent plus what has been reported of it so far."""

    def __init__(self, key: str, room: str, net: str, viewer: Viewer, node: str = "") -> None:
        self.key = key
        self.room = room
        self.net = net
        self.node = node  # the gateway node holding the session
        self.viewer = viewer
        self.watching = False
        self.reported_watch = 0.0
        self.reported_frames = 0
        self.reported_freezes = 0
        self.reported_freeze_s = 0.0
        self.reported_gaps = 0
        self.lost_reported = False
        self.started_at = 0.0
        self.pk_span_s = 0.0  # with co-stream slots: a session this long must have seen a battle
        self.reported_partner_frames = 0


class ChatClient:
    """One room-events WebSocket: sends chat, gifts and likes at given rates, times chat echoes."""

    def __init__(self, agent: Agent, key: str, room: str, command: dict[str, Any]) -> None:
        self.agent = agent
        self.key = key
        self.room = room
        self.url = str(command.get("url") or agent.base_url)
        self.node = ""  # the node this socket enters through, learned in start()
        self.identity = f"lt-{key}-{os.getpid()}-{random.randrange(1 << 30)}"
        self.chat_per_s = float(command.get("chat_per_s", 0.0))
        self.gifts_per_s = float(command.get("gifts_per_s", 0.0))
        self.likes_per_s = float(command.get("likes_per_s", 0.0))
        self.gift_kind = str(command.get("gift_kind", "heart"))
        self._pending: dict[str, float] = {}
        self._counter = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    @property
    def stats(self) -> GroupStats:
        return self.agent.group(self.room, EVENTS_NET, self.node)

    async def start(self) -> float:
        http = self.agent.http()
        self.node = await self.agent.entry_node(self.url)
        started = time.monotonic()
        token = await self.agent.tokens.token(self.room, "viewer", self.identity)
        url = f"{self.url.rstrip('/')}/ws/{self.room}"
        self._ws = await http.ws_connect(url, params={"token": token}, heartbeat=None)
        ms = (time.monotonic() - started) * 1000
        self._tasks.append(asyncio.ensure_future(self._read()))
        for kind, rate in (("chat", self.chat_per_s), ("gift", self.gifts_per_s), ("like", self.likes_per_s)):
            if rate > 0:
                self._tasks.append(asyncio.ensure_future(self._send_loop(kind, rate)))
        return ms

    async def _send_loop(self, kind: str, rate: float) -> None:
        assert self._ws is not None
        rng = random.Random()
        while not self._ws.closed:
            await asyncio.sleep(rng.expovariate(rate))  # Poisson arrivals at the profile's rate
            self._counter += 1
            ref = f"{kind}-{self._counter}"
            if kind == "chat":
                text = f"lt {self.key} {self._counter}"
                self._pending[text] = time.monotonic()
                message: dict[str, Any] = {"type": "chat", "text": text, "ref": ref}
                self.stats.chat_sent += 1
            elif kind == "gift":
                message = {"type": "gift", "kind": self.gift_kind, "count": 1, "ref": ref}
                self.stats.gifts_sent += 1
            else:
                message = {"type": "like", "count": 1, "ref": ref}
                self.stats.likes_sent += 1
            try:
                await self._ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):
                return

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            kind = data.get("type")
            if kind == "chat" and (data.get("from") or {}).get("identity") == self.identity:
                sent = self._pending.pop(str(data.get("text")), None)
                if sent is not None:
                    ms = (time.monotonic() - sent) * 1000
                    self.stats.chat_latency.add(ms)
                    self.stats.chat_echoed += 1
                    self.agent.sample("chat", ms, None)
            elif kind == "error":
                code = str(data.get("code", "unknown"))
                self.stats.event_errors[code] = self.stats.event_errors.get(code, 0) + 1
                self.agent.sample("event_error", 0.0, code)
        if not self.agent.finishing:
            self.stats.event_errors["socket_closed"] = self.stats.event_errors.get("socket_closed", 0) + 1
            self.agent.sample("ws", 0.0, "socket_closed")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class PkHost:
    """A synthetic host's room-events socket for PK battles with the paired room's host.

    The inviting side (even room index) invites its partner, times invite -> ``pk_started``,
    lets the battle run ``battle_s``, ends it (``pk_end``), waits ``gap_s`` and invites again,
    for as long as the run lasts; the other side invites back once when its socket opens (an
    invitation sent before that reached no one; crossing invitations start a battle) and both
    accept every invitation. ``pk_refused`` (the
    partner is not live yet) and ``pk_busy`` are retried a second later without counting as
    errors; anything else counts under the room's events.
    """

    def __init__(self, agent: Agent, room: str, partner: str, token: str, *, invite: bool, battle_s: float,
                 gap_s: float, url: str = "", node: str = "") -> None:
        self.agent = agent
        self.url = url or agent.base_url
        self.node = node
        self.room = room
        self.partner = partner
        self.token = token
        self.invite = invite
        self.battle_s = battle_s
        self.gap_s = gap_s
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> GroupStats:
        return self.agent.group(self.room, EVENTS_NET, self.node)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        http = self.agent.http()
        try:
            self._ws = await http.ws_connect(f"{self.url.rstrip('/')}/ws/{self.room}",
                                             params={"token": self.token}, heartbeat=None)
            reader = asyncio.ensure_future(self._read())
            try:
                if self.invite:
                    await self._invite_loop()
                else:
                    # An invitation sent before this socket existed reached no one: inviting back
                    # crosses it (the gateway starts the battle), or is refused harmlessly.
                    await self._ws.send_str(json.dumps({"type": "pk_invite", "room": self.partner, "ref": "lt"}))
                    await reader
            finally:
                reader.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kind = error_kind(exc)
            self.stats.event_errors[f"pk_{kind}"] = self.stats.event_errors.get(f"pk_{kind}", 0) + 1
            self.agent.setup_error("room socket (PK host)", exc)

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("type") == "pk_invitation":  # either side accepts what its partner asks
                await self._ws.send_str(json.dumps({"type": "pk_accept", "id": data["id"]}))
            elif self.invite:
                self._inbox.put_nowait(data)

    async def _next(self, types: set[str], timeout: float) -> dict[str, Any] | None:
        """The next frame of one of ``types`` (or an error frame), None on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                data = await asyncio.wait_for(self._inbox.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return None
            if data.get("type") in types or data.get("type") == "error":
                return data

    async def _invite_loop(self) -> None:
        assert self._ws is not None
        while not self.agent.finishing:
            sent = time.monotonic()
            await self._ws.send_str(json.dumps({"type": "pk_invite", "room": self.partner, "ref": "lt"}))
            self.stats.pk_invites += 1
            answer = await self._next({"pk_started", "pk_rejected"}, 30)
            if answer is None or answer.get("type") != "pk_started":
                code = "pk_timeout" if answer is None else str(answer.get("code") or answer.get("reason") or "rejected")
                if code not in ("pk_refused", "pk_busy"):
                    self.stats.event_errors[code] = self.stats.event_errors.get(code, 0) + 1
                await asyncio.sleep(1.0)  # the partner is not live yet, or still busy
                continue
            self.stats.pk_started += 1
            self.stats.pk_setup_ms.add((time.monotonic() - sent) * 1000)
            self.agent.sample("pk_start", (time.monotonic() - sent) * 1000, None)
            await asyncio.sleep(self.battle_s)  # the battle itself
            if self.agent.finishing:
                return
            await self._ws.send_str(json.dumps({"type": "pk_end"}))
            if await self._next({"pk_ended"}, 15) is not None:
                self.stats.pk_ended += 1
            await asyncio.sleep(self.gap_s)  # solo again for a while

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()


class _BrokenTokenSource:
    """The configured token source could not be set up: every token request says why."""

    def __init__(self, error: TokenError) -> None:
        self.error = error
        self.description = "no token source"

    async def token(self, room: str, role: str, identity: str | None = None) -> str:
        raise self.error


class Agent:
    def __init__(self, base_url: str, conditions: dict[str, NetworkCondition], report_interval: float,
                 tokens: TokenSettings | None = None) -> None:
        self.base_url = base_url
        try:
            self.tokens: TokenSource = (tokens or TokenSettings()).source(base_url, self.http)
        except TokenError as exc:  # reported on first use, as a set-up error of the run
            self.tokens = _BrokenTokenSource(exc)
        self.conditions = conditions
        self.report_interval = report_interval
        self.viewers: dict[str, ViewerSlot] = {}
        self.hosts: dict[str, SyntheticHost] = {}
        self.host_rooms: dict[str, str] = {}
        self.host_info: dict[str, dict[str, Any]] = {}
        self.chats: dict[str, ChatClient] = {}
        self.pk_hosts: list[PkHost] = []
        self.delta = Summary()
        self.health = HealthStats()
        self.finishing = False
        self._media: HostMedia | None = None
        self._http: aiohttp.ClientSession | None = None
        self._samples: list[list[Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cpu_mark = time.process_time()
        self._wall_mark = time.monotonic()
        self.proc_id = f"{socket.gethostname()}:{os.getpid()}"
        self._entry_nodes: dict[str, str] = {}  # node URL -> its node name, once it answered

    # -- shared helpers ------------------------------------------------------------

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            # No connection cap: every room-event WebSocket holds a connection for the whole run
            # (aiohttp's default of 100 would leave none for WHIP/WHEP in a chat storm).
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                               connector=aiohttp.TCPConnector(limit=0))
        return self._http

    def group(self, room: str, net: str, node: str = "") -> GroupStats:
        return self.delta.group(group_key(room, net, node))

    async def entry_node(self, url: str) -> str:
        """The node behind a public URL (its ``/healthz`` answer names the worker); ``host:port`` if it is silent."""
        known = self._entry_nodes.get(url)
        if known is not None:
            return known
        try:
            async with self.http().get(f"{url.rstrip('/')}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                worker = r.headers.get(WORKER_HEADER)
        except (aiohttp.ClientError, TimeoutError):
            worker = None
        if worker is None:
            return URL(url).authority or url  # not cached: the node may answer later
        self._entry_nodes[url] = node = node_of(worker)
        return node

    async def session_node(self, url: str, viewer: Viewer | SyntheticHost, exc: BaseException | None = None) -> str:
        """The node of a session: the worker holding it, else the one that refused it, else the entry node."""
        if viewer.resource is not None and viewer.resource.holder:
            return node_of(viewer.resource.holder)
        if isinstance(exc, SignalingError) and exc.worker:
            return node_of(exc.worker)
        return await self.entry_node(url)

    def sample(self, name: str, ms: float, error: str | None, length: int = 0) -> None:
        self._samples.append([name, round(ms, 2), error, length])

    def setup_error(self, where: str, exc: BaseException) -> None:
        """Record ``exc`` if it is a refused token or a failed token source (the verdict becomes SETUP)."""
        if isinstance(exc, TokenError):
            self.delta.setup_error(False, str(exc)[:300])
        elif is_refusal(exc):
            self.delta.setup_error(True, describe_refusal(where, exc))

    def media(self) -> HostMedia:
        if self._media is None:
            self._media = HostMedia.encode()
        return self._media

    # -- commands ------------------------------------------------------------------

    async def host(self, command: dict[str, Any]) -> dict[str, Any]:
        """Publish into the first free room of ``rooms`` (409 from the gateway means taken)."""
        key = str(command["key"])
        rooms = [str(r) for r in command["rooms"]]
        urls = [str(u) for u in command.get("urls") or []] or [self.base_url]  # room i through urls[i mod len]
        freeze_rooms = {str(r) for r in command.get("freeze_rooms", [])}
        freeze = command.get("freeze")
        started = time.monotonic()
        last_error = "no_free_room"
        for index, room in enumerate(rooms):
            url = urls[index % len(urls)]
            # Each claimant its own identity: a room another host already publishes in answers 409
            # (the same identity would replace that host's session instead).
            identity = f"host-{key}-{self.proc_id}"
            schedule = FreezeSchedule(**freeze) if freeze and room in freeze_rooms else None
            try:
                token = await self.tokens.token(room, "host", identity)
            except TokenError as exc:
                self.setup_error("WHIP", exc)
                return {"ok": False, "error": error_kind(exc), "ms": (time.monotonic() - started) * 1000}
            host = SyntheticHost(HostOptions(url, room, token, freeze=schedule), self.media())
            try:
                await host.start()
            except SignalingError as exc:
                await host.stop()
                last_error = error_kind(exc)
                if exc.status == 409:
                    continue
                self.setup_error("WHIP", exc)
                return {"ok": False, "error": last_error, "ms": (time.monotonic() - started) * 1000}
            except Exception as exc:
                await host.stop()
                return {"ok": False, "error": error_kind(exc), "ms": (time.monotonic() - started) * 1000}
            self.hosts[key] = host
            self.host_rooms[key] = room
            node = await self.session_node(url, host)
            pk = command.get("pk")
            if pk:
                index = rooms.index(room)
                partner = index ^ 1
                if partner < len(rooms):
                    battler = PkHost(self, room, rooms[partner], token, invite=index % 2 == 0,
                                     battle_s=float(pk["battle_s"]), gap_s=float(pk["gap_s"]), url=url,
                                     node=await self.entry_node(url))
                    self.pk_hosts.append(battler)
                    battler.start()
            self.host_info[room] = {"publish_ms": round(host.setup_ms or 0.0, 1),
                                    "freeze": freeze if schedule else None, "node": node}
            return {"ok": True, "room": room, "ms": host.setup_ms}
        if last_error == "http_409":
            last_error = "no_free_room"  # every room already has its host
        return {"ok": False, "error": last_error, "ms": (time.monotonic() - started) * 1000}

    async def view(self, command: dict[str, Any]) -> dict[str, Any]:
        key, room, net = str(command["key"]), str(command["room"]), str(command.get("net", "same-city"))
        url = str(command.get("url") or self.base_url)
        if self.finishing:
            return {"ok": False, "error": "finishing", "stage": "agent"}
        condition = self.conditions.get(net)
        if condition is None:
            return {"ok": False, "error": "unknown_network", "stage": "agent"}
        timeout = float(command.get("timeout", 10.0))
        slots = int(command.get("slots", 1))
        try:  # before the join clock starts: the token is the generator's business, not the gateway's
            token = await self.tokens.token(room, "viewer", f"viewer-{key}-{self.proc_id}")
        except TokenError as exc:
            self.setup_error("WHEP", exc)
            return {"ok": False, "error": error_kind(exc), "stage": "token"}
        options = ViewerOptions(url, room, token, timeout, condition if condition.impaired else None,
                                lean=True, wait_for_host=True, video_slots=slots)
        viewer = Viewer(options, self.http())
        slot = ViewerSlot(key, room, net, viewer)
        slot.pk_span_s = float(command.get("pk_span_s", 0.0))
        started = time.monotonic()
        try:
            await viewer.start()
        except Exception as exc:
            kind = error_kind(exc)
            stage = "whep" if viewer.resource is None and isinstance(exc, SignalingError) else "first_frame"
            node = await self.session_node(url, viewer, exc)
            await viewer.stop()
            if self.finishing:  # cut short by the end of the run: no outcome to count
                return {"ok": False, "error": "finishing", "stage": "agent"}
            stats = self.group(room, net, node)  # the delta may have been shipped meanwhile
            stats.join_attempts += 1
            stats.join_failed[kind] = stats.join_failed.get(kind, 0) + 1
            point = self.delta.interval(time.time(), VIEWERS, net)
            point.join_attempts += 1
            point.join_failed += 1
            self.setup_error("WHEP", exc)
            return {"ok": False, "error": kind, "stage": stage, "ms": (time.monotonic() - started) * 1000}
        join_ms = (time.monotonic() - started) * 1000
        whep_ms = viewer.whep_ms or 0.0
        slot.node = await self.session_node(url, viewer)
        if self.finishing:  # the run ended while this one joined: do not count it
            await viewer.stop()
            return {"ok": False, "error": "finishing", "stage": "agent"}
        stats = self.group(room, net, slot.node)  # the delta may have been shipped meanwhile
        stats.join_attempts += 1
        stats.join_ok += 1
        stats.join_ms.add(join_ms)
        stats.whep_ms.add(whep_ms)
        stats.ttff_ms.add(viewer.ttff_ms or 0.0)
        point = self.delta.interval(time.time(), VIEWERS, net)
        point.join_attempts += 1
        point.join_ok += 1
        point.ttff_ms.add(viewer.ttff_ms or 0.0)
        now = time.monotonic()
        viewer.start_window(now)
        slot.watching = True
        slot.started_at = now
        self.viewers[key] = slot
        self.delta.mark("last_join_at", time.time())
        return {"ok": True, "whep_ms": whep_ms, "ttff_ms": viewer.ttff_ms, "join_ms": join_ms,
                "retries": viewer.retries, "node": slot.node}

    def _account(self, slot: ViewerSlot, now: float, final: bool) -> dict[str, Any]:
        """Move a viewer's measurements since its last report into the delta."""
        viewer = slot.viewer
        stats = self.group(slot.room, slot.net, slot.node)
        if final:
            window = viewer.freezes.window(now)  # a trailing gap long enough counts as a freeze
            watch, frames, freezes, freeze_s = window.watch_s, window.frames, window.freezes, window.freeze_s
        else:
            watch, frames, freezes, freeze_s = viewer.freezes.settled(now)
        point = self.delta.interval(time.time(), VIEWERS, slot.net)  # the run over time: this interval
        for into in (stats, point):
            into.watch_s += watch - slot.reported_watch
            into.frames += frames - slot.reported_frames
            into.freezes += freezes - slot.reported_freezes
            into.freeze_s += freeze_s - slot.reported_freeze_s
            into.latency_ms.merge(viewer.latency)
        stats.decode_gaps += viewer.decodability.gaps - slot.reported_gaps
        latency_mean = viewer.latency.mean
        viewer.latency = Histogram()
        stats.partner_frames += viewer.partner_frames - slot.reported_partner_frames
        slot.reported_partner_frames = viewer.partner_frames
        stats.partner_latency_ms.merge(viewer.partner_latency)
        viewer.partner_latency = Histogram()
        if final and slot.pk_span_s and watch >= slot.pk_span_s:
            stats.pk_sessions += 1
            stats.pk_sessions_with_partner += viewer.partner_frames > 0
        slot.reported_watch, slot.reported_frames = watch, frames
        slot.reported_freezes, slot.reported_freeze_s = freezes, freeze_s
        slot.reported_gaps = viewer.decodability.gaps
        if viewer.lost and not slot.lost_reported:
            slot.lost_reported = True
            stats.lost += 1
            _emit({"ev": "lost", "key": slot.key})
        return {"watch_s": watch, "freeze_s": freeze_s, "freezes": freezes, "frames": frames,
                "latency_mean_ms": latency_mean}

    async def leave(self, command: dict[str, Any]) -> dict[str, Any]:
        slot = self.viewers.pop(str(command["key"]), None)
        if slot is None:
            return {"ok": False, "error": "unknown_viewer"}
        totals = self._account(slot, time.monotonic(), final=True)
        stats = self.group(slot.room, slot.net, slot.node)
        stats.sessions += 1
        ratio = totals["freeze_s"] / totals["watch_s"] if totals["watch_s"] > 0 else 0.0
        stats.session_stutter.add(ratio * 1000)  # per-mille, for per-session percentiles
        lost = slot.viewer.lost
        await slot.viewer.stop()
        return {"ok": True, "lost": lost, "stutter": ratio, **totals}

    async def chat(self, command: dict[str, Any]) -> dict[str, Any]:
        key, room = str(command["key"]), str(command["room"])
        client = ChatClient(self, key, room, command)
        try:
            ms = await client.start()
        except Exception as exc:
            kind = error_kind(exc)
            stats = client.stats
            stats.event_errors[kind] = stats.event_errors.get(kind, 0) + 1
            self.setup_error("room socket", exc)
            await client.stop()
            return {"ok": False, "error": kind}
        client.stats.sockets += 1
        self.chats[key] = client
        return {"ok": True, "ms": ms}

    async def finish(self) -> dict[str, Any]:
        """End of the run: settle every viewer's window, stop every client, return the last delta."""
        self.finishing = True
        await self._drain()
        now = time.monotonic()
        self.delta.mark("settled_at", time.time())
        for slot in list(self.viewers.values()):
            totals = self._account(slot, now, final=True)
            stats = self.group(slot.room, slot.net, slot.node)
            stats.sessions += 1
            ratio = totals["freeze_s"] / totals["watch_s"] if totals["watch_s"] > 0 else 0.0
            stats.session_stutter.add(ratio * 1000)
            self.sample("stutter", totals["freeze_s"] * 1000, None, int(totals["watch_s"] * 1000))
        viewers, self.viewers = list(self.viewers.values()), {}
        await asyncio.gather(*(s.viewer.stop() for s in viewers), return_exceptions=True)
        chats, self.chats = list(self.chats.values()), {}
        await asyncio.gather(*(c.stop() for c in chats), return_exceptions=True)
        pk_hosts, self.pk_hosts = self.pk_hosts, []
        await asyncio.gather(*(p.stop() for p in pk_hosts), return_exceptions=True)
        hosts: dict[str, Any] = {}
        for key, host in list(self.hosts.items()):
            room = self.host_rooms[key]
            hosts[room] = {**self.host_info.get(room, {}), "pauses": [[a, b] for a, b in host.video.pauses],
                           "open_pause_since": host.video.open_pause_since, "frames_sent": host.video.frames_sent}
            await host.stop()
        self.hosts = {}
        self._health_tick()
        self._flush_samples()
        delta, self.delta = self.delta, Summary()
        delta.hosts.update(hosts)
        return {"ok": True, "delta": delta.to_json()}

    async def _drain(self) -> None:
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=15)

    # -- periodic work -------------------------------------------------------------

    def _health_tick(self) -> None:
        cpu, wall = time.process_time(), time.monotonic()
        self.health.add_interval(cpu - self._cpu_mark, wall - self._wall_mark)
        point = self.delta.interval(time.time(), PROCESS, self.proc_id)
        point.cpu_s += cpu - self._cpu_mark
        point.wall_s += wall - self._wall_mark
        self._cpu_mark, self._wall_mark = cpu, wall
        self.delta.health[self.proc_id] = self.delta.health.get(self.proc_id, HealthStats())
        self.delta.health[self.proc_id].merge(self.health)
        self.health = HealthStats()

    def _flush_samples(self) -> None:
        if self._samples:
            items, self._samples = self._samples, []
            _emit({"ev": "reqs", "items": items})

    async def report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            now = time.monotonic()
            for slot in list(self.viewers.values()):
                totals = self._account(slot, now, final=False)
                if totals["latency_mean_ms"] is not None:
                    self.sample("latency", totals["latency_mean_ms"], None)
            self._health_tick()
            self._flush_samples()
            delta, self.delta = self.delta, Summary()
            _emit({"ev": "stats", "delta": delta.to_json()})

    async def lag_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_TICK)
            self.health.loop_lag_ms.add(max(0.0, (loop.time() - before - LAG_TICK) * 1000))

    async def starve_loop(self, fraction: float) -> None:
        """Test hook: keep the event loop busy ``fraction`` of the time (a starved generator)."""
        while True:
            until = time.monotonic() + 0.1 * fraction
            while time.monotonic() < until:
                pass
            await asyncio.sleep(0.1 * (1 - fraction))

    # -- command loop --------------------------------------------------------------

    async def handle(self, command: dict[str, Any]) -> None:
        op = command.get("op")
        try:
            if op == "host":
                reply = await self.host(command)
            elif op == "view":
                reply = await self.view(command)
            elif op == "leave":
                reply = await self.leave(command)
            elif op == "chat":
                reply = await self.chat(command)
            elif op == "finish":
                reply = await self.finish()
            elif op == "hello":
                reply = {"ok": True, "pid": os.getpid(), "proc": self.proc_id}
            else:
                reply = {"ok": False, "error": "unknown_op"}
        except Exception as exc:  # a bug here must not kill the other clients
            print(f"agent: {op} failed: {exc!r}", file=sys.stderr, flush=True)
            reply = {"ok": False, "error": type(exc).__name__}
        _emit({"id": command.get("id"), **reply})

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            try:
                command = json.loads(line)
                assert isinstance(command, dict)
            except (ValueError, AssertionError):
                _emit({"ev": "error", "error": "bad command"})
                continue
            if command.get("op") == "quit":
                return
            task = asyncio.ensure_future(self.handle(command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for slot in self.viewers.values():
            await slot.viewer.stop()
        for client in self.chats.values():
            await client.stop()
        for host in self.hosts.values():
            await host.stop()
        if self._http is not None:
            await self._http.close()


async def _run(args: argparse.Namespace) -> int:
    configure_ice(args.ice_host or DEFAULT_ICE_HOSTS)
    conditions = load_conditions(Path(args.network_config))
    agent = Agent(args.base_url, conditions, args.report_interval, TokenSettings.from_args(args))
    agent.media()  # encode before the lag monitor starts: it blocks the loop for a moment
    freeze_start_up_heap()  # the clips and imports: a full collection's pause would show up as measured stutter
    background = [asyncio.ensure_future(agent.report_loop()), asyncio.ensure_future(agent.lag_loop())]
    starve = float(os.environ.get("CHERRY_LOAD_STARVE", "0") or 0)
    if starve > 0:
        print(f"agent: CHERRY_LOAD_STARVE={starve}: starving this generator on purpose", file=sys.stderr, flush=True)
        background.append(asyncio.ensure_future(agent.starve_loop(min(starve, 0.99))))
    main = asyncio.ensure_future(agent.serve())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main.cancel)
    _emit({"ev": "ready", "pid": os.getpid()})
    try:
        await main
    except asyncio.CancelledError:
        pass
    finally:
        for task in background:
            task.cancel()
        await agent.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load agent: asyncio WebRTC clients driven by a Locust process")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ice-host", action="append", help="ICE host address (repeatable); default 127.0.0.1")
    parser.add_argument("--network-config", default=str(ROOT / "configs" / "load-network.toml"))
    parser.add_argument("--report-interval", type=float, default=2.0)
    add_token_arguments(parser)
    args = parser.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional, the same event loop the gateway prefers

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
