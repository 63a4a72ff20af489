"""Host to many viewers through the real gateway: continuity, keyframes, no codec work."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.peers import Host, Viewer, freezes

FIRST_FRAME_TIMEOUT = 10.0


async def start_host(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str,
                     identity: str = "alice", video_codec: str | None = None) -> Host:
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", identity),
                video_codec=video_codec)
    await host.publish(http)
    return host


async def start_viewers(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str, n: int) -> list[Viewer]:
    viewers = [Viewer(gateway.base, room, await dev_token(http, gateway.base, room, "viewer"))
               for _ in range(n)]
    await asyncio.gather(*(v.watch(http) for v in viewers))
    await asyncio.gather(*(asyncio.wait_for(v.first_video.wait(), FIRST_FRAME_TIMEOUT) for v in viewers))
    return viewers


async def codec_counts(gateway: GatewayProcess, http: aiohttp.ClientSession) -> dict[str, int]:
    async with http.get(gateway.base + "/test/codecs") as response:
        return dict(await response.json())


async def stats(gateway: GatewayProcess, http: aiohttp.ClientSession) -> dict:  # type: ignore[type-arg]
    token = await dev_token(http, gateway.base, "any", "admin")
    async with http.get(gateway.base + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


def assert_smooth(viewer: Viewer, start: float, end: float, fps: float = 30) -> None:
    times = viewer.frames_between(start, end)
    expected = (end - start) * fps
    assert len(times) >= 0.8 * expected, f"viewer got {len(times)} frames, expected ~{expected:.0f}"
    assert freezes(times) == [], f"viewer froze: gaps {freezes(times)}"


async def close_all(http: aiohttp.ClientSession, *peers: Host | Viewer) -> None:
    await asyncio.gather(*(p.stop(http) for p in peers), return_exceptions=True)


async def test_host_and_ten_viewers_receive_video_and_audio_without_freezes(gateway, http):
    host = await start_host(gateway, http, "ten")
    viewers = await start_viewers(gateway, http, "ten", 10)
    try:
        start = time.monotonic()
        await asyncio.gather(*(v.wait_frames(150, 15) for v in viewers))  # 5 s at 30 fps
        end = time.monotonic()
        for viewer in viewers:
            assert_smooth(viewer, start, end)
            assert viewer.audio_frames > 100, f"viewer got {viewer.audio_frames} audio frames"
            columns = {column for column, _ in viewer.bars}
            assert len(columns) > 3, f"picture does not move: bar columns {columns}"
            assert all(luma > 150 for _, luma in viewer.bars), "picture is dark: not the host's bar"
        counts = await codec_counts(gateway, http)
        assert counts == {"encoders": 0, "decoders": 0, "codec_contexts": 0}, counts
    finally:
        await close_all(http, host, *viewers)


async def forwarding(gateway: GatewayProcess, http: aiohttp.ClientSession, room: str) -> dict:  # type: ignore[type-arg]
    """One snapshot of a room's packets in per publication and out per viewer (instrumented gateway)."""
    async with http.get(f"{gateway.base}/test/forwarding/{room}") as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def test_adding_viewers_adds_no_codec_work(gateway, http):
    """Five viewers cost five times the packets out, each the host's packets as they came, and no codec."""
    host = await start_host(gateway, http, "nocodec")
    viewers = await start_viewers(gateway, http, "nocodec", 1)
    try:
        before = await codec_counts(gateway, http)
        viewers += await start_viewers(gateway, http, "nocodec", 4)
        await asyncio.gather(*(v.wait_frames(15, 10) for v in viewers))  # every subscription is flowing
        room_then = next(r for r in (await stats(gateway, http))["rooms"] if r["room"] == "nocodec")
        then = await forwarding(gateway, http, "nocodec")
        await asyncio.gather(*(v.wait_frames(60, 10) for v in viewers))  # the window: ~2 s of media
        room_now = next(r for r in (await stats(gateway, http))["rooms"] if r["room"] == "nocodec")
        now = await forwarding(gateway, http, "nocodec")
        after = await codec_counts(gateway, http)
        assert before == after == {"encoders": 0, "decoders": 0, "codec_contexts": 0}, (before, after)
        assert room_now["viewers"] == 5 and len(now["viewers"]) == 5, (room_now, now)

        # /api/stats: packets out grew by the viewers times the packets in over the same window
        came_in = {kind: room_now["publications"][kind]["packets_in"] - room_then["publications"][kind]["packets_in"]
                   for kind in ("video", "audio")}
        assert came_in["video"] >= 40 and came_in["audio"] >= 50, f"the host hardly sent anything: {came_in}"
        went_out = room_now["packets_out"] - room_then["packets_out"]
        expected = 5 * sum(came_in.values())
        assert abs(went_out - expected) <= 0.03 * expected, (
            f"{went_out} packets out for {came_in} in: expected ~5 x {sum(came_in.values())} = {expected}")

        # per viewer and kind: every packet in went out once to each viewer (drops would be counted)
        pub_in = {kind: now["publications"][kind] - then["publications"][kind] for kind in ("video", "audio")}
        for pid, subscriptions in now["viewers"].items():
            earlier = {s["kind"]: s for s in then["viewers"].get(pid, [])}
            assert sorted(s["kind"] for s in subscriptions) == ["audio", "video"], subscriptions
            for sub in subscriptions:
                kind = sub["kind"]
                sent = sub["sent"] - earlier[kind]["sent"]
                dropped = sub["dropped"] - earlier[kind]["dropped"]
                assert abs(sent - pub_in[kind]) <= 0.03 * pub_in[kind], (
                    f"viewer {pid[:8]} {kind}: {sent} packets out (+{dropped} dropped) for {pub_in[kind]} in")
    finally:
        await close_all(http, host, *viewers)


