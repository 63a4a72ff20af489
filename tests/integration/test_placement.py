"""Placement decisions against a real redis-server, with the clock in the test's hands.

Each worker here is only a registry entry (its heartbeats); what the gateway does with a target is covered
by the cluster tests with real processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cluster.config import ClusterConfig
from cluster.placement import Placement
from cluster.registry import RedisRegistry, WorkerLoad
from loadtests.webrtc.process import RedisServer
from relay.errors import CapacityExceeded, RoomNotLive

CONFIG = ClusterConfig(stale_after_s=5.0, worker_viewer_capacity=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Workers:
    def __init__(self, url: str, clock: Clock) -> None:
        self.clock = clock
        self.registries = {w: RedisRegistry(url, CONFIG, w, w.split("-")[0], f"http://{w}.internal", clock)
                           for w in ("a-w0", "b-w0", "c-w0")}

    def placement(self, worker: str) -> Placement:
        return Placement(self.registries[worker], CONFIG.worker_viewer_capacity, CONFIG.stale_after_s, self.clock)

    async def beat(self, worker: str, viewers: int = 0, rooms: dict[str, int] | None = None,
                   origins: tuple[str, ...] = (), state: str = "serving") -> None:
        rooms = rooms or {}
        await self.registries[worker].heartbeat(WorkerLoad(state, viewers, viewers, len(rooms), 10, rooms, origins))


@pytest.fixture
async def workers(redis_server: RedisServer) -> AsyncIterator[Workers]:
    clock = Clock()
    found = Workers(redis_server.url.rsplit("/", 1)[0] + "/7", clock)  # a database of its own
    await found.registries["a-w0"].client.flushdb()
    yield found
    for registry in found.registries.values():
        await registry.close()


async def test_a_new_room_goes_to_the_least_loaded_worker_and_stays_there(workers: Workers) -> None:
    await workers.beat("a-w0", viewers=6)
    await workers.beat("b-w0", viewers=1)
    await workers.beat("c-w0", viewers=4)
    first = await workers.placement("a-w0").for_ingest("r1")
    assert first.worker_id == "b-w0"
    # Load changes; the room keeps its origin, whichever worker asks.
    await workers.beat("b-w0", viewers=9)
    assert (await workers.placement("c-w0").for_ingest("r1")).worker_id == "b-w0"


async def test_ties_go_to_the_asking_worker(workers: Workers) -> None:
    for w in ("a-w0", "b-w0", "c-w0"):
        await workers.beat(w)
    assert (await workers.placement("c-w0").for_ingest("tie")).worker_id == "c-w0"


async def test_a_draining_or_silent_worker_gets_no_new_room(workers: Workers) -> None:
    await workers.beat("a-w0", state="draining")
    await workers.beat("b-w0", viewers=5)
    workers.clock.now += 4
    await workers.beat("c-w0", viewers=8)
    workers.clock.now += 2  # b's last heartbeat is 6 s old now (stale after 5)
    assert (await workers.placement("a-w0").for_ingest("r2")).worker_id == "c-w0"


async def test_a_dead_origin_is_taken_over_once_its_heartbeat_is_stale(workers: Workers) -> None:
    await workers.beat("a-w0")
    await workers.beat("b-w0", viewers=3)
    assert (await workers.placement("a-w0").for_ingest("r3")).worker_id == "a-w0"
    workers.clock.now += 6
    await workers.beat("b-w0", viewers=3)
    taken = await workers.placement("c-w0").for_ingest("r3")
    assert taken.worker_id == "b-w0"
    assert await workers.registries["c-w0"].origin("r3") == "b-w0"


async def test_a_worker_that_refused_a_connection_is_skipped_before_its_heartbeat_goes_stale(
        workers: Workers) -> None:
    await workers.beat("a-w0")
    await workers.beat("b-w0", viewers=3)
    asking = workers.placement("b-w0")
    assert (await asking.for_ingest("r4")).worker_id == "a-w0"
    asking.suspect("a-w0")
    # Its room is taken over (the host reconnecting lands on a live worker), new rooms go elsewhere,
    # and its viewers are told the room is not live rather than sent to a dead worker.
    assert (await asking.for_ingest("r4")).worker_id == "b-w0"
    assert (await asking.for_ingest("r5")).worker_id == "b-w0"
    await workers.beat("a-w0", origins=("r6",))
    await workers.registries["a-w0"].claim_origin("r6", "a-w0")
    with pytest.raises(RoomNotLive):
        await asking.for_playback("r6", edges=True)
    # Only for as long as a stale heartbeat would have kept it out: a worker that comes back is used again.
    workers.clock.now += 5.5
    await workers.beat("a-w0")
    await workers.beat("b-w0", viewers=3)
    assert (await asking.for_ingest("r7")).worker_id == "a-w0"


async def test_viewers_fill_the_origin_then_stick_to_one_edge_then_open_another(workers: Workers) -> None:
    await workers.beat("a-w0", rooms={"big": 0}, origins=("big",))
    await workers.registries["a-w0"].claim_origin("big", "a-w0")
    await workers.beat("b-w0", viewers=1)
    await workers.beat("c-w0", viewers=0)
    place = workers.placement("b-w0")
    target = await place.for_playback("big", edges=True)
    assert (target.worker_id, target.edge) == ("a-w0", False)
    await workers.beat("a-w0", viewers=2, rooms={"big": 2}, origins=("big",))
    first = await place.for_playback("big", edges=True)
    assert (first.worker_id, first.edge, first.origin, first.origin_url) == ("c-w0", True, "a-w0",
                                                                              "http://a-w0.internal")
    # The edge carrying the room is preferred over a less-loaded worker that would need a second pipe.
    await workers.beat("c-w0", viewers=5, rooms={"big": 1})
    await workers.beat("b-w0", viewers=0)
    assert (await place.for_playback("big", edges=True)).worker_id == "c-w0"
    await workers.beat("c-w0", viewers=6, rooms={"big": 2})
    assert (await place.for_playback("big", edges=True)).worker_id == "b-w0"
    await workers.beat("b-w0", viewers=2, rooms={"big": 2})
    with pytest.raises(CapacityExceeded):
        await place.for_playback("big", edges=True)


async def test_a_room_without_an_origin_is_not_live(workers: Workers) -> None:
    await workers.beat("a-w0")
    with pytest.raises(RoomNotLive):
        await workers.placement("a-w0").for_playback("nobody", edges=True)


async def test_viewers_of_a_room_whose_origin_drains_go_to_an_edge_that_pulls_from_it(workers: Workers) -> None:
    await workers.beat("a-w0", rooms={"show": 1}, origins=("show",))
    await workers.registries["a-w0"].claim_origin("show", "a-w0")
    await workers.beat("b-w0")
    await workers.beat("c-w0", viewers=1)
    await workers.beat("a-w0", rooms={"show": 1}, origins=("show",), state="draining")
    target = await workers.placement("c-w0").for_playback("show", edges=True)
    assert (target.worker_id, target.edge, target.origin) == ("b-w0", True, "a-w0")
    with pytest.raises(RoomNotLive):  # a view only its origin serves (a PK partner's) is not placed there
        await workers.placement("c-w0").for_playback("show", edges=False)


async def test_an_origin_lease_lost_with_redis_data_is_written_back_by_the_next_heartbeat(workers: Workers) -> None:
    await workers.beat("a-w0", rooms={"live": 3}, origins=("live",))
    await workers.registries["a-w0"].claim_origin("live", "a-w0")
    await workers.registries["a-w0"].client.flushdb()  # what a restart of a Redis without persistence leaves
    assert await workers.registries["b-w0"].origin("live") is None
    await workers.beat("a-w0", rooms={"live": 3}, origins=("live",))
    assert await workers.registries["b-w0"].origin("live") == "a-w0"
    # Written back only where it is missing: another worker's lease is not taken.
    await workers.registries["b-w0"].claim_origin("other", "b-w0")
    await workers.beat("a-w0", rooms={"live": 3}, origins=("live", "other"))
    assert await workers.registries["a-w0"].origin("other") == "b-w0"


async def test_a_draining_worker_is_still_live_for_the_admin_api_a_silent_one_is_not(workers: Workers) -> None:
    await workers.beat("a-w0", state="draining")
    await workers.beat("b-w0")
    workers.clock.now += 4
    await workers.beat("c-w0")
    workers.clock.now += 2  # a and b are 6 s old now (stale after 5)
    await workers.beat("a-w0", state="draining")
    assert sorted(w.worker_id for w in await workers.registries["c-w0"].fresh()) == ["a-w0", "c-w0"]
    assert [w.worker_id for w in await workers.registries["c-w0"].available()] == ["c-w0"]
