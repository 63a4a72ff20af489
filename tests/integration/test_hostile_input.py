"""Input nobody should send, sent to a real gateway: nothing of it ends a stream.

A publisher packetizing at a full 1500-byte MTU (and retransmitting those packets as RTX), garbage
datagrams on every media port, and a viewer whose own outgoing path fails: each costs at most the
packet or the viewer concerned, never the host's session or anybody else's stream.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import aiortc.codecs.vpx
import pytest

from aiortc_bridge.client import wrap_ice_delivery
from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.events_client import EventsClient
from tests.integration.peers import Host, NoiseTrack, Viewer, answer_ports
from tests.integration.test_forwarding import assert_smooth, close_all, start_viewers, stats


def _host_transport(host: Host) -> Any:
    return host.pc.getTransceivers()[0].sender.transport


def record_and_drop_outgoing(host: Host, video_pt: int, every: int) -> dict[str, Any]:
    """Wrap the host's SRTP send: record datagram sizes, drop every ``every``-th first transmission of
    video (so the gateway NACKs it and the host answers with RTX)."""
    transport = _host_transport(host)
    original = transport._send_rtp
    seen: dict[str, Any] = {"max_video": 0, "rtx": 0, "max_rtx": 0, "dropped": 0}
    counter = itertools.count(1)

    async def send_rtp(data: bytes) -> None:
        pt = data[1] & 0x7F
        if 127 < data[0] < 192 and not 191 < data[1] < 224:
            if pt == video_pt:
                if next(counter) % every == 0:
                    seen["dropped"] += 1
                    return
                seen["max_video"] = max(seen["max_video"], len(data))
            elif pt != 111:  # neither video nor Opus: the RTX stream
                seen["rtx"] += 1
                seen["max_rtx"] = max(seen["max_rtx"], len(data))
        await original(data)

    transport._send_rtp = send_rtp
    return seen


def lossy_downlink(viewer: Viewer, every: int) -> dict[str, int]:
    """Drop every ``every``-th SRTP datagram the viewer receives, before its DTLS transport."""
    counts = {"dropped": 0}
    counter = itertools.count(1)

    def wrap(deliver: Callable[[bytes, int], None]) -> Callable[[bytes, int], None]:
        def receive(data: bytes, component: int) -> None:
            media = data and 127 < data[0] < 192 and len(data) > 1 and not 191 < data[1] < 224
            if media and next(counter) % every == 0:
                counts["dropped"] += 1
                return
            deliver(data, component)

        return receive

    wrap_ice_delivery(viewer.pc, wrap)
    return counts


async def test_publisher_packetizing_at_full_mtu_reaches_five_viewers_with_rtx(
        gateway: GatewayProcess, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    # aiortc's packetizer stops at 1300 bytes; GStreamer's default is 1400 and anything up to the MTU is legal.
    monkeypatch.setattr(aiortc.codecs.vpx, "PACKET_MAX", 1462)
    room = "mtu"
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", "mtu-host"), track=NoiseTrack())
    await host.publish(http)
    video_pt = int(host.pc.getTransceivers()[0]._codecs[0].payloadType)
    sent = record_and_drop_outgoing(host, video_pt, every=40)
    viewers = [Viewer(gateway.base, room, await dev_token(http, gateway.base, room, "viewer")) for _ in range(5)]
    for viewer in viewers[:4]:
        await viewer.watch(http)
    lossy = viewers[4]
    await lossy.watch(http)
    lost = lossy_downlink(lossy, every=50)
    try:
        await asyncio.gather(*(asyncio.wait_for(v.first_video.wait(), 10) for v in viewers))
        start = time.monotonic()
        await asyncio.gather(*(v.wait_frames(60, 15) for v in viewers))
        end = time.monotonic()
        for viewer in viewers[:4]:
            assert_smooth(viewer, start, end, fps=15)
        # The host really sent full-size packets and RTX of them; nothing refused them.
        assert 1480 <= sent["max_video"] <= 1500, sent
        assert sent["dropped"] > 0 and sent["rtx"] > 0 and sent["max_rtx"] > 1480, sent
        # The lossy viewer got retransmissions of full-size packets and still decodes.
        assert lost["dropped"] > 0
        assert len(lossy.frames_between(start, end)) >= 0.6 * (end - start) * 15
        room_stats = next(r for r in (await stats(gateway, http))["rooms"] if r["room"] == room)
        assert room_stats["retransmitted"] > 0 and room_stats["sink_failures"] == 0, room_stats
        assert host.pc.connectionState == "connected"
    finally:
        await close_all(http, host, *viewers)
    assert "Traceback" not in gateway.log(), gateway.log()


def garbage_datagrams() -> list[bytes]:
    priority = struct.pack("!HH", 0x0024, 2) + b"\x00\x01\x00\x00"  # struct.error inside aioice
    bad_stun = struct.pack("!HHI12s", 0x0001, len(priority), 0x2112A442, b"t" * 12) + priority
    fake_rtp = struct.pack("!BBHII", 0x80, 96, 1, 1, 0xDEADBEEF) + b"\x00" * 100  # not authenticated
    fake_rtcp = struct.pack("!BBHI", 0x80, 200, 6, 0xDEADBEEF) + b"\x00" * 40
    return [b"", b"\x80", b"\x80" * 11, b"\x16\xfe", b"\x00\x01\x00", bad_stun, b"\xff" * 64,
            b"\x80" * 3000, fake_rtp, fake_rtcp, b"\x17\xfe\xfd" + b"\x00" * 30]


async def test_garbage_on_every_media_port_ends_no_stream(gateway: GatewayProcess,
                                                          http: aiohttp.ClientSession) -> None:
    room = "garbage"
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", "garbage-host"))
    await host.publish(http)
    viewers = await start_viewers(gateway, http, room, 2)
    log_before = len(gateway.log_path.read_text())
    try:
        await asyncio.gather(*(v.wait_frames(15, 10) for v in viewers))
        ports = answer_ports(host.answer) + [p for v in viewers for p in answer_ports(v.answer)]
        assert len(ports) >= 3, ports
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for _ in range(50):
                for port in ports:
                    for datagram in garbage_datagrams():
                        attacker.sendto(datagram, ("127.0.0.1", port))
                await asyncio.sleep(0.02)  # mid-stream, spread over a second of media
        await asyncio.gather(*(v.wait_frames(60, 10) for v in viewers))
        end = time.monotonic()
        for viewer in viewers:
            assert_smooth(viewer, start, end)
        assert host.pc.connectionState == "connected"
        assert all(v.pc.connectionState == "connected" for v in viewers)
        dropped = (await stats(gateway, http))["media_input_dropped"]["datagrams"]
        # Well-formed-looking RTP, RTCP and DTLS from an address that is not the peer's never reach aiortc.
        for reason in ("empty", "short_rtp", "short_dtls", "short_stun", "malformed_stun", "unknown_protocol",
                       "too_long", "unexpected_source"):
            assert dropped.get(reason, 0) >= 50, (reason, dropped)
    finally:
        await close_all(http, host, *viewers)
    new_log = gateway.log_path.read_text()[log_before:]
    assert "Traceback" not in new_log, new_log[-3000:]
    drop_lines = [line for line in new_log.splitlines() if "dropped" in line]
    assert len(drop_lines) <= 12, drop_lines  # one line per reason per minute, never one per datagram


async def test_viewer_whose_path_fails_loses_only_its_own_stream(gateway: GatewayProcess,
                                                                 http: aiohttp.ClientSession) -> None:
    room = "sinkfail"
    host = Host(gateway.base, room, await dev_token(http, gateway.base, room, "host", "sink-host"))
    await host.publish(http)
    viewers = [Viewer(gateway.base, room, await dev_token(http, gateway.base, room, "viewer", f"v{i}"))
               for i in range(3)]
    for viewer in viewers:
        await viewer.watch(http)
    # The broken viewer's page: its room socket is where it learns why its picture stopped.
    page = await EventsClient.connect(http, gateway.base, room, viewers[1].token)
    try:
        await asyncio.gather(*(v.wait_frames(15, 10) for v in viewers))
        broken = viewers[1]
        assert broken.location is not None
        async with http.post(f"{gateway.base}/test/break-sink/{broken.location.rsplit('/', 1)[1]}") as r:
            assert r.status == 200, await r.text()
        start = time.monotonic()
        await asyncio.gather(*(v.wait_frames(60, 10) for v in (viewers[0], viewers[2])))
        end = time.monotonic()
        assert_smooth(viewers[0], start, end)
        assert_smooth(viewers[2], start, end)
        assert len(broken.frames_between(start + 0.5, end)) == 0, "the failed viewer's stream should have stopped"
        room_stats = next(r for r in (await stats(gateway, http))["rooms"] if r["room"] == room)
        assert room_stats["sink_failures"] >= 1, room_stats
        assert room_stats["live"] and host.pc.connectionState == "connected"
        notice = await page.next("subscription_closed", timeout=5)
        assert notice["endpoint"] == "whep" and "forwarding failed" in notice["reason"], notice
        assert notice["session"] == broken.location.rsplit("/", 1)[1]
    finally:
        await page.close()
        await close_all(http, host, *viewers)
    assert "Traceback" not in gateway.log()