async def test_late_viewer_gets_first_frame_fast(gateway, http):
    host = await start_host(gateway, http, "late")
    early = await start_viewers(gateway, http, "late", 1)
    try:
        await early[0].wait_frames(60, 10)  # the host has been live for a while
        # It starts from the keyframe cache, or (a cache past its age) with a refresh asked of the host:
        # tests/integration/test_keyframe_cache.py tells the two apart.
        late = (await start_viewers(gateway, http, "late", 1))[0]
        ttff = late.video_times[0] - late.posted_at
        print(f"late viewer time to first frame: {ttff * 1000:.0f} ms")
        # generous bound: one GOP of the test host would be several seconds
        assert ttff < 2.0, f"late viewer waited {ttff:.2f}s for its first frame"
        await late.wait_frames(30, 10)
        await late.stop(http)
    finally:
        await close_all(http, host, *early)


async def test_viewer_leaving_disturbs_no_one(gateway, http):
    host = await start_host(gateway, http, "leave")
    viewers = await start_viewers(gateway, http, "leave", 3)
    try:
        await asyncio.gather(*(v.wait_frames(15, 10) for v in viewers))
        start = time.monotonic()
        await viewers[0].stop(http)
        await asyncio.gather(*(v.wait_frames(90, 10) for v in viewers[1:]))
        end = time.monotonic()
        for viewer in viewers[1:]:
            assert_smooth(viewer, start, end)
    finally:
        await close_all(http, host, *viewers[1:])


async def test_host_reconnect_resumes_every_viewer(gateway, http):
    host = await start_host(gateway, http, "again")
    viewers = await start_viewers(gateway, http, "again", 3)
    tracks_before = [len(v._tasks) for v in viewers]
    try:
        await asyncio.gather(*(v.wait_frames(15, 10) for v in viewers))
        await host.stop(http)
        # the viewers' sessions survive the host's absence
        assert all(v.pc.connectionState == "connected" for v in viewers)
        host = await start_host(gateway, http, "again")
        await asyncio.gather(*(v.wait_frames(60, 10) for v in viewers))
        assert [len(v._tasks) for v in viewers] == tracks_before, "viewers renegotiated tracks"
        assert all(v.pc.connectionState == "connected" for v in viewers)
    finally:
        await close_all(http, host, *viewers)


