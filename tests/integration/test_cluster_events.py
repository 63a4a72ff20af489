"""Room events across nodes: one owner decides each room, every socket of the room gets its events.

Real ``redis-server`` on a free loopback port and two real gateway nodes (one worker each) on it, shared
by the whole module; all traffic on 127.0.0.1. The room's owner is the first worker with a socket in
it (or its host's worker): each test picks which node that is by where it connects first.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from cluster.config import ClusterConfig
from cluster.registry import RedisRegistry
from tests.integration.conftest import GatewayProcess, NodesOnRedis, dev_token
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host

SECRET = "cluster-events-test-secret-0123456789abcdef"


def node_config(redis_url: str, node: str, internal_port: int) -> str:
    # Rates high enough that a storm is limited by nothing but the test's own pace.
    return f"""
[auth]
secret = "{SECRET}"
[events]
chat_per_second = 1000.0
chat_burst = 1000
gifts_per_second = 1000.0
gift_burst = 1000
[cluster]
redis_url = "{redis_url}"
node_id = "{node}"
advertise_url = "http://127.0.0.1:{internal_port}"
heartbeat_interval_s = 0.5
stale_after_s = 2.0
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodesOnRedis]:
    started = NodesOnRedis.single_workers(tmp_path_factory.mktemp("cluster-events"), node_config)
    yield started
    started.stop()


async def join(http: aiohttp.ClientSession, node: GatewayProcess, room: str, identity: str,
               role: str = "viewer") -> EventsClient:
    return await EventsClient.connect(http, node.base, room, await dev_token(http, node.base, room, role, identity))


async def tied(cluster: NodesOnRedis, timeout: float = 10.0) -> None:
    """Until every worker's heartbeat reports the same load (the last test's leaves reach the registry with the
    next heartbeat): placement is by load, so a test that needs a room where it posts starts from a tie. The
    heartbeats are other processes': this polls the registry, bounded."""
    registry = RedisRegistry(cluster.redis.url, ClusterConfig(), "probe", "test", "http://127.0.0.1:9")
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            workers = await registry.workers()
            # A tie, not necessarily idle: a PK link of the test before lingers on both nodes alike.
            if len(workers) == len(cluster.nodes) and len({(w.sessions, w.viewers) for w in workers}) == 1:
                return
            assert asyncio.get_running_loop().time() < deadline, f"workers never tied: {workers}"
            await asyncio.sleep(0.1)
    finally:
        await registry.close()


def kinds(client: EventsClient, *types: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f["type"] in types]


