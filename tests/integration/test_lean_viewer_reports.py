"""The lean load viewer sends RTCP receiver reports like a browser: loss, highest sequence, jitter, LSR/DLSR.

In-process: a WHEP endpoint on 127.0.0.1 whose answering peer sends through the gateway's own raw
sender (``aiortc_bridge.sender.SenderPort``, whose listener records every report block about its
stream and supplies sender reports), and the load suite's lean viewer behind a lossy downlink
(``loadtests.network`` impairment). The viewer's reports must show the loss that was injected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiortc_bridge.sender import ReceiverReport, SenderPort
from loadtests.network import NetworkCondition
from loadtests.webrtc.viewer import Viewer, ViewerOptions
from relay.rtp import ntp_now, sender_report

LOSS = 0.15
REPORTS = 5  # aiortc's receivers report every 0.5-1.5 s
VP8_KEYFRAME = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]) + bytes(300)  # S=1, P=0: each packet a whole keyframe


@dataclass
class Recorder:
    """The sender's feedback listener: keeps the receiver reports, makes sender reports."""

    port: SenderPort
    reports: list[ReceiverReport] = field(default_factory=list)
    sent_ntp: list[int] = field(default_factory=list)
    packets: int = 0
    timestamp: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def on_nack(self, lost: list[int]) -> None:
        pass  # no retransmissions: the reports must show the raw loss

    def on_keyframe_request(self) -> None:
        pass

    def on_bandwidth(self, bitrate: int) -> None:
        pass

    def on_receiver_report(self, report: ReceiverReport) -> None:
        self.reports.append(report)
        if len(self.reports) >= REPORTS:
            self.enough.set()

    def sender_report(self) -> bytes | None:
        if not self.packets:
            return None
        ntp = ntp_now()
        self.sent_ntp.append(ntp)
        return sender_report(self.port.ssrc, ntp, self.timestamp, self.packets, self.packets * len(VP8_KEYFRAME),
                             b"rr-test")


@dataclass
class Sender:
    pcs: list[RTCPeerConnection] = field(default_factory=list)
    recorders: list[Recorder] = field(default_factory=list)

    async def whep(self, request: web.Request) -> web.Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        video = pc.addTransceiver("video", direction="sendonly")
        port = SenderPort(video.sender, report_interval=0.5)
        recorder = Recorder(port)
        port.listener = recorder
        self.recorders.append(recorder)
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        # Without a=ssrc lines (many servers send none) the viewer learns the SSRC from the packets,
        # and must still route the sender's reports to its receiver.
        answer = "".join(line + "\r\n" for line in pc.localDescription.sdp.splitlines()
                         if not line.startswith("a=ssrc"))
        return web.Response(status=201, text=answer, content_type="application/sdp", headers={"Location": "/whep/rr/1"})

    async def stream(self, stop: asyncio.Event) -> None:
        """About 250 video packets a second from the first recorder's port, sequence numbers from 0."""
        seq = 0
        while not stop.is_set():
            recorder = self.recorders[0] if self.recorders else None
            types = recorder.port.payload_types("video/VP8") if recorder else None
            if recorder and types and recorder.port.send_rtp(0x80 | types[0], seq, recorder.timestamp,
                                                             VP8_KEYFRAME, time.time()):
                seq += 1
                recorder.packets += 1
                recorder.timestamp += 360
            await asyncio.sleep(0.004)  # the sending rate, not a synchronisation


async def ended(request: web.Request) -> web.Response:
    return web.Response(status=200)


@pytest.fixture
async def whep() -> AsyncIterator[tuple[str, Sender]]:
    sender = Sender()
    app = web.Application()
    app.router.add_post("/whep/{room}", sender.whep)
    app.router.add_delete("/whep/{room}/{session}", ended)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), sender
        for pc in sender.pcs:
            await pc.close()


async def test_lean_viewer_behind_a_lossy_downlink_reports_the_loss(whep: tuple[str, Sender]) -> None:
    base, sender = whep
    stop = asyncio.Event()
    streaming = asyncio.ensure_future(sender.stream(stop))
    async with aiohttp.ClientSession() as http:
        viewer = Viewer(ViewerOptions(base, "rr", token="unused", network=NetworkCondition("lossy", loss=LOSS)), http)
        try:
            await viewer.start()  # returns at the first keyframe
            recorder = sender.recorders[0]
            try:
                await asyncio.wait_for(recorder.enough.wait(), 15)
            except TimeoutError:
                raise AssertionError(f"{len(recorder.reports)} of {REPORTS} receiver reports about the video "
                                     f"stream within 15 s ({recorder.packets} packets sent)") from None
        finally:
            stop.set()
            await streaming
            await viewer.stop()
    assert viewer.lean is not None and viewer.lean.packets > 0, "the viewer did not receive on the lean path"
    reports = recorder.reports
    highest = [r.highest_sequence for r in reports]
    assert highest == sorted(highest) and highest[-1] > 500, highest
    # Cumulative loss between the first and the last report: the injected loss rate.
    first, last = reports[0], reports[-1]
    lost_share = (last.packets_lost - first.packets_lost) / (last.highest_sequence - first.highest_sequence)
    assert abs(lost_share - LOSS) < 0.05, (lost_share, reports)
    # Fraction lost (per report interval, /256) follows it too.
    fractions = [r.fraction_lost / 256 for r in reports[1:]]
    assert abs(sum(fractions) / len(fractions) - LOSS) < 0.05, (fractions, reports)
    # The sender's reports reached the viewer's receiver: LSR echoes one of them, DLSR the delay since.
    sent_lsr = {(ntp >> 16) & 0xFFFFFFFF for ntp in recorder.sent_ntp}
    echoed = [r for r in reports if r.lsr]
    assert echoed and all(r.lsr in sent_lsr for r in echoed), (reports, sorted(sent_lsr))
    assert all(0 < r.dlsr < 3 * 65536 for r in echoed), echoed  # within 3 s (1/65536 s units)
    assert all(r.jitter < 90 * 50 for r in reports), reports  # under 50 ms at the 90 kHz clock, on loopback
    print(f"\nloss {LOSS}: cumulative {lost_share:.3f}, fraction lost {[round(f, 3) for f in fractions]}, "
          f"jitter {[r.jitter for r in reports]}, dlsr ms {[round(r.dlsr / 65.536) for r in echoed]}")