async def test_host_dropping_without_delete_is_replaced_by_its_new_session(gateway, http):
    host = await start_host(gateway, http, "drop", identity="bob")
    viewers = await start_viewers(gateway, http, "drop", 2)
    try:
        await host.pc.close()  # network drop: no DELETE reaches the gateway
        host = await start_host(gateway, http, "drop", identity="bob")  # same identity takes over
        await asyncio.gather(*(v.wait_frames(60, 10) for v in viewers))
    finally:
        await close_all(http, host, *viewers)


async def test_h264_host_is_forwarded_to_h264_viewers(gateway, http):
    host = await start_host(gateway, http, "h264", video_codec="video/H264")
    viewers = await start_viewers(gateway, http, "h264", 2)
    try:
        await asyncio.gather(*(v.wait_frames(30, 10) for v in viewers))
        room = next(r for r in (await stats(gateway, http))["rooms"] if r["room"] == "h264")
        assert room["publications"]["video"]["codec"] == "video/H264"
        assert all(len({c for c, _ in v.bars}) > 1 for v in viewers)
        assert (await codec_counts(gateway, http))["encoders"] == 0
    finally:
        await close_all(http, host, *viewers)


async def test_viewers_get_sender_reports_for_audio_and_video(gateway, http):
    host = await start_host(gateway, http, "sr")
    viewers = await start_viewers(gateway, http, "sr", 1)
    try:
        # sender reports go out every ~1 s (0.5-1.5 s): 90 frames is three seconds
        await viewers[0].wait_frames(90, 10)
        kinds = set()
        for receiver in viewers[0].pc.getReceivers():
            report = await receiver.getStats()
            for stat in report.values():
                if stat.type == "remote-outbound-rtp" and stat.packetsSent > 0:
                    kinds.add(stat.kind)
        assert kinds == {"audio", "video"}, f"sender reports seen for {kinds}"
        # They state the host's own clock mapping: the host's reports reached both publications.
        room = next(r for r in (await stats(gateway, http))["rooms"] if r["room"] == "sr")
        assert {kind: p["sender_reports"] > 0 for kind, p in room["publications"].items()} == {
            "audio": True, "video": True}, room["publications"]
    finally:
        await close_all(http, host, *viewers)


async def test_stalled_viewer_does_not_stall_others_and_recovers(gateway, http):
    """A viewer process frozen with SIGSTOP stops reading its socket; the others never notice."""
    import os
    import signal
    import sys

    host = await start_host(gateway, http, "stall")
    viewers = await start_viewers(gateway, http, "stall", 2)
    token = await dev_token(http, gateway.base, "stall", "viewer")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.viewer_proc", gateway.base, "stall", token,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    async def frames_of_stalled() -> int:
        proc.stdin.write(b"count\n")  # type: ignore[union-attr]
        line = await asyncio.wait_for(proc.stdout.readline(), 10)  # type: ignore[union-attr]
        return int(line.split()[1])

    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"ready"
        os.kill(proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        await asyncio.gather(*(v.wait_frames(90, 10) for v in viewers))  # ~3 s with one viewer frozen
        end = time.monotonic()
        for viewer in viewers:
            assert_smooth(viewer, start, end)
        os.kill(proc.pid, signal.SIGCONT)
        before = await frames_of_stalled()
        deadline = time.monotonic() + 10
        while (after := await frames_of_stalled()) < before + 30:
            assert time.monotonic() < deadline, f"stalled viewer did not recover: {before} -> {after} frames"
            await asyncio.sleep(0.2)  # asking a child process over a pipe: nothing to await in between
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await close_all(http, host, *viewers)