async def close(*clients: EventsClient) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def event_stats(http: aiohttp.ClientSession, node: GatewayProcess) -> dict[str, int]:
    token = await dev_token(http, node.base, "any", "admin")
    async with http.get(node.base + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        return dict((await r.json())["events"])


async def until_stat(http: aiohttp.ClientSession, node: GatewayProcess, key: str, above: int, timeout: float) -> None:
    """Poll a node's counter (it is another process: there is nothing to await) until it passes ``above``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (now := (await event_stats(http, node)).get(key, 0)) <= above:
        assert loop.time() < deadline, f"{key} stayed at {now} on {node.base} for {timeout}s"
        await asyncio.sleep(0.1)


async def test_chat_and_gifts_reach_every_socket_on_both_nodes_once_and_in_one_order(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "across-chat"
    ann = await join(http, a, room, "ann")  # first socket: node a decides the room
    al = await join(http, a, room, "al")
    bob = await join(http, b, room, "bob")
    bea = await join(http, b, room, "bea")
    everyone = (ann, al, bob, bea)
    try:
        for i in range(10):
            await ann.send(type="chat", text=f"ann {i}")
            await bob.send(type="chat", text=f"bob {i}")  # forwarded to node a, decided there
            await bob.send(type="gift", kind="rose", count=i + 1)
        await asyncio.gather(*(c.wait_until(lambda c=c: len(kinds(c, "chat", "gift")) >= 30, "30 chats and gifts")
                               for c in everyone))
        orders = [[(f["type"], f["id"]) for f in kinds(c, "chat", "gift")] for c in everyone]
        assert len(set(orders[0])) == 30, orders[0]  # each once
        for order in orders[1:]:
            assert order == orders[0]  # in the one order the owner decided, on both nodes
        for sender in ("ann", "bob"):
            texts = [f["text"] for f in kinds(bea, "chat") if f["from"]["identity"] == sender]
            assert texts == [f"{sender} {i}" for i in range(10)]  # each sender's own order kept
        assert [f["count"] for f in kinds(ann, "gift")] == list(range(1, 11))
        assert all(f["from"] == {"identity": "bob", "role": "viewer", "name": "bob"} for f in kinds(al, "gift"))
        assert not any(c.of("error") for c in everyone)
        # The owner counts every socket of the room, wherever it is connected.
        await al.wait_until(lambda: bool(al.of("viewers")) and al.of("viewers")[-1]["online"] == 4, "online 4")
    finally:
        await close(*everyone)


async def test_a_joiner_on_the_other_node_gets_the_rooms_history_in_its_welcome(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "history"
    ann = await join(http, a, room, "ann")
    try:
        for text in ("one", "two", "three"):
            await ann.send(type="chat", text=text)
        await ann.send(type="gift", kind="rose", count=2)
        await ann.send(type="like", count=7)
        await ann.wait_until(lambda: len(ann.of("chat")) == 3 and bool(ann.of("gift")) and bool(ann.of("likes")),
                             "its own chat, gift and likes")
        # The first socket of the room on node b: its worker loads the room's state from the owner's snapshot
        # and stream.
        late = await join(http, b, room, "late")
        on_owner = await join(http, a, room, "late-too")
        snapshot = late.of("welcome")[0]["snapshot"]
        assert [m["text"] for m in snapshot["chat"]] == ["one", "two", "three"], snapshot
        assert snapshot["gifts"] == {"rose": 2} and snapshot["likes"] == 7, snapshot
        owners = on_owner.of("welcome")[0]["snapshot"]
        for field in ("title", "live", "host", "chat", "gifts", "likes", "layout", "pk", "gift_catalog", "muted_until"):
            assert snapshot[field] == owners[field], field  # the same welcome as at the owner
        await close(late, on_owner)
    finally:
        await close(ann)


async def test_a_ban_decided_on_one_node_refuses_the_identity_on_the_other(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "ban-across"
    host = await join(http, a, room, "boss", role="host")
    troll = await join(http, b, room, "troll")
    other = await join(http, b, room, "fan")
    try:
        await host.send(type="ban", identity="troll", duration_s=600)
        # Its socket on node b is ended by node b itself (4003), as a local ban would.
        assert await troll.wait_closed(10) == 4003
        await other.next("moderation", action="ban", target="troll")
        for node in (b, a):
            token = await dev_token(http, node.base, room, "viewer", "troll")
            async with http.get(f"{node.base}/ws/{room}?token={token}") as r:
                assert r.status == 403, await r.text()
                assert (await r.json())["error"]["code"] == "banned"
        assert not other.closed.is_set()  # nobody else is touched
        # Lifted on node a, lifted everywhere: the same socket request is accepted on both nodes again (426: every
        # check passed, only the upgrade is missing from a plain GET).
        await host.send(type="unban", identity="troll")
        await other.next("moderation", action="unban", target="troll")
        for node in (b, a):
            token = await dev_token(http, node.base, room, "viewer", "troll")
            for _ in range(50):  # node a lifted it before answering; node b learns it from the control stream
                async with http.get(f"{node.base}/ws/{room}?token={token}") as r:
                    if r.status != 403:
                        break
                await asyncio.sleep(0.1)
            assert r.status == 426, f"node {node.base}: {r.status} {await r.text()}"
    finally:
        await close(host, troll, other)


async def test_a_kick_from_a_socket_on_the_other_node_ends_the_target_where_it_is(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "kick-across"
    fan = await join(http, a, room, "fan")  # node a decides the room
    mod = await join(http, b, room, "boss", role="host")
    pest = await join(http, b, room, "pest")
    try:
        await mod.send(type="kick", identity="pest", ref="k1")  # from node b, decided on node a, applied on b
        assert await pest.wait_closed(10) == 4003
        await fan.next("moderation", action="kick", target="pest")
        await mod.send(type="kick", identity="nobody", ref="k2")
        error = await mod.next("error", ref="k2")  # an error for one socket comes back to that socket
        assert error["code"] == "unknown_target"
        assert not fan.of("error")
    finally:
        await close(fan, mod, pest)


async def test_a_pk_between_rooms_decided_on_different_nodes_scores_gifts_from_both_and_ends_once(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    star_a = Host(a.base, "pk-a", await dev_token(http, a.base, "pk-a", "host", "star-a"))
    star_b = Host(b.base, "pk-b", await dev_token(http, b.base, "pk-b", "host", "star-b"))
    await star_a.publish(http)
    await star_b.publish(http)
    clients: list[EventsClient] = []
    try:
        assert star_a.location is not None and star_a.location.endswith("~a-w0"), star_a.location
        assert star_b.location is not None and star_b.location.endswith("~b-w0"), star_b.location
        # Each host's socket is on the other node: its frames cross to its room's owner.
        host_a = await join(http, b, "pk-a", "star-a", role="host")
        host_b = await join(http, a, "pk-b", "star-b", role="host")
        fans = {(room, node): await join(http, cluster.nodes[node], room, f"fan-{room}-{node}")
                for room in ("pk-a", "pk-b") for node in ("a", "b")}
        clients = [host_a, host_b, *fans.values()]
        for host in (host_a, host_b):
            await host.wait_until(lambda h=host: h.of("welcome")[0]["snapshot"]["live"] or any(
                f["live"] for f in h.of("host")), "its room live")
        await host_a.send(type="pk_invite", room="pk-b")
        invitation = await host_b.next("pk_invitation", timeout=10)
        assert invitation["from_room"] == "pk-a"
        await host_b.send(type="pk_accept", id=invitation["id"])
        for client in clients:
            started = await client.next("pk_started", timeout=10)
            assert started["rooms"] == ["pk-a", "pk-b"] and started["hosts"] == {"pk-a": "star-a", "pk-b": "star-b"}
        # Gifts from sockets on both nodes, in both rooms (rose 5, heart 1, rocket 100 points each).
        await fans[("pk-a", "a")].send(type="gift", kind="rose", count=2)  # pk-a +10, decided on a
        await fans[("pk-a", "b")].send(type="gift", kind="heart", count=3)  # pk-a +3, forwarded b -> a
        await fans[("pk-a", "b")].send(type="gift", kind="rose", count=1, side="pk-b")  # pk-b +5
        await fans[("pk-b", "a")].send(type="gift", kind="rocket", count=1)  # pk-b +100, a -> b, points b -> a
        await fans[("pk-b", "b")].send(type="gift", kind="heart", count=1)  # pk-b +1, points b -> a
        expected = {"pk-a": 13, "pk-b": 106}
        for client in clients:
            await client.wait_until(lambda c=client: bool(c.of("pk_score")) and c.of("pk_score")[-1]["scores"]
                                    == expected, f"scores {expected}")
        await host_b.send(type="pk_end")  # from node a to pk-b's owner b, on to the battle's node a
        for client in clients:
            ended = await client.next("pk_ended", timeout=10)
            assert ended["scores"] == expected and ended["winner"] == "pk-b", ended
            assert ended["result"] == {"pk-a": "lose", "pk-b": "win"}
        # One result: a chat sent after it reaches everyone, and nobody got a second pk_ended before it.
        await fans[("pk-a", "a")].send(type="chat", text="gg")
        await fans[("pk-b", "b")].send(type="chat", text="gg")
        for client in clients:
            await client.next("chat", timeout=10, text="gg")
            assert len(client.of("pk_ended")) == 1, client.of("pk_ended")
            assert not client.of("error"), client.of("error")
        # Both rooms are free again: a new invitation is not refused as busy.
        await host_b.send(type="pk_invite", room="pk-a")
        again = await host_a.next("pk_invitation", timeout=10)
        assert again["from_room"] == "pk-b"
    finally:
        await close(*clients)
        await asyncio.gather(star_a.stop(http), star_b.stop(http), return_exceptions=True)


async def test_a_rooms_events_move_to_the_node_its_host_goes_live_on_history_and_all(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "moving"
    fan = await join(http, b, room, "fan")  # node b decides the room: it has its first socket
    watcher = await join(http, a, room, "watcher")
    star = Host(a.base, room, await dev_token(http, a.base, room, "host", "mover"))
    guest: Host | None = None
    host: EventsClient | None = None
    try:
        for text in ("early 1", "early 2"):
            await fan.send(type="chat", text=text)
        await watcher.wait_until(lambda: len(watcher.of("chat")) == 2, "the early chat")
        taken, handed = (await event_stats(http, a))["cluster_taken_over"], (await event_stats(http, b))[
            "cluster_handed_off"]
        await tied(cluster)  # a tie: the host's room goes to the worker it posts to
        await star.publish(http)  # its session is on node a: node a asks node b for the room's events
        assert star.location is not None and star.location.endswith("~a-w0"), star.location
        await until_stat(http, a, "cluster_taken_over", taken, 10)
        assert (await event_stats(http, b))["cluster_handed_off"] == handed + 1
        await fan.send(type="chat", text="late")
        for client in (fan, watcher):
            await client.next("chat", text="late")
            assert [f["text"] for f in client.of("chat")] == ["early 1", "early 2", "late"]
            ids = [f["id"] for f in client.of("chat")]
            assert len(set(ids)) == 3, ids  # message ids go on past the history handed over
        host = await join(http, b, room, "mover", role="host")
        snapshot = host.of("welcome")[0]["snapshot"]
        assert [m["text"] for m in snapshot["chat"]] == ["early 1", "early 2", "late"] and snapshot["live"], snapshot
        # Guests are put on mic where the room's host is: the grant is decided there, so the guest may publish.
        await host.send(type="guest_invite", identity="fan")
        invitation = await fan.next("guest_invitation")
        await fan.send(type="guest_accept", id=invitation["id"])
        granted = await fan.next("guest_token")
        guest = Host(b.base, room, granted["token"])
        await guest.publish(http)  # 201: placed on node a, which holds the grant
        assert guest.location is not None and guest.location.endswith("~a-w0"), guest.location
        await host.next("guest_accepted", identity="fan")
    finally:
        await close(fan, watcher, *((host,) if host else ()))
        await asyncio.gather(star.stop(http), *((guest.stop(http),) if guest else ()), return_exceptions=True)


async def redis_back(cluster: NodesOnRedis) -> None:
    """Redis up again, started from this (the loop's) thread: one started in an executor's thread would be killed
    when that thread ends with the test's loop (its PDEATHSIG), leaving the next test without Redis."""
    cluster.redis.respawn()
    await asyncio.to_thread(cluster.redis.wait_ready)


async def test_the_owners_own_sockets_keep_getting_events_while_redis_is_down(cluster, http):
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "redis-down"
    ann = await join(http, a, room, "ann")
    al = await join(http, a, room, "al")
    bob = await join(http, b, room, "bob")
    try:
        await ann.send(type="chat", text="before")
        await bob.next("chat", text="before")
        await asyncio.to_thread(cluster.redis.stop)
        try:
            await ann.send(type="chat", text="while down")
            await al.next("chat", text="while down")  # decided and delivered on node a without Redis
            await bob.send(type="chat", text="from b while down")  # waits on node b for Redis
        finally:
            await redis_back(cluster)
        # Once Redis is back, node b gets what it missed, and node a what b could not forward.
        await bob.next("chat", timeout=15, text="while down")
        for client in (ann, al, bob):
            await client.next("chat", timeout=15, text="from b while down")
        for client in (ann, al, bob):
            assert [f["text"] for f in client.of("chat")] == ["before", "while down", "from b while down"]
    finally:
        await close(ann, al, bob)


async def storm_sockets(http: aiohttp.ClientSession, cluster: NodesOnRedis,
                        room: str) -> tuple[list[EventsClient], list[EventsClient]]:
    """A storm's senders (ann on node a, which joins first and so decides the room; bob on b) and everyone:
    the senders and a watcher on each node (al, bea)."""
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    senders = [await join(http, a, room, "ann"), await join(http, b, room, "bob")]
    watchers = [await join(http, a, room, "al"), await join(http, b, room, "bea")]
    return senders, senders + watchers


async def last_words(senders: list[EventsClient], everyone: list[EventsClient], cluster: NodesOnRedis,
                     room: str) -> None:
    """Each sender's last word, after all its gifts (one sender's frames keep their order), until every socket
    knows both (from its last welcome on); what each knew, and the nodes' logs, if one never does."""
    for sender in senders:
        await sender.send(type="chat", text=f"done {sender.of('welcome')[0]['you']['identity']}")
    for client in everyone:
        try:
            await client.wait_until(lambda c=client: {"done ann", "done bob"} <= set(room_view(c)[1]),
                                    "both senders' last words", timeout=30)
        except AssertionError:
            views = {c.of("welcome")[0]["you"]["identity"]: room_view(c)[:2] for c in everyone}
            raise AssertionError(f"{views}; {storm_report(everyone, cluster, room)}") from None


def room_view(client: EventsClient) -> tuple[int, list[str], list[int]]:
    """What a socket knows of the room from its last welcome on: hearts given, chat lines, gift ids after it."""
    frames = client.frames
    last = max(i for i, f in enumerate(frames) if f["type"] == "welcome")
    snapshot, after = frames[last]["snapshot"], frames[last + 1:]
    hearts = snapshot["gifts"].get("heart", 0) + sum(f["count"] for f in after if f["type"] == "gift")
    chats = [m["text"] for m in snapshot["chat"]] + [f["text"] for f in after if f["type"] == "chat"]
    return hearts, chats, [f["id"] for f in after if f["type"] == "gift"]


def storm_report(clients: list[EventsClient], cluster: NodesOnRedis, room: str) -> str:
    """What each socket got of each sender's gifts and errors, and what the nodes logged of the room's events:
    a lost gift says where it was lost."""
    got = []
    for client in clients:
        you = client.of("welcome")[0]["you"]["identity"]
        senders = Counter(str((g.get("from") or {}).get("identity")) for g in client.of("gift"))
        got.append(f"{you}: {dict(senders)}, errors {[e.get('code') for e in client.of('error')][:5]}")
    logged = {name: [line for line in node.log().splitlines() if f"room={room}" in line or "room events" in line][-15:]
              for name, node in cluster.nodes.items()}
    return f"gifts by sender per socket: {got}; node logs: {logged}"


@pytest.mark.parametrize("outage_s", [0.0, 3.0], ids=["restart", "outage-longer-than-a-lease"])
async def test_a_gift_storm_through_a_redis_restart_loses_and_duplicates_nothing(cluster, http, outage_s):
    """Redis restarts (empty) mid-storm, at once or after an outage longer than a lease (2 s here). Then node b's
    backlog reaches the owner in one read: every socket still gets every gift once, none is cut off as too slow
    (the backlog outgrows a send queue), and the owner keeps the room (no second numbering of its events)."""
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = f"storm-{int(outage_s)}"
    senders, everyone = await storm_sockets(http, cluster, room)
    per_sender = 400 if outage_s else 150  # the storm outlasts the outage, and b's backlog a send queue (256)

    async def storm(sender: EventsClient) -> None:
        for i in range(per_sender):
            assert not sender.closed.is_set(), \
                f"the server closed a sender's socket mid-storm: {sender.ws.close_code} {sender.close_reason}; " \
                f"{storm_report(everyone, cluster, room)}"
            await sender.send(type="gift", kind="heart", count=1, ref=f"g{i}")
            await asyncio.sleep(0.01)  # a steady pace: the storm spans the restart

    # The room is decided (by a) before Redis goes: a word from each side reaches the other.
    try:
        await senders[0].send(type="chat", text="hi from ann")
        await senders[1].next("chat", text="hi from ann")
        await senders[1].send(type="chat", text="hi from bob")
        await senders[0].next("chat", text="hi from bob")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {storm_report(everyone, cluster, room)}") from None
    refilled = (await event_stats(http, a))["cluster_refilled"]
    taken_over = (await event_stats(http, b)).get("cluster_taken_over", 0)
    try:
        gifts = [asyncio.ensure_future(storm(s)) for s in senders]
        await asyncio.sleep(0.4)  # pace only: the restart falls in the middle of the storm
        await asyncio.to_thread(cluster.redis.stop)
        await asyncio.sleep(outage_s)  # the outage itself: Redis is away this long
        await redis_back(cluster)
        await asyncio.gather(*gifts)
        await last_words(senders, everyone, cluster, room)
        for client in everyone:
            ids = [g["id"] for g in client.of("gift")]
            assert len(ids) == 2 * per_sender, \
                f"{len(ids)} gifts, sent {2 * per_sender}; {storm_report(everyone, cluster, room)}"
            assert len(set(ids)) == len(ids), "a gift arrived twice"
            assert not client.of("error"), client.of("error")[:3]
        # The restart did hit the room: its owner appended again what the new, empty Redis lacked.
        assert (await event_stats(http, a))["cluster_refilled"] > refilled
        assert (await event_stats(http, b)).get("cluster_taken_over", 0) == taken_over, \
            f"node b took the room over: {storm_report(everyone, cluster, room)}"
    finally:
        await close(*everyone)


async def test_a_room_that_starts_while_redis_is_away_comes_together_once_redis_is_back(cluster, http):
    """Nobody decides a room that starts while Redis is away: each node holds its sockets' frames until one
    claims the room, and the owner decides them all at once. That burst (more than a send queue holds) reaches
    every socket without cutting one off as too slow; sockets that joined before their node knew the room's
    state are welcomed again with it; so every socket ends up knowing every gift once and both last words."""
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    room = "storm-away"
    per_sender = 300
    resynced = sum([(await event_stats(http, node)).get("cluster_resynced", 0) for node in (a, b)])
    await asyncio.to_thread(cluster.redis.stop)
    try:
        senders, everyone = await storm_sockets(http, cluster, room)
        for i in range(per_sender):
            for sender in senders:
                await sender.send(type="gift", kind="heart", count=1, ref=f"g{i}")
    finally:
        await redis_back(cluster)
    try:
        await last_words(senders, everyone, cluster, room)
        for client in everyone:
            hearts, _, ids = room_view(client)
            assert hearts == 2 * per_sender, f"{hearts} hearts, sent {2 * per_sender}; " \
                                             f"{storm_report(everyone, cluster, room)}"
            assert len(set(ids)) == len(ids), "a gift arrived twice"
            assert not client.of("error"), client.of("error")[:3]
            assert not client.closed.is_set(), f"a socket was cut off: {client.close_reason}"
        # The node that did not decide the room had sockets that joined without its state: they were welcomed again.
        assert sum([(await event_stats(http, node)).get("cluster_resynced", 0) for node in (a, b)]) > resynced
    finally:
        await close(*everyone)
