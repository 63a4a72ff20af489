"""Room covers through the real gateway: one bounded decode per room per new keyframe and round, off the
forwarding path (its codec work counted apart, in the snapshot thread), and none per viewer."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.peers import LOOPBACK, post_sdp
from tests.integration.test_forwarding import codec_counts, start_host, start_viewers, stats

INTERVAL = 1.0
WIDTH = 160  # the test host sends 320x240: covers are 160x120
CONFIG = f"[snapshots]\ninterval_s = {INTERVAL}\nwidth = {WIDTH}\n"
NO_CODECS = {"encoders": 0, "decoders": 0, "codec_contexts": 0}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-covers"))
    yield proc
    proc.stop()


async def metric(gateway: GatewayProcess, http: aiohttp.ClientSession, name: str) -> float:
    async with http.get(gateway.base + "/metrics") as response:
        assert response.status == 200, await response.text()
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"/metrics has no {name}")


async def until(check: Callable[[], Awaitable[bool]], timeout: float, failure: str) -> None:
    """Poll ``check`` until it holds; fail with ``failure`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{failure} (after {timeout:.0f} s)")
        await asyncio.sleep(0.1)


@dataclass
class Figures:
    decodes: float
    keyframes: int
    rounds: float
    snapshot_codecs: dict[str, int]
    forwarding_codecs: dict[str, int]

    def minus(self, other: Figures) -> Figures:
        return Figures(self.decodes - other.decodes, self.keyframes - other.keyframes, self.rounds - other.rounds,
                       {k: v - other.snapshot_codecs[k] for k, v in self.snapshot_codecs.items()},
                       self.forwarding_codecs)


async def figures(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str) -> Figures:
    # Decodes first: keyframes and rounds only grow, so read after them they are never behind.
    decodes = await metric(gateway, http, "cherry_snapshot_decodes_total")
    async with http.get(gateway.base + "/test/snapshot-codecs") as response:
        snapshot_codecs = dict(await response.json())
    room_stats = next(r for r in (await stats(gateway, http))["rooms"] if r["room"] == room)
    rounds = await metric(gateway, http, "cherry_snapshot_rounds_total")
    return Figures(decodes, room_stats["publications"]["video"]["keyframes_in"], rounds, snapshot_codecs,
                   await codec_counts(gateway, http))


async def rounds_pass(gateway: GatewayProcess, http: aiohttp.ClientSession, n: int) -> None:
    target = await metric(gateway, http, "cherry_snapshot_rounds_total") + n

    async def reached() -> bool:
        return await metric(gateway, http, "cherry_snapshot_rounds_total") >= target

    await until(reached, n * INTERVAL + 10, f"{n} snapshot rounds did not run")


async def get_cover(http: aiohttp.ClientSession, gateway: GatewayProcess, room: str) -> tuple[int, bytes, str]:
    async with http.get(f"{gateway.base}/rooms/{room}/cover.jpg") as response:
        return response.status, await response.read(), response.headers.get("ETag", "")


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(jpeg), format="mjpeg") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def check_bounds(total: Figures, phase: str) -> None:
    assert total.forwarding_codecs == NO_CODECS, f"{phase}: codec work outside the snapshot thread: {total}"
    assert total.decodes <= total.keyframes, f"{phase}: a keyframe decoded twice: {total}"
    assert total.decodes <= total.rounds, f"{phase}: more than one decode per room per round: {total}"
    # Each cover decode is one decoder and one JPEG encoder, made in the snapshot thread and nowhere else.
    assert total.snapshot_codecs == {"encoders": 0, "decoders": 0, "codec_contexts": 2 * total.decodes}, (
        f"{phase}: snapshot codec work is not two contexts per decode: {total}")


async def figures_before_any_room(gateway: GatewayProcess, http: aiohttp.ClientSession) -> Figures:
    async with http.get(gateway.base + "/test/snapshot-codecs") as response:
        snapshot_codecs = dict(await response.json())
    return Figures(await metric(gateway, http, "cherry_snapshot_decodes_total"), 0,
                   await metric(gateway, http, "cherry_snapshot_rounds_total"), snapshot_codecs,
                   await codec_counts(gateway, http))


async def test_a_room_cover_costs_one_decode_per_new_keyframe_and_round_and_none_per_viewer(gateway, http):
    start = await figures_before_any_room(gateway, http)
    host = await start_host(gateway, http, "covered")
    viewers = []
    try:
        async def has_cover() -> bool:
            return (await get_cover(http, gateway, "covered"))[0] == 200

        await until(has_cover, 10 * INTERVAL, "no cover for a live room")
        status, jpeg, etag = await get_cover(http, gateway, "covered")
        assert jpeg[:2] == b"\xff\xd8", jpeg[:16]
        assert jpeg_size(jpeg) == (WIDTH, 120)
        async with http.get(gateway.base + "/rooms") as response:
            listed = {r["room"]: r for r in (await response.json())["rooms"]}
        assert listed["covered"]["cover"] == f"/rooms/covered/cover.jpg?v={etag.strip(chr(34))}", listed

        # Host alone, three rounds: decodes only for keyframes that came, at most one per round.
        before = (await figures(gateway, http, "covered")).minus(start)
        await rounds_pass(gateway, http, 3)
        alone = (await figures(gateway, http, "covered")).minus(start)
        check_bounds(alone, "host alone")
        alone_phase = alone.minus(before)
        if alone_phase.keyframes == 0:
            assert alone_phase.decodes == 0, f"an unchanged keyframe was decoded again: {alone_phase}"

        # Five viewers join and watch for three rounds: still one room, bounded the same way.
        viewers = await start_viewers(gateway, http, "covered", 5)
        await rounds_pass(gateway, http, 3)
        watched = (await figures(gateway, http, "covered")).minus(start)
        check_bounds(watched, "five viewers")
        watched_phase = watched.minus(alone)
        assert watched_phase.decodes <= max(watched_phase.keyframes, 1), (
            f"viewers added decodes beyond the host's new keyframes: {watched_phase}")
        assert watched_phase.decodes <= watched_phase.rounds, watched_phase
        if watched_phase.keyframes:
            # The joiners' refreshing keyframe (their cache was older than its max age) makes a new cover.
            assert watched_phase.decodes >= 1, f"a new keyframe made no new cover: {watched_phase}"
            assert (await get_cover(http, gateway, "covered"))[2] != etag, "the cover's version did not change"
        await asyncio.gather(*(v.wait_frames(30, 10) for v in viewers))  # forwarding went on meanwhile
    finally:
        await asyncio.gather(*(p.stop(http) for p in (host, *viewers)), return_exceptions=True)


async def test_a_room_without_video_has_no_cover(gateway, http):
    token = await dev_token(http, gateway.base, "radio", "host")
    pc = RTCPeerConnection(LOOPBACK)
    try:
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        status, body, _ = await post_sdp(http, f"{gateway.base}/whip/radio", token, pc.localDescription.sdp)
        assert status == 201, f"an audio-only host was refused: {status} {body}"
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        await rounds_pass(gateway, http, 2)
        status, body_bytes, _ = await get_cover(http, gateway, "radio")
        assert status == 404, (status, body_bytes[:100])
        async with http.get(f"{gateway.base}/rooms/radio/cover.jpg") as response:
            assert (await response.json())["error"]["code"] == "no_cover"
        assert (await get_cover(http, gateway, "nobody-here"))[0] == 404
    finally:
        await pc.close()
